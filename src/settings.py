"""The typed schema of a run's configuration, and its validation.

The merged configuration (``config/default.yaml`` <- ``config/algs/<alg>.yaml`` <-
``config/envs/<env>.yaml`` <- command-line overrides) is checked once, at start-up, against
``RunSettings``: an unknown or misspelled key, a wrong type or an unknown choice fails before any
work, naming the key and suggesting the closest valid one. Code after start-up reads typed
attributes, never ``getattr(args, "x", default)``.

The dataclasses below own every default; ``config/default.yaml`` spells the same values out with
comments for users and a test keeps the two equal. This module imports neither torch nor an
environment backend at import time, so ``qmixlab --help`` and the ablation statistics stay light.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Union

import yaml

from qmixlab.components.mask_options import MaskOptions
from qmixlab.errors import ConfigError  # noqa: F401  (the schema's error, imported from here too)
from qmixlab.learners.options import LearnerOptions


@dataclass(frozen=True)
class AgentSettings:
    name: Literal["rnn", "entity_attention"] = "rnn"
    hidden_dim: int = 64
    use_last_action: bool = True
    use_agent_id: bool = True
    embed_dim: int = 32  # entity_attention only
    attention_heads: int = 4  # entity_attention only

    def __post_init__(self):
        for key in ("hidden_dim", "embed_dim", "attention_heads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"agent.{key}={getattr(self, key)!r} must be >= 1")
        if self.embed_dim % self.attention_heads:
            raise ConfigError(f"agent.embed_dim={self.embed_dim} must be a multiple of "
                              f"agent.attention_heads={self.attention_heads}")


@dataclass(frozen=True)
class EpsilonSettings:
    """Linear epsilon schedule over environment steps (PyMARL's ``epsilon_*`` keys)."""

    start: float = 1.0
    finish: float = 0.05
    anneal_time: int = 100000

    def __post_init__(self):
        for name in ("start", "finish"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"epsilon.{name}={getattr(self, name)!r} must lie in [0, 1]")
        if self.anneal_time < 1:
            raise ConfigError(f"epsilon.anneal_time={self.anneal_time!r} must be >= 1")


@dataclass(frozen=True)
class MixerSettings:
    name: Optional[Literal["none", "vdn", "qmix", "attention", "qplex"]] = "qmix"
    mixing_embed_dim: int = 32
    hypernet_layers: Literal[1, 2] = 2
    hypernet_embed: int = 64
    # attention mixer (TransfQMix-style): the transformer over the state's entities
    attention_embed_dim: int = 32
    attention_heads: int = 4
    attention_layers: int = 2
    # QPLEX: heads and width of the advantage-weight networks (pymarl2's num_kernel, adv_hypernet_embed)
    qplex_attention_heads: int = 4
    qplex_adv_hypernet_embed: int = 64

    def __post_init__(self):
        sizes = ("mixing_embed_dim", "hypernet_embed", "attention_embed_dim", "attention_heads",
                 "attention_layers", "qplex_attention_heads", "qplex_adv_hypernet_embed")
        for name in sizes:
            if getattr(self, name) < 1:
                raise ConfigError(f"mixer.{name}={getattr(self, name)!r} must be >= 1")
        if self.attention_embed_dim % self.attention_heads:
            raise ConfigError(f"mixer.attention_embed_dim={self.attention_embed_dim} must be a multiple of "
                              f"mixer.attention_heads={self.attention_heads}")


@dataclass(frozen=True)
class BufferSettings:
    """Replay storage: compact dtypes by default (see ``benchmarks/buffer_memory.py``)."""

    obs_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    state_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    # "auto": store SMAC's state without its last-action block when the env says the state has
    # one (state_last_action) and rebuild it from the stored actions when sampling.
    derive_state_last_action: Union[Literal["auto"], bool] = "auto"
    save_in_checkpoint: bool = True
    # The replay buffer is the bulk of a checkpoint (its own file, replay_buffer.pt): only the
    # latest this many checkpoints keep it (0: every checkpoint). Older ones keep everything else,
    # so they can still be evaluated, or resumed with an empty buffer.
    checkpoints_with_buffer: int = 2

    def __post_init__(self):
        if isinstance(self.checkpoints_with_buffer, bool) or self.checkpoints_with_buffer < 0:
            raise ConfigError(f"buffer.checkpoints_with_buffer={self.checkpoints_with_buffer!r} must be an integer >= 0 "
                              "(0: every checkpoint keeps its replay buffer)")


@dataclass(frozen=True)
class RunSettings:
    # what to run
    name: str = "qmix"
    alg: str = "qmix"
    env: str = "smacsim"
    seed: int = 0
    device: str = "cpu"
    torch_threads: int = 1
    # training loop (PyMARL's semantics and names)
    t_max: int = 2_050_000
    test_interval: int = 10_000
    test_nepisode: int = 32
    log_interval: int = 10_000
    save_model: bool = True
    save_model_interval: int = 50_000
    checkpoint_path: str = ""
    load_step: int = 0
    evaluate: bool = False
    batch_size_run: int = 8
    batch_size: int = 128
    buffer_size: int = 5000
    local_results_path: str = "results"
    use_tensorboard: bool = False
    progress_bar: bool = True
    # Several seeds trained in one process, as a batch dimension (README, "Many seeds in one
    # process"): member k runs as ``seed=seeds[k] local_results_path=member_results_paths[k]``.
    seeds: List[int] = field(default_factory=list)
    member_results_paths: List[str] = field(default_factory=list)
    member_checkpoint_paths: List[str] = field(default_factory=list)  # a group resumed from its members' runs
    # sections
    agent: AgentSettings = field(default_factory=AgentSettings)
    epsilon: EpsilonSettings = field(default_factory=EpsilonSettings)
    mixer: MixerSettings = field(default_factory=MixerSettings)
    learner: LearnerOptions = field(default_factory=LearnerOptions)
    masks: MaskOptions = field(default_factory=MaskOptions)
    buffer: BufferSettings = field(default_factory=BufferSettings)
    env_args: Dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """The task within the backend: SMAC's map, MPE's task or a gymnasium id ('' when none)."""
        args = self.env_args
        return str(args.get("map_name") or args.get("task") or args.get("key") or "")

    def __post_init__(self):
        positive = ("t_max", "test_interval", "log_interval", "save_model_interval", "batch_size_run",
                    "batch_size", "buffer_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 1")
        if self.torch_threads < 0:
            raise ConfigError(f"torch_threads={self.torch_threads!r} must be >= 0 (0: torch's default)")
        if self.test_nepisode < 0:
            raise ConfigError(f"test_nepisode={self.test_nepisode!r} must be >= 0 (0: no test episodes)")
        if self.load_step < 0:
            raise ConfigError(f"load_step={self.load_step!r} must be >= 0 (0: the latest checkpoint)")
        if self.buffer_size < self.batch_size:
            raise ConfigError(
                f"buffer_size={self.buffer_size} is smaller than batch_size={self.batch_size}: "
                "the learner could never sample"
            )
        if not (self.device == "cpu" or self.device == "cuda" or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ConfigError(f"device={self.device!r} must be 'cpu', 'cuda' or 'cuda:<index>'")
        # Cross-field rules, checked here so that nothing is built before they fail.
        self._check_members()
        if self.masks.dead_agents == "agent_loss_mask" and self.mixer.name not in (None, "none"):
            raise ConfigError(
                f"masks.dead_agents='agent_loss_mask' masks per-agent losses and needs mixer.name=none "
                f"(independent Q-learning), got mixer.name={self.mixer.name!r}; with a mixer use "
                "masks.dead_agents=zero_utilities"
            )
        if self.agent.name != "entity_attention":
            defaults = MaskOptions()
            for key in ("visibility", "attention_fill_value"):  # axis 11: what the attention masks
                if getattr(self.masks, key) != getattr(defaults, key):
                    raise ConfigError(
                        f"masks.{key}={getattr(self.masks, key)!r} applies to agent.name=entity_attention "
                        f"only (agent.name={self.agent.name!r} has no attention: an unseen entity is a block "
                        "of zeros in its input); add agent.name=entity_attention"
                    )


    def _check_members(self) -> None:
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds={self.seeds} lists a seed twice: each member needs its own seed")
        for key in ("member_results_paths", "member_checkpoint_paths"):
            paths = getattr(self, key)
            if paths and len(paths) != len(self.seeds):
                raise ConfigError(
                    f"{key} has {len(paths)} entries but seeds={self.seeds} has {len(self.seeds)}: give one "
                    "per seed, or none")
        if self.member_checkpoint_paths and self.checkpoint_path:
            raise ConfigError(f"checkpoint_path={self.checkpoint_path!r} and member_checkpoint_paths both given: "
                              "a group resumes from member_checkpoint_paths (one per seed)")
        if self.seeds and self.evaluate:
            raise ConfigError(f"seeds={self.seeds} trains several seeds; evaluate=True evaluates one checkpoint: "
                              "evaluate each member's checkpoint with its own command")

    @property
    def members(self) -> int:
        """How many seeds this process trains (1 without ``seeds``)."""
        return max(1, len(self.seeds))

    def member(self, k: int) -> "RunSettings":
        """Member k's settings: exactly a separate run's with ``seed=seeds[k]``."""
        if not self.seeds:
            if k != 0:
                raise IndexError(f"member {k} of a run without seeds (one member)")
            return self
        path = self.member_results_paths[k] if self.member_results_paths else self.local_results_path
        checkpoint = self.member_checkpoint_paths[k] if self.member_checkpoint_paths else self.checkpoint_path
        return dataclasses.replace(self, seed=self.seeds[k], local_results_path=path, checkpoint_path=checkpoint,
                                   seeds=[], member_results_paths=[], member_checkpoint_paths=[])


# PyMARL's and pymarl2's flat keys, answered with their qmixlab names (README's mapping table).
PYMARL_KEYS: Dict[str, str] = {
    "lr": "learner.lr",
    "gamma": "learner.gamma",
    "double_q": "learner.double_q",
    "grad_norm_clip": "learner.grad_norm_clip",
    "optim_alpha": "learner.optim_alpha",
    "optim_eps": "learner.optim_eps",
    "optimizer": "learner.optimiser",
    "optimiser": "learner.optimiser",
    "td_lambda": "learner.td_lambda",
    "standardise_rewards": "learner.standardise_rewards",
    "target_update_interval": "learner.target_update_interval_episodes",
    "epsilon_start": "epsilon.start",
    "epsilon_finish": "epsilon.finish",
    "epsilon_anneal_time": "epsilon.anneal_time",
    "mixer": "mixer.name",
    "mixing_embed_dim": "mixer.mixing_embed_dim",
    "hypernet_layers": "mixer.hypernet_layers",
    "hypernet_embed": "mixer.hypernet_embed",
    "num_kernel": "mixer.qplex_attention_heads",
    "adv_hypernet_embed": "mixer.qplex_adv_hypernet_embed",
    "rnn_hidden_dim": "agent.hidden_dim",
    "obs_last_action": "agent.use_last_action",
    "obs_agent_id": "agent.use_agent_id",
    "use_cuda": "device",
    "map_name": "env_args.map_name",
}


# --------------------------------------------------------------------------- validation
def _all_key_paths(cls, prefix="") -> list:
    paths = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        paths.append(path)
        if dataclasses.is_dataclass(hints[f.name]):
            paths.extend(_all_key_paths(hints[f.name], path + "."))
    return paths


def _pymarl_hint(key: str, value) -> str:
    """How qmixlab spells PyMARL's flat ``key=value`` (empty when ``key`` is not one of them)."""
    if key not in PYMARL_KEYS:
        return ""
    new = PYMARL_KEYS[key]
    if key == "use_cuda":
        value = "cuda" if value is _NO_VALUE or value else "cpu"
    if value is _NO_VALUE or isinstance(value, (dict, list)):
        return f"; did you mean {new!r}? ({key!r} is PyMARL's name)"
    return f"; did you mean '{new}={value}'? ({key!r} is PyMARL's name)"


_NO_VALUE = object()


def _suggest(key: str, path: str, candidates, value=_NO_VALUE) -> str:
    if not path:
        pymarl = _pymarl_hint(key, value)
        if pymarl:
            return pymarl
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {(path + close[0])!r}?"
    # A flat key that lives in a section here (gamma -> learner.gamma).
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
            hint_text = _pymarl_hint(path, value) if "." not in path else ""  # PyMARL's mixer=vdn
            raise ConfigError(f"{path} is a section (mapping), got {path}={value!r}{hint_text}")
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
    if origin in (list, List):
        (item,) = typing.get_args(hint)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list, got {path}={value!r}")
        return [_check_value(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
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
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in allowed:
            raise ConfigError(
                f"unknown config key {(path + str(key))!r}{_suggest(str(key), path, allowed, value)}")
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
    """The one validation of a merged run configuration (sacred's ``seed`` included): the schema,
    the cross-field rules, the environment's own arguments and the device."""
    settings = parse_section(RunSettings, dict(config))
    _check_env_args(settings.env, settings.env_args)
    _check_device(settings.device)
    return settings


def validate_run(alg: str, env: str, overrides: Optional[dict] = None) -> RunSettings:
    """Compose ``alg`` and ``env`` and apply ``overrides`` (dotted keys as after ``with`` on the
    command line, e.g. ``{"env_args.map_name": "3m"}``) exactly as a run would; validate."""
    config = compose_config(alg, env)
    config.setdefault("seed", 0)
    for dotted, value in (overrides or {}).items():
        config = deep_merge(config, nest_dotted({dotted: value}))
    return validate_config(config)


def nest_dotted(updates: dict) -> dict:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    nested: dict = {}
    for dotted, value in updates.items():
        keys = str(dotted).split(".")
        node = nested
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return nested


def flatten_dotted(config: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (empty sections kept as ``{}``)."""
    flat: dict = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_env_args(env: str, env_args: dict) -> None:
    from qmixlab.envs.registry import check_env_args  # light: inspects signatures only

    try:
        check_env_args(env, env_args)
    except (ValueError, TypeError, ImportError, AttributeError) as error:
        raise ConfigError(str(error)) from error


def _check_device(device: str) -> None:
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} but this torch build ({torch.__version__}) sees no CUDA device: "
            "run with device=cpu, or install a CUDA build of torch"
        )
    index = int(device[5:]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")


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
    # Every argument the environment accepts appears in the config (so that sacred accepts
    # ``env_args.<name>=...`` on the command line and print_config shows them); YAML values win.
    config["env_args"] = deep_merge(_env_arg_defaults(env), config.get("env_args") or {})
    return config


def _env_arg_defaults(env: str) -> dict:
    from qmixlab.envs.registry import env_arg_defaults

    try:
        return env_arg_defaults(env)
    except (ValueError, TypeError, ImportError, AttributeError) as error:
        raise ConfigError(f"env={env!r}: {error}") from error
