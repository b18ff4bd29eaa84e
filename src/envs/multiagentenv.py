"""The environment contracts every backend follows.

Two forms exist:

* ``MultiAgentEnv`` is SMAC's per-environment interface, unchanged, so that code written for
  ``smac.env.StarCraft2Env`` runs against any qmixlab backend.
* ``BatchedMultiAgentEnv`` steps ``n_envs`` environments at once with arrays. The runner uses it
  so that a rollout of N environments needs one network call per step.

Episode ends in the batched form are reported as two separate flags: ``terminated`` (a true
terminal state: win, loss or draw) and ``timeout`` (the time limit was reached without a terminal
state). The learner bootstraps through timeouts; treating them as terminal is an ablation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np


class MultiAgentEnv:
    """SMAC's per-environment interface (see ``smac.env.MultiAgentEnv``)."""

    n_agents: int
    episode_limit: int

    def reset(self):
        """Start a new episode; returns ``(obs list, state)``."""
        raise NotImplementedError

    def step(self, actions):
        """Apply one joint action; returns ``(reward, terminated, info)``."""
        raise NotImplementedError

    def get_obs(self):
        raise NotImplementedError

    def get_obs_agent(self, agent_id: int):
        raise NotImplementedError

    def get_obs_size(self) -> int:
        raise NotImplementedError

    def get_state(self):
        raise NotImplementedError

    def get_state_size(self) -> int:
        raise NotImplementedError

    def get_avail_actions(self):
        raise NotImplementedError

    def get_avail_agent_actions(self, agent_id: int):
        raise NotImplementedError

    def get_total_actions(self) -> int:
        raise NotImplementedError

    def get_stats(self) -> dict:
        return {}

    def close(self) -> None:
        pass

    def seed(self):
        return None

    def save_replay(self) -> None:
        pass

    def get_env_info(self) -> dict:
        return {
            "state_shape": self.get_state_size(),
            "obs_shape": self.get_obs_size(),
            "n_actions": self.get_total_actions(),
            "n_agents": self.n_agents,
            "episode_limit": self.episode_limit,
        }


@dataclass
class BatchedStep:
    """What ``BatchedMultiAgentEnv.step`` returns; every array has ``n_envs`` rows.

    Rows of environments that were not active in the step are zeros / False.
    """

    reward: np.ndarray  # [n_envs] float32
    terminated: np.ndarray  # [n_envs] bool: true terminal state (win, loss, draw)
    timeout: np.ndarray  # [n_envs] bool: time limit reached without a terminal state
    battle_won: np.ndarray  # [n_envs] bool
    dead_allies: np.ndarray  # [n_envs] int
    dead_enemies: np.ndarray  # [n_envs] int
    # Optional per-step flags, e.g. "invalid" ([n_envs] bool) for environment-flagged invalid
    # steps that must be masked out of every loss term.
    extra: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def ended(self) -> np.ndarray:
        return self.terminated | self.timeout


class BatchedMultiAgentEnv:
    """``n_envs`` environments stepped together with arrays.

    Contract:
      * ``reset(env_ids=None)`` resets all environments, or only those in ``env_ids``.
      * ``step(actions, active=None)`` takes ``actions`` as an int array ``[n_envs, n_agents]``
        and ``active`` as a bool array ``[n_envs]`` (default: all). Inactive environments are not
        advanced and their actions are ignored. Stepping an active environment whose episode has
        ended, or choosing an unavailable action, raises ``ValueError``.
      * ``get_obs()`` -> float32 ``[n_envs, n_agents, obs_dim]``; ``get_state()`` -> float32
        ``[n_envs, state_dim]``; ``get_avail_actions()`` -> bool ``[n_envs, n_agents, n_actions]``.
      * ``get_env_info()`` is SMAC's dict; ``get_stats()`` aggregates over all environments.
    """

    n_envs: int
    n_agents: int
    n_actions: int
    episode_limit: int

    def reset(self, env_ids: Optional[np.ndarray] = None) -> None:
        raise NotImplementedError

    def step(self, actions: np.ndarray, active: Optional[np.ndarray] = None) -> BatchedStep:
        raise NotImplementedError

    def get_obs(self) -> np.ndarray:
        raise NotImplementedError

    def get_state(self) -> np.ndarray:
        raise NotImplementedError

    def get_avail_actions(self) -> np.ndarray:
        raise NotImplementedError

    def get_env_info(self) -> dict:
        raise NotImplementedError

    def get_stats(self) -> dict:
        return {}

    def close(self) -> None:
        pass
