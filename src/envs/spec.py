"""``EnvSpec``: what an environment declares about itself, typed and checked once.

The runner, the replay buffer and the learner read sizes, step flags, how to tell dead agents
and the state layout from here, never from guesses about the backend. The written contract is
``docs/environments.md``; in short, an environment declares (with ``get_spec()``, or class
attributes of the same names read by ``declared_spec``):

* ``step_flags``: names of per-step bool flags it emits (``"invalid"``: mask the step out of
  every loss term). The runner stores one episode field per declared flag.
* ``noop_action`` and/or ``provides_alive``: how the runner tells dead agents. An agent whose
  only available action is ``noop_action`` is dead; with ``provides_alive`` the environment
  hands over an explicit alive mask (``get_alive_agents()``). With neither, every agent counts
  as alive and ``can_tell_dead_agents`` is False.
* ``auto_reset``: the environment starts a new episode inside ``step`` and hands over the final
  observation, state and availability in the step result.
* optional SMAC layouts (``obs_layout``, ``state_layout``) and ``state_last_action``, where
  SMAC's last-action block sits in the state.
"""

from __future__ import annotations

import dataclasses
import keyword
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

# Episode fields the runner always writes: a step flag may not take one of these names.
RESERVED_FIELD_NAMES = frozenset(
    {"obs", "state", "actions", "avail_actions", "reward", "terminated", "timeout", "truncated",
     "filled", "alive", "episode_id"}
)
# What a plug-in may declare as class attributes (or get_env_info keys) instead of get_spec().
DECLARATION_NAMES = ("step_flags", "noop_action", "provides_alive", "auto_reset", "state_last_action")
SIZE_NAMES = ("n_agents", "n_actions", "obs_shape", "state_shape", "episode_limit")

SliceLike = Union[slice, Tuple[int, int]]


def _positive_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def _count_and_size(owner: str, name: str, value) -> Tuple[int, int]:
    try:
        count, size = value
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {name} must be a pair (count, features each), got {value!r}") from None
    for part in (count, size):
        if isinstance(part, bool) or not isinstance(part, numbers.Integral) or part < 0:
            raise ValueError(f"{owner}: {name} must hold non-negative ints, got {value!r}")
    return int(count), int(size)


@dataclass(frozen=True)
class ObsLayout:
    """SMAC's observation of one agent: ``[move | enemies | allies | own]``.

    ``enemies`` and ``allies`` are ``(count, features each)`` (allies: the other agents);
    ``own`` includes the timestep feature when the observation has one (SMAC's convention).
    """

    move: int
    enemies: Tuple[int, int]
    allies: Tuple[int, int]
    own: int

    def __post_init__(self):
        for name in ("move", "own"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"ObsLayout: {name} must be a non-negative int, got {value!r}")
        object.__setattr__(self, "enemies", _count_and_size("ObsLayout", "enemies", self.enemies))
        object.__setattr__(self, "allies", _count_and_size("ObsLayout", "allies", self.allies))

    @property
    def size(self) -> int:
        return self.move + self.enemies[0] * self.enemies[1] + self.allies[0] * self.allies[1] + self.own

    def slices(self) -> Dict[str, slice]:
        """Where each block sits in the observation vector."""
        bounds = [("move", self.move), ("enemies", self.enemies[0] * self.enemies[1]),
                  ("allies", self.allies[0] * self.allies[1]), ("own", self.own)]
        return _blocks(bounds)


