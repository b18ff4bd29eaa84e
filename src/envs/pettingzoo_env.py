"""PettingZoo ``ParallelEnv`` backends: ``pettingzoo`` (any parallel environment, named by its
factory) and ``mpe`` (the cooperative tasks of the ``mpe2`` package).

``PettingZooEnv`` adapts one PettingZoo ``ParallelEnv`` to qmixlab's per-environment contract
(``MultiAgentEnv``, ``docs/environments.md``); ``make_batched_env`` wraps ``batch_size_run`` of
them in ``VectorisedEnvs``. PettingZoo and mpe2 are optional extras, imported when an
environment is built (importing ``qmixlab.envs`` never imports them).

* ``env=pettingzoo env_args.env_fn=mpe2.simple_spread_v3:parallel_env env_args.env_kwargs={...}``:
  ``env_fn`` is ``"package.module:factory"`` and the environment is ``factory(**env_kwargs)``.
* ``env=mpe env_args.task=simple_spread_v3 env_args.N=3 ...``: ``task`` is one of mpe2's
  cooperative tasks (``MPE_TASKS``) and the task's own keyword arguments (``N``,
  ``local_ratio``, ``max_cycles``, ...) are env_args themselves; ``None`` leaves one at the
  task's default, and a keyword the chosen task does not take is refused.

Translation choices (docs/environments.md, "Environment families")
-----------------------------------------------------------------
* **Agents**: ``env.possible_agents`` fixes the agent order (qmixlab's agent ``i``).
* **Observations** are flattened. Agents whose observation sizes differ fail at start-up unless
  ``pad_observations=True``, which pads every observation with zeros to the largest size. Dict
  observations holding ``"observation"`` (and ``"action_mask"``) use the ``"observation"`` entry.
* **Actions**: every agent needs a ``Discrete`` space (a continuous one fails at start-up);
  ``n_actions`` is the largest, and an agent with fewer actions has the extra indices
  unavailable (the availability mask makes this exact, so it is not an option). Index ``k`` is
  the agent's action ``space.start + k``.
* **Action masks**: ``observation["action_mask"]`` for dict observations, else
  ``infos[agent]["action_mask"]`` when the step's info has one, else every action available.
* **Agents that leave early** (terminated or truncated per agent, or removed from
  ``env.agents``) are dead until the episode ends: ``alive`` False in the explicit alive mask
  (``provides_alive``, always declared), a zero observation (their last observation is dropped,
  as SMAC zeroes dead units), and only the no-op available. The no-op is ``noop_action`` (the
  ``mpe`` backend declares 0, MPE's "no action"); PettingZoo has no standard one, so by default
  (``noop_action=None``) a dead agent's one available action is index 0 as a placeholder that is
  never sent to the environment (the agent is no longer in it), and the alive mask tells it apart.
* **Episode end**: when no agent is left in play, or after ``time_limit`` steps. It is
  **truncated** (a time limit, bootstrapped through) when any agent that acted in the last step
  was truncated in it, or agents are still in play (the limit cut them); otherwise it is
  **terminated** (every agent that acted in the last step terminated or left). So a time limit
  is never called a terminal state: in a mixed last step (some agents terminated, some
  truncated) the episode counts as truncated, and the terminated agents are dead on the final
  row. On a truncated episode's final row the agents cut by the limit keep their observation and
  count as alive (the row the learner bootstraps from). Per environment this is SMAC's
  convention: ``terminated=True`` on every episode end, ``info["episode_limit"]=True`` on a
  truncation, and a ``timeouts`` counter in ``get_stats()``.
* **Team reward**: ``reward_reduction="sum"`` (default) or ``"mean"`` of the step's per-agent
  rewards; the mean divides by ``n_agents`` whoever is alive, so it is the sum rescaled.
* **State**: ``state="env"`` is the environment's ``state()``; ``"concat_obs"`` the agents'
  observations (unpadded, dead agents' zero) concatenated in agent order; ``"auto"`` (default)
  is ``"env"`` when the environment declares a ``state_space`` and ``"concat_obs"`` otherwise.
  MPE's ``state()`` *is* the concatenation of its agents' observations, so the ``mpe``
  backend's ``"auto"`` builds it from the observations it already holds instead of computing
  every observation a second time (the same numbers; a test checks it).
* **Seeding**: the first ``reset`` passes ``seed`` to ``env.reset(seed=...)``, later ones pass
  None so that the environment's own generator carries on: the same seed gives the same
  episodes. ``get_rng_state``/``set_rng_state`` save and restore the environment's numpy
  ``Generator`` (``env.unwrapped.np_random``, which MPE uses) as plain values; an environment
  without one reports None, and a restore of such a state changes nothing.
* **Time limit**: ``time_limit`` (EPyMARL's name) when given, else the environment's own limit
  (``max_cycles``, ``max_episode_steps`` or ``max_steps`` of ``env.unwrapped`` or ``env``); an
  environment without either fails at start-up. A limit below the environment's own one cuts
  episodes there as truncated.
* ``get_stats()``: ``timeouts`` (truncated episodes) and ``agents_left_early`` (agents that
  left an episode that went on without them).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import MissingPackageError
from .multiagentenv import MultiAgentEnv

PETTINGZOO_INSTALL = "pip install 'pettingzoo>=1.24'"
MPE_INSTALL = "pip install 'mpe2>=1.1'"

STATE_SOURCES = ("auto", "env", "concat_obs")
REWARD_REDUCTIONS = ("sum", "mean")
# Attributes read, in this order, as an environment's own time limit.
TIME_LIMIT_ATTRIBUTES = ("max_cycles", "max_episode_steps", "max_steps")

# mpe2's tasks in which all agents share one goal (the ``mpe`` backend trains one team).
MPE_TASKS = (
    "simple_spread_v3",
    "simple_speaker_listener_v4",
    "simple_reference_v3",
    "simple_v3",
    "simple_line_v1",
    "simple_formation_v1",
    "collect_treasure_v1",
)
# mpe2's tasks with opposing teams: a team reward over all agents would mix both sides.
MPE_COMPETITIVE_TASKS = (
    "simple_adversary_v3",
    "simple_crypto_v3",
    "simple_push_v3",
    "simple_tag_v3",
    "simple_world_comm_v3",
)
# Task keywords the mpe backend does not pass on: training never renders.
MPE_HIDDEN_KWARGS = ("render_mode",)
MPE_NOOP_ACTION = 0  # MPE's discrete action 0 is "no action" (movement), see mpe2's docs

# What an availability row holds: every action of the agent, the environment's mask, the no-op.
_ALL_ROW, _MASKED_ROW, _DEAD_ROW = 0, 1, 2


def import_pettingzoo():
    """The ``pettingzoo`` module, or ``ImportError`` naming the pip command."""
    try:
        return importlib.import_module("pettingzoo")
    except ImportError as err:
        raise MissingPackageError(
            f"the 'pettingzoo' and 'mpe' backends need PettingZoo, which is not importable ({err}). "
            f"Install it with\n    {PETTINGZOO_INSTALL}\n(or qmixlab's extra: pip install 'qmixlab[pettingzoo]')"
        ) from err


def _import_mpe2():
    try:
        return importlib.import_module("mpe2")
    except ImportError as err:
        raise MissingPackageError(
            f"the 'mpe' backend needs the mpe2 package (the Multi-Particle Environments), which is not "
            f"importable ({err}). Install it with\n    {MPE_INSTALL}\n(or qmixlab's extra: "
            "pip install 'qmixlab[mpe]')"
        ) from err


def resolve_env_fn(env_fn: Union[str, Callable]) -> Callable:
    """The factory named by ``"package.module:attribute"`` (or ``env_fn`` itself if callable)."""
    if callable(env_fn):
        return env_fn
    from qmixlab.envs.registry import import_object

    return import_object(env_fn, f"env_args.env_fn={env_fn!r}",
                         "'package.module:factory' naming a PettingZoo ParallelEnv factory "
                         "(e.g. 'mpe2.simple_spread_v3:parallel_env')")


def _choice(name: str, value, allowed: Sequence[str]) -> str:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), list(allowed), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"env_args.{name}={value!r} is not one of {list(allowed)}{hint}")
    return value


def _positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


class PettingZooEnv(MultiAgentEnv):
    """One PettingZoo ``ParallelEnv`` behind SMAC's per-environment API (see the module docstring
    for every translation choice).

    ``env_fn``: ``"package.module:factory"`` (or a callable) returning a ``ParallelEnv``;
    ``env_kwargs``: the factory's keyword arguments. ``self.env`` is the wrapped environment.
    """

    provides_alive = True  # agents may leave before the episode ends

    def __init__(
        self,
        env_fn: Union[str, Callable] = "mpe2.simple_spread_v3:parallel_env",
        env_kwargs: Optional[Mapping[str, Any]] = None,
        seed: Optional[int] = None,
        noop_action: Optional[int] = None,
        pad_observations: bool = False,
        state: str = "auto",
        reward_reduction: str = "sum",
        time_limit: Optional[int] = None,
    ):
        pettingzoo = import_pettingzoo()
        if env_kwargs is not None and not isinstance(env_kwargs, Mapping):
            raise ValueError(f"env_args.env_kwargs must be a mapping of the factory's keyword arguments, "
                             f"got {env_kwargs!r}")
        factory = resolve_env_fn(env_fn)
        env = factory(**dict(env_kwargs or {}))
        if not isinstance(env, pettingzoo.ParallelEnv):
            hint = ""
            if isinstance(env, pettingzoo.AECEnv):
                hint = (" It is an AECEnv: name the package's parallel_env factory instead, or wrap it "
                        "with pettingzoo.utils.conversions.aec_to_parallel.")
            raise TypeError(f"env_args.env_fn={env_fn!r} returned {type(env).__name__}, not a PettingZoo "
                            f"ParallelEnv.{hint}")
        self._name = env_fn if isinstance(env_fn, str) else getattr(env_fn, "__qualname__", repr(env_fn))
        self._adopt(env, seed, noop_action, pad_observations, state, reward_reduction, time_limit)

    # ---------------------------------------------------------------------------- set-up
    def _adopt(self, env, seed, noop_action, pad_observations, state, reward_reduction, time_limit) -> None:
        gymnasium = importlib.import_module("gymnasium")  # a dependency of pettingzoo
        spaces = gymnasium.spaces
        if not isinstance(pad_observations, bool):
            raise ValueError(f"env_args.pad_observations must be true or false, got {pad_observations!r}")
        self._state_source = _choice("state", state, STATE_SOURCES)
        self._reward_scale = 1.0
        _choice("reward_reduction", reward_reduction, REWARD_REDUCTIONS)
        if time_limit is not None and not _positive_int(time_limit):
            raise ValueError(f"env_args.time_limit must be a positive int or null (the environment's "
                             f"own time limit), got {time_limit!r}")

        self.env = env
        self._agents: List[str] = list(env.possible_agents)
        if not self._agents:
            raise ValueError(f"{self._name}: env.possible_agents is empty")
        self._index: Dict[str, int] = {name: i for i, name in enumerate(self._agents)}
        self.n_agents = len(self._agents)
        if reward_reduction == "mean":
            self._reward_scale = 1.0 / self.n_agents

        # Actions: Discrete only; the largest space sets n_actions, smaller ones are masked.
        self._action_start: List[int] = []
        self._action_count: List[int] = []
        for name in self._agents:
            space = env.action_space(name)
            if not isinstance(space, spaces.Discrete):
                kind = "continuous" if isinstance(space, spaces.Box) else "non-discrete"
                raise ValueError(
                    f"{self._name}: agent {name!r} has a {kind} action space {space}; qmixlab's value-based "
                    "learners need one Discrete action space per agent. Choose the environment's discrete "
                    "version (for MPE: continuous_actions=False)"
                )
            self._action_start.append(int(space.start))
            self._action_count.append(int(space.n))
        self.n_actions = max(self._action_count)
        if noop_action is not None and not (isinstance(noop_action, (int, np.integer))
                                            and not isinstance(noop_action, bool)
                                            and 0 <= noop_action < min(self._action_count)):
            raise ValueError(f"env_args.noop_action must be null or an action index every agent has, in "
                             f"[0, {min(self._action_count)}), got {noop_action!r}")
        self.noop_action = None if noop_action is None else int(noop_action)
        self._dead_action = 0 if noop_action is None else int(noop_action)

        # Observations: flattened, optionally padded; dict observations may carry the mask.
        self._obs_sizes: List[int] = []
        # Per agent: (name, observation size, dict observation, mask in it, flatten or None).
        self._agent_layout = []
        for name in self._agents:
            space = env.observation_space(name)
            dict_obs = isinstance(space, spaces.Dict) and "observation" in space.spaces
            mask_in_obs = dict_obs and "action_mask" in space.spaces
            if dict_obs:
                space = space["observation"]
            if isinstance(space, spaces.Box):
                size = int(np.prod(space.shape, dtype=np.int64))
                flatten = None if len(space.shape) == 1 else np.ravel
            else:
                size = int(spaces.flatdim(space))
                flatten = lambda obs, space=space: spaces.flatten(space, obs)  # noqa: E731
            self._obs_sizes.append(size)
            self._agent_layout.append((name, size, dict_obs, mask_in_obs, flatten))
        if len(set(self._obs_sizes)) > 1 and not pad_observations:
            sizes = ", ".join(f"{name}: {size}" for name, size in zip(self._agents, self._obs_sizes))
            raise ValueError(
                f"{self._name}: the agents' observation sizes differ ({sizes}); qmixlab's agents share "
                "one network over one observation size. Set env_args.pad_observations=true to pad every "
                "observation with zeros to the largest size"
            )
        self._obs_dim = max(self._obs_sizes)

        # State: the environment's own where it declares one, else the concatenated observations.
        if self._state_source == "auto":
            self._state_source = self._auto_state_source()
        if self._state_source == "env":
            state_space = getattr(env, "state_space", None)
            if state_space is None:
                raise ValueError(f"{self._name} declares no state_space, so its state() size is unknown; "
                                 "use env_args.state=concat_obs (or auto)")
            self._state_dim = int(spaces.flatdim(state_space))
        else:
            self._state_dim = int(sum(self._obs_sizes))
        self._uniform_obs = len(set(self._obs_sizes)) == 1

        # Episode limit: ours if given, else the environment's own.
        own_limit = self._own_time_limit()
        if time_limit is None and own_limit is None:
            raise ValueError(
                f"{self._name}: cannot tell the environment's time limit (none of "
                f"{', '.join(TIME_LIMIT_ATTRIBUTES)} on env or env.unwrapped); set env_args.time_limit"
            )
        self.episode_limit = int(time_limit if time_limit is not None else own_limit)

        n, a = self.n_agents, self.n_actions
        self._obs = np.zeros((n, self._obs_dim), dtype=np.float32)
        self._avail = np.zeros((n, a), dtype=bool)
        self._alive = np.zeros(n, dtype=bool)
        self._all_actions = np.zeros((n, a), dtype=bool)  # each agent's own action range
        for i, count in enumerate(self._action_count):
            self._all_actions[i, :count] = True
        self._dead_row = np.zeros(a, dtype=bool)
        self._dead_row[self._dead_action] = True
        self._avail_kind = [_MASKED_ROW] * n  # unknown until the first rows are read
        self._pending_seed = None if seed is None else int(seed)
        self._t = 0
        self._episode_over = True  # until the first reset
        self._timeouts = 0
        self._agents_left_early = 0

    def _auto_state_source(self) -> str:
        return "env" if getattr(self.env, "state_space", None) is not None else "concat_obs"

    def _own_time_limit(self) -> Optional[int]:
        for holder in (getattr(self.env, "unwrapped", self.env), self.env):
            for attribute in TIME_LIMIT_ATTRIBUTES:
                value = getattr(holder, attribute, None)
                if _positive_int(value):
                    return int(value)
        return None

    # ----------------------------------------------------------------------------- API
    def reset(self):
        seed, self._pending_seed = self._pending_seed, None
        result = self.env.reset(seed=seed)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"{self._name}: reset() returned {type(result).__name__}; PettingZoo >= 1.24's "
                            "ParallelEnv returns (observations, infos)")
        observations, infos = result
        self._t = 0
        self._episode_over = False
        self._alive[:] = False
        for name in self.env.agents:
            self._alive[self._agent_index(name)] = True
        self._read_rows(observations, infos, self._alive.tolist())
        return self.get_obs(), self.get_state()

    def step(self, actions):
        if self._episode_over:
            raise ValueError(f"{self._name}: the episode has ended (or reset() was never called); call "
                             "reset() before step()")
        if len(actions) != self.n_agents:
            raise ValueError(f"{self._name}: expected {self.n_agents} actions (one per agent), got {len(actions)}")
        actions = [int(action) for action in actions]
        for i, action in enumerate(actions):
            if not (0 <= action < self.n_actions and self._avail[i, action]):
                raise ValueError(
                    f"{self._name}: action {action} is not available to agent {i} ({self._agents[i]!r}); "
                    f"available: {np.flatnonzero(self._avail[i]).tolist()}"
                )
        reward, terminated, truncated = self.step_checked(actions)
        return reward, terminated or truncated, ({"episode_limit": True} if truncated else {})

    def step_checked(self, actions: List[int]) -> Tuple[float, bool, bool]:
        """``step`` for a caller that has checked ``actions`` (Python ints, one per agent, each
        available, the episode running): ``(reward, terminated, truncated)``, the two kinds of
        end kept apart (``multiagentenv.MultiAgentEnv.step_checked``)."""
        alive, agents, starts = self._alive, self._agents, self._action_start
        env_actions = {agents[i]: starts[i] + action for i, action in enumerate(actions) if alive[i]}
        observations, rewards, terminations, truncations, infos = self.env.step(env_actions)
        self._t += 1
        reward = float(sum(rewards.values())) * self._reward_scale

        # Plain lists: a handful of agents, and this runs on every step.
        acted = self._alive.tolist()
        in_play = [False] * self.n_agents
        for name in self.env.agents:
            if not (terminations.get(name, False) or truncations.get(name, False)):
                in_play[self._agent_index(name)] = True
        left = [a and not p for a, p in zip(acted, in_play)]
        agent_truncated = [bool(truncations.get(name, False)) for name in self._agents]
        any_in_play = any(in_play)
        ended = not any_in_play or self._t >= self.episode_limit
        # Truncated when the limit cut agents still in play, or an agent that acted was truncated.
        truncated = ended and (any_in_play or any(l and tr for l, tr in zip(left, agent_truncated)))
        if truncated:
            # The final row is bootstrapped from: agents cut by a time limit keep their observation.
            row_alive = [p or (l and tr) for p, l, tr in zip(in_play, left, agent_truncated)]
        else:
            row_alive = in_play
        if not ended:
            self._agents_left_early += sum(left)
        self._alive[:] = row_alive
        self._read_rows(observations, infos, row_alive)
        self._episode_over = ended
        self._timeouts += truncated
        return reward, ended and not truncated, truncated

    def _agent_index(self, name) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise ValueError(f"{self._name}: agent {name!r} is not in env.possible_agents "
                             f"{self._agents}") from None

    def _read_rows(self, observations: Mapping, infos: Mapping, alive: Sequence[bool]) -> None:
        """Fill the observation and availability rows: alive agents from the environment, dead
        agents zeros and the no-op alone. Padding columns are never written, so they stay zero;
        an availability row is rewritten only when its kind (all, masked, dead) may change."""
        obs, avail, row_kind = self._obs, self._avail, self._avail_kind
        for i, (name, size, dict_obs, mask_in_obs, flatten) in enumerate(self._agent_layout):
            if not alive[i]:
                obs[i] = 0.0
                if row_kind[i] != _DEAD_ROW:
                    avail[i] = self._dead_row
                    row_kind[i] = _DEAD_ROW
                continue
            agent_obs = observations.get(name)
            if agent_obs is None:
                raise ValueError(f"{self._name}: no observation for agent {name!r}, which is still in play")
            mask = None
            if dict_obs:
                if mask_in_obs:
                    mask = agent_obs["action_mask"]
                agent_obs = agent_obs["observation"]
            elif infos:
                agent_info = infos.get(name)
                if agent_info:
                    mask = agent_info.get("action_mask")
            obs[i, :size] = agent_obs if flatten is None else flatten(agent_obs)
            if mask is not None:
                self._apply_mask(i, mask)
                row_kind[i] = _MASKED_ROW
            elif row_kind[i] != _ALL_ROW:
                avail[i] = self._all_actions[i]
                row_kind[i] = _ALL_ROW

    def _apply_mask(self, i: int, mask) -> None:
        count = self._action_count[i]
        mask = np.asarray(mask)
        if mask.shape != (count,):
            raise ValueError(f"{self._name}: the action mask of agent {self._agents[i]!r} has shape "
                             f"{mask.shape}, expected ({count},) (its Discrete action space)")
        self._avail[i, :count] = mask != 0
        if not self._avail[i].any():
            raise ValueError(f"{self._name}: the action mask of agent {self._agents[i]!r} allows no action "
                             "although the agent is still in play")

    def get_obs(self):
        """``[n_agents, obs_shape]`` float32; borrowed (valid until the next step/reset)."""
        return self._obs

    def get_obs_agent(self, agent_id: int):
        return self._obs[agent_id]

    def get_obs_size(self) -> int:
        return self._obs_dim

    def get_state(self):
        if self._state_source == "env":
            return np.asarray(self.env.state(), dtype=np.float32).reshape(-1)
        if self._uniform_obs:
            return self._obs.reshape(-1)
        return np.concatenate([self._obs[i, :size] for i, size in enumerate(self._obs_sizes)])

    def get_state_size(self) -> int:
        return self._state_dim

    def get_avail_actions(self):
        """``[n_agents, n_actions]`` bool; borrowed."""
        return self._avail

    def get_avail_agent_actions(self, agent_id: int):
        return self._avail[agent_id]

    def get_alive_agents(self):
        """``n_agents`` bools: which agents are still in the episode on the current row."""
        return self._alive

    def get_total_actions(self) -> int:
        return self.n_actions

    def get_stats(self) -> dict:
        return {"timeouts": self._timeouts, "agents_left_early": self._agents_left_early}

    @property
    def agent_names(self) -> List[str]:
        """``env.possible_agents``: the name of qmixlab's agent ``i``."""
        return list(self._agents)

    # --------------------------------------------------------------------- random state
    def _generator(self) -> Optional[np.random.Generator]:
        for holder in (getattr(self.env, "unwrapped", self.env), self.env):
            for attribute in ("np_random", "_np_random"):
                value = getattr(holder, attribute, None)
                if isinstance(value, np.random.Generator):
                    return value
        return None

    def get_rng_state(self) -> dict:
        """Plain values: the seed the next reset still passes on, and the environment's numpy
        generator state (None when it has no ``np_random`` Generator)."""
        generator = self._generator()
        return {
            "pending_seed": self._pending_seed,
            "np_random": None if generator is None else generator.bit_generator.state,
        }

    def set_rng_state(self, state: Mapping) -> None:
        if not isinstance(state, Mapping) or set(state) != {"pending_seed", "np_random"}:
            raise ValueError(f"{self._name}: expected the dict get_rng_state() returns (keys pending_seed, "
                             f"np_random), got {state!r}")
        self._pending_seed = state["pending_seed"]
        if state["np_random"] is None:
            return
        generator = self._generator()
        if generator is None:
            raise ValueError(f"{self._name}: the environment has no np_random Generator to restore the state into")
        generator.bit_generator.state = state["np_random"]

    def close(self) -> None:
        self.env.close()


