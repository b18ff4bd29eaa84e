"""Observation, state and available-action arrays in SMAC's layout (``docs/smac.md`` sections 3-5).

Everything is computed for all environments and agents at once from the engine's arrays.

Observation of agent i: ``[move | enemies (n_enemies x nf_en) | allies (n_agents-1 x nf_al) |
own | (timestep)]``; the optional move extras are 8 pathing values (1 if the cell is inside the
map and walkable for the agent) and 9 terrain heights (void 0, ground 0.5, cliff 0.75, outside
the map 1) at SMAC's surrounding points.
State: ``[allies (n_agents x nf_al) | enemies (n_enemies x nf_en) | (last actions) |
(timestep)]``, or all observations concatenated when obs_instead_of_state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import units as U
from .engine import CombatEngine

TERRAIN_HEIGHTS = np.array([0.0, 0.5, 0.75], dtype=np.float32)  # void, ground, cliff


@dataclass(frozen=True)
class FeatureFlags:
    obs_all_health: bool = True
    obs_own_health: bool = True
    obs_last_action: bool = False
    obs_pathing_grid: bool = False
    obs_terrain_height: bool = False
    obs_instead_of_state: bool = False
    obs_timestep_number: bool = False
    state_last_action: bool = True
    state_timestep_number: bool = False
    move_amount: float = 2.0


def _one_hot(ids, width: int) -> np.ndarray:
    out = np.zeros((len(ids), width), dtype=np.float32)
    if width:
        out[np.arange(len(ids)), ids] = 1.0
    return out


class FeatureBuilder:
    """Computes avail / obs / state arrays for a ``CombatEngine``; sizes are SMAC's."""

    def __init__(self, engine: CombatEngine, flags: FeatureFlags, n_actions: int,
                 episode_limit: int):
        self.e = engine
        self.f = flags
        spec = engine.spec
        na, ne = engine.na, engine.ne
        self.na, self.ne, self.n_actions = na, ne, n_actions
        self.episode_limit = episode_limit
        self.bits = spec.unit_type_bits
        self.shield_a = int(any(t.race == "P" for t in engine.types[:na]))
        self.shield_e = int(any(t.race == "P" for t in engine.types[na:]))
        self.ally_onehot = _one_hot([spec.ally_type_ids[t] for t in spec.ally_types], self.bits)
        self.enemy_onehot = _one_hot([spec.enemy_type_ids[t] for t in spec.enemy_types], self.bits)
        health_a = (1 + self.shield_a) if flags.obs_all_health else 0
        health_e = (1 + self.shield_e) if flags.obs_all_health else 0
        self.move_dim = 4 + 8 * flags.obs_pathing_grid + 9 * flags.obs_terrain_height
        self.nf_en = 4 + health_e + self.bits
        self.nf_al = 4 + health_a + self.bits + (n_actions if flags.obs_last_action else 0)
        self.own_dim = ((1 + self.shield_a) if flags.obs_own_health else 0) + self.bits
        self.obs_dim = (self.move_dim + ne * self.nf_en + (na - 1) * self.nf_al + self.own_dim
                        + int(flags.obs_timestep_number))
        self.st_al = 4 + self.shield_a + self.bits
        self.st_en = 3 + self.shield_e + self.bits
        if flags.obs_instead_of_state:
            self.state_dim = na * self.obs_dim
        else:
            self.state_dim = (na * self.st_al + ne * self.st_en
                              + (na * n_actions if flags.state_last_action else 0)
                              + int(flags.state_timestep_number))
        # Other allies of agent i, in id order.
        self.others = np.array([[k for k in range(na) if k != i] for i in range(na)],
                               dtype=np.int64).reshape(na, max(na - 1, 0))
        self.is_healer = engine.is_healer[:na]
        ma = flags.move_amount
        self.move_offsets = np.array([[0, 1], [0, -1], [1, 0], [-1, 0]], np.float32) * (ma / 2)
        self.surround_offsets = np.array(
            [[0, 2 * ma], [0, -2 * ma], [2 * ma, 0], [-2 * ma, 0],
             [ma, ma], [-ma, -ma], [ma, -ma], [-ma, ma]], np.float32)
        self._geom = None
        self._ar_col = np.arange(na)[:, None]
        self.ally_onehot_others = [self.ally_onehot[:, k][self.others] for k in range(self.bits)]
        self.inv_sh_max = np.where(engine.sh_max > 0, 1.0 / np.maximum(engine.sh_max, 1e-6),
                                   0.0).astype(np.float32)
        self.cooldown_scale = (U.GAME_LOOPS_PER_SECOND
                               / engine.max_cd_loops[:na]).astype(np.float32)

    # ------------------------------------------------------------------ avail
    def avail_actions(self) -> np.ndarray:
        """bool ``[B, n_agents, n_actions]``."""
        e, na = self.e, self.na
        alive = e.hp > 0
        alive_a = alive[:, :na]
        B = e.n_envs
        avail = np.zeros((B, na, self.n_actions), dtype=bool)
        avail[:, :, 0] = ~alive_a
        avail[:, :, 1] = alive_a
        pos_a = e.pos[:, :na]
        points = pos_a[:, :, None, :] + self.move_offsets  # [B, na, 4, 2]
        ok = e.passable_at(points, e.unit_cliff[:na, None], e.is_air[:na, None])
        avail[:, :, 2:6] = ok & alive_a[..., None]
        d = self._agent_dist()  # [B, na, N]
        in_reach = d <= U.SHOOT_RANGE
        enemy_ok = in_reach[:, :, na:] & alive[:, None, na:]
        if self.is_healer.any():
            heal_ok = in_reach[:, :, :na] & alive[:, None, :na] & ~self.is_healer[None, None, :] \
                & ~np.eye(na, dtype=bool)
            n_heal = min(na, self.ne)
            tgt_ok = np.where(self.is_healer[None, :, None], False, enemy_ok)
            tgt_ok[:, :, :n_heal] |= self.is_healer[None, :, None] & heal_ok[:, :, :n_heal]
            enemy_ok = tgt_ok
        avail[:, :, 6:] = enemy_ok & alive_a[..., None]
        return avail

    def _agent_dist(self) -> np.ndarray:
        return self._geometry()[2]

    def _geometry(self):
        """(dx, dy, dist) from every agent to every unit, ``[B, n_agents, N]``, cached until
        the engine's positions change (``invalidate``)."""
        if self._geom is None:
            x, y = self.e.pos[..., 0], self.e.pos[..., 1]
            dx = x[:, None, :] - x[:, :self.na, None]
            dy = y[:, None, :] - y[:, :self.na, None]
            self._geom = (dx, dy, np.sqrt(dx * dx + dy * dy))
        return self._geom

    def invalidate(self) -> None:
        self._geom = None

    # ------------------------------------------------------------------ obs
    def observations(self, avail: np.ndarray, last_action: np.ndarray,
                     steps: np.ndarray) -> np.ndarray:
        """float32 ``[B, n_agents, obs_dim]``; rows of dead agents are zeros."""
        e, f, na, ne = self.e, self.f, self.na, self.ne
        B = e.n_envs
        alive = e.hp > 0
        alive_a = alive[:, :na]
        inv_sight = np.float32(1.0 / U.SIGHT_RANGE)
        dx, dy, dist = self._geometry()
        dx, dy, dist = dx * inv_sight, dy * inv_sight, dist * inv_sight
        visible = (dist < 1.0) & alive[:, None, :] & alive_a[..., None]
        hp_frac = e.hp / e.hp_max
        sh_frac = e.sh * self.inv_sh_max

        parts = [avail[:, :, 2:6].astype(np.float32)]
        if f.obs_pathing_grid or f.obs_terrain_height:
            cells = np.floor(e.pos[:, :na]).astype(np.float32)
            if f.obs_pathing_grid:
                pts = cells[:, :, None, :] + self.surround_offsets
                parts.append(e.passable_at(pts, e.unit_cliff[:na, None],
                                           e.is_air[:na, None]).astype(np.float32))
            if f.obs_terrain_height:
                pts = np.concatenate([cells[:, :, None, :] + self.surround_offsets,
                                      cells[:, :, None, :]], axis=2)
                parts.append(self._heights(pts).astype(np.float32))

        # Enemies: [B, na, ne, nf_en].
        shape = (B, na, ne)
        cols = [avail[:, :, 6:6 + ne] & ~self.is_healer[None, :, None],
                dist[:, :, na:], dx[:, :, na:], dy[:, :, na:]]
        if f.obs_all_health:
            cols.append(np.broadcast_to(hp_frac[:, None, na:], shape))
            if self.shield_e:
                cols.append(np.broadcast_to(sh_frac[:, None, na:], shape))
        cols += [np.broadcast_to(c, shape) for c in self.enemy_onehot.T]
        en = np.stack(cols, axis=-1).astype(np.float32, copy=False)
        en *= visible[:, :, na:, None]
        parts.append(en.reshape(B, na, -1))

        # Other allies, in id order: [B, na, na-1, nf_al].
        if na > 1:
            ar, oth = self._ar_col, self.others
            shape = (B, na, na - 1)
            cols = [np.ones(shape, np.float32), dist[:, ar, oth], dx[:, ar, oth], dy[:, ar, oth]]
            if f.obs_all_health:
                cols.append(hp_frac[:, oth])
                if self.shield_a:
                    cols.append(sh_frac[:, oth])
            cols += [np.broadcast_to(c, shape) for c in self.ally_onehot_others]
            al = np.stack(cols, axis=-1)
            if f.obs_last_action:
                al = np.concatenate([al, last_action[:, oth]], axis=-1)
            al *= visible[:, ar, oth][..., None]
            parts.append(al.reshape(B, na, -1))

        # Own features.
        own = []
        if f.obs_own_health:
            own.append(hp_frac[:, :na])
            if self.shield_a:
                own.append(sh_frac[:, :na])
        own += [np.broadcast_to(c, (B, na)) for c in self.ally_onehot.T]
        if f.obs_timestep_number:
            own.append(np.broadcast_to((steps / self.episode_limit)[:, None], (B, na)))
        if own:
            parts.append(np.stack(own, axis=-1))
        obs = np.concatenate(parts, axis=-1, dtype=np.float32)
        obs *= alive_a[..., None]
        return obs

    def _heights(self, pts: np.ndarray) -> np.ndarray:
        e = self.e
        x, y = pts[..., 0], pts[..., 1]
        inside = (x >= 0) & (x < e.width) & (y >= 0) & (y < e.height)
        ix = np.clip(x.astype(np.int64), 0, e.width - 1)
        iy = np.clip(y.astype(np.int64), 0, e.height - 1)
        return np.where(inside, TERRAIN_HEIGHTS[e.terrain[ix, iy]], 1.0)

    # ------------------------------------------------------------------ state
    def state(self, obs: np.ndarray, last_action: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """float32 ``[B, state_dim]`` (``obs`` is only read when obs_instead_of_state)."""
        e, f, na, ne = self.e, self.f, self.na, self.ne
        B = e.n_envs
        if f.obs_instead_of_state:
            return obs.reshape(B, -1).copy()
        alive = e.hp > 0
        centre = np.array([e.width / 2.0, e.height / 2.0], np.float32)
        scale = np.array([1.0 / e.width, 1.0 / e.height], np.float32)
        relpos = (e.pos - centre) * scale
        hp_frac = e.hp / e.hp_max
        sh_frac = np.where(e.sh_max > 0, e.sh / np.maximum(e.sh_max, 1e-6), 0.0)

        al = np.zeros((B, na, self.st_al), np.float32)
        al[..., 0] = hp_frac[:, :na]
        al[..., 1] = np.where(self.is_healer, e.energy[:, :na] / U.ENERGY_MAX,
                              e.cd[:, :na] * self.cooldown_scale)
        al[..., 2:4] = relpos[:, :na]
        c = 4
        if self.shield_a:
            al[..., c] = sh_frac[:, :na]
            c += 1
        if self.bits:
            al[..., c:] = self.ally_onehot
        al *= alive[:, :na, None]

        en = np.zeros((B, ne, self.st_en), np.float32)
        en[..., 0] = hp_frac[:, na:]
        en[..., 1:3] = relpos[:, na:]
        c = 3
        if self.shield_e:
            en[..., c] = sh_frac[:, na:]
            c += 1
        if self.bits:
            en[..., c:] = self.enemy_onehot
        en *= alive[:, na:, None]

        parts = [al.reshape(B, -1), en.reshape(B, -1)]
        if f.state_last_action:
            parts.append(last_action.reshape(B, -1))
        if f.state_timestep_number:
            parts.append((steps / self.episode_limit).astype(np.float32)[:, None])
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)