@dataclass(frozen=True)
class StateLayout:
    """SMAC's state: ``[allies | enemies | last actions | timestep]``.

    ``allies``/``enemies`` are ``(count, attributes each)``; ``last_action`` is the size of the
    last-action block (``n_agents * n_actions``, or 0); ``timestep`` is 0 or 1.
    """

    allies: Tuple[int, int]
    enemies: Tuple[int, int]
    last_action: int = 0
    timestep: int = 0

    def __post_init__(self):
        object.__setattr__(self, "allies", _count_and_size("StateLayout", "allies", self.allies))
        object.__setattr__(self, "enemies", _count_and_size("StateLayout", "enemies", self.enemies))
        for name in ("last_action", "timestep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"StateLayout: {name} must be a non-negative int, got {value!r}")

    @property
    def size(self) -> int:
        return (self.allies[0] * self.allies[1] + self.enemies[0] * self.enemies[1]
                + self.last_action + self.timestep)

    def slices(self) -> Dict[str, slice]:
        bounds = [("allies", self.allies[0] * self.allies[1]),
                  ("enemies", self.enemies[0] * self.enemies[1]),
                  ("last_action", self.last_action), ("timestep", self.timestep)]
        return _blocks(bounds)


def _blocks(bounds) -> Dict[str, slice]:
    out, start = {}, 0
    for name, width in bounds:
        out[name] = slice(start, start + width)
        start += width
    return out


@dataclass(frozen=True)
class EnvSpec:
    """Sizes and declared capabilities of an environment (see the module docstring)."""

    n_agents: int
    n_actions: int
    obs_shape: int
    state_shape: int
    episode_limit: int
    step_flags: Tuple[str, ...] = ()
    noop_action: Optional[int] = None
    provides_alive: bool = False
    auto_reset: bool = False
    obs_layout: Optional[ObsLayout] = None
    state_layout: Optional[StateLayout] = None
    # (start, stop) of SMAC's last-action block in the state; a slice is accepted and normalised.
    state_last_action: Optional[Tuple[int, int]] = None

    def __post_init__(self):
        for name in SIZE_NAMES:
            object.__setattr__(self, name, _positive_int("EnvSpec", name, getattr(self, name)))
        flags = self.step_flags
        if isinstance(flags, str) or not isinstance(flags, (tuple, list)):
            raise ValueError(f"EnvSpec: step_flags must be a tuple of names, got {flags!r}")
        for flag in flags:
            if not isinstance(flag, str) or not flag.isidentifier() or keyword.iskeyword(flag):
                raise ValueError(f"EnvSpec: step flag {flag!r} must be an identifier-like name")
            if flag in RESERVED_FIELD_NAMES:
                raise ValueError(
                    f"EnvSpec: step flag {flag!r} clashes with an episode field the runner writes; "
                    f"reserved: {', '.join(sorted(RESERVED_FIELD_NAMES))}"
                )
        if len(set(flags)) != len(flags):
            raise ValueError(f"EnvSpec: step_flags has duplicates: {list(flags)}")
        object.__setattr__(self, "step_flags", tuple(flags))
        noop = self.noop_action
        if noop is not None:
            if isinstance(noop, bool) or not isinstance(noop, numbers.Integral) or not 0 <= noop < self.n_actions:
                raise ValueError(
                    f"EnvSpec: noop_action must be None or an action index in [0, {self.n_actions}), "
                    f"got {noop!r}"
                )
            object.__setattr__(self, "noop_action", int(noop))
        for name in ("provides_alive", "auto_reset"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"EnvSpec: {name} must be a bool, got {value!r}")
            object.__setattr__(self, name, bool(value))
        self._check_layouts()

    def _check_layouts(self) -> None:
        if self.obs_layout is not None:
            if not isinstance(self.obs_layout, ObsLayout):
                raise ValueError(f"EnvSpec: obs_layout must be an ObsLayout, got {self.obs_layout!r}")
            if self.obs_layout.size != self.obs_shape:
                raise ValueError(
                    f"EnvSpec: obs_layout adds up to {self.obs_layout.size} features, obs_shape is "
                    f"{self.obs_shape}"
                )
        if self.state_layout is not None:
            if not isinstance(self.state_layout, StateLayout):
                raise ValueError(f"EnvSpec: state_layout must be a StateLayout, got {self.state_layout!r}")
            if self.state_layout.size != self.state_shape:
                raise ValueError(
                    f"EnvSpec: state_layout adds up to {self.state_layout.size} features, state_shape "
                    f"is {self.state_shape}"
                )
        block = self.state_last_action
        if block is None:
            return
        if isinstance(block, slice):
            if block.step not in (None, 1) or block.start is None or block.stop is None:
                raise ValueError(f"EnvSpec: state_last_action must be a slice with start and stop, got {block!r}")
            block = (block.start, block.stop)
        try:
            start, stop = (int(v) for v in block)
        except (TypeError, ValueError):
            raise ValueError(f"EnvSpec: state_last_action must be (start, stop) or a slice, got {block!r}") from None
        width = self.n_agents * self.n_actions
        if not 0 <= start < stop <= self.state_shape or stop - start != width:
            raise ValueError(
                f"EnvSpec: state_last_action={(start, stop)} must be a block of n_agents*n_actions = "
                f"{width} features inside the state of {self.state_shape}"
            )
        if self.state_layout is not None:
            expected = self.state_layout.slices()["last_action"]
            if (expected.start, expected.stop) != (start, stop):
                raise ValueError(
                    f"EnvSpec: state_last_action={(start, stop)} disagrees with state_layout, whose "
                    f"last-action block is {(expected.start, expected.stop)}"
                )
        object.__setattr__(self, "state_last_action", (start, stop))

    # ------------------------------------------------------------------------- queries
    @property
    def can_tell_dead_agents(self) -> bool:
        """True when the environment declares how to tell a dead agent (mask or no-op)."""
        return self.provides_alive or self.noop_action is not None

    @property
    def state_last_action_slice(self) -> Optional[slice]:
        block = self.state_last_action
        return None if block is None else slice(*block)

    def alive_from_avail(self, avail_actions: np.ndarray) -> np.ndarray:
        """Bool ``[..., n_agents]`` from availability ``[..., n_agents, n_actions]`` by the
        declared no-op rule (all True when no no-op is declared)."""
        avail = np.asarray(avail_actions, dtype=bool)
        if self.noop_action is None:
            return np.ones(avail.shape[:-1], dtype=bool)
        only_noop = avail[..., self.noop_action] & (avail.sum(-1) == 1)
        return ~only_noop

    def replace(self, **changes) -> "EnvSpec":
        return dataclasses.replace(self, **changes)

    def to_env_info(self) -> dict:
        """SMAC's ``get_env_info()`` dict, for code written against it."""
        return {name: getattr(self, name) for name in SIZE_NAMES}

    # ------------------------------------------------------------------- construction
    @classmethod
    def from_env_info(cls, env_info: Mapping[str, Any], **declarations) -> "EnvSpec":
        """A spec from a SMAC ``get_env_info()`` dict.

        The five SMAC sizes are required. The declarations (``step_flags``, ``noop_action``,
        ``provides_alive``, ``auto_reset``, ``state_last_action``) are read from keyword
        arguments first, then from keys of the dict of the same names; the legacy key
        ``flags_invalid_steps=True`` declares the ``"invalid"`` flag. Whatever is not declared
        gets the default: no flags, ``noop_action=None``, ``provides_alive=False``,
        ``auto_reset=False``.
        """
        if not isinstance(env_info, Mapping):
            raise TypeError(f"env info must be a dict, got {type(env_info).__name__}")
        missing = [k for k in SIZE_NAMES if k not in env_info]
        if missing:
            raise ValueError(
                f"env info lacks {', '.join(missing)}; expected keys {', '.join(SIZE_NAMES)}, got "
                f"{sorted(env_info)}"
            )
        unknown = sorted(set(declarations) - set(DECLARATION_NAMES))
        if unknown:
            raise TypeError(f"unknown declaration(s) {unknown}; expected some of {list(DECLARATION_NAMES)}")
        values = {}
        for name in DECLARATION_NAMES:
            if declarations.get(name) is not None:
                values[name] = declarations[name]
            elif env_info.get(name) is not None and not _is_smac_option(name, env_info[name]):
                values[name] = env_info[name]
        flags = tuple(values.get("step_flags", ()))
        if env_info.get("flags_invalid_steps") and "invalid" not in flags:
            flags += ("invalid",)
        values["step_flags"] = flags
        return cls(**{name: env_info[name] for name in SIZE_NAMES}, **values)


def _is_smac_option(name: str, value) -> bool:
    """SMAC's bool option ``state_last_action`` shares its name with the declared block."""
    return name == "state_last_action" and isinstance(value, (bool, np.bool_))


def declared_spec(env) -> EnvSpec:
    """The spec of an environment that has no ``get_spec()`` of its own: its ``get_env_info()``
    plus whatever it declares as attributes named in ``DECLARATION_NAMES``."""
    declarations = {}
    for name in DECLARATION_NAMES:
        value = getattr(env, name, None)
        if value is None or callable(value) or _is_smac_option(name, value):
            continue
        declarations[name] = value
    return EnvSpec.from_env_info(env.get_env_info(), **declarations)


def spec_of(env) -> EnvSpec:
    """``env.get_spec()`` when the environment has it, else ``declared_spec(env)``."""
    get_spec = getattr(env, "get_spec", None)
    if get_spec is None:
        return declared_spec(env)
    spec = get_spec()
    if not isinstance(spec, EnvSpec):
        raise TypeError(
            f"{type(env).__qualname__}.get_spec() must return qmixlab.envs.EnvSpec, got "
            f"{type(spec).__name__}"
        )
    return spec


def smac_layouts(env, n_agents: int, n_actions: int, obs_shape: int, state_shape: int,
                 obs_instead_of_state: bool, state_last_action: bool, state_timestep_number: bool):
    """``(obs_layout, state_layout, state_last_action block)`` of an env with SMAC's size methods
    (``get_obs_move_feats_size`` and friends, ``get_ally_num_attributes``,
    ``get_enemy_num_attributes``). Parts the env cannot describe, or whose sizes do not add up,
    are None; the last-action block follows SMAC's state layout either way."""
    obs_layout = state_layout = None
    try:
        obs_layout = ObsLayout(
            move=int(env.get_obs_move_feats_size()),
            enemies=tuple(env.get_obs_enemy_feats_size()),
            allies=tuple(env.get_obs_ally_feats_size()),
            own=int(env.get_obs_own_feats_size()),
        )
        if obs_layout.size != obs_shape:
            obs_layout = None
    except (AttributeError, TypeError, ValueError):
        obs_layout = None
    if obs_instead_of_state:
        return obs_layout, None, None
    block_width = n_agents * n_actions if state_last_action else 0
    try:
        n_enemies = int(env.n_enemies)
        state_layout = StateLayout(
            allies=(n_agents, int(env.get_ally_num_attributes())),
            enemies=(n_enemies, int(env.get_enemy_num_attributes())),
            last_action=block_width,
            timestep=int(bool(state_timestep_number)),
        )
        if state_layout.size != state_shape:
            state_layout = None
    except (AttributeError, TypeError, ValueError):
        state_layout = None
    block = None
    if state_last_action:
        stop = state_shape - int(bool(state_timestep_number))
        block = (stop - block_width, stop)
        if block[0] < 0:
            block = None
    return obs_layout, state_layout, block
