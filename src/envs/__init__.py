"""Environment backends and the contracts they follow.

``make_env(name, **env_args)`` builds one SMAC-API environment and
``make_batched_env(name, n_envs, seed=None, **env_args)`` builds ``n_envs`` of them stepped
with arrays; ``name`` is ``"smacsim"`` (default), ``"sc2"`` or ``"package.module:ClassName"``.
"""

from .multiagentenv import BatchedMultiAgentEnv, BatchedStep, MultiAgentEnv
from .registry import DEFAULT_ENV, known_envs, make_batched_env, make_env, register_env
from .vectorised import VectorisedEnvs, derive_env_seeds

__all__ = [
    "BatchedMultiAgentEnv",
    "BatchedStep",
    "DEFAULT_ENV",
    "MultiAgentEnv",
    "VectorisedEnvs",
    "derive_env_seeds",
    "known_envs",
    "make_batched_env",
    "make_env",
    "register_env",
]
