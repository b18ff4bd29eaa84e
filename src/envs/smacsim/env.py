"""``smacsim``: an SC2-free, vectorised, SMAC-compatible combat simulator.

Two front ends over one engine:

* ``BatchedSMACSim(map_name, n_envs, seed, **smac_kwargs)`` implements ``BatchedMultiAgentEnv``:
  arrays in, arrays out, ``n_envs`` copies of the map stepped at once.
* ``SMACSim(map_name, seed, **smac_kwargs)`` is SMAC's per-environment ``MultiAgentEnv`` API
  (``smac.env.StarCraft2Env``), a view over a ``BatchedSMACSim`` with ``n_envs=1``.

Time base: one step = ``step_mul`` game loops at 22.4 loops/s (default 8 loops = 0.357 s, real
SMAC's), simulated in sub-ticks of 4 loops. Weapon ranges are edge-to-edge (centre distance minus
both radii); SMAC's availability radius (6) and sight (9) are centre distances. See ``engine.py``
for the combat rules and ``features.py`` for the observation/state layout.

Constructor options (SMAC's names and defaults, ``docs/smac.md`` section 2):

* implemented: step_mul, move_amount, seed, continuing_episode, obs_all_health, obs_own_health,
  obs_last_action, obs_pathing_grid, obs_terrain_height (simple versions, see features.py),
  obs_instead_of_state, obs_timestep_number, state_last_action, state_timestep_number,
  reward_sparse, reward_only_positive, reward_death_value, reward_win, reward_defeat,
  reward_negative_scale, reward_scale, reward_scale_rate, heuristic_ai (agents' actions are
  replaced by ``heuristic_actions()``), debug (logs actions and rewards at DEBUG level).
* accepted, no effect: replay_dir, replay_prefix (no replays exist; ``save_replay`` is a no-op
  and a warning says so when a directory is given).
* only the default accepted (anything else raises ``ValueError``): difficulty="7" (the opponent
  is the scripted attack-move AI of docs/smac.md section 9), game_version=None, heuristic_rest=False.
* extra: ``flag_invalid_steps=False``. When True, the spec declares the step flag ``"invalid"``
  and a step is flagged (``BatchedStep.flags["invalid"]``, ``info["invalid_step"]``) if every ally alive at the start
  of the step was ordered to stop (action 1) and the allies lost health or shields during it.

Stats: ``battles_draw`` counts episodes where both teams died on the same step (real SMAC
reports its timeout count under that key); timeouts are counted under ``timeouts``.
Obs quirk: a medivac's enemy "attackable" flags are 0 (its attack actions are heals).
"""

from __future__ import annotations

import logging
import warnings
from typing import Dict, List, Optional

import numpy as np

from ..multiagentenv import BatchedMultiAgentEnv, BatchedStep, MultiAgentEnv
from ..spec import EnvSpec, smac_layouts
from .engine import CombatEngine
from .features import FeatureBuilder, FeatureFlags
from .maps import get_map

log = logging.getLogger(__name__)

SMAC_DEFAULTS: Dict[str, object] = dict(
    step_mul=8, move_amount=2, difficulty="7", game_version=None, continuing_episode=False,
    obs_all_health=True, obs_own_health=True, obs_last_action=False, obs_pathing_grid=False,
    obs_terrain_height=False, obs_instead_of_state=False, obs_timestep_number=False,
    state_last_action=True, state_timestep_number=False, reward_sparse=False,
    reward_only_positive=True, reward_death_value=10, reward_win=200, reward_defeat=0,
    reward_negative_scale=0.5, reward_scale=True, reward_scale_rate=20, replay_dir="",
    replay_prefix="", heuristic_ai=False, heuristic_rest=False, debug=False,
)
EXTRA_DEFAULTS: Dict[str, object] = dict(flag_invalid_steps=False)

_BOOL_KEYS = [k for k, v in {**SMAC_DEFAULTS, **EXTRA_DEFAULTS}.items() if isinstance(v, bool)]


