"""Environment backends chosen by a config string.

``name`` is one of the registered backends (``"smacsim"``, the embedded simulator and the
default; ``"sc2"``, real SMAC through ``SC2Env``; anything added with ``register_env``), or a
user environment given as ``"package.module:ClassName"`` so that a researcher can plug in an
environment without editing qmixlab (the module must be importable, i.e. on ``sys.path``).

A user class may implement either contract: a ``MultiAgentEnv`` (SMAC's per-env API) is
wrapped ``n_envs`` times in ``VectorisedEnvs`` by ``make_batched_env``; a
``BatchedMultiAgentEnv`` subclass is constructed directly as
``cls(n_envs=..., seed=..., **env_args)``.

Backends are imported lazily inside their factories: importing ``qmixlab.envs`` never imports
the simulator or ``smac``.

``env_arg_defaults(env)`` lists the keyword arguments a backend's constructor accepts, and
``check_env_args(env, env_args)`` rejects a misspelled one (or, for smacsim, an unknown map)
before anything is built.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

from .multiagentenv import BatchedMultiAgentEnv, MultiAgentEnv
from .vectorised import VectorisedEnvs, derive_env_seeds, missing_batched_methods, missing_env_methods

DEFAULT_ENV = "smacsim"

EnvFactory = Callable[..., MultiAgentEnv]
BatchedEnvFactory = Callable[..., BatchedMultiAgentEnv]


@dataclass(frozen=True)
class EnvEntry:
    """A registered backend: a per-env factory, and optionally a native batched one
    (called as ``batched_factory(n_envs=..., seed=..., **env_args)``)."""

    factory: EnvFactory
    batched_factory: Optional[BatchedEnvFactory] = None
    # () -> {keyword: default} of the env_args the backend accepts; None: read the factory's
    # signature.
    arg_defaults: Optional[Callable[[], Dict[str, Any]]] = None


def _make_smacsim(**env_args) -> MultiAgentEnv:
    from .smacsim.env import SMACSim

    return SMACSim(**env_args)


def _make_batched_smacsim(n_envs: int, seed: Optional[int] = None, **env_args) -> BatchedMultiAgentEnv:
    from .smacsim.env import BatchedSMACSim

    return BatchedSMACSim(n_envs=n_envs, seed=seed, **env_args)


def _make_sc2(**env_args) -> MultiAgentEnv:
    from .sc2 import SC2Env

    return SC2Env(**env_args)


def _smacsim_arg_defaults() -> Dict[str, Any]:
    from .smacsim.env import EXTRA_DEFAULTS, SMAC_DEFAULTS

    return {"map_name": "8m", **SMAC_DEFAULTS, **EXTRA_DEFAULTS}


def _sc2_arg_defaults() -> Dict[str, Any]:
    """StarCraft2Env's keywords when SMAC is importable, else {} (anything is passed on)."""
    from .sc2 import SC2SetupError, import_starcraft2env

    try:
        starcraft2env = import_starcraft2env()
    except SC2SetupError:
        return {}
    defaults = _signature_defaults(starcraft2env)
    if defaults is None:
        return {}
    return {"map_name": "8m", **defaults}


def _gymnasium_entry(backend: str) -> EnvEntry:
    """gymma, lbf and rware: one adapter, src/envs/gymnasium_env.py (imported when used)."""
    def factory(**env_args) -> MultiAgentEnv:
        from .gymnasium_env import make_backend_env

        return make_backend_env(backend, **env_args)

    def arg_defaults() -> Dict[str, Any]:
        from .gymnasium_env import backend_arg_defaults

        return backend_arg_defaults(backend)

    return EnvEntry(factory, arg_defaults=arg_defaults)


def _pettingzoo_entry(backend: str) -> EnvEntry:
    """pettingzoo and mpe: one adapter, src/envs/pettingzoo_env.py (imported when used)."""
    def factory(**env_args) -> MultiAgentEnv:
        from .pettingzoo_env import make_backend_env

        return make_backend_env(backend, **env_args)

    def arg_defaults() -> Dict[str, Any]:
        from .pettingzoo_env import backend_arg_defaults

        return backend_arg_defaults(backend)

    return EnvEntry(factory, arg_defaults=arg_defaults)


_REGISTRY: Dict[str, EnvEntry] = {
    **{backend: _gymnasium_entry(backend) for backend in ("gymma", "lbf", "rware")},
    **{backend: _pettingzoo_entry(backend) for backend in ("pettingzoo", "mpe")},
    "smacsim": EnvEntry(_make_smacsim, _make_batched_smacsim, _smacsim_arg_defaults),
    "sc2": EnvEntry(_make_sc2, arg_defaults=_sc2_arg_defaults),
}

