"""An example plug-in environment, written from docs/environments.md alone.

``CoinGame``: ``n_agents`` agents walk on a ring of ``n_cells`` cells and collect a coin that
reappears on a random cell each time it is taken (reward 1 per coin). Every move costs energy;
an agent out of energy is done and keeps only the no-op (action 0), like a dead SMAC unit.
Two agents that try to enter the same cell bump into each other: neither moves and the step is
flagged ``invalid``, so that the learner leaves it out of the loss. The episode ends when
every agent is out of energy (a terminal state) or after ``episode_limit`` steps (a time limit).

Train on it (the directory holding this file must be importable)::

    PYTHONPATH=examples qmixlab with env=plugin_env:CoinGame env_args.n_cells=6 t_max=20000

Check it against the contract first::

    PYTHONPATH=examples qmixlab check-env plugin_env:CoinGame n_cells=6
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from qmixlab.envs import MultiAgentEnv

NOOP, STAY, CLOCKWISE, COUNTER_CLOCKWISE = 0, 1, 2, 3


class CoinGame(MultiAgentEnv):
    # Declarations (docs/environments.md, "Declaring what the environment does").
    noop_action = 0  # an agent whose only available action is 0 is done
    step_flags = ("invalid",)  # info["invalid"] marks bumped steps

    def __init__(self, n_cells: int = 6, n_agents: int = 2, energy: int = 12, episode_limit: int = 20,
                 seed: Optional[int] = None):
        if n_cells < n_agents + 1:
            raise ValueError(f"n_cells must be > n_agents={n_agents}, got {n_cells}")
        self.n_cells, self.n_agents = int(n_cells), int(n_agents)
        self.energy_max, self.episode_limit = int(energy), int(episode_limit)
        self._rng = np.random.default_rng(seed)  # every random draw comes from here
        self._episode_over = True

    # ------------------------------------------------------------------ episodes
    def reset(self):
        cells = self._rng.permutation(self.n_cells)
        self.position = cells[: self.n_agents].copy()
        self.coin = int(cells[self.n_agents])
        self.energy = np.full(self.n_agents, self.energy_max)
        self.t = 0
        self._episode_over = False
        return self.get_obs(), self.get_state()

    def step(self, actions):
        if self._episode_over:  # the contract: no stepping past the end without reset()
            raise ValueError("CoinGame: the episode has ended; call reset() first")
        actions = [int(a) for a in actions]
        for agent, action in enumerate(actions):
            if not self.get_avail_agent_actions(agent)[action]:
                raise ValueError(f"CoinGame: action {action} is not available to agent {agent}")
        moves = np.array([{CLOCKWISE: 1, COUNTER_CLOCKWISE: -1}.get(a, 0) for a in actions])
        target = (self.position + moves) % self.n_cells
        bumped = len(set(target.tolist())) < self.n_agents
        if not bumped:
            self.position = target
        self.energy -= moves != 0
        reward = 0.0
        if (self.position == self.coin).any():
            reward = 1.0
            free = np.setdiff1d(np.arange(self.n_cells), self.position)
            self.coin = int(self._rng.choice(free))
        self.t += 1
        terminated = bool((self.energy <= 0).all())
        info = {"invalid": bumped}
        if not terminated and self.t >= self.episode_limit:
            terminated = True
            info["episode_limit"] = True  # a time limit, not a terminal state
        self._episode_over = terminated
        return reward, terminated, info

    # -------------------------------------------------------------------- arrays
    def get_obs_agent(self, agent_id: int) -> np.ndarray:
        obs = np.zeros(2 * self.n_cells + 1, dtype=np.float32)
        obs[self.position[agent_id]] = 1.0
        obs[self.n_cells + self.coin] = 1.0
        obs[-1] = self.energy[agent_id] / self.energy_max
        return obs

    def get_obs(self) -> List[np.ndarray]:
        return [self.get_obs_agent(i) for i in range(self.n_agents)]

    def get_obs_size(self) -> int:
        return 2 * self.n_cells + 1

    def get_state(self) -> np.ndarray:
        state = np.zeros(self.get_state_size(), dtype=np.float32)
        state[np.arange(self.n_agents) * self.n_cells + self.position] = 1.0
        offset = self.n_agents * self.n_cells
        state[offset + self.coin] = 1.0
        state[offset + self.n_cells: offset + self.n_cells + self.n_agents] = self.energy / self.energy_max
        state[-1] = self.t / self.episode_limit
        return state

    def get_state_size(self) -> int:
        return (self.n_agents + 1) * self.n_cells + self.n_agents + 1

    def get_avail_agent_actions(self, agent_id: int) -> List[int]:
        if self.energy[agent_id] <= 0:
            return [1, 0, 0, 0]  # done: only the declared no-op
        return [0, 1, 1, 1]

    def get_avail_actions(self) -> List[List[int]]:
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_total_actions(self) -> int:
        return 4

    # ---------------------------------------------------------------- rng hooks
    def get_rng_state(self) -> dict:
        return self._rng.bit_generator.state  # a dict of ints and strings: plain values

    def set_rng_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state