def resolve_options(kwargs: Dict[str, object]) -> Dict[str, object]:
    """SMAC's defaults updated with ``kwargs``; unknown or unsupported values raise."""
    known = {**SMAC_DEFAULTS, **EXTRA_DEFAULTS}
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise TypeError(
            f"Unknown smacsim option(s) {', '.join(map(repr, unknown))}; "
            f"expected one of: map_name, n_envs, seed, {', '.join(sorted(known))}."
        )
    opts = {**known, **kwargs}
    for k in _BOOL_KEYS:
        if not isinstance(opts[k], (bool, np.bool_)):
            raise TypeError(f"Option {k!r} must be a bool, got {opts[k]!r}.")
    if str(opts["difficulty"]) != "7":
        raise ValueError(f"difficulty={opts['difficulty']!r} is not supported: smacsim has one "
                         "scripted opponent (docs/smac.md section 9); leave difficulty at '7'.")
    if opts["game_version"] is not None:
        raise ValueError(f"game_version={opts['game_version']!r} needs the real StarCraft II; "
                         "smacsim only accepts game_version=None.")
    if opts["heuristic_rest"]:
        raise ValueError("heuristic_rest=True is not supported by smacsim; use heuristic_ai=True "
                         "alone (the heuristic already moves toward out-of-range targets).")
    if not (isinstance(opts["step_mul"], (int, np.integer)) and opts["step_mul"] >= 1):
        raise ValueError(f"step_mul must be a positive int (game loops), got {opts['step_mul']!r}")
    if not float(opts["move_amount"]) > 0:
        raise ValueError(f"move_amount must be > 0, got {opts['move_amount']!r}")
    if not float(opts["reward_scale_rate"]) > 0:
        raise ValueError(f"reward_scale_rate must be > 0, got {opts['reward_scale_rate']!r}")
    if opts["replay_dir"]:
        warnings.warn("smacsim writes no replays; replay_dir/replay_prefix are ignored.")
    return opts