# Passed by make_batched_env itself, never through env_args.
_RUN_ARGS = ("seed", "n_envs")


def register_env(
    name: str,
    factory: EnvFactory,
    batched_factory: Optional[BatchedEnvFactory] = None,
    *,
    overwrite: bool = False,
    arg_defaults: Optional[Callable[[], Dict[str, Any]]] = None,
) -> None:
    """Register a backend under ``name`` (no ``:``, which marks a ``module:Class`` path).

    ``arg_defaults()`` returns the env_args the backend accepts with their defaults, for a
    factory whose signature does not say (``**kwargs``); by default the signature is read."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(
            f"environment name must be a non-empty string without ':' (reserved for "
            f"'package.module:ClassName' paths), got {name!r}"
        )
    if not callable(factory):
        raise TypeError(f"factory for environment {name!r} must be callable, got {factory!r}")
    if batched_factory is not None and not callable(batched_factory):
        raise TypeError(f"batched_factory for environment {name!r} must be callable, got {batched_factory!r}")
    if arg_defaults is not None and not callable(arg_defaults):
        raise TypeError(f"arg_defaults for environment {name!r} must be callable, got {arg_defaults!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"environment {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = EnvEntry(factory, batched_factory, arg_defaults)


def env_arg_defaults(env: str) -> Dict[str, Any]:
    """The keyword arguments backend ``env`` accepts in ``env_args``, with their defaults.

    ``seed`` and ``n_envs`` (set by the run) and parameters without a default are left out;
    ``{}`` when the constructor takes only ``**kwargs``. Reads signatures only (smacsim: its
    SMAC options): nothing is built and StarCraft II is never started.
    """
    defaults, _, _ = _accepted_args(env)
    return dict(defaults)


def check_env_args(env: str, env_args: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first env_args key backend ``env`` does not accept (with
    the closest accepted key and the full list), a missing required one, or, for smacsim, an
    unknown ``map_name``. Backends taking ``**kwargs`` accept any key."""
    if not isinstance(env_args, Mapping):
        raise ValueError(f"env_args must be a mapping, got {type(env_args).__name__}")
    defaults, required, open_ended = _accepted_args(env)
    for key in env_args:
        if key in _RUN_ARGS:
            raise ValueError(
                f"env_args.{key} is not an environment argument for {env!r}: the run passes "
                f"{key} itself (set the run's {'seed' if key == 'seed' else 'batch_size_run'})"
            )
    accepted = sorted(set(defaults) | set(required))
    if not open_ended:
        for key in env_args:
            if key not in accepted:
                close = difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"unknown env_args key {key!r} for environment {env!r}{hint} Accepted keys: "
                    f"{', '.join(accepted) or '(none)'}"
                )
    missing = [key for key in required if key not in env_args]
    if missing:
        raise ValueError(
            f"environment {env!r} needs env_args {', '.join(repr(k) for k in missing)} (its constructor "
            f"has no default for them); accepted keys: {', '.join(accepted)}"
        )
    if env == "smacsim" and "map_name" in env_args:
        from .smacsim.maps import MAPS

        map_name = env_args["map_name"]
        if map_name not in MAPS:
            known = sorted(MAPS)
            close = difflib.get_close_matches(str(map_name), known, n=1, cutoff=0.4)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown map {map_name!r} for smacsim{hint} Known maps: {', '.join(known)}")


def _accepted_args(env: str):
    """``(defaults, required names, accepts **kwargs)`` of backend ``env``'s env_args."""
    if _is_path(env):
        target = _import_target(env)
    else:
        entry = _lookup(env)
        if entry.arg_defaults is not None:
            defaults = dict(entry.arg_defaults())
            return defaults, [], not defaults
        target = entry.factory
    signature = _signature(target)
    if signature is None:
        return {}, [], True
    defaults: Dict[str, Any] = {}
    required: List[str] = []
    open_ended = False
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
        elif param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            if param.name in _RUN_ARGS:
                continue
            if param.default is inspect.Parameter.empty:
                required.append(param.name)
            else:
                defaults[param.name] = param.default
    return defaults, required, open_ended


def _signature(target) -> Optional[inspect.Signature]:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):  # no introspectable signature: accept anything
        return None


def _signature_defaults(target) -> Optional[Dict[str, Any]]:
    signature = _signature(target)
    if signature is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return {
        p.name: p.default for p in signature.parameters.values()
        if p.default is not inspect.Parameter.empty and p.name not in _RUN_ARGS
    }


def known_envs() -> List[str]:
    """Registered backend names, sorted."""
    return sorted(_REGISTRY)


