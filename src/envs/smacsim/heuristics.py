"""SMAC's scripted heuristic (``heuristic_ai=True`` in ``smac.env.StarCraft2Env``) as a policy over
arrays, vectorised over environments, usable with any SMAC-like simulator (smacsim, SMAClite).

What SMAC does (``get_agent_action_heuristic``): every agent picks its *own* target, the alive
enemy nearest to it (centre distance) that it can damage, and keeps it until it dies. A medivac
picks the nearest damaged (health below maximum) non-medivac ally and keeps it until it dies or is
fully healed. SMAC then issues the raw game attack/heal order on that unit, bypassing action
availability: the game walks the unit into weapon range. With no target it issues nothing.

How it is expressed here, in SMAC's action space (the same expression in every simulator, so
comparisons play the same policy): when the attack/heal action on the target is available
(target within SMAC's shoot range 6) the agent takes it, and the simulator's attack order closes
the remaining distance to weapon range; otherwise the agent moves ``move_amount`` toward the
target along the axis with the larger gap (SMAC's own ``heuristic_rest`` fallback), the other axis
if that move is blocked, else stops. With no target the agent stops (SMAC issues no order, which
for an idle unit is the same). Dead agents take the no-op (0). See docs/smac.md.

This differs from ``BatchedSMACSim.heuristic_actions()``, smacsim's focus-fire script where the
whole team shoots the enemy nearest to its centre.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

NOOP, STOP, NORTH, SOUTH, EAST, WEST = range(6)
N_NON_ATTACK = 6


def _move_toward(vec: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """Move action along the larger gap of ``vec`` ([B, na, 2]), else the other axis, else stop."""
    horizontal = np.abs(vec[..., 0]) > np.abs(vec[..., 1])  # SMAC: ties go north/south
    north_south = np.where(vec[..., 1] > 0, NORTH, SOUTH)
    east_west = np.where(vec[..., 0] > 0, EAST, WEST)
    first = np.where(horizontal, east_west, north_south)
    second = np.where(horizontal, north_south, east_west)
    ok_first = np.take_along_axis(avail, first[..., None], 2)[..., 0]
    ok_second = np.take_along_axis(avail, second[..., None], 2)[..., 0]
    return np.where(ok_first, first, np.where(ok_second, second, STOP))


class SMACHeuristic:
    """SMAC's per-agent "nearest enemy, kept until it dies" policy for ``n_envs`` environments.

    Call it once per step with the current unit arrays; ``reset(env_ids)`` forgets the kept
    targets of environments that start a new episode.
    """

    def __init__(self, n_envs: int, n_agents: int):
        if n_envs < 1 or n_agents < 1:
            raise ValueError(f"n_envs and n_agents must be >= 1, got {n_envs}, {n_agents}")
        self.n_envs, self.n_agents = int(n_envs), int(n_agents)
        # Kept target per agent: an enemy index for fighters, an ally index for medivacs; -1 none.
        self.targets = np.full((self.n_envs, self.n_agents), -1, np.int64)

    def reset(self, env_ids: Optional[np.ndarray] = None) -> None:
        ids = slice(None) if env_ids is None else np.asarray(env_ids, np.int64)
        self.targets[ids] = -1

    def __call__(self, pos: np.ndarray, health: np.ndarray, health_max: np.ndarray,
                 is_healer: np.ndarray, can_attack: np.ndarray, avail: np.ndarray) -> np.ndarray:
        """Actions, int ``[n_envs, n_agents]``.

        pos ``[B, N, 2]`` and health ``[B, N]`` list the allies first (N = allies + enemies; a
        unit is alive when its health is > 0); health_max ``[N]``; is_healer ``[n_agents]``;
        can_attack ``[n_agents, n_enemies]`` is whether the ally's weapon can damage the enemy
        (marauders cannot hit medivacs); avail ``[B, n_agents, n_actions]`` bool.
        """
        B, na = self.n_envs, self.n_agents
        pos, health = np.asarray(pos, np.float64), np.asarray(health, np.float64)
        avail = np.asarray(avail, bool)
        if pos.shape[:2] != health.shape or pos.shape[0] != B or avail.shape[:2] != (B, na):
            raise ValueError(f"expected pos [{B}, N, 2], health [{B}, N], avail [{B}, {na}, A]; "
                             f"got {pos.shape}, {health.shape}, {avail.shape}")
        ne = pos.shape[1] - na
        if np.shape(can_attack) != (na, ne):
            raise ValueError(f"can_attack must have shape ({na}, {ne}), got {np.shape(can_attack)}")
        rows = np.arange(B)[:, None]
        alive = health > 0
        gap = pos[:, None, :, :] - pos[:, :na, None, :]  # [B, na, N, 2]: agent -> unit
        dist = np.sqrt((gap * gap).sum(-1))
        healer = np.asarray(is_healer, bool)

        # Fighters: own nearest damageable enemy, kept while alive.
        enemy_ok = alive[:, None, na:] & np.asarray(can_attack, bool)[None]
        d_enemy = np.where(enemy_ok, dist[:, :, na:], np.inf)
        kept = self.targets
        keep_enemy = (kept >= 0) & (kept < ne) & np.take_along_axis(
            enemy_ok, np.clip(kept, 0, ne - 1)[..., None], 2)[..., 0]
        new_enemy = np.where(np.isfinite(d_enemy.min(2)), d_enemy.argmin(2), -1)
        enemy_target = np.where(keep_enemy, kept, new_enemy)

        # Medivacs: nearest damaged non-medivac ally, kept while alive and damaged.
        damaged = alive[:, :na] & (health[:, :na] < np.asarray(health_max)[:na]) & ~healer
        ally_ok = np.broadcast_to(damaged[:, None, :], (B, na, na))
        d_ally = np.where(ally_ok, dist[:, :, :na], np.inf)
        keep_ally = (kept >= 0) & (kept < na) & np.take_along_axis(
            ally_ok, np.clip(kept, 0, na - 1)[..., None], 2)[..., 0]
        new_ally = np.where(np.isfinite(d_ally.min(2)), d_ally.argmin(2), -1)
        ally_target = np.where(keep_ally, kept, new_ally)

        target = np.where(healer, ally_target, enemy_target)
        target_unit = np.where(healer, target, target + na)  # column in pos/health
        self.targets = np.where(alive[:, :na], target, -1)

        action_on_target = N_NON_ATTACK + np.maximum(target, 0)
        in_space = action_on_target < avail.shape[2]
        attack_ok = (target >= 0) & in_space & np.take_along_axis(
            avail, np.minimum(action_on_target, avail.shape[2] - 1)[..., None], 2)[..., 0]
        to_target = pos[rows, np.maximum(target_unit, 0)] - pos[:, :na]
        move = _move_toward(to_target, avail)
        act = np.where(attack_ok, action_on_target, np.where(target >= 0, move, STOP))
        return np.where(alive[:, :na], act, NOOP).astype(np.int64)


def smacsim_inputs(env) -> dict:
    """The keyword arguments of ``SMACHeuristic.__call__`` read from a ``BatchedSMACSim``."""
    e, na = env.engine, env.n_agents
    return dict(pos=e.pos, health=e.hp, health_max=e.hp_max, is_healer=e.is_healer[:na],
                can_attack=e.can_shoot[:na, na:], avail=env.get_avail_actions())
