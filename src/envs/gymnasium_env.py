"""``GymnasiumMultiAgentEnv``: a gymnasium multi-agent environment behind qmixlab's per-env contract.

Backends ``gymma`` (any id, ``env_args.key=<gymnasium id>``), ``lbf`` (Level-Based Foraging,
package ``lbforaging``) and ``rware`` (the Multi-Robot Warehouse, package ``rware``) all build
this class. The convention it reads is the one of ``lbforaging``, ``rware`` and EPyMARL's
``gymma``: ``gymnasium.make(key)`` builds an environment whose observation and action spaces are
``Tuple`` spaces with one entry per agent, actions are ``Discrete``, ``step`` returns one reward
per agent, and ``terminated`` / ``truncated`` are bools (or lists with one bool per agent). The
packages are imported when an environment is built, never when ``qmixlab.envs`` is imported;
importing ``lbforaging`` or ``rware`` is what registers their ids with gymnasium.

Translation choices (the ``env_args`` that change them in brackets; ``docs/environments.md``,
"Environment families", has the table):

* **Building** [``key``, ``env_kwargs``]: ``key`` is a registered id, optionally with the module
  that registers it (``"lbforaging:Foraging-8x8-2p-3f-v3"``, EPyMARL's spelling); a plain id of
  LBF (``Foraging...``) or RWARE (``rware...``) imports its package. ``env_kwargs`` go to the
  environment's constructor, every key included: unlike ``gymnasium.make(key, **kwargs)``, which
  takes ``max_episode_steps`` for its own ``TimeLimit``, LBF's constructor argument of that name
  reaches LBF. gymnasium's passive environment checker is left out: it assumes one agent (it
  warns that a list of rewards is not a float).
* **Observations** [``pad_observations``]: each agent's observation flattened to a float32
  vector. Agents whose sizes differ are refused unless ``pad_observations=True``, which pads
  with zeros to the largest size. An agent whose observation is a ``Dict`` with keys
  ``observation`` and ``action_mask`` gives its observation from the first.
* **State** [``state``]: ``env`` is the environment's own global state (``unwrapped.get_state()``
  with ``unwrapped.state_size``, EPyMARL's convention); ``concat_obs`` the agents' observations
  concatenated; ``auto`` (default) the first of these the environment has. LBF 2.0 and RWARE 2.0
  have no global state, so they get ``concat_obs``.
* **Team reward** [``reward_reduction``]: ``sum`` (default, EPyMARL's) or ``mean`` of the
  agents' rewards; a scalar reward is taken as the team reward as it is.
* **Episode ends**: terminated and truncated are kept apart, never folded into one flag
  (EPyMARL folds them). The time limit is ``time_limit`` when given, which gymnasium's
  ``TimeLimit`` wrapper enforces (``gymnasium.make(key, max_episode_steps=time_limit)``), else
  the registered spec's ``max_episode_steps``, else the environment's own limit (below); the
  smallest of these is ``episode_limit``, and the adapter ends an episode there at the latest.
  LBF 2.0 and RWARE 2.0 register no ``max_episode_steps``: they count steps themselves and report
  their own limit as ``terminated=True, truncated=False``. The adapter knows these two families
  and reports those ends as truncations: LBF (own limit ``max_episode_steps``, default 50) is
  terminal only when every food has been collected, so an end with food left is the time limit;
  RWARE (own limits ``max_steps``, default 500, and ``max_inactivity_steps``, unset in the
  registered ids) has no terminal state at all, so every end is a truncation. A ``time_limit``
  above the environment's own limit is refused (raise the limit in ``env_kwargs`` too).
  Per-environment contract: every end is ``terminated=True`` and a truncation carries
  ``info["episode_limit"]=True`` (``src/envs/vectorised.py``, rule 1).
* **Action masks** [``action_masks``]: LBF's valid actions (``unwrapped._valid_actions``:
  moves into food or off the grid, and loading with no food adjacent, are invalid; LBF itself
  turns them into NONE), else ``info["action_mask"]`` or an ``action_mask`` in the observations
  where the environment gives one, else every action. ``action_masks=False`` makes every action
  available, as EPyMARL does. Agents with fewer actions than the largest action space have the
  extra indices unavailable.
* **Agents that finish early**: when ``terminated``/``truncated`` are per-agent lists, an agent
  is finished from the step its flag is set; from then on its observation is zeros, only action
  0 is available (the adapter sends 0 for it; the environment ignores a finished agent's action)
  and its alive flag is False. The episode ends when every agent has finished. It is truncated
  when an agent still playing was truncated in the last step (a time limit is never called a
  terminal state), and those agents keep their observation and stay alive on the final row (the
  row bootstrapped from); otherwise it is terminated. (The PettingZoo backend follows the same
  rule.) The alive mask is explicit (``provides_alive``); no ``noop_action`` is declared,
  because in LBF and RWARE action 0 (NOOP) is never the only available action of an agent that
  plays on (an LBF agent blocked on every side by food may load it), so SMAC's no-op rule would
  never find a dead agent. LBF 2.0 and RWARE 2.0 return single bools: their agents are alive
  for the whole episode.
* **Seeding**: the constructor's ``seed`` goes to the first ``reset(seed=...)``; later resets
  continue the environment's own ``np_random``, so the same seed gives the same episodes.
  ``get_rng_state()`` is that generator's ``bit_generator.state`` (plain Python values) with the
  seed still to be applied, if any, and for LBF the players' positions (its reset avoids the
  cells they stand on). LBF and RWARE draw only from ``np_random``; an environment with other
  sources of randomness, or whose reset depends on other leftovers, is not restored exactly.
* **Refused at start-up**, each with the fix in the message: an unknown id (with the closest
  registered ids of its package), a missing package (with the pip command), a continuous
  (``Box``) or ``MultiDiscrete`` action space, observation sizes that differ without padding, a
  state the environment does not have, no time limit anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..errors import ConfigError, MissingPackageError
from .multiagentenv import MultiAgentEnv

GYMNASIUM_PIP = "pip install 'gymnasium>=1.0'"
STATE_CHOICES = ("auto", "env", "concat_obs")
REWARD_REDUCTIONS = ("sum", "mean")
_SCALAR_BOOLS = (bool, np.bool_)


# ------------------------------------------------------------------------------ families
def _lbf_reached_terminal(unwrapped) -> bool:
    # LBF 2.0 ends an episode when every food is collected or at its own step limit.
    return not unwrapped.field.any()


def _rware_reached_terminal(unwrapped) -> bool:
    # RWARE 2.0 ends an episode only at max_steps or max_inactivity_steps: both are time limits.
    return False


def _lbf_valid_actions(unwrapped, out: np.ndarray) -> None:
    """LBF's valid actions (a dict player -> list of ``Action``) into ``out [n_agents, n_actions]``."""
    out[:] = False
    valid = unwrapped._valid_actions
    for row, player in zip(out, unwrapped.players):
        for action in valid[player]:
            row[action._value_] = True  # the Enum's stored value; .value is a slow descriptor


