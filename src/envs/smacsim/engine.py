"""The vectorised combat engine: unit state as arrays ``[n_envs, n_units]``, one step = sub-ticks.

Time base: one environment step is ``step_mul`` game loops at 22.4 loops per second (real SMAC:
8 loops = 0.357 s), simulated as ``n_subticks`` equal sub-ticks (default: one per 4 game loops,
so 2 sub-ticks of 0.179 s). Every duration below is in those "Faster" game seconds.

Unit slots: allies ``0..n_agents-1`` then enemies; per-slot constants (type, stats, damage
matrix) are shared by all environments; dynamic state has a leading ``n_envs`` axis.

Rules (one sub-tick, all units at once, damage applied simultaneously):
  1. Pairwise centre distances by broadcasting; overlapping ground units are pushed apart by
     their overlap (a static unit, speed 0, is never pushed).
  2. The enemy AI (order ``AMOVE``) keeps its target while it is alive and within its leash
     range, else retaliates against the nearest unit that hit it last sub-tick, else acquires
     the nearest attackable unit within its acquisition range (edge distance
     ``max(weapon range + 2, 5)``; the leash is that plus 2), else walks to the attack point.
  3. A unit with a target fires when the edge-to-edge distance (centre distance minus both
     radii) is within its weapon range and its cooldown expires during the sub-tick; otherwise it
     walks toward the target (stopping once in range). Attack orders persist until the target
     dies (allies then stand still) or another order is given.
  4. Damage: every hit's raw damage (base + bonus vs attribute) goes to shields first; the part
     that passes the shields is reduced by armour per hit, at least 0.5 per hit. Hits on the same
     target in the same sub-tick are pooled (exact for a single attacker).
     Banelings explode on their first attack (splash 2.2 around them, edge distance, enemies
     only) and die; colossus lances also hit units on a short line through the target,
     perpendicular to the shot. Medivacs heal 12.6 HP/s for 1 energy per 3 HP.
  5. Movement at unit speed toward the order's point / target (on maps with terrain, ground
     units follow a precomputed shortest-path flow field and slide along walls), clamped to the
     map. Shields regenerate 2.8/s after 7 s without damage; energy regenerates 0.7875/s.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import units as U
from .maps import TERRAIN_GROUND, MapSpec, flow_field_for, spawn_layout

IDLE, MOVE, ATTACK, AMOVE = 0, 1, 2, 3
SPAWN_JITTER = 0.25  # uniform +- jitter of every spawn coordinate


class CombatEngine:
    """Arrays of all units of ``n_envs`` copies of one map, and the sub-tick update."""

    def __init__(self, spec: MapSpec, n_envs: int, step_mul: int = 8,
                 n_subticks: Optional[int] = None):
        if step_mul < 1:
            raise ValueError(f"step_mul must be a positive number of game loops, got {step_mul}")
        self.spec = spec
        self.n_envs = B = int(n_envs)
        self.na, self.ne = spec.n_agents, spec.n_enemies
        self.n_units = N = self.na + self.ne
        self.step_seconds = step_mul / U.GAME_LOOPS_PER_SECOND
        self.n_subticks = n_subticks or max(1, int(round(step_mul / 4)))
        self.dt = np.float32(self.step_seconds / self.n_subticks)
        self.width, self.height = spec.width, spec.height

        types = [U.UNIT_TYPES[t] for t in spec.ally_types + spec.enemy_types]
        self.types = types
        f32 = lambda xs: np.asarray(xs, dtype=np.float32)  # noqa: E731
        self.team = np.array([0] * self.na + [1] * self.ne)
        self.hp_max = f32([t.health for t in types])
        self.sh_max = f32([t.shield for t in types])
        self.armor = f32([t.armor for t in types])
        self.hits = f32([t.hits for t in types])
        self.cd_max = f32([t.cooldown_s for t in types])
        self.wrange = f32([t.range for t in types])
        self.speed = f32([t.speed for t in types])
        self.radius = f32([t.radius for t in types])
        self.max_cd_loops = f32([t.max_cooldown_loops for t in types])
        self.is_healer = np.array([t.healer for t in types])
        self.is_air = np.array([t.is_air for t in types])
        self.is_bane = np.array([t.suicide_splash for t in types])
        self.is_lance = np.array([t.line_splash for t in types])
        self.has_weapon = np.array([t.has_weapon and not t.healer for t in types])
        self.acquire_range = np.maximum(self.wrange + U.ACQUIRE_EXTRA_RANGE,
                                        U.MIN_ACQUIRE_RANGE).astype(np.float32)
        self.leash_range = self.acquire_range + np.float32(2.0)

        other_team = self.team[:, None] != self.team[None, :]
        self.dmg = f32([[U.per_hit_damage(a, b) for b in types] for a in types]) * other_team
        same_team = ~other_team & ~np.eye(N, dtype=bool)
        heal_ok = self.is_healer[:, None] & same_team & ~self.is_healer[None, :]
        self.can_target = (self.dmg > 0) | heal_ok  # [N, N]
        self.rsum = self.radius[:, None] + self.radius[None, :]
        ground = ~self.is_air
        self.collide = ground[:, None] & ground[None, :] & ~np.eye(N, dtype=bool)
        # Share of a pairwise overlap that unit i resolves: static units never move.
        # Heavier (larger) units are pushed less; static ones (speed 0) are never pushed.
        mass = np.where(self.speed == 0, 1e6, self.radius ** 2)
        share = (mass[None, :] / (mass[:, None] + mass[None, :])).astype(np.float32)
        self.push_share = share * np.float32(0.9)
        # Direction used to separate exactly coincident units.
        self.tie_sign = np.sign(np.arange(N)[None, :] - np.arange(N)[:, None]).astype(np.float32)
        self.bane_idx = np.flatnonzero(self.is_bane)
        self.lance_idx = np.flatnonzero(self.is_lance)
        self.bane_enemy_mask = other_team[self.bane_idx]  # [n_bane, N]
        self.lance_enemy_mask = other_team[self.lance_idx] & ground[None, :]

        # Terrain: per-unit passability class and optional flow fields.
        self.terrain = spec.terrain()
        self.has_terrain = bool((self.terrain != TERRAIN_GROUND).any())
        cliff = np.array([t.cliff_walker for t in types])
        self.pass_ground = self.terrain == TERRAIN_GROUND
        self.pass_cliff = self.terrain >= TERRAIN_GROUND
        self.unit_cliff = cliff
        self.unit_uses_terrain = ~self.is_air
        self.flow_ground = flow_field_for(spec, False) if self.has_terrain else None
        self.flow_cliff = flow_field_for(spec, True) if self.has_terrain else None

        self.spawn = np.concatenate([
            spawn_layout(spec.ally_groups, spec.type_order),
            spawn_layout(spec.enemy_groups, spec.type_order),
        ]).astype(np.float32)
        ally_blocks = np.array([spec.type_order.index(t) for t in spec.ally_types])
        self.ally_block = ally_blocks
        self.attack_point = np.asarray(spec.attack_point, dtype=np.float32)
        # Enemies attack-move as a group: each keeps its offset from the group's centre (as a
        # StarCraft II group order does), snapped to a cell it can walk on.
        enemy_spawn = self.spawn[self.na:]
        goals = self.attack_point + (enemy_spawn - enemy_spawn.mean(0))
        self.enemy_goals = self._snap_to_passable(goals, types[self.na:])

        # Dynamic state.
        self.pos = np.zeros((B, N, 2), np.float32)
        self.hp = np.zeros((B, N), np.float32)
        self.sh = np.zeros((B, N), np.float32)
        self.energy = np.zeros((B, N), np.float32)
        self.cd = np.zeros((B, N), np.float32)
        self.since_damage = np.zeros((B, N), np.float32)
        self.mode = np.zeros((B, N), np.int8)
        self.target = np.full((B, N), -1, np.int64)
        self.goal = np.zeros((B, N, 2), np.float32)
        self.hit_by = np.zeros((B, N, N), bool)  # [b, i, j]: j hit i during the last sub-tick
        self.damage_taken = np.zeros((B, N), np.float32)  # health+shield lost this step
        self._rows = np.arange(B)[:, None]
        self._cols = np.arange(N)[None, :]
        self._arange = np.arange(N)

    def _snap_to_passable(self, points: np.ndarray, types) -> np.ndarray:
        out = points.astype(np.float32).copy()
        np.clip(out[:, 0], 0.5, self.width - 0.5, out=out[:, 0])
        np.clip(out[:, 1], 0.5, self.height - 0.5, out=out[:, 1])
        for k, t in enumerate(types):
            grid = self.pass_cliff if t.cliff_walker else self.pass_ground
            if t.is_air or grid[int(out[k, 0]), int(out[k, 1])]:
                continue
            cx, cy = np.nonzero(grid)
            d = (cx + 0.5 - out[k, 0]) ** 2 + (cy + 0.5 - out[k, 1]) ** 2
            j = int(d.argmin())
            out[k] = (cx[j] + 0.5, cy[j] + 0.5)
        return out

    # ------------------------------------------------------------------ setup
    @property
    def alive(self) -> np.ndarray:
        return self.hp > 0

    def reset(self, env_ids: np.ndarray, rngs) -> None:
        """Fresh episode in the listed environments (``rngs[b]`` draws the spawn jitter)."""
        env_ids = np.asarray(env_ids, dtype=np.int64)
        if env_ids.size == 0:
            return
        jitter = np.stack([rngs[b].uniform(-SPAWN_JITTER, SPAWN_JITTER, size=(self.n_units, 2))
                           for b in env_ids]).astype(np.float32)
        pos = self.spawn[None] + jitter
        # SMAC orders allies by (unit type, x, y).
        ally = pos[:, :self.na]
        key = self.ally_block[None, :] * 1e4 + ally[..., 0].astype(np.float64) \
            + ally[..., 1].astype(np.float64) * 1e-4
        order = np.argsort(key, axis=1, kind="stable")
        pos[:, :self.na] = np.take_along_axis(ally, order[..., None], axis=1)
        self.set_units(env_ids, pos=pos)

    def set_units(self, env_ids, pos, hp=None, sh=None, energy=None, cd=None) -> None:
        """Put units in the listed environments at ``pos`` ([n, N, 2]) with full (or given) stats.

        Allies get no order; enemies attack-move to the map's attack point.
        """
        ids = np.asarray(env_ids, dtype=np.int64)
        full = lambda v, default: np.broadcast_to(  # noqa: E731
            default if v is None else np.asarray(v, np.float32), (ids.size, self.n_units))
        self.pos[ids] = np.asarray(pos, np.float32)
        self.hp[ids] = full(hp, self.hp_max)
        self.sh[ids] = full(sh, self.sh_max)
        self.energy[ids] = full(energy, np.where(self.is_healer, U.ENERGY_START, 0.0))
        self.cd[ids] = full(cd, np.zeros(self.n_units, np.float32))
        self.sh[ids] = np.where(self.hp[ids] > 0, self.sh[ids], 0.0)
        self.since_damage[ids] = 1e3
        self.mode[ids] = np.where(self.team == 1, AMOVE, IDLE)
        self.target[ids] = -1
        self.goal[ids, :self.na] = self.pos[ids, :self.na]
        self.goal[ids, self.na:] = self.enemy_goals
        self.hit_by[ids] = False
        self.damage_taken[ids] = 0.0

    # ------------------------------------------------------------------ orders
    def issue_agent_orders(self, actions: np.ndarray, active: np.ndarray,
                           move_amount: float) -> None:
        """Turn SMAC actions ``[B, n_agents]`` into orders of the ally units (active envs)."""
        na = self.na
        mode = self.mode[:, :na]
        tgt = self.target[:, :na]
        goal = self.goal[:, :na]
        act = np.where(active[:, None], actions, 0)
        is_stop = act == 1
        is_move = (act >= 2) & (act <= 5)
        is_attack = act >= 6
        mode[is_stop] = IDLE
        tgt[is_stop | is_move] = -1
        mode[is_move] = MOVE
        step = np.zeros(act.shape + (2,), np.float32)
        step[..., 1] = np.where(act == 2, move_amount, 0.0) - np.where(act == 3, move_amount, 0.0)
        step[..., 0] = np.where(act == 4, move_amount, 0.0) - np.where(act == 5, move_amount, 0.0)
        new_goal = self.pos[:, :na] + step
        goal[is_move] = new_goal[is_move]
        # Attack i targets enemy i; a medivac's "attack" i heals ally i.
        idx = act - 6
        target_unit = np.where(self.is_healer[None, :na], idx, idx + na)
        mode[is_attack] = ATTACK
        tgt[is_attack] = target_unit[is_attack]

    # ------------------------------------------------------------------ simulation
    def advance(self, active: np.ndarray) -> None:
        """Advance the active environments by one step (all sub-ticks)."""
        self.damage_taken[active] = 0.0
        for _ in range(self.n_subticks):
            self._subtick(active)

    def _subtick(self, active: np.ndarray) -> None:
        dt = self.dt
        pos, hp, sh = self.pos, self.hp, self.sh
        alive = hp > 0
        actor = alive & active[:, None]
        rows, cols = self._rows, self._cols

        # 1. pairwise geometry; push overlapping ground units apart.
        delta = pos[:, None, :, :] - pos[:, :, None, :]  # [B, i, j, 2]: p_j - p_i
        dist = np.sqrt(np.einsum("bijk,bijk->bij", delta, delta))
        both = alive[:, :, None] & alive[:, None, :] & self.collide
        overlap = np.where(both, self.rsum - dist, 0.0)
        if (overlap > 1e-4).any():
            overlap = np.maximum(overlap, 0.0) * self.push_share
            overlap *= active[:, None, None]
            tiny = dist < 1e-6
            dirx = np.where(tiny, self.tie_sign, delta[..., 0] / np.maximum(dist, 1e-6))
            diry = np.where(tiny, 0.0, delta[..., 1] / np.maximum(dist, 1e-6))
            push = -np.stack([(overlap * dirx).sum(2), (overlap * diry).sum(2)], axis=-1)
            self._move_units(push.astype(np.float32))
            delta = pos[:, None, :, :] - pos[:, :, None, :]
            dist = np.sqrt(np.einsum("bijk,bijk->bij", delta, delta))
        edge = dist - self.rsum

        # 2. enemy AI: keep / retaliate / acquire.
        cand = self.can_target & alive[:, None, :]
        if self.is_healer.any():
            damaged = hp < self.hp_max
            cand = cand & np.where(self.is_healer[:, None], damaged[:, None, :], True)
        tgt = self.target
        has = tgt >= 0
        tclip = np.where(has, tgt, 0)
        ai = (self.mode == AMOVE) & actor
        if ai.any():
            t_edge = edge[rows, cols, tclip]
            keep = has & cand[rows, cols, tclip] & (t_edge <= self.leash_range)
            masked = np.where(cand, edge, np.inf)
            retaliate = np.where(self.hit_by & cand, masked, np.inf)
            r_idx = retaliate.argmin(2)
            r_ok = retaliate[rows, cols, r_idx] <= U.SIGHT_RANGE
            a_idx = masked.argmin(2)
            a_ok = masked[rows, cols, a_idx] <= self.acquire_range
            new_t = np.where(keep, tgt, np.where(r_ok, r_idx, np.where(a_ok, a_idx, -1)))
            tgt = np.where(ai, new_t, tgt)
            self.target = tgt
            has = tgt >= 0
            tclip = np.where(has, tgt, 0)

        # 3. engagement.
        t_alive = has & alive[rows, tclip]
        engaged = actor & t_alive & ((self.mode == ATTACK) | (self.mode == AMOVE))
        # Allies whose target died stand still.
        done = (self.mode == ATTACK) & ~t_alive & actor
        if done.any():
            self.mode[done] = IDLE
            self.target[done] = -1
        t_edge = edge[rows, cols, tclip]
        in_range = t_edge <= self.wrange
        can_hit = self.can_target[self._arange[None, :], tclip]
        fire = engaged & in_range & can_hit & self.has_weapon & (self.cd < dt)
        heal = engaged & in_range & self.is_healer

        # 4. damage.
        onehot = tclip[:, :, None] == self._arange  # [B, i, j]
        hits = np.where(onehot, (fire * self.hits)[:, :, None], 0.0).astype(np.float32)
        if self.bane_idx.size:
            hits[:, self.bane_idx] = 0.0
            fb = fire[:, self.bane_idx]
            in_blast = (dist[:, self.bane_idx] - self.radius) <= U.BANELING_SPLASH_RADIUS
            blast = fb[:, :, None] & in_blast & alive[:, None, :] & self.bane_enemy_mask
            hits[:, self.bane_idx] = blast
        if self.lance_idx.size:
            hits[:, self.lance_idx] += self._lance_hits(fire, tclip, alive)
        damage_any = hits.any()
        if damage_any:
            raw = np.einsum("bij,ij->bj", hits, self.dmg)
            sh_after = np.maximum(sh - raw, 0.0)
            through = raw - (sh - sh_after)
            frac = np.where(raw > 0, through / np.maximum(raw, 1e-6), 0.0)
            per_hit = np.maximum(frac[:, None, :] * self.dmg - self.armor, 0.5)
            hp_loss = np.einsum("bij,bij->bj", hits, per_hit) * (frac > 0)
            hp_loss = np.minimum(hp_loss, hp)
            self.damage_taken += (sh - sh_after) + hp_loss
            self.sh = sh = sh_after.astype(np.float32)
            self.hp = hp = (hp - hp_loss).astype(np.float32)
            took = raw > 0
            self.since_damage = np.where(took, 0.0, self.since_damage + dt).astype(np.float32)
            self.hit_by = (hits > 0).transpose(0, 2, 1)
        else:
            self.since_damage += dt
            if self.hit_by.any():
                self.hit_by[:] = False
        if heal.any():
            room = np.maximum(self.hp_max - hp, 0.0)[rows, tclip]
            amount = np.minimum(np.minimum(U.HEAL_HP_PER_S * dt, self.energy * U.HEAL_HP_PER_ENERGY),
                                room) * heal
            self.energy = self.energy - amount / U.HEAL_HP_PER_ENERGY
            gain = np.einsum("bij,bi->bj", onehot.astype(np.float32), amount)
            self.hp = hp = np.minimum(hp + gain * (hp > 0), self.hp_max)
        if self.bane_idx.size:
            exploded = np.zeros_like(fire)
            exploded[:, self.bane_idx] = fire[:, self.bane_idx]
            hp[exploded] = 0.0
        dead = hp <= 0
        sh[dead] = 0.0
        self.cd = np.where(fire, self.cd + self.cd_max - dt,
                           np.maximum(self.cd - dt, 0.0)).astype(np.float32)
        regen = (self.since_damage >= U.SHIELD_REGEN_DELAY_S) & ~dead & active[:, None]
        if self.sh_max.any():
            self.sh = np.where(regen, np.minimum(sh + U.SHIELD_REGEN_PER_S * dt, self.sh_max), sh)
        if self.is_healer.any():
            self.energy = np.where(actor & self.is_healer,
                                   np.minimum(self.energy + U.ENERGY_REGEN_PER_S * dt, U.ENERGY_MAX),
                                   self.energy).astype(np.float32)

        # 5. movement.
        actor = actor & ~dead
        chase = engaged & ~in_range & ~dead
        free_walk = actor & ((self.mode == MOVE) | ((self.mode == AMOVE) & ~has))
        moving = (chase | free_walk) & (self.speed > 0)
        if not moving.any():
            return
        tpos = pos[rows, tclip]
        goal = np.where(chase[..., None], tpos, self.goal)
        vec = goal - pos
        length = np.sqrt((vec * vec).sum(-1))
        limit = np.where(chase, t_edge - self.wrange + 0.01, length)
        stride = np.minimum(self.speed * dt, np.maximum(limit, 0.0))
        if self.has_terrain:
            vec = self._waypoint_vectors(pos, goal, vec, length)
            length = np.sqrt((vec * vec).sum(-1))
        step = vec * (stride * moving / np.maximum(length, 1e-6))[..., None]
        arrived = (self.mode == MOVE) & moving & (length <= self.speed * dt)
        self._move_units(step.astype(np.float32))
        if arrived.any():
            self.mode[arrived] = IDLE

    def _lance_hits(self, fire, tclip, alive) -> np.ndarray:
        """Extra hits ``[B, n_colossi, N]`` of colossus lances on units near the line."""
        li = self.lance_idx
        rows = self._rows
        p_c = self.pos[:, li]  # [B, C, 2]
        t = tclip[:, li]
        p_t = self.pos[rows, t]
        d = p_t - p_c
        d /= np.maximum(np.sqrt((d * d).sum(-1, keepdims=True)), 1e-6)
        rel = self.pos[:, None, :, :] - p_t[:, :, None, :]  # [B, C, N, 2]
        along = np.abs(rel[..., 0] * d[..., None, 0] + rel[..., 1] * d[..., None, 1])
        across = np.abs(rel[..., 0] * d[..., None, 1] - rel[..., 1] * d[..., None, 0])
        near = (along <= self.radius + U.LANCE_HALF_WIDTH) & (across <= U.LANCE_HALF_LENGTH)
        not_target = t[:, :, None] != self._arange
        hit = fire[:, li, None] & near & not_target & alive[:, None, :] & self.lance_enemy_mask
        return hit * self.hits[li][None, :, None]

    def _waypoint_vectors(self, pos, goal, vec, length) -> np.ndarray:
        """Direction of travel on maps with terrain: toward the flow-field waypoint."""
        h = self.height
        cell = self._cell_index(pos)
        gcell = self._cell_index(goal)
        out = vec
        for flow, mask in ((self.flow_ground, ~self.unit_cliff & ~self.is_air),
                           (self.flow_cliff, self.unit_cliff)):
            if flow is None or not mask.any():
                continue
            wp = flow.next_cell[gcell, cell]
            wp_pos = np.stack([wp // h + 0.5, wp % h + 0.5], axis=-1).astype(np.float32)
            direct = (wp == cell) | (length < 1.5) | (wp == gcell)
            use = mask & ~direct
            out = np.where(use[..., None], wp_pos - pos, out)
        return out

    def _cell_index(self, p: np.ndarray) -> np.ndarray:
        ix = np.clip(p[..., 0].astype(np.int64), 0, self.width - 1)
        iy = np.clip(p[..., 1].astype(np.int64), 0, self.height - 1)
        return ix * self.height + iy

    def passable_at(self, p: np.ndarray, cliff_walker: np.ndarray,
                    air: Optional[np.ndarray] = None) -> np.ndarray:
        """Whether points ``p`` ([..., 2]) are inside the map and walkable for each unit."""
        x, y = p[..., 0], p[..., 1]
        inside = (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)
        if not self.has_terrain:
            return inside
        ix = np.clip(x.astype(np.int64), 0, self.width - 1)
        iy = np.clip(y.astype(np.int64), 0, self.height - 1)
        ok = np.where(cliff_walker, self.pass_cliff[ix, iy], self.pass_ground[ix, iy])
        if air is not None:
            ok = ok | air
        return inside & ok

    def _move_units(self, step: np.ndarray) -> None:
        """Apply displacements, sliding along walls on terrain maps and clamping to the map."""
        pos = self.pos
        new = pos + step
        if self.has_terrain:
            ok = self.passable_at(new, self.unit_cliff, self.is_air)
            if not ok.all():
                alt_x = new.copy()
                alt_x[..., 1] = pos[..., 1]
                alt_y = new.copy()
                alt_y[..., 0] = pos[..., 0]
                ok_x = self.passable_at(alt_x, self.unit_cliff, self.is_air)
                ok_y = self.passable_at(alt_y, self.unit_cliff, self.is_air)
                # Prefer sliding along the axis with the larger displacement.
                x_first = np.abs(step[..., 0]) >= np.abs(step[..., 1])
                slide = np.where((ok_x & x_first)[..., None] | (ok_x & ~ok_y)[..., None],
                                 alt_x, alt_y)
                new = np.where(ok[..., None], new,
                               np.where((ok_x | ok_y)[..., None], slide, pos))
        np.clip(new[..., 0], 0.01, self.width - 0.01, out=new[..., 0])
        np.clip(new[..., 1], 0.01, self.height - 0.01, out=new[..., 1])
        self.pos[...] = new
