"""``LineWorld``: walkers on a line, each must reach the right end (per-env SMAC API).

``n_agents`` agents start on random cells ``0 .. size-2`` of a line of ``size`` cells. Each step
an agent stays, moves left or moves right; an agent that reaches the last cell has arrived and
is left with the no-op as its only action (like a dead SMAC unit). Reward: ``1/n_agents`` per
agent arriving; the episode ends when all have arrived (a win) or at ``episode_limit`` steps
(a time limit, reported with ``info["episode_limit"]``). Moving right is always best, so a
learner's return rises quickly: the signal for end-to-end training tests.

Observation of an agent: one-hot cell (``size``), arrived flag, time fraction. State: every
agent's one-hot cell, then the time fraction.

The variants below each change one thing the contract (docs/environments.md) cares about.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from qmixlab.envs import MultiAgentEnv


class LineWorld(MultiAgentEnv):
    """A conforming per-env environment with its own constructor arguments."""

    NOOP, STAY, LEFT, RIGHT = 0, 1, 2, 3
    N_ACTIONS = 4
    noop_action = 0  # declaration: an arrived agent keeps only the no-op

    def __init__(self, size: int = 5, n_agents: int = 2, episode_limit: Optional[int] = None,
                 seed: Optional[int] = None):
        if int(size) < 2:
            raise ValueError(f"size must be >= 2, got {size!r}")
        self.size = int(size)
        self.n_agents = int(n_agents)
        self.episode_limit = int(episode_limit) if episode_limit is not None else 2 * self.size
        self._rng = np.random.default_rng(seed)
        self.steps_taken = 0
        self.reset()

    # -------------------------------------------------------------------- episodes
    def reset(self):
        self.pos = self._rng.integers(0, self.size - 1, self.n_agents)
        self.arrived = np.zeros(self.n_agents, dtype=bool)
        self.t = 0
        self.episode_over = False
        return self.get_obs(), self.get_state()

    def step(self, actions):
        if self.episode_over:
            raise ValueError("LineWorld: the episode has ended; call reset() before step()")
        actions = [int(a) for a in actions]
        avail = self.get_avail_actions()
        for agent, action in enumerate(actions):
            if not avail[agent][action]:
                raise ValueError(f"LineWorld: action {action} is not available to agent {agent}")
        self.steps_taken += 1
        moves = {self.LEFT: -1, self.RIGHT: 1}
        self.pos = np.clip(self.pos + np.array([moves.get(a, 0) for a in actions]), 0, self.size - 1)
        newly = ~self.arrived & (self.pos == self.size - 1)
        self.arrived |= newly
        self.t += 1
        reward = float(newly.sum()) / self.n_agents
        won = bool(self.arrived.all())
        info = {"battle_won": won, "dead_allies": 0, "dead_enemies": 0}
        terminated = won
        if not won and self.t >= self.episode_limit:
            terminated = True
            info["episode_limit"] = True
        self.episode_over = terminated
        self._extra_info(actions, info)
        return reward, terminated, info

    def _extra_info(self, actions, info) -> None:
        """Hook for variants that add per-step info."""

    # ---------------------------------------------------------------------- arrays
    def get_obs_agent(self, agent_id: int) -> np.ndarray:
        obs = np.zeros(self.size + 2, dtype=np.float32)
        obs[self.pos[agent_id]] = 1.0
        obs[self.size] = float(self.arrived[agent_id])
        obs[self.size + 1] = self.t / self.episode_limit
        return obs

    def get_obs(self):
        return [self.get_obs_agent(i) for i in range(self.n_agents)]

    def get_obs_size(self) -> int:
        return self.size + 2

    def get_state(self) -> np.ndarray:
        state = np.zeros(self.n_agents * self.size + 1, dtype=np.float32)
        state[np.arange(self.n_agents) * self.size + self.pos] = 1.0
        state[-1] = self.t / self.episode_limit
        return state

    def get_state_size(self) -> int:
        return self.n_agents * self.size + 1

    def get_avail_agent_actions(self, agent_id: int):
        avail = [0] * self.N_ACTIONS
        if self.arrived[agent_id]:
            avail[self.NOOP] = 1
            return avail
        avail[self.STAY] = 1
        avail[self.LEFT] = int(self.pos[agent_id] > 0)
        avail[self.RIGHT] = 1
        return avail

    def get_avail_actions(self):
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_total_actions(self) -> int:
        return self.N_ACTIONS

    # ----------------------------------------------------------------- rng hooks
    def get_rng_state(self) -> dict:
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state


class StopNoopLineWorld(LineWorld):
    """Arrived agents keep "stop" at index 4 (not 0), and the class declares it."""

    STAY, LEFT, RIGHT, WAVE, NOOP = 0, 1, 2, 3, 4
    N_ACTIONS = 5
    noop_action = 4


class UndeclaredStopNoopLineWorld(StopNoopLineWorld):
    """Same action layout, no declaration: nobody can tell that arrived agents are done."""

    noop_action = None


class AutoResetLineWorld(LineWorld):
    """Starts the next episode inside ``step`` and hands over the final arrays, as declared."""

    auto_reset = True

    def step(self, actions):
        reward, terminated, info = super().step(actions)
        if terminated:
            info["final_obs"] = self.get_obs()
            info["final_state"] = self.get_state()
            info["final_avail_actions"] = self.get_avail_actions()
            self.reset()
        return reward, terminated, info


class UndeclaredAutoResetLineWorld(LineWorld):
    """Auto-resets inside ``step`` without declaring it or handing over the final arrays."""

    def step(self, actions):
        reward, terminated, info = super().step(actions)
        if terminated:
            self.reset()
        return reward, terminated, info


class LateLimitLineWorld(LineWorld):
    """Reports the time limit one step late (at ``episode_limit + 1``)."""

    def step(self, actions):
        limit = self.episode_limit
        self.episode_limit = limit + 1  # the off-by-one under test
        try:
            return super().step(actions)
        finally:
            self.episode_limit = limit


class ReadOnlyLineWorld(LineWorld):
    """Hands out read-only arrays from buffers it reuses on every call."""

    def __init__(self, **kwargs):
        self._obs_buffer = None
        super().__init__(**kwargs)

    def _publish(self, name: str, values: np.ndarray) -> np.ndarray:
        buffer = getattr(self, name, None)
        if buffer is None or buffer.shape != values.shape:
            buffer = np.zeros_like(values)
            setattr(self, name, buffer)
        buffer.flags.writeable = True
        buffer[...] = values
        buffer.flags.writeable = False
        return buffer

    def get_obs(self):
        return self._publish("_obs_buffer", np.stack(super().get_obs()))

    def get_state(self):
        return self._publish("_state_buffer", super().get_state())

    def get_avail_actions(self):
        return self._publish("_avail_buffer", np.array(super().get_avail_actions(), dtype=bool))


class InvalidStepLineWorld(LineWorld):
    """Flags a step invalid (legacy ``info["invalid_step"]``) when every walking agent stays.

    It declares nothing: the wrapper's ``invalid`` flag carries it (issue 15's reproduction: the
    flag used to be dropped for every env but smacsim)."""

    def _extra_info(self, actions, info) -> None:
        walking = ~self.arrived | (np.asarray(actions) != self.NOOP)
        info["invalid_step"] = bool(all(a == self.STAY for a, w in zip(actions, walking) if w))


class WastedStepLineWorld(LineWorld):
    """Declares its own flag ``wasted`` (a step in which nobody moved)."""

    step_flags = ("wasted",)

    def _extra_info(self, actions, info) -> None:
        info["wasted"] = all(a in (self.STAY, self.NOOP) for a in actions)


class UndeclaredFlagLineWorld(LineWorld):
    """Emits a bool info key ``wasted`` without declaring it."""

    def _extra_info(self, actions, info) -> None:
        info["wasted"] = all(a in (self.STAY, self.NOOP) for a in actions)


class NoRngHooksLineWorld(LineWorld):
    """Lacks the optional random-state hooks."""

    get_rng_state = None
    set_rng_state = None


class NumpyRngStateLineWorld(LineWorld):
    """Returns its random state as a numpy array (not plain Python values)."""

    def get_rng_state(self):
        state = self._rng.bit_generator.state["state"]
        return np.array([state["state"], state["inc"]], dtype=object)

    def set_rng_state(self, state) -> None:
        current = self._rng.bit_generator.state
        current["state"] = {"state": int(state[0]), "inc": int(state[1])}
        self._rng.bit_generator.state = current


class NonScalarRewardLineWorld(LineWorld):
    """Returns one reward per agent."""

    def step(self, actions):
        reward, terminated, info = super().step(actions)
        return np.full(self.n_agents, reward), terminated, info


class WrongObsShapeLineWorld(LineWorld):
    """``get_obs`` drops the last feature."""

    def get_obs(self):
        return [obs[:-1] for obs in super().get_obs()]