def _lbf_positions(unwrapped) -> Optional[list]:
    # LBF's reset skips the cells where the players stood at the end of the last episode, so
    # they decide the next episode as much as the random generator does.
    positions = [player.position for player in unwrapped.players]
    return None if any(p is None for p in positions) else [[int(r), int(c)] for r, c in positions]


def _set_lbf_positions(unwrapped, positions: Optional[list]) -> None:
    for player, position in zip(unwrapped.players, positions or [None] * len(unwrapped.players)):
        player.position = None if position is None else (int(position[0]), int(position[1]))


@dataclass(frozen=True)
class Family:
    """What the adapter knows about one package's environments (read from its 2.0 sources)."""

    backend: str              # qmixlab backend name
    package: str              # the module whose import registers the ids
    pip_install: str
    id_prefix: str            # a plain id starting with this belongs to the family
    default_key: str
    own_limit_attribute: str  # attribute of the unwrapped env: the step limit it reports as terminated
    own_limit_kwarg: str      # the constructor argument that sets it
    reached_terminal: Callable[[Any], bool]  # on a terminated step: a true terminal state?
    valid_actions: Optional[Callable[[Any, np.ndarray], None]] = None
    # Besides np_random, what decides the next reset (plain values), and how to restore it.
    reset_inputs: Optional[Callable[[Any], Any]] = None
    set_reset_inputs: Optional[Callable[[Any, Any], None]] = None