def make_env(name: str, **env_args) -> MultiAgentEnv:
    """One environment with SMAC's per-env API."""
    if _is_path(name):
        target = _import_target(name)
        if isinstance(target, type) and issubclass(target, BatchedMultiAgentEnv):
            raise TypeError(
                f"{name!r} is a BatchedMultiAgentEnv; create it with make_batched_env, not make_env"
            )
        _check_env_class(name, target)
        env = target(**env_args)
        if not isinstance(target, type):  # a factory function: check what it built
            _check_env_class(name, type(env))
        return env
    return _lookup(name).factory(**env_args)


def make_batched_env(name: str, n_envs: int, seed: Optional[int] = None, **env_args) -> BatchedMultiAgentEnv:
    """``n_envs`` environments stepped together with arrays.

    A backend with a native batched form gets ``n_envs`` and ``seed`` directly. Otherwise
    ``n_envs`` per-env instances are built and wrapped in ``VectorisedEnvs``; instance ``i``
    gets ``seed=derive_env_seeds(seed, n_envs)[i]`` if ``seed`` is not None and the factory
    accepts a ``seed`` keyword (with a warning if it does not).
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be a positive int, got {n_envs!r}")
    if _is_path(name):
        target = _import_target(name)
        if isinstance(target, type) and issubclass(target, BatchedMultiAgentEnv):
            missing = missing_batched_methods(target)
            if missing:
                raise TypeError(
                    f"{name!r} ({target.__qualname__}) does not implement the batched env API: "
                    f"missing {', '.join(missing)}"
                )
            return target(n_envs=n_envs, seed=seed, **env_args)
        _check_env_class(name, target)
        factory: EnvFactory = target
    else:
        entry = _lookup(name)
        if entry.batched_factory is not None:
            return entry.batched_factory(n_envs=n_envs, seed=seed, **env_args)
        factory = entry.factory

    seeds = derive_env_seeds(seed, n_envs)
    pass_seed = seed is not None and _accepts_keyword(factory, "seed")
    if seed is not None and not pass_seed:
        warnings.warn(
            f"environment {name!r} takes no 'seed' keyword; its {n_envs} instances are not seeded "
            f"by make_batched_env(seed={seed})",
            stacklevel=2,
        )
    envs: List[MultiAgentEnv] = []
    try:
        for env_seed in seeds:
            env = factory(seed=env_seed, **env_args) if pass_seed else factory(**env_args)
            envs.append(env)
        return VectorisedEnvs(envs)
    except BaseException:
        for env in envs:
            close = getattr(env, "close", None)
            if close is not None:
                close()
        raise


def _is_path(name) -> bool:
    return isinstance(name, str) and ":" in name


def _lookup(name: str) -> EnvEntry:
    if name in _REGISTRY:
        return _REGISTRY[name]
    known = known_envs()
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown environment {name!r}.{hint} Known: {', '.join(known)}. A user environment is "
        "given as 'package.module:ClassName'."
    )


def _import_target(path: str):
    return import_object(path, f"environment {path!r}", "'package.module:ClassName'")


def import_object(path: str, role: str, form: str):
    """The object named by ``"package.module:attribute.path"``; errors name ``role`` (what the
    path is for, e.g. "environment 'pkg:Env'") and the expected ``form``."""
    module_name, _, attr_path = str(path).partition(":")
    if not module_name or not attr_path or ":" in attr_path:
        raise ValueError(f"{role}: {path!r} must give the object as {form}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        top = module_name.split(".")[0]
        raise ImportError(
            f"cannot import module {module_name!r} for {role}: {err}. Is the module installed (e.g. "
            f"pip install {top}) or on sys.path (PYTHONPATH)?"
        ) from err
    target = module
    walked = module_name
    for part in attr_path.split("."):
        if not hasattr(target, part):
            candidates = [n for n in dir(target) if not n.startswith("_")]
            close = difflib.get_close_matches(part, candidates, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise AttributeError(f"{walked!r} has no attribute {part!r} (from {role}){hint}")
        target = getattr(target, part)
        walked = f"{walked}.{part}"
    if not callable(target):
        raise TypeError(f"{role} names {type(target).__name__} object, not a class or factory")
    return target


def _check_env_class(name: str, target) -> None:
    if not isinstance(target, type):
        return  # a factory function: checked on the instance it returns
    missing = missing_env_methods(target)
    if missing:
        raise TypeError(
            f"{name!r} ({target.__qualname__}) does not implement the SMAC env API "
            f"(qmixlab.envs.MultiAgentEnv): missing {', '.join(missing)}"
        )


def _accepts_keyword(factory, keyword: str) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: let the call decide
        return True
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == keyword and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))
        for p in params
    )
