"""Roll out ``n_envs`` environments at once, one network call per step.

Each call to ``run`` plays one episode in every environment and returns them as one
``EpisodeBatch`` of ``n_envs`` padded episodes. Row ``t`` holds the observation, state and
availability before the ``t``-th joint action, the action, and the reward and end flags that
followed. After an episode's last action, its next row holds the final observation and state
(``filled`` but never trained on under the standard mask) and the action the policy would take
there, as PyMARL writes it. ``terminated`` marks a true terminal state; ``timeout`` marks a time
limit, so the learner can bootstrap through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import torch

from qmixlab.components.episode_batch import EpisodeBatch, OneHot


def episode_scheme(env_info: dict, invalid_flag: bool = False):
    """Scheme, groups and preprocess of the episodes a runner writes for ``env_info``."""
    scheme = {
        "state": {"vshape": (env_info["state_shape"],)},
        "obs": {"vshape": (env_info["obs_shape"],), "group": "agents"},
        "actions": {"vshape": (1,), "group": "agents", "dtype": torch.long},
        "avail_actions": {"vshape": (env_info["n_actions"],), "group": "agents", "dtype": torch.bool},
        "reward": {"vshape": (1,)},
        "terminated": {"vshape": (1,), "dtype": torch.bool},
        "timeout": {"vshape": (1,), "dtype": torch.bool},
    }
    if invalid_flag:
        scheme["invalid"] = {"vshape": (1,), "dtype": torch.bool}
    groups = {"agents": env_info["n_agents"]}
    preprocess = {"actions": ("actions_onehot", [OneHot(out_dim=env_info["n_actions"])])}
    return scheme, groups, preprocess


@dataclass
class EpisodeStats:
    """Per-episode outcomes of one ``run`` (arrays of length n_envs)."""

    returns: np.ndarray
    lengths: np.ndarray
    battle_won: np.ndarray
    dead_allies: np.ndarray
    dead_enemies: np.ndarray
    timeouts: np.ndarray

    def summary(self) -> Dict[str, float]:
        return {
            "return_mean": float(self.returns.mean()),
            "battle_won_mean": float(self.battle_won.mean()),
            "dead_allies_mean": float(self.dead_allies.mean()),
            "dead_enemies_mean": float(self.dead_enemies.mean()),
            "ep_length_mean": float(self.lengths.mean()),
            "timeout_mean": float(self.timeouts.mean()),
        }

    @staticmethod
    def concatenate(parts: List["EpisodeStats"]) -> "EpisodeStats":
        return EpisodeStats(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                              ("returns", "lengths", "battle_won", "dead_allies", "dead_enemies", "timeouts")))


@dataclass
class BatchRunner:
    """Plays episodes of a ``BatchedMultiAgentEnv`` with an ``AgentController``."""

    env: object
    mac: object
    invalid_flag: bool = False
    t_env: int = 0
    env_info: dict = field(init=False)

    def __post_init__(self):
        self.env_info = self.env.get_env_info()
        self.n_envs = self.env.n_envs
        self.scheme, self.groups, self.preprocess = episode_scheme(self.env_info, self.invalid_flag)
        self.max_seq_length = self.env_info["episode_limit"] + 1

    def new_batch(self) -> EpisodeBatch:
        return EpisodeBatch(self.scheme, self.groups, self.n_envs, self.max_seq_length,
                            preprocess=self.preprocess, device="cpu")

    def run(self, test_mode: bool = False):
        """One episode in every environment; returns ``(EpisodeBatch, EpisodeStats)``.

        Training rollouts advance ``t_env`` by the number of environment steps taken. Rows are
        staged in preallocated arrays and written to the batch once, at the end.
        """
        n, info = self.n_envs, self.env_info
        T, n_agents = self.max_seq_length, info["n_agents"]
        staged = {
            "obs": np.zeros((n, T, n_agents, info["obs_shape"]), np.float32),
            "state": np.zeros((n, T, info["state_shape"]), np.float32),
            "avail_actions": np.zeros((n, T, n_agents, info["n_actions"]), bool),
            "actions": np.zeros((n, T, n_agents, 1), np.int64),
            "reward": np.zeros((n, T, 1), np.float32),
            "terminated": np.zeros((n, T, 1), bool),
            "timeout": np.zeros((n, T, 1), bool),
            "filled": np.zeros((n, T, 1), bool),
        }
        if self.invalid_flag:
            staged["invalid"] = np.zeros((n, T, 1), bool)
        self.env.reset()
        self.mac.init_hidden(n)
        running = np.ones(n, dtype=bool)  # episode not ended yet
        acting = running.copy()  # rows that get an action this step (running, or final row)
        stats = EpisodeStats(np.zeros(n, np.float64), np.zeros(n, np.int64), np.zeros(n, bool),
                             np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool))
        t = 0
        obs, avail = self._stage_observations(staged, acting, t)
        while True:
            actions = self.mac.select_actions(obs, avail, t_env=self.t_env, test_mode=test_mode,
                                              env_mask=torch.as_tensor(acting))
            actions = np.asarray(actions.cpu() if isinstance(actions, torch.Tensor) else actions)
            staged["actions"][acting, t, :, 0] = actions[acting]
            if not running.any():
                break
            if t >= T - 1:
                raise RuntimeError(
                    f"environment ran past its episode_limit={info['episode_limit']} "
                    "without reporting a time-out or a terminal state"
                )
            step = self.env.step(actions, running)
            staged["reward"][running, t, 0] = step.reward[running]
            staged["terminated"][running, t, 0] = step.terminated[running]
            staged["timeout"][running, t, 0] = step.timeout[running]
            if self.invalid_flag:
                staged["invalid"][running, t, 0] = step.extra["invalid"][running]
            stats.returns[running] += step.reward[running]
            stats.lengths[running] += 1
            if not test_mode:
                self.t_env += int(running.sum())
            ended = running & step.ended
            stats.battle_won[ended] = step.battle_won[ended]
            stats.dead_allies[ended] = step.dead_allies[ended]
            stats.dead_enemies[ended] = step.dead_enemies[ended]
            stats.timeouts[ended] = step.timeout[ended]
            acting = running.copy()  # continuing episodes and the final rows of ended ones
            running = running & ~step.ended
            t += 1
            obs, avail = self._stage_observations(staged, acting, t)
        batch = self.new_batch()
        batch.update(staged, mark_filled=False)
        return batch, stats

    def _stage_observations(self, staged: dict, rows: np.ndarray, t: int):
        obs, avail = self.env.get_obs(), self.env.get_avail_actions()
        staged["obs"][rows, t] = obs[rows]
        staged["state"][rows, t] = self.env.get_state()[rows]
        staged["avail_actions"][rows, t] = avail[rows]
        staged["filled"][rows, t] = True
        return obs, avail
