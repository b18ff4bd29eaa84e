"""Several runs' environments seen as one batched environment (seeds trained in one process).

``MemberEnvs`` holds one ``BatchedMultiAgentEnv`` per member, each built exactly as that member's
separate run builds it (same backend, arguments, ``n_envs`` and seed), and presents them as one
batched environment of ``members * n_envs`` environments, member-major: environment ``i`` is
member ``i // n_envs``'s environment ``i % n_envs``. Each member's environments are called exactly
as a separate run calls them (``reset()`` without ids when all of its environments reset, ``step``
only when one of them is active), so every member consumes its own random stream as it would
alone; a member that plays no episode in a round is not touched.

A backend whose class offers ``concatenate(envs)`` (smacsim does) is stepped as one environment
of all members' environments, each keeping its own random stream: one vectorised step instead of
one per member.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from qmixlab.envs.multiagentenv import BatchedMultiAgentEnv, BatchedStep
from qmixlab.envs.spec import spec_of


class MemberEnvs(BatchedMultiAgentEnv):
    def __init__(self, envs: Sequence[BatchedMultiAgentEnv]):
        if not envs:
            raise ValueError("MemberEnvs needs at least one member environment")
        self.envs: List[BatchedMultiAgentEnv] = list(envs)
        self.members = len(self.envs)
        self.per_member = int(self.envs[0].n_envs)
        specs = [spec_of(env) for env in self.envs]
        for k, (env, spec) in enumerate(zip(self.envs, specs)):
            if int(env.n_envs) != self.per_member or spec != specs[0]:
                raise ValueError(f"member {k}'s environment differs from member 0's (n_envs {env.n_envs} vs "
                                 f"{self.per_member}, or its spec): members must run the same task")
        self._spec = specs[0]
        concatenate = getattr(type(self.envs[0]), "concatenate", None)
        self.merged: Optional[BatchedMultiAgentEnv] = None
        if concatenate is not None and all(type(env) is type(self.envs[0]) for env in self.envs):
            self.merged = concatenate(self.envs)
            for env in self.envs:  # their random streams live on in the merged environment
                env.close()
        self.n_envs = self.members * self.per_member
        self.n_agents, self.n_actions = self._spec.n_agents, self._spec.n_actions
        self.episode_limit = self._spec.episode_limit

    # ------------------------------------------------------------------ layout
    def block(self, k: int) -> slice:
        """Member k's rows."""
        return slice(k * self.per_member, (k + 1) * self.per_member)

    def member_rows(self, members: np.ndarray) -> np.ndarray:
        """bool ``[members * n_envs]``: the rows of the members marked in ``members`` (bool [K])."""
        members = np.asarray(members, dtype=bool)
        if members.shape != (self.members,):
            raise ValueError(f"members must be bool [{self.members}], got shape {members.shape}")
        return np.repeat(members, self.per_member)

    # ------------------------------------------------------------------ the batched API
    def get_spec(self):
        return self._spec

    def get_env_info(self) -> dict:
        return self.envs[0].get_env_info()

    def reset(self, env_ids: Optional[np.ndarray] = None) -> None:
        if self.merged is not None:
            self.merged.reset(env_ids)
            return
        if env_ids is None:
            for env in self.envs:
                env.reset()
            return
        chosen = np.zeros(self.n_envs, dtype=bool)
        chosen[np.asarray(env_ids, dtype=np.int64)] = True
        for k, env in enumerate(self.envs):
            mine = chosen[self.block(k)]
            if mine.all():
                env.reset()
            elif mine.any():
                env.reset(np.flatnonzero(mine))

    def step(self, actions: np.ndarray, active: Optional[np.ndarray] = None) -> BatchedStep:
        actions = np.asarray(actions)
        active = np.ones(self.n_envs, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        if self.merged is not None:
            return self.merged.step(actions, active)
        parts = []
        for k, env in enumerate(self.envs):
            rows = self.block(k)
            parts.append(env.step(actions[rows], active[rows]) if active[rows].any() else None)
        return self._concatenate(parts)

    def _concatenate(self, parts: List[Optional[BatchedStep]]) -> BatchedStep:
        """One step result from the members' (None: member not stepped; its rows are zeros)."""
        template = next(p for p in parts if p is not None)
        n = self.per_member

        def joined(get):
            values = [get(p) if p is not None else None for p in parts]
            example = next((v for v in values if v is not None), None)
            if example is None:
                return None
            example = np.asarray(example)
            return np.concatenate([np.asarray(v) if v is not None else np.zeros((n, *example.shape[1:]), example.dtype)
                                   for v in values])

        fields = {name: joined(lambda p, name=name: getattr(p, name)) for name in
                  ("reward", "terminated", "truncated", "battle_won", "dead_allies", "dead_enemies", "alive",
                   "final_obs", "final_state", "final_avail_actions")}
        flags = {flag: joined(lambda p, flag=flag: p.flags[flag]) for flag in template.flags}
        return BatchedStep(flags=flags, **fields)

    def get_obs(self) -> np.ndarray:
        if self.merged is not None:
            return self.merged.get_obs()
        return np.concatenate([env.get_obs() for env in self.envs])

    def get_state(self) -> np.ndarray:
        if self.merged is not None:
            return self.merged.get_state()
        return np.concatenate([env.get_state() for env in self.envs])

    def get_avail_actions(self) -> np.ndarray:
        if self.merged is not None:
            return self.merged.get_avail_actions()
        return np.concatenate([env.get_avail_actions() for env in self.envs])

    def get_alive_agents(self) -> np.ndarray:
        if self.merged is not None:
            return self.merged.get_alive_agents()
        return np.concatenate([env.get_alive_agents() for env in self.envs])

    def get_stats(self) -> dict:
        return {}

    def member_rng_state(self, k: int):
        """Member k's environments' random state, as its separate environment's ``get_rng_state``."""
        if self.merged is not None:
            return self.merged.get_rng_state()[self.block(k)]
        env = self.envs[k]
        return env.get_rng_state() if hasattr(env, "get_rng_state") else None

    def set_member_rng_state(self, k: int, state) -> None:
        if state is None:
            return
        if self.merged is not None:
            states = self.merged.get_rng_state()
            states[self.block(k)] = state
            self.merged.set_rng_state(states)
            return
        env = self.envs[k]
        if hasattr(env, "set_rng_state"):
            env.set_rng_state(state)

    def close(self) -> None:
        for env in [self.merged] if self.merged is not None else self.envs:
            env.close()
