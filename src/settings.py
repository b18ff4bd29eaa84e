"""The typed schema of a run's configuration, and its validation.

The merged configuration (``config/default.yaml`` <- ``config/algs/<alg>.yaml`` <-
``config/envs/<env>.yaml`` <- command-line overrides) is checked once, at start-up, against
``RunSettings``: an unknown or misspelled key, a wrong type or an unknown choice fails before any
work, naming the key and suggesting the closest valid one. Code after start-up reads typed
attributes, never ``getattr(args, "x", default)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Union

import yaml

from qmixlab.components.masks import MaskOptions
from qmixlab.learners.q_learner import LearnerOptions


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


@dataclass(frozen=True)
class AgentSettings:
    hidden_dim: int = 64
    use_last_action: bool = True
    use_agent_id: bool = True

    def __post_init__(self):
        if self.hidden_dim < 1:
            raise ConfigError(f"agent.hidden_dim={self.hidden_dim!r} must be >= 1")


@dataclass(frozen=True)
class EpsilonSettings:
    """Linear epsilon schedule over environment steps (PyMARL's ``epsilon_*`` keys)."""

    start: float = 1.0
    finish: float = 0.05
    anneal_time: int = 50000

    def __post_init__(self):
        for name in ("start", "finish"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"epsilon.{name}={getattr(self, name)!r} must lie in [0, 1]")
        if self.anneal_time < 1:
            raise ConfigError(f"epsilon.anneal_time={self.anneal_time!r} must be >= 1")


@dataclass(frozen=True)
class MixerSettings:
    name: Optional[Literal["none", "vdn", "qmix"]] = "qmix"
    mixing_embed_dim: int = 32
    hypernet_layers: Literal[1, 2] = 2
    hypernet_embed: int = 64


@dataclass(frozen=True)
class BufferSettings:
    """Replay storage: compact dtypes by default (see ``benchmarks/buffer_memory.py``)."""

    obs_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    state_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    # "auto": store SMAC's state without its last-action block when the env says the state has
    # one (state_last_action) and rebuild it from the stored actions when sampling.
    derive_state_last_action: Union[Literal["auto"], bool] = "auto"
    save_in_checkpoint: bool = True


@dataclass(frozen=True)
class RunSettings:
    # what to run
    name: str = "qmix"
    alg: str = "qmix"
    env: str = "smacsim"
    seed: int = 0
    device: str = "cpu"
    torch_threads: int = 0
    # training loop (PyMARL's semantics and names)
    t_max: int = 2_050_000
    test_interval: int = 10_000
    test_nepisode: int = 32
    log_interval: int = 10_000
    save_model: bool = True
    save_model_interval: int = 500_000
    checkpoint_path: str = ""
    load_step: int = 0
    evaluate: bool = False
    batch_size_run: int = 8
    batch_size: int = 32
    buffer_size: int = 5000
    local_results_path: str = "results"
    use_tensorboard: bool = False
    progress_bar: bool = True
    # sections
    agent: AgentSettings = field(default_factory=AgentSettings)
    epsilon: EpsilonSettings = field(default_factory=EpsilonSettings)
    mixer: MixerSettings = field(default_factory=MixerSettings)
    learner: LearnerOptions = field(default_factory=LearnerOptions)
    masks: MaskOptions = field(default_factory=MaskOptions)
    buffer: BufferSettings = field(default_factory=BufferSettings)
    env_args: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        positive = ("t_max", "test_interval", "log_interval", "save_model_interval", "batch_size_run",
                    "batch_size", "buffer_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 1")
        if self.torch_threads < 0:
            raise ConfigError(f"torch_threads={self.torch_threads!r} must be >= 0 (0: torch's default)")
        if self.test_nepisode < 0:
            raise ConfigError(f"test_nepisode={self.test_nepisode!r} must be >= 0")
        if self.buffer_size < self.batch_size:
            raise ConfigError(
                f"buffer_size={self.buffer_size} is smaller than batch_size={self.batch_size}: "
                "the learner could never sample"
            )
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device={self.device!r} must be 'cpu', 'cuda' or 'cuda:<index>'")

    def learner_options(self) -> LearnerOptions:
        """The learner's options with this run's mask options (kept as a top-level section so
        that ablations read ``masks.timeout=terminal``)."""
        return dataclasses.replace(self.learner, masks=self.masks)


# Sections whose keys are validated elsewhere (the environment validates its own arguments) or
# composed by the wiring (``learner.masks`` is the top-level ``masks`` section).
_EXCLUDED_KEYS = {LearnerOptions: {"masks"}}


# --------------------------------------------------------------------------- validation
def _all_key_paths(cls, prefix="") -> list:
    paths = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in _EXCLUDED_KEYS.get(cls, ()):
            continue
        path = prefix + f.name
        paths.append(path)
        if dataclasses.is_dataclass(hints[f.name]):
            paths.extend(_all_key_paths(hints[f.name], path + "."))
    return paths


def _suggest(key: str, path: str, candidates) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {(path + close[0])!r}?"
    # A PyMARL-style flat key that lives in a section here (lr -> learner.lr).
    elsewhere = [p for p in _all_key_paths(RunSettings) if p.rsplit(".", 1)[-1] == key]
    if elsewhere:
        return f"; did you mean {elsewhere[0]!r}?"
    return ""


def _check_value(value, hint, path: str):
    """Return ``value`` converted to ``hint`` or raise ConfigError naming ``path``."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a section (mapping), got {value!r}")
        return parse_section(hint, value, path + ".")
    if origin is Union:
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        if len(options) == 1:
            return _check_value(value, options[0], path)
        errors = []
        for option in options:
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_value(value, option, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{path}={value!r} matches none of the allowed forms: " + " / ".join(errors))
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint_text = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{path}={value!r} is not one of {list(choices)}{hint_text}")
    if origin in (dict, Dict) or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}={value!r} must be true or false")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}={value!r} must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():  # t_max=2e6 on the command line
            return int(value)
        raise ConfigError(f"{path}={value!r} must be an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}={value!r} must be a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}={value!r} must be a string")
    raise TypeError(f"no validation rule for {path} of type {hint!r}")


def parse_section(cls, values: dict, path: str = ""):
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls) if f.name not in _EXCLUDED_KEYS.get(cls, ())]
    for key in values:
        if key not in allowed:
            raise ConfigError(f"unknown config key {(path + str(key))!r}{_suggest(str(key), path, allowed)}")
    kwargs = {key: _check_value(value, hints[key], path + key) for key, value in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        message = str(error).strip("'\"")
        if path and not message.startswith(path):
            message = path + message  # "gamma=1.5 must lie in [0, 1]" -> "learner.gamma=..."
        raise ConfigError(message) from error


def validate_config(config: dict) -> RunSettings:
    """The one validation of a merged run configuration (sacred's ``seed`` included)."""
    return parse_section(RunSettings, dict(config))


# --------------------------------------------------------------------------- YAML files
def config_dir():
    return importlib.resources.files("qmixlab.config")


def available(kind: str) -> list:
    """Names of the shipped YAML configs of ``kind`` ('algs', 'envs' or 'ablations')."""
    return sorted(p.name[:-5] for p in (config_dir() / kind).iterdir() if p.name.endswith(".yaml"))


def load_yaml(kind: Optional[str], name: str) -> dict:
    """Read ``config/<kind>/<name>.yaml`` (``config/<name>.yaml`` when kind is None)."""
    base = config_dir() if kind is None else config_dir() / kind
    resource = base / f"{name}.yaml"
    if not resource.is_file():
        choices = available(kind) if kind else ["default"]
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown {kind or 'config'} {name!r}: expected one of {choices}{hint}")
    loaded = yaml.safe_load(resource.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{resource} must hold a mapping at its top level")
    return loaded


def deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def compose_config(alg: str, env: str) -> dict:
    """default.yaml <- algs/<alg>.yaml <- envs/<env>.yaml, with ``alg`` and ``env`` recorded."""
    config = load_yaml(None, "default")
    config = deep_merge(config, load_yaml("algs", alg))
    if ":" not in env:  # "package.module:ClassName" is a user environment with no YAML of its own
        config = deep_merge(config, load_yaml("envs", env))
    config["alg"], config["env"] = alg, env
    return config
