"""Roll out ``n_envs`` environments at once, one network call per step.

Each call to ``run`` plays one episode in every environment and returns them as one
``EpisodeBatch`` of ``n_envs`` padded episodes. Row ``t`` holds the observation, state,
availability and per-agent ``alive`` mask before the ``t``-th joint action, the action, and the
reward, end flags and declared step flags that followed. After an episode's last action, its
next row holds the final observation and state (``filled`` but never trained on under the
standard mask) and the action the policy would take there, as PyMARL writes it. ``terminated``
marks a true terminal state; ``timeout`` marks a time limit (the step result's ``truncated``),
so the learner can bootstrap through it.

What is stored follows the environment's ``EnvSpec`` (``docs/environments.md``): one bool field
per declared step flag, ``alive`` from the explicit mask or the declared no-op (all True when
the environment declares neither). The runner resets the environments itself; for an
auto-resetting environment the final rows come from the step result. An environment that has
not ended an episode after ``episode_limit`` steps is cut there as truncated, with a warning.
Arrays the environment hands out are borrowed: they are copied once, into the staging arrays.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Union

import numpy as np
import torch

from qmixlab.components.episode_batch import EpisodeBatch
from qmixlab.envs.spec import EnvSpec, spec_of


def episode_scheme(spec: Union[EnvSpec, dict]):
    """Scheme, groups and preprocess of the episodes a runner writes for ``spec``.

    A legacy ``get_env_info()`` dict is read with ``EnvSpec.from_env_info``. Preprocess is
    empty: nothing derived is stored (the learner reads ``actions``).
    """
    if not isinstance(spec, EnvSpec):
        spec = EnvSpec.from_env_info(spec)
    scheme = {
        "state": {"vshape": (spec.state_shape,)},
        "obs": {"vshape": (spec.obs_shape,), "group": "agents"},
        "actions": {"vshape": (1,), "group": "agents", "dtype": torch.long},
        "avail_actions": {"vshape": (spec.n_actions,), "group": "agents", "dtype": torch.bool},
        "alive": {"vshape": (1,), "group": "agents", "dtype": torch.bool},
        "reward": {"vshape": (1,)},
        "terminated": {"vshape": (1,), "dtype": torch.bool},
        "timeout": {"vshape": (1,), "dtype": torch.bool},
    }
    for flag in spec.step_flags:
        scheme[flag] = {"vshape": (1,), "dtype": torch.bool}
    groups = {"agents": spec.n_agents}
    return scheme, groups, {}


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

    def select(self, rows) -> "EpisodeStats":
        """The episodes ``rows`` (a slice or index array) of these statistics."""
        return EpisodeStats(*(getattr(self, f)[rows] for f in
                              ("returns", "lengths", "battle_won", "dead_allies", "dead_enemies", "timeouts")))

    @staticmethod
    def concatenate(parts: List["EpisodeStats"]) -> "EpisodeStats":
        return EpisodeStats(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                              ("returns", "lengths", "battle_won", "dead_allies", "dead_enemies", "timeouts")))


@dataclass
class BatchRunner:
    """Plays episodes of a ``BatchedMultiAgentEnv`` with an ``AgentController``.

    The runner does not count environment steps: ``run(t_env=...)`` takes the caller's count
    (for the exploration schedule) and the steps taken are ``stats.lengths.sum()``.
    """

    env: object
    mac: object
    # The exploration random stream(s) (one per member); None: torch's global generator.
    generator: object = None
    spec: EnvSpec = field(init=False)

    def __post_init__(self):
        self.spec = spec_of(self.env)
        self.env_info = self.spec.to_env_info()
        self.n_envs = self.env.n_envs
        self.scheme, self.groups, self.preprocess = episode_scheme(self.spec)
        self.max_seq_length = self.spec.episode_limit + 1
        self._env_name = type(self.env).__qualname__
        self._warned_late_end = False
        if self.spec.provides_alive and not callable(getattr(self.env, "get_alive_agents", None)):
            raise TypeError(
                f"{self._env_name} declares provides_alive but has no get_alive_agents() method "
                "(docs/environments.md)"
            )

    def new_batch(self) -> EpisodeBatch:
        return EpisodeBatch(self.scheme, self.groups, self.n_envs, self.max_seq_length,
                            preprocess=self.preprocess, device="cpu")

    def run(self, test_mode: bool = False, t_env=0, members=None):
        """One episode in every environment; returns ``(EpisodeBatch, EpisodeStats)``.

        ``t_env`` is the caller's environment-step count, passed to the controller (epsilon
        schedule). Rows are staged in preallocated arrays and written to the batch once.

        Several members (``qmixlab.envs.members.MemberEnvs``, a stacked controller): ``t_env``
        has one count per member, and ``members`` (bool per member, default all) says whose
        environments play; the others' rows stay empty (length 0) and their environments are
        not touched.
        """
        n, spec = self.n_envs, self.spec
        T, n_agents = self.max_seq_length, spec.n_agents
        staged = {
            "obs": np.zeros((n, T, n_agents, spec.obs_shape), np.float32),
            "state": np.zeros((n, T, spec.state_shape), np.float32),
            "avail_actions": np.zeros((n, T, n_agents, spec.n_actions), bool),
            "alive": np.zeros((n, T, n_agents, 1), bool),
            "actions": np.zeros((n, T, n_agents, 1), np.int64),
            "reward": np.zeros((n, T, 1), np.float32),
            "terminated": np.zeros((n, T, 1), bool),
            "timeout": np.zeros((n, T, 1), bool),
            "filled": np.zeros((n, T, 1), bool),
        }
        for flag in spec.step_flags:
            staged[flag] = np.zeros((n, T, 1), bool)
        random_stream = {} if self.generator is None else {"generator": self.generator}
        self.mac.init_hidden(n)
        if members is None:
            self.env.reset()
            running = np.ones(n, dtype=bool)  # episode not ended yet
        else:
            running = self.env.member_rows(members)
            self.env.reset(np.flatnonzero(running))
        acting = running.copy()  # rows that get an action this step (running, or final row)
        stats = EpisodeStats(np.zeros(n, np.float64), np.zeros(n, np.int64), np.zeros(n, bool),
                             np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool))
        t = 0
        self._stage_current(staged, acting, t, step=None)
        while True:
            # The controller reads the runner's own copies: borrowed (possibly read-only) env
            # arrays never reach torch.
            actions = self.mac.select_actions(staged["obs"][:, t], staged["avail_actions"][:, t],
                                              t_env=t_env, test_mode=test_mode,
                                              env_mask=torch.from_numpy(acting), **random_stream)
            actions = np.asarray(actions.cpu() if isinstance(actions, torch.Tensor) else actions)
            staged["actions"][acting, t, :, 0] = actions[acting]
            if not running.any():
                break
            step = self.env.step(actions, running)
            self._check_flags(step)
            staged["reward"][running, t, 0] = step.reward[running]
            staged["terminated"][running, t, 0] = step.terminated[running]
            staged["timeout"][running, t, 0] = step.truncated[running]
            for flag in spec.step_flags:
                staged[flag][running, t, 0] = step.flags[flag][running]
            stats.returns[running] += step.reward[running]
            stats.lengths[running] += 1
            env_ended = running & step.ended
            cut = running & ~step.ended & (stats.lengths >= spec.episode_limit)
            if cut.any():
                self._warn_late_end(cut)
                staged["timeout"][cut, t, 0] = True
            ended = env_ended | cut
            stats.battle_won[ended] = step.battle_won[ended]
            stats.dead_allies[ended] = step.dead_allies[ended]
            stats.dead_enemies[ended] = step.dead_enemies[ended]
            stats.timeouts[ended] = step.truncated[ended] | cut[ended]
            acting = running.copy()  # continuing episodes and the final rows of ended ones
            running = running & ~ended
            t += 1
            if spec.auto_reset and env_ended.any():
                self._stage_current(staged, acting & ~env_ended, t, step)
                self._stage_final(staged, env_ended, t, step)
            else:
                self._stage_current(staged, acting, t, step)
        batch = self.new_batch()
        batch.update(staged, mark_filled=False)
        return batch, stats

    # ------------------------------------------------------------------------- staging
    def _stage_current(self, staged: dict, rows: np.ndarray, t: int, step) -> None:
        """Copy the environment's current (borrowed) arrays into row ``t`` of ``rows``."""
        env = self.env
        staged["obs"][rows, t] = env.get_obs()[rows]
        staged["state"][rows, t] = env.get_state()[rows]
        avail = staged["avail_actions"][:, t]
        avail[rows] = env.get_avail_actions()[rows]
        if step is not None and step.alive is not None:
            alive = step.alive
        elif self.spec.provides_alive:
            alive = env.get_alive_agents()
        else:
            alive = self.spec.alive_from_avail(avail)
        staged["alive"][rows, t, :, 0] = alive[rows]
        staged["filled"][rows, t] = True

    def _stage_final(self, staged: dict, rows: np.ndarray, t: int, step) -> None:
        """Row ``t`` of episodes an auto-resetting environment ended: from the step result."""
        missing = [name for name in ("final_obs", "final_state", "final_avail_actions")
                   if getattr(step, name) is None]
        if self.spec.provides_alive and step.alive is None:
            missing.append("alive")
        if missing:
            raise ValueError(
                f"{self._env_name} declares auto_reset but its step result lacks "
                f"{', '.join(missing)} for the episodes that ended (docs/environments.md)"
            )
        staged["obs"][rows, t] = step.final_obs[rows]
        staged["state"][rows, t] = step.final_state[rows]
        avail = staged["avail_actions"][:, t]
        avail[rows] = step.final_avail_actions[rows]
        alive = step.alive if step.alive is not None else self.spec.alive_from_avail(avail)
        staged["alive"][rows, t, :, 0] = alive[rows]
        staged["filled"][rows, t] = True

    def _check_flags(self, step) -> None:
        emitted = step.flags.keys()
        if emitted != set(self.spec.step_flags):
            declared = set(self.spec.step_flags)
            problems = []
            if declared - emitted:
                problems.append(f"declared but missing: {sorted(declared - emitted)}")
            if emitted - declared:
                problems.append(f"emitted but not declared in step_flags: {sorted(emitted - declared)}")
            raise ValueError(
                f"{self._env_name}.step() flags do not match its spec ({'; '.join(problems)}). Every "
                "declared flag must be in BatchedStep.flags on every step, and only those "
                "(docs/environments.md)"
            )

    def _warn_late_end(self, cut: np.ndarray) -> None:
        if self._warned_late_end:
            return
        self._warned_late_end = True
        warnings.warn(
            f"{self._env_name}: environment(s) {np.flatnonzero(cut).tolist()} did not end their "
            f"episode within episode_limit={self.spec.episode_limit} steps; the runner cut them "
            "there as truncated (timeout). An environment must report the time limit on step "
            "episode_limit (docs/environments.md; `qmixlab check-env` lists every contract problem).",
            stacklevel=3,
        )