# ------------------------------------------------------------------------------------ MPE
def _mpe_task_module(task: str):
    _import_mpe2()
    if task in MPE_COMPETITIVE_TASKS:
        raise ValueError(
            f"MPE task {task!r} is competitive (opposing teams); the 'mpe' backend trains one team on the sum "
            f"of all agents' rewards. Cooperative tasks: {', '.join(MPE_TASKS)}. To train on it anyway, use "
            f"env=pettingzoo env_args.env_fn=mpe2.{task}:parallel_env"
        )
    if task not in MPE_TASKS:
        close = difflib.get_close_matches(str(task), list(MPE_TASKS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown MPE task {task!r}{hint} Known tasks: {', '.join(MPE_TASKS)}")
    return importlib.import_module(f"mpe2.{task}")


def _task_kwargs(module) -> Dict[str, Any]:
    """The task's own keyword arguments with their defaults (from ``raw_env``'s signature)."""
    params = inspect.signature(module.raw_env).parameters.values()
    return {p.name: p.default for p in params
            if p.default is not inspect.Parameter.empty and p.name not in MPE_HIDDEN_KWARGS}


MPE_OPTIONS = {"task": "simple_spread_v3", "pad_observations": False, "state": "auto",
               "reward_reduction": "sum", "time_limit": None}


def mpe_arg_defaults() -> Dict[str, Any]:
    """The ``mpe`` backend's env_args: its own options, then every keyword of the cooperative
    tasks set to None (the chosen task's default)."""
    _import_mpe2()
    task_keys: List[str] = []
    for task in MPE_TASKS:
        try:
            module = _mpe_task_module(task)
        except ImportError:  # a task missing from an older mpe2: not offered
            continue
        task_keys += [key for key in _task_kwargs(module) if key not in task_keys]
    return {**MPE_OPTIONS, **{key: None for key in sorted(task_keys)}}


def pettingzoo_arg_defaults() -> Dict[str, Any]:
    """The ``pettingzoo`` backend's env_args (``PettingZooEnv``'s keywords but ``seed``)."""
    params = inspect.signature(PettingZooEnv.__init__).parameters.values()
    return {p.name: p.default for p in params
            if p.default is not inspect.Parameter.empty and p.name != "seed"}


class MPEEnv(PettingZooEnv):
    """An mpe2 cooperative task (``task``, e.g. ``"simple_spread_v3"``) with its own keyword
    arguments (``**task_kwargs``; None keeps the task's default). No-op: action 0."""

    def __init__(self, task: str = "simple_spread_v3", seed: Optional[int] = None, pad_observations: bool = False,
                 state: str = "auto", reward_reduction: str = "sum", time_limit: Optional[int] = None,
                 **task_kwargs):
        import_pettingzoo()
        module = _mpe_task_module(task)
        accepted = _task_kwargs(module)
        given = {key: value for key, value in task_kwargs.items() if value is not None}
        for key in given:
            if key not in accepted:
                close = difflib.get_close_matches(key, list(accepted), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"MPE task {task!r} takes no argument {key!r}{hint}. Its arguments: "
                                 f"{', '.join(accepted)} (env_args set to null keep the task's default)")
        self.task = task
        self._name = f"mpe {task}"
        env = module.parallel_env(**given)
        self._adopt(env, seed, MPE_NOOP_ACTION, pad_observations, state, reward_reduction, time_limit)

    def _auto_state_source(self) -> str:
        # MPE's state() concatenates every agent's observation, which we already hold.
        return "concat_obs"


# ------------------------------------------------------------------- registry entry points
BACKENDS = {"pettingzoo": PettingZooEnv, "mpe": MPEEnv}


def make_backend_env(backend: str, **env_args) -> PettingZooEnv:
    """Build backend ``backend`` (``"pettingzoo"`` or ``"mpe"``) with ``env_args`` (and ``seed``)."""
    return BACKENDS[backend](**env_args)


def backend_arg_defaults(backend: str) -> Dict[str, Any]:
    """The env_args backend ``backend`` accepts, with their defaults."""
    return {"pettingzoo": pettingzoo_arg_defaults, "mpe": mpe_arg_defaults}[backend]()