class BatchedSMACSim(BatchedMultiAgentEnv):
    """``n_envs`` copies of a SMAC map, stepped together with arrays."""

    def __init__(self, map_name: str = "8m", n_envs: int = 1, seed: Optional[int] = None,
                 **smac_kwargs):
        if int(n_envs) < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs!r}")
        self.opts = resolve_options(smac_kwargs)
        self._smac_kwargs = dict(smac_kwargs)
        self.spec = get_map(map_name)
        self.map_name = map_name
        self.n_envs = int(n_envs)
        self.n_agents = self.spec.n_agents
        self.n_enemies = self.spec.n_enemies
        self.n_actions = 6 + self.n_enemies
        self.episode_limit = self.spec.episode_limit
        self.continuing_episode = bool(self.opts["continuing_episode"])
        self.engine = CombatEngine(self.spec, self.n_envs, step_mul=int(self.opts["step_mul"]))
        flags = FeatureFlags(**{k: self.opts[k] for k in FeatureFlags.__dataclass_fields__})
        self.features = FeatureBuilder(self.engine, flags, self.n_actions, self.episode_limit)
        self.obs_size = self.features.obs_dim
        self.state_size = self.features.state_dim
        e = self.engine
        na = self.n_agents
        self.max_reward = float(self.n_enemies * self.opts["reward_death_value"]
                                + self.opts["reward_win"]
                                + (e.hp_max[na:] + e.sh_max[na:]).sum())
        self.seed_value = seed
        children = np.random.SeedSequence(seed).spawn(self.n_envs)
        self._rngs = [np.random.default_rng(s) for s in children]

        B = self.n_envs
        self._steps = np.zeros(B, np.int64)
        self._ended = np.zeros(B, bool)
        self._last_action = np.zeros((B, na, self.n_actions), np.float32)
        self._heur_target = np.full((B, na), -1, np.int64)
        self._eye = np.eye(self.n_actions, dtype=np.float32)
        self._fighter = ~e.is_healer
        self._rows = np.arange(B)[:, None]
        self._agent_cols = np.arange(na)[None, :]
        self._avail: Optional[np.ndarray] = None
        self._obs: Optional[np.ndarray] = None
        self.battles_won = self.battles_game = self.battles_draw = self.timeouts = 0
        self.reset()

    @classmethod
    def concatenate(cls, envs: "list[BatchedSMACSim]") -> "BatchedSMACSim":
        """One environment whose environments are those of ``envs`` (same map and options), one
        after another, each continuing its own random stream. Every environment's episodes
        depend only on its own stream and actions, so they are exactly the ones it would play
        in its own batch; the result starts unreset (reset it before use)."""
        first = envs[0]
        for env in envs[1:]:
            if not isinstance(env, cls) or env.map_name != first.map_name or env.opts != first.opts:
                raise ValueError("concatenate needs environments of one map with the same options")
        merged = cls(first.map_name, sum(env.n_envs for env in envs), seed=None, **first._smac_kwargs)
        merged.set_rng_state([state for env in envs for state in env.get_rng_state()])
        merged.seed_value = [env.seed_value for env in envs]
        return merged

    # ------------------------------------------------------------------ episodes
    def reset(self, env_ids: Optional[np.ndarray] = None) -> None:
        ids = np.arange(self.n_envs) if env_ids is None else np.asarray(env_ids, np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_envs):
            raise ValueError(f"env_ids must be in [0, {self.n_envs}), got {ids.tolist()}")
        self.engine.reset(ids, self._rngs)
        self._after_reset(ids)

    def _after_reset(self, ids: np.ndarray) -> None:
        self._steps[ids] = 0
        self._ended[ids] = False
        self._last_action[ids] = 0.0
        self._heur_target[ids] = -1
        self._invalidate()

    def place_units(self, env_id: int, ally_pos, enemy_pos, ally_health=None, enemy_health=None,
                    ally_shield=None, enemy_shield=None, ally_energy=None,
                    enemy_energy=None) -> None:
        """Start a hand-made scenario in environment ``env_id`` (tests, debugging).

        Positions are ``[n_agents, 2]`` / ``[n_enemies, 2]``; health/shield/energy default to
        full (energy: medivac start energy). A unit with health 0 starts dead.
        """
        na, ne = self.n_agents, self.n_enemies
        pos = np.concatenate([np.asarray(ally_pos, np.float32).reshape(na, 2),
                              np.asarray(enemy_pos, np.float32).reshape(ne, 2)])

        def both(a, en, default):
            a = default[:na] if a is None else np.asarray(a, np.float32).reshape(na)
            en = default[na:] if en is None else np.asarray(en, np.float32).reshape(ne)
            return np.concatenate([a, en])[None]

        e = self.engine
        start_energy = np.where(e.is_healer, 50.0, 0.0).astype(np.float32)
        e.set_units([env_id], pos[None], hp=both(ally_health, enemy_health, e.hp_max),
                    sh=both(ally_shield, enemy_shield, e.sh_max),
                    energy=both(ally_energy, enemy_energy, start_energy))
        self._after_reset(np.array([env_id]))

    def _invalidate(self) -> None:
        self._avail = None
        self._obs = None
        self.features.invalidate()

    # ------------------------------------------------------------------ step
    def step(self, actions, active: Optional[np.ndarray] = None) -> BatchedStep:
        B, na = self.n_envs, self.n_agents
        actions = np.asarray(actions)
        if actions.shape != (B, na):
            raise ValueError(f"actions must have shape ({B}, {na}), got {actions.shape}")
        if not np.issubdtype(actions.dtype, np.integer):
            as_int = actions.astype(np.int64)
            if not np.array_equal(as_int, actions):
                raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
            actions = as_int
        actions = actions.astype(np.int64, copy=False)
        active = np.ones(B, bool) if active is None else np.asarray(active, bool).reshape(B)
        stale = active & self._ended
        if stale.any():
            raise ValueError(f"Environment(s) {np.flatnonzero(stale).tolist()} ended their "
                             "episode; reset them before stepping.")
        if self.opts["heuristic_ai"]:
            actions = np.where(active[:, None], self.heuristic_actions(), 0)
        self._check_actions(actions, active)

        e = self.engine
        alive0 = e.hp > 0
        total0 = e.hp + e.sh
        e.issue_agent_orders(actions, active, float(self.opts["move_amount"]))
        e.advance(active)
        self._steps += active
        self._last_action = np.where(active[:, None, None], self._eye[actions], self._last_action)

        alive1 = e.hp > 0
        total1 = e.hp + e.sh
        died = alive0 & ~alive1
        lost = np.where(alive0, total0 - total1, 0.0)
        reward = self._reward(lost, died)

        # Medivacs alone do not keep a team in the battle.
        allies_left = (alive1[:, :na] & self._fighter[:na]).any(1)
        enemies_left = (alive1[:, na:] & self._fighter[na:]).any(1)
        won = active & allies_left & ~enemies_left
        lost_battle = active & ~allies_left & enemies_left
        draw = active & ~allies_left & ~enemies_left
        terminated = won | lost_battle | draw
        timeout = active & ~terminated & (self._steps >= self.episode_limit)

        o = self.opts
        if o["reward_sparse"]:
            reward = np.where(won, 1.0, np.where(lost_battle, -1.0, 0.0))
        else:
            reward = reward + won * float(o["reward_win"]) + lost_battle * float(o["reward_defeat"])
        if o["reward_scale"]:
            reward = reward / (self.max_reward / float(o["reward_scale_rate"]))
        reward = np.where(active, reward, 0.0).astype(np.float32)

        ended = terminated | timeout
        if ended.any():
            self._ended |= ended
            self.battles_game += int(ended.sum())
            self.battles_won += int(won.sum())
            self.battles_draw += int(draw.sum())
            self.timeouts += int(timeout.sum())

        flags: Dict[str, np.ndarray] = {}
        if o["flag_invalid_steps"]:
            live = alive0[:, :na]
            all_stop = ((actions == 1) | ~live).all(1) & live.any(1)
            hurt = (e.damage_taken[:, :na] > 0).any(1)
            flags["invalid"] = active & all_stop & hurt
        dead_allies = (~alive1[:, :na]).sum(1) * active
        dead_enemies = (~alive1[:, na:]).sum(1) * active
        self._invalidate()
        if o["debug"]:
            log.debug("actions=%s reward=%s terminated=%s timeout=%s", actions.tolist(),
                      reward.tolist(), terminated.tolist(), timeout.tolist())
        return BatchedStep(reward=reward, terminated=terminated, truncated=timeout, battle_won=won,
                           dead_allies=dead_allies, dead_enemies=dead_enemies, flags=flags)

    def _reward(self, lost: np.ndarray, died: np.ndarray) -> np.ndarray:
        """SMAC's dense reward before the win/defeat bonus and scaling, ``[B]`` float64."""
        o, na = self.opts, self.n_agents
        delta_enemy = lost[:, na:].sum(1, dtype=np.float64)
        delta_deaths = float(o["reward_death_value"]) * died[:, na:].sum(1)
        if o["reward_only_positive"]:
            return np.abs(delta_enemy + delta_deaths)
        neg = float(o["reward_negative_scale"])
        delta_deaths = delta_deaths - float(o["reward_death_value"]) * neg * died[:, :na].sum(1)
        delta_ally = neg * lost[:, :na].sum(1, dtype=np.float64)
        return delta_enemy + delta_deaths - delta_ally

    def _check_actions(self, actions: np.ndarray, active: np.ndarray) -> None:
        avail = self.get_avail_actions()
        in_range = (actions >= 0) & (actions < self.n_actions)
        clipped = np.where(in_range, actions, 0)
        ok = in_range & avail[self._rows, self._agent_cols, clipped]
        bad = ~ok & active[:, None]
        if bad.any():
            b, i = np.argwhere(bad)[0]
            raise ValueError(
                f"Environment {b}, agent {i}: action {int(actions[b, i])} is not available; "
                f"available actions: {np.flatnonzero(avail[b, i]).tolist()}."
            )

    # ------------------------------------------------------------------ arrays
    def get_avail_actions(self) -> np.ndarray:
        if self._avail is None:
            self._avail = self.features.avail_actions()
        return self._avail

    def get_obs(self) -> np.ndarray:
        if self._obs is None:
            self._obs = self.features.observations(self.get_avail_actions(), self._last_action,
                                                   self._steps)
        return self._obs

    def get_state(self) -> np.ndarray:
        obs = self.get_obs() if self.opts["obs_instead_of_state"] else None
        return self.features.state(obs, self._last_action, self._steps)

    def get_env_info(self) -> dict:
        info = {
            "state_shape": self.state_size,
            "obs_shape": self.obs_size,
            "n_actions": self.n_actions,
            "n_agents": self.n_agents,
            "episode_limit": self.episode_limit,
        }
        if self.opts["flag_invalid_steps"]:
            info["flags_invalid_steps"] = True  # legacy form of the spec's step_flags=("invalid",)
        return info

    def get_spec(self) -> EnvSpec:
        """Sizes, the ``"invalid"`` flag when ``flag_invalid_steps``, SMAC's no-op (0) for dead
        agents, and SMAC's observation/state layout."""
        o = self.opts
        obs_layout, state_layout, last_action_block = smac_layouts(
            self, self.n_agents, self.n_actions, self.obs_size, self.state_size,
            obs_instead_of_state=bool(o["obs_instead_of_state"]),
            state_last_action=bool(o["state_last_action"]),
            state_timestep_number=bool(o["state_timestep_number"]),
        )
        return EnvSpec(
            n_agents=self.n_agents, n_actions=self.n_actions, obs_shape=self.obs_size,
            state_shape=self.state_size, episode_limit=self.episode_limit,
            step_flags=("invalid",) if o["flag_invalid_steps"] else (), noop_action=0,
            obs_layout=obs_layout, state_layout=state_layout, state_last_action=last_action_block,
        )

    # SMAC's feature-size methods (own features include the timestep, as in SMAC).
    def get_obs_move_feats_size(self) -> int:
        return self.features.move_dim

    def get_obs_enemy_feats_size(self):
        return self.n_enemies, self.features.nf_en

    def get_obs_ally_feats_size(self):
        return self.n_agents - 1, self.features.nf_al

    def get_obs_own_feats_size(self) -> int:
        return self.features.own_dim + int(bool(self.opts["obs_timestep_number"]))

    def get_ally_num_attributes(self) -> int:
        return self.features.st_al

    def get_enemy_num_attributes(self) -> int:
        return self.features.st_en

    def get_stats(self) -> dict:
        return {
            "battles_won": self.battles_won,
            "battles_game": self.battles_game,
            "battles_draw": self.battles_draw,
            "win_rate": self.battles_won / self.battles_game if self.battles_game else 0.0,
            "timeouts": self.timeouts,
            "restarts": 0,
        }

    @property
    def episode_steps(self) -> np.ndarray:
        return self._steps.copy()

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ scripted policy
    def get_rng_state(self) -> list:
        """The random-number state of every environment (plain Python values, for checkpoints)."""
        return [rng.bit_generator.state for rng in self._rngs]

    def set_rng_state(self, states: list) -> None:
        if len(states) != len(self._rngs):
            raise ValueError(f"got random states for {len(states)} environments, expected {len(self._rngs)}")
        for rng, state in zip(self._rngs, states):
            rng.bit_generator.state = state

    def heuristic_actions(self) -> np.ndarray:
        """smacsim's focus-fire script, int ``[n_envs, n_agents]`` (not SMAC's heuristic, whose
        per-agent target choice is ``heuristics.SMACHeuristic``).

        All agents focus one enemy (the alive enemy nearest to the team's centre), kept until it
        dies; an agent attacks it when the attack is available, else moves toward it.
        Medivacs heal the nearest damaged ally, else follow the nearest ally.
        """
        e, na = self.engine, self.n_agents
        avail = self.get_avail_actions()
        rows = np.arange(self.n_envs)[:, None]
        alive = e.hp > 0
        rel = e.pos[:, None, :, :] - e.pos[:, :na, None, :]  # [B, na, N, 2]
        dist = np.sqrt((rel * rel).sum(-1))
        # Fighters: the whole team focuses one enemy, the one nearest to the team's centre,
        # and keeps it until it dies.
        alive_a = alive[:, :na]
        centre = (e.pos[:, :na] * alive_a[..., None]).sum(1) / np.maximum(
            alive_a.sum(1), 1)[:, None]
        gap = e.pos[:, na:] - centre[:, None, :]
        # Air units (medivacs) are left out when choosing the team's focus: not every unit can
        # shoot them.
        focusable = alive[:, na:] & ~e.is_air[na:]
        d_en = np.where(focusable, np.sqrt((gap * gap).sum(-1)), np.inf)  # [B, ne]
        tgt = self._heur_target[:, 0]
        keep = (tgt >= 0) & focusable[rows[:, 0], np.maximum(tgt, 0)]
        nearest = d_en.argmin(1)
        tgt = np.where(keep, tgt, np.where(np.isfinite(d_en.min(1)), nearest, -1))
        tgt = np.broadcast_to(tgt[:, None], (self.n_envs, na))
        target_unit = np.where(tgt >= 0, tgt + na, -1)
        want_attack = tgt >= 0
        approach_ok = np.ones_like(want_attack)
        act_idx = np.maximum(tgt, 0)
        # Medivacs: nearest damaged non-medivac ally, else follow the nearest ally.
        healer = e.is_healer[:na]
        if healer.any():
            damaged = alive[:, :na] & (e.hp[:, :na] < e.hp_max[:na]) & ~healer
            others = alive[:, :na] & ~healer
            d_al = dist[:, :, :na]
            d_dmg = np.where(damaged[:, None, :], d_al, np.inf)
            d_oth = np.where(others[:, None, :], d_al, np.inf)
            heal_t = d_dmg.argmin(2)
            has_dmg = np.isfinite(d_dmg.min(2))
            follow_t = d_oth.argmin(2)
            far = d_oth.min(2) > 3.0
            h_unit = np.where(has_dmg, heal_t, np.where(np.isfinite(d_oth.min(2)), follow_t, -1))
            target_unit = np.where(healer, h_unit, target_unit)
            want_attack = np.where(healer, has_dmg, want_attack)
            approach_ok = np.where(healer, has_dmg | far, approach_ok)
            act_idx = np.where(healer, np.maximum(heal_t, 0), act_idx)
        self._heur_target = np.where(healer, -1, tgt)

        attack_action = 6 + act_idx
        can_attack = want_attack & np.take_along_axis(avail, attack_action[..., None], 2)[..., 0]
        # Move toward the target: the axis with the larger gap first, then the other one.
        tpos = e.pos[rows, np.maximum(target_unit, 0)]
        vec = tpos - e.pos[:, :na]
        horiz = np.abs(vec[..., 0]) >= np.abs(vec[..., 1])
        ns = np.where(vec[..., 1] >= 0, 2, 3)
        ew = np.where(vec[..., 0] >= 0, 4, 5)
        first = np.where(horiz, ew, ns)
        second = np.where(horiz, ns, ew)
        ok1 = np.take_along_axis(avail, first[..., None], 2)[..., 0]
        ok2 = np.take_along_axis(avail, second[..., None], 2)[..., 0]
        move = np.where(ok1, first, np.where(ok2, second, 1))
        act = np.where(can_attack, attack_action,
                       np.where((target_unit >= 0) & approach_ok, move, 1))
        return np.where(alive[:, :na], act, 0).astype(np.int64)