FAMILIES: Dict[str, Family] = {
    "lbf": Family("lbf", "lbforaging", "pip install 'lbforaging>=2.0'", "Foraging", "Foraging-8x8-2p-3f-v3",
                  "_max_episode_steps", "max_episode_steps", _lbf_reached_terminal, _lbf_valid_actions,
                  _lbf_positions, _set_lbf_positions),
    "rware": Family("rware", "rware", "pip install 'rware>=2.0'", "rware", "rware-tiny-2ag-v2",
                    "max_steps", "max_steps", _rware_reached_terminal),
}
BACKENDS = ("gymma", *FAMILIES)


def _family_of_entry_point(entry_point) -> Optional[Family]:
    module = entry_point.split(":")[0] if isinstance(entry_point, str) else getattr(entry_point, "__module__", "")
    for family in FAMILIES.values():
        if module == family.package or module.startswith(family.package + "."):
            return family
    return None


def import_gymnasium():
    try:
        return importlib.import_module("gymnasium")
    except ImportError as err:
        raise MissingPackageError(
            f"the gymnasium backends (gymma, lbf, rware) need the gymnasium package, which is not "
            f"importable ({err}). Install it with\n    {GYMNASIUM_PIP}"
        ) from err


def _import_package(name: str, pip_install: str, why: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError as err:
        if getattr(err, "name", name) not in (name, name.split(".")[0]):
            raise  # the package exists but one of its own imports failed: show that error
        raise MissingPackageError(
            f"{why} needs the package {name!r}, which is not importable ({err}). Install it with\n"
            f"    {pip_install}"
        ) from err


def resolve_key(key, backend: str = "gymma"):
    """``(gymnasium, registered EnvSpec, Family or None)`` for ``key``, importing what registers it.

    Raises ``ConfigError`` for an unknown id (naming the closest registered ids of its package)
    and ``MissingPackageError`` when gymnasium or the package is missing."""
    family = FAMILIES.get(backend)
    if not isinstance(key, str) or not key:
        example = family.default_key if family else "lbforaging:Foraging-8x8-2p-3f-v3"
        raise ConfigError(
            f"env={backend} needs env_args.key, a registered gymnasium id such as {example!r}; got {key!r}"
        )
    gym = import_gymnasium()
    module, _, env_id = key.rpartition(":")
    if module:
        _import_package(module, f"pip install {module}", f"env_args.key={key!r}")
    if family is not None:
        _import_package(family.package, family.pip_install, f"env={backend}")
    elif not module:
        for candidate in FAMILIES.values():
            if env_id.startswith(candidate.id_prefix):
                _import_package(candidate.package, candidate.pip_install, f"env_args.key={key!r}")
    registry = gym.envs.registry
    if env_id not in registry:
        owner = family.package if family else (module or None)
        known = sorted(i for i, s in registry.items()
                       if owner is None or _entry_module(s.entry_point).split(".")[0] == owner.split(".")[0])
        close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        where = f"among the {len(known)} ids {owner} registers" if owner else "in gymnasium's registry"
        fix = "" if module or family else (
            " If a package registers it on import, name the package: env_args.key=<package>:<id>.")
        raise ConfigError(f"unknown gymnasium id {env_id!r} for env={backend}: not {where}.{hint}{fix}")
    spec = registry[env_id]
    found = _family_of_entry_point(spec.entry_point)
    if family is not None and found is not family:
        raise ConfigError(
            f"env={backend} takes ids of {family.package} (e.g. {family.default_key!r}), but {env_id!r} "
            f"comes from {_entry_module(spec.entry_point) or 'another package'}; use env=gymma "
            f"env_args.key={env_id!r}"
        )
    return gym, spec, found


def _entry_module(entry_point) -> str:
    if isinstance(entry_point, str):
        return entry_point.split(":")[0]
    return getattr(entry_point, "__module__", "") or ""


def backend_arg_defaults(backend: str) -> Dict[str, Any]:
    """The env_args backend ``backend`` accepts, with their defaults (``config/envs/<backend>.yaml``)."""
    family = FAMILIES.get(backend)
    return {
        "key": family.default_key if family else None,
        "env_kwargs": {},
        "time_limit": None,
        "pad_observations": False,
        "state": "auto",
        "reward_reduction": "sum",
        "action_masks": True,
    }


def make_backend_env(backend: str, **env_args) -> "GymnasiumMultiAgentEnv":
    """The per-env factory of backends ``gymma``, ``lbf`` and ``rware``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown gymnasium backend {backend!r}; expected one of {BACKENDS}")
    args = backend_arg_defaults(backend)
    args.update(env_args)
    return GymnasiumMultiAgentEnv(backend=backend, **args)


# ------------------------------------------------------------------------------ the adapter
class GymnasiumMultiAgentEnv(MultiAgentEnv):
    """One gymnasium multi-agent environment with SMAC's per-env API (module docstring).

    ``self.env`` is what ``gymnasium.make`` returned; ``self.family`` the known family (LBF,
    RWARE) or None.
    """

    provides_alive = True

    def __init__(self, key: Optional[str] = None, env_kwargs: Optional[Mapping[str, Any]] = None,
                 time_limit: Optional[int] = None, pad_observations: bool = False, state: str = "auto",
                 reward_reduction: str = "sum", action_masks: bool = True, seed: Optional[int] = None,
                 *, backend: str = "gymma"):
        _check_options(backend, env_kwargs, time_limit, pad_observations, state, reward_reduction, action_masks)
        gym, registered, self.family = resolve_key(key, backend)
        self.key = registered.id
        self.backend = backend
        env_kwargs = dict(env_kwargs or {})
        # Through a spec with the kwargs merged in, so that every key reaches the constructor
        # (gymnasium.make would take max_episode_steps for its TimeLimit).
        spec = _with_kwargs(registered, env_kwargs)
        try:
            self.env = gym.make(spec, max_episode_steps=time_limit, disable_env_checker=True)
        except TypeError as err:
            raise ConfigError(
                f"gymnasium id {self.key!r} refused env_kwargs {env_kwargs}: {err}. Pass only the "
                f"environment constructor's arguments; the time limit is env_args.time_limit"
            ) from err
        try:
            self._setup(time_limit, pad_observations, state, reward_reduction, action_masks, seed)
        except BaseException:
            self.env.close()
            raise

    def _setup(self, time_limit, pad_observations, state, reward_reduction, action_masks, seed) -> None:
        unwrapped = self.env.unwrapped
        self._unwrapped = unwrapped
        action_spaces, obs_spaces = self._agent_spaces()
        self.n_agents = len(action_spaces)
        self._action_sizes, self._action_starts = _discrete_actions(self.key, action_spaces)
        self.n_actions = max(self._action_sizes)
        self._obs_readers, obs_sizes, self._mask_in_obs = _observation_readers(obs_spaces)
        same_vectors = all(_is_vector_box(space) for space in obs_spaces)
        if len(set(obs_sizes)) > 1 and not pad_observations:
            sizes = ", ".join(f"agent {i}: {size}" for i, size in enumerate(obs_sizes))
            raise ConfigError(
                f"the agents of {self.key!r} observe vectors of different sizes ({sizes}); qmixlab "
                f"stores one size for all. Set env_args.pad_observations=True to pad them with zeros "
                f"to {max(obs_sizes)}"
            )
        self._obs_sizes = obs_sizes
        self._obs_same_vectors = same_vectors and len(set(obs_sizes)) == 1
        self.obs_size = max(obs_sizes)
        self._state_source = self._choose_state(state)
        self.state_size = (int(unwrapped.state_size) if self._state_source == "env"
                           else self.n_agents * self.obs_size)
        self.episode_limit = self._choose_episode_limit(time_limit)
        self._mean_reward = reward_reduction == "mean"
        self._use_masks = bool(action_masks)
        family = self.family
        self._reached_terminal = family.reached_terminal if family else None
        self._family_avail = family.valid_actions if family and self._use_masks else None

        self._obs = np.zeros((self.n_agents, self.obs_size), np.float32)
        self._all_actions = np.zeros((self.n_agents, self.n_actions), bool)
        for agent, size in enumerate(self._action_sizes):
            self._all_actions[agent, :size] = True
        self._avail = self._all_actions.copy()
        self._alive = np.ones(self.n_agents, bool)
        self._all_alive = True
        self._actions_shifted = any(self._action_starts)
        self._pending_seed = seed
        self._t = 0
        self._episode_over = True
        self._episodes = 0
        self._timeouts = 0

    # --------------------------------------------------------------------------- set-up
    def _agent_spaces(self):
        from gymnasium import spaces

        action_space, obs_space = self.env.action_space, self.env.observation_space
        for name, space in (("action", action_space), ("observation", obs_space)):
            if not isinstance(space, spaces.Tuple):
                raise ConfigError(
                    f"{self.key!r} has a single {name} space ({space}), not a Tuple with one entry per "
                    f"agent: it is not a multi-agent environment of the lbforaging/rware convention "
                    f"(a PettingZoo environment has its own backend)"
                )
        if len(action_space.spaces) != len(obs_space.spaces):
            raise ConfigError(
                f"{self.key!r} has {len(action_space.spaces)} action spaces but {len(obs_space.spaces)} "
                "observation spaces; expected one of each per agent"
            )
        return list(action_space.spaces), list(obs_space.spaces)

    def _choose_state(self, state: str) -> str:
        has_state = callable(getattr(self._unwrapped, "get_state", None)) and \
            isinstance(getattr(self._unwrapped, "state_size", None), numbers.Integral)
        if state == "env" and not has_state:
            raise ConfigError(
                f"env_args.state='env' but {self.key!r} has no global state (no get_state() with an "
                f"integer state_size on the unwrapped environment); use state='concat_obs' (or 'auto')"
            )
        if state == "auto":
            return "env" if has_state else "concat_obs"
        return state

    def _choose_episode_limit(self, time_limit: Optional[int]) -> int:
        own = None
        if self.family is not None:
            own = getattr(self._unwrapped, self.family.own_limit_attribute, None)
            own = int(own) if isinstance(own, numbers.Integral) and own > 0 else None
        if time_limit is not None and own is not None and time_limit > own:
            raise ConfigError(
                f"env_args.time_limit={time_limit} is longer than the episodes of {self.key!r}, which "
                f"end after {own} steps ({self.family.package}'s own limit, its constructor argument "
                f"{self.family.own_limit_kwarg}); raise that too: "
                f"env_args.env_kwargs.{self.family.own_limit_kwarg}={time_limit}"
            )
        wrapper = time_limit if time_limit is not None else self.env.spec.max_episode_steps
        limits = [limit for limit in (wrapper, own) if limit is not None]
        if not limits:
            raise ConfigError(
                f"{self.key!r} has no time limit (no max_episode_steps in its registration"
                f"{' and no ' + self.family.own_limit_kwarg if self.family else ''}); qmixlab sizes its "
                "episode buffers by one. Set env_args.time_limit"
            )
        return int(min(limits))

    # --------------------------------------------------------------------------- episodes
    def reset(self):
        seed, self._pending_seed = self._pending_seed, None
        obs, info = self.env.reset(seed=seed)
        self._t = 0
        self._episode_over = False
        self._alive = np.ones(self.n_agents, bool)
        self._all_alive = True
        self._read_obs(obs)
        self._read_avail(obs, info)
        return self.get_obs(), self.get_state()

    def step(self, actions):
        if self._episode_over:
            raise ValueError(f"{self.key}: the episode has ended (or was never started); call reset() first")
        actions = [int(a) for a in actions]
        if len(actions) != self.n_agents:
            raise ValueError(f"{self.key}: got {len(actions)} actions, expected one per agent ({self.n_agents})")
        avail = self._avail
        for agent, action in enumerate(actions):
            if not (0 <= action < self.n_actions and avail[agent, action]):
                raise ValueError(
                    f"{self.key}: action {action} is not available to agent {agent}; available: "
                    f"{np.flatnonzero(avail[agent]).tolist()}"
                )
        reward, ended_terminal, ended_truncated = self.step_checked(actions)
        if not (ended_terminal or ended_truncated):
            return reward, False, {}
        if ended_terminal:
            return reward, True, {}
        return reward, True, {"episode_limit": True}

    def step_checked(self, actions: List[int]) -> Tuple[float, bool, bool]:
        """``step`` for a caller that has checked ``actions`` (Python ints, one per agent, each
        available, the episode running): ``(reward, terminated, truncated)``, the two kinds of
        end kept apart (``multiagentenv.MultiAgentEnv.step_checked``)."""
        if self._actions_shifted:
            actions = [a + start for a, start in zip(actions, self._action_starts)]
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        self._t += 1
        if type(rewards) in (list, tuple):  # the convention: one reward per agent
            reward = float(sum(rewards))
            if self._mean_reward:
                reward /= len(rewards)
        else:
            reward = self._other_reward(rewards)

        if type(terminated) in _SCALAR_BOOLS and type(truncated) in _SCALAR_BOOLS:
            ended_terminal, ended_truncated = bool(terminated), bool(truncated)
            if ended_terminal and self._reached_terminal is not None and not self._reached_terminal(self._unwrapped):
                ended_terminal, ended_truncated = False, True  # the family's own time limit
        else:
            ended_terminal, ended_truncated = self._agents_finish(terminated, truncated)
        if not (ended_terminal or ended_truncated) and self._t >= self.episode_limit:
            ended_truncated = True
        self._read_obs(obs)
        self._read_avail(obs, info)

        if ended_terminal or ended_truncated:
            ended_truncated = not ended_terminal  # a terminal state is never a time-out
            self._episode_over = True
            self._episodes += 1
            self._timeouts += ended_truncated
        return reward, ended_terminal, ended_truncated

    def _other_reward(self, rewards) -> float:
        """A scalar team reward as it is, or a numpy array of per-agent rewards reduced."""
        if np.ndim(rewards) == 0:
            return float(rewards)
        rewards = np.asarray(rewards, np.float64)
        return float(rewards.mean() if self._mean_reward else rewards.sum())

    def _agents_finish(self, terminated, truncated) -> Tuple[bool, bool]:
        """Per-agent flags: newly finished agents die; ``(terminated, truncated)`` of the episode."""
        agent_terminated = np.broadcast_to(np.asarray(terminated, bool), (self.n_agents,))
        agent_truncated = np.broadcast_to(np.asarray(truncated, bool), (self.n_agents,))
        newly_terminated = self._alive & agent_terminated
        newly_truncated = self._alive & agent_truncated & ~agent_terminated
        still_playing = self._alive & ~newly_terminated & ~newly_truncated
        if still_playing.any():
            self._alive = still_playing
            self._all_alive = bool(still_playing.all())
            return False, False
        if newly_truncated.any():
            # A time limit, never a terminal state: the truncated agents stay alive on the final
            # row, which the learner bootstraps from.
            self._alive = newly_truncated
            self._all_alive = bool(newly_truncated.all())
            return False, True
        self._alive = still_playing
        self._all_alive = False
        return True, False

    def _read_obs(self, obs) -> None:
        out = self._obs
        if self._obs_same_vectors:
            out[...] = obs  # every agent's observation is a vector of the same size: one copy
        else:
            for agent, (read, size) in enumerate(zip(self._obs_readers, self._obs_sizes)):
                out[agent, :size] = read(obs[agent])
        if not self._all_alive:
            out[~self._alive] = 0.0

    def _read_avail(self, obs, info) -> None:
        avail = self._avail
        if self._family_avail is not None:
            self._family_avail(self._unwrapped, avail)
        elif self._use_masks and self._mask_in_obs:
            for agent in range(self.n_agents):
                size = self._action_sizes[agent]
                avail[agent, :size] = np.asarray(obs[agent]["action_mask"]).reshape(-1)[:size] != 0
                avail[agent, size:] = False
        elif self._use_masks and isinstance(info, Mapping) and "action_mask" in info:
            mask = np.asarray(info["action_mask"])
            avail[:] = False
            for agent in range(self.n_agents):
                size = self._action_sizes[agent]
                avail[agent, :size] = np.asarray(mask[agent]).reshape(-1)[:size] != 0
        else:
            avail[:] = self._all_actions
        if not self._all_alive:
            avail[~self._alive] = False
            avail[~self._alive, 0] = True

    # --------------------------------------------------------------------------- getters
    def get_obs(self) -> np.ndarray:
        """``[n_agents, obs_size]`` float32, borrowed until the next step/reset."""
        return self._obs

    def get_obs_agent(self, agent_id: int) -> np.ndarray:
        return self._obs[agent_id]

    def get_obs_size(self) -> int:
        return self.obs_size

    def get_state(self) -> np.ndarray:
        if self._state_source == "env":
            return np.asarray(self._unwrapped.get_state(), np.float32).reshape(-1)
        return self._obs.reshape(-1)

    def get_state_size(self) -> int:
        return self.state_size

    def get_avail_actions(self) -> np.ndarray:
        return self._avail

    def get_avail_agent_actions(self, agent_id: int) -> np.ndarray:
        return self._avail[agent_id]

    def get_total_actions(self) -> int:
        return self.n_actions

    def get_alive_agents(self) -> np.ndarray:
        return self._alive

    def get_stats(self) -> dict:
        return {"episodes": self._episodes, "timeouts": self._timeouts}

    # --------------------------------------------------------------------------- rng hooks
    def get_rng_state(self) -> dict:
        """What decides the next episodes, as plain values: the seed still to be applied, the
        environment's ``np_random`` state, and the family's other reset inputs (LBF: where the
        players stand, as its reset avoids those cells)."""
        family = self.family
        return {"pending_seed": self._pending_seed,
                "np_random": self._unwrapped.np_random.bit_generator.state,
                "reset_inputs": family.reset_inputs(self._unwrapped) if family and family.reset_inputs else None}

    def set_rng_state(self, state: Mapping) -> None:
        keys = {"pending_seed", "np_random", "reset_inputs"}
        if not isinstance(state, Mapping) or set(state) != keys:
            raise ValueError(
                f"{self.key}: expected the dict of get_rng_state() with keys {sorted(keys)}, got {state!r}"
            )
        self._pending_seed = state["pending_seed"]
        self._unwrapped.np_random.bit_generator.state = state["np_random"]
        if self.family is not None and self.family.set_reset_inputs is not None:
            self.family.set_reset_inputs(self._unwrapped, state["reset_inputs"])

    def close(self) -> None:
        self.env.close()


# ------------------------------------------------------------------------------ helpers
def _check_options(backend, env_kwargs, time_limit, pad_observations, state, reward_reduction, action_masks):
    if env_kwargs is not None and not isinstance(env_kwargs, Mapping):
        raise ConfigError(f"env_args.env_kwargs must be a mapping of constructor arguments, got {env_kwargs!r}")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, numbers.Integral)
                                   or time_limit < 1):
        raise ConfigError(f"env_args.time_limit must be a positive int or null (the environment's own), "
                          f"got {time_limit!r}")
    for name, value in (("pad_observations", pad_observations), ("action_masks", action_masks)):
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"env_args.{name} must be true or false, got {value!r}")
    for name, value, choices in (("state", state, STATE_CHOICES),
                                 ("reward_reduction", reward_reduction, REWARD_REDUCTIONS)):
        if value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"env_args.{name}={value!r} for env={backend}: expected one of "
                              f"{', '.join(choices)}{hint}")


def _with_kwargs(registered, env_kwargs: Mapping[str, Any]):
    return dataclasses.replace(registered, kwargs={**registered.kwargs, **env_kwargs})


def _discrete_actions(key: str, action_spaces) -> Tuple[List[int], List[int]]:
    from gymnasium import spaces

    sizes, starts = [], []
    for agent, space in enumerate(action_spaces):
        if isinstance(space, spaces.Discrete):
            sizes.append(int(space.n))
            starts.append(int(space.start))
            continue
        if isinstance(space, spaces.Box):
            problem = f"a continuous (Box) action space {space}"
        else:
            problem = f"a {type(space).__name__} action space {space}"
        raise ConfigError(
            f"agent {agent} of {key!r} has {problem}; qmixlab's value-based learners choose one of n "
            f"discrete actions per agent (a Discrete space). Choose a variant of the task with "
            f"Discrete actions (for RWARE: msg_bits=0)"
        )
    return sizes, starts


def _observation_readers(obs_spaces):
    """Per agent: a function from its observation to a flat float vector, and its size; and
    whether the observations carry an ``action_mask``."""
    from gymnasium import spaces

    readers, sizes = [], []
    masked = [isinstance(s, spaces.Dict) and "action_mask" in s.spaces and "observation" in s.spaces
              for s in obs_spaces]
    for space, has_mask in zip(obs_spaces, masked):
        if has_mask:
            inner = space.spaces["observation"]
            readers.append(_reader(inner, lambda o: o["observation"]))
            sizes.append(int(spaces.flatdim(inner)))
        else:
            readers.append(_reader(space, None))
            sizes.append(int(spaces.flatdim(space)))
    return readers, sizes, all(masked)


def _is_vector_box(space) -> bool:
    from gymnasium import spaces

    return isinstance(space, spaces.Box) and len(space.shape) == 1


def _reader(space, select):
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        if select is None:
            return lambda o: np.asarray(o).reshape(-1)
        return lambda o: np.asarray(select(o)).reshape(-1)
    if select is None:
        return lambda o: spaces.flatten(space, o)
    return lambda o: spaces.flatten(space, select(o))
