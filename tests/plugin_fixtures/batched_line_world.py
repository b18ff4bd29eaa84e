"""``BatchedLineWorld``: ``LineWorld``'s rules as a native ``BatchedMultiAgentEnv``.

It declares an explicit alive mask (``provides_alive``, ``get_alive_agents``; no no-op index),
the step flag ``invalid`` (every walking agent stayed) and, with ``auto_reset=True``, starts the
next episode inside ``step`` and hands over the final arrays. ``late`` reports the time limit
that many steps late; ``declare_auto_reset=False`` auto-resets without declaring it; arrays are
handed out read-only (borrowed, see docs/environments.md).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from qmixlab.envs import BatchedMultiAgentEnv, BatchedStep, EnvSpec

NOOP, STAY, LEFT, RIGHT = 0, 1, 2, 3


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class BatchedLineWorld(BatchedMultiAgentEnv):
    def __init__(self, n_envs: int, seed: Optional[int] = None, size: int = 5, n_agents: int = 2,
                 episode_limit: Optional[int] = None, auto_reset: bool = False,
                 declare_auto_reset: bool = True, late: int = 0):
        self.n_envs, self.size, self.n_agents = int(n_envs), int(size), int(n_agents)
        self.n_actions = 4
        self.episode_limit = int(episode_limit) if episode_limit is not None else 2 * self.size
        self.resets_in_step = bool(auto_reset)
        self.declares_auto_reset = bool(auto_reset and declare_auto_reset)
        self.late = int(late)
        self._rng = np.random.default_rng(seed)
        self.pos = np.zeros((self.n_envs, self.n_agents), np.int64)
        self.arrived = np.zeros((self.n_envs, self.n_agents), bool)
        self.t = np.zeros(self.n_envs, np.int64)
        self.over = np.ones(self.n_envs, bool)
        self.reset()

    def get_spec(self) -> EnvSpec:
        return EnvSpec(n_agents=self.n_agents, n_actions=self.n_actions, obs_shape=self.size + 2,
                       state_shape=self.n_agents * self.size + 1, episode_limit=self.episode_limit,
                       step_flags=("invalid",), provides_alive=True, auto_reset=self.declares_auto_reset)

    def reset(self, env_ids=None) -> None:
        ids = np.arange(self.n_envs) if env_ids is None else np.asarray(env_ids, np.int64).ravel()
        self.pos[ids] = self._rng.integers(0, self.size - 1, (len(ids), self.n_agents))
        self.arrived[ids] = False
        self.t[ids] = 0
        self.over[ids] = False

    def step(self, actions, active=None) -> BatchedStep:
        actions = np.asarray(actions, np.int64)
        active = np.ones(self.n_envs, bool) if active is None else np.asarray(active, bool)
        if (active & self.over).any():
            raise ValueError(f"BatchedLineWorld: environments {np.flatnonzero(active & self.over).tolist()} "
                             "ended their episode; reset them first")
        avail = self.get_avail_actions()
        chosen = np.take_along_axis(avail, actions[..., None].clip(0, 3), 2)[..., 0]
        if not chosen[active].all():
            raise ValueError("BatchedLineWorld: an unavailable action was chosen")
        walking = ~self.arrived
        step = np.where(actions == RIGHT, 1, np.where(actions == LEFT, -1, 0))
        self.pos = np.where(active[:, None], np.clip(self.pos + step, 0, self.size - 1), self.pos)
        newly = active[:, None] & walking & (self.pos == self.size - 1)
        self.arrived |= newly
        self.t += active
        reward = np.where(active, newly.sum(1) / self.n_agents, 0.0).astype(np.float32)
        won = active & self.arrived.all(1)
        truncated = active & ~won & (self.t >= self.episode_limit + self.late)
        invalid = active & ((actions == STAY) | ~walking).all(1) & walking.any(1)
        ended = won | truncated
        result = BatchedStep(reward, won, truncated, battle_won=won, flags={"invalid": invalid})
        if self.resets_in_step and ended.any():
            if self.declares_auto_reset:
                result.final_obs = self.get_obs().copy()
                result.final_state = self.get_state().copy()
                result.final_avail_actions = self.get_avail_actions().copy()
                result.alive = self.get_alive_agents().copy()
            self.reset(np.flatnonzero(ended))
        else:
            self.over |= ended
        return result

    def get_alive_agents(self) -> np.ndarray:
        return _read_only(~self.arrived)

    def get_obs(self) -> np.ndarray:
        obs = np.zeros((self.n_envs, self.n_agents, self.size + 2), np.float32)
        np.put_along_axis(obs, self.pos[..., None], 1.0, axis=2)
        obs[..., self.size] = self.arrived
        obs[..., self.size + 1] = (self.t / self.episode_limit)[:, None]
        return _read_only(obs)

    def get_state(self) -> np.ndarray:
        onehot = np.zeros((self.n_envs, self.n_agents, self.size), np.float32)
        np.put_along_axis(onehot, self.pos[..., None], 1.0, axis=2)
        state = np.concatenate([onehot.reshape(self.n_envs, -1), (self.t / self.episode_limit)[:, None]], 1)
        return _read_only(state.astype(np.float32))

    def get_avail_actions(self) -> np.ndarray:
        avail = np.zeros((self.n_envs, self.n_agents, self.n_actions), bool)
        avail[..., NOOP] = self.arrived
        avail[..., STAY] = ~self.arrived
        avail[..., LEFT] = ~self.arrived & (self.pos > 0)
        avail[..., RIGHT] = ~self.arrived
        return _read_only(avail)

    def get_rng_state(self) -> dict:
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state