class SMACSim(MultiAgentEnv):
    """SMAC's per-environment API over a one-environment ``BatchedSMACSim``."""

    def __init__(self, map_name: str = "8m", seed: Optional[int] = None, **smac_kwargs):
        self.batched = BatchedSMACSim(map_name=map_name, n_envs=1, seed=seed, **smac_kwargs)
        b = self.batched
        self.map_name = map_name
        self.n_agents = b.n_agents
        self.n_enemies = b.n_enemies
        self.n_actions = b.n_actions
        self.episode_limit = b.episode_limit
        self.max_reward = b.max_reward
        self.continuing_episode = b.continuing_episode
        self._seed = seed

    def reset(self):
        self.batched.reset()
        return self.get_obs(), self.get_state()

    def step(self, actions):
        acts = np.asarray([int(a) for a in np.asarray(actions).ravel()], np.int64)[None]
        out = self.batched.step(acts)
        info = {
            "battle_won": bool(out.battle_won[0]),
            "dead_allies": int(out.dead_allies[0]),
            "dead_enemies": int(out.dead_enemies[0]),
        }
        if out.truncated[0] and self.continuing_episode:
            info["episode_limit"] = True
        if "invalid" in out.flags:
            info["invalid_step"] = bool(out.flags["invalid"][0])
        return float(out.reward[0]), bool(out.terminated[0] or out.truncated[0]), info

    def get_obs(self) -> List[np.ndarray]:
        return list(self.batched.get_obs()[0])

    def get_obs_agent(self, agent_id: int) -> np.ndarray:
        return self.batched.get_obs()[0, agent_id]

    def get_obs_size(self) -> int:
        return self.batched.obs_size

    def get_state(self) -> np.ndarray:
        return self.batched.get_state()[0]

    def get_state_size(self) -> int:
        return self.batched.state_size

    def get_avail_actions(self) -> List[List[int]]:
        return self.batched.get_avail_actions()[0].astype(int).tolist()

    def get_avail_agent_actions(self, agent_id: int) -> List[int]:
        return self.batched.get_avail_actions()[0, agent_id].astype(int).tolist()

    def get_total_actions(self) -> int:
        return self.n_actions

    def get_spec(self) -> EnvSpec:
        return self.batched.get_spec()

    def get_obs_move_feats_size(self) -> int:
        return self.batched.get_obs_move_feats_size()

    def get_obs_enemy_feats_size(self):
        return self.batched.get_obs_enemy_feats_size()

    def get_obs_ally_feats_size(self):
        return self.batched.get_obs_ally_feats_size()

    def get_obs_own_feats_size(self) -> int:
        return self.batched.get_obs_own_feats_size()

    def get_ally_num_attributes(self) -> int:
        return self.batched.get_ally_num_attributes()

    def get_enemy_num_attributes(self) -> int:
        return self.batched.get_enemy_num_attributes()

    def get_stats(self) -> dict:
        return self.batched.get_stats()

    def get_rng_state(self) -> list:
        return self.batched.get_rng_state()

    def set_rng_state(self, states: list) -> None:
        self.batched.set_rng_state(states)

    def heuristic_actions(self) -> List[int]:
        return self.batched.heuristic_actions()[0].tolist()

    def place_units(self, *args, **kwargs) -> None:
        self.batched.place_units(0, *args, **kwargs)

    def seed(self):
        return self._seed

    def save_replay(self) -> None:
        """No replays exist without StarCraft II; a no-op kept for API compatibility."""

    def close(self) -> None:
        self.batched.close()
