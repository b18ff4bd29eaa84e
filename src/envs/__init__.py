"""Environment backends and the contracts they follow (``docs/environments.md``).

``make_env(name, **env_args)`` builds one SMAC-API environment and
``make_batched_env(name, n_envs, seed=None, **env_args)`` builds ``n_envs`` of them stepped
with arrays; ``name`` is ``"smacsim"`` (default), ``"sc2"`` or ``"package.module:ClassName"``.
Every batched environment describes itself with ``get_spec() -> EnvSpec``.
"""

from .multiagentenv import BatchedMultiAgentEnv, BatchedStep, MultiAgentEnv
from .registry import (
    DEFAULT_ENV,
    check_env_args,
    env_arg_defaults,
    known_envs,
    make_batched_env,
    make_env,
    register_env,
)
from .spec import EnvSpec, ObsLayout, StateLayout, spec_of
from .vectorised import VectorisedEnvs, derive_env_seeds

__all__ = [
    "BatchedMultiAgentEnv",
    "BatchedStep",
    "DEFAULT_ENV",
    "EnvSpec",
    "MultiAgentEnv",
    "ObsLayout",
    "StateLayout",
    "VectorisedEnvs",
    "check_env_args",
    "derive_env_seeds",
    "env_arg_defaults",
    "known_envs",
    "make_batched_env",
    "make_env",
    "register_env",
    "spec_of",
]
