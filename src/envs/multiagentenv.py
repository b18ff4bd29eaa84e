"""The environment contracts every backend follows (written out in ``docs/environments.md``).

Two forms exist:

* ``MultiAgentEnv`` is SMAC's per-environment interface, so that code written for
  ``smac.env.StarCraft2Env`` runs against any qmixlab backend.
* ``BatchedMultiAgentEnv`` steps ``n_envs`` environments at once with arrays. The runner uses it
  so that a rollout of N environments needs one network call per step.

Both describe themselves with ``get_spec() -> EnvSpec`` (sizes, declared step flags, how dead
agents are told, auto-reset, optional SMAC layouts). Episode ends in the batched form are two
separate flags: ``terminated`` (a true terminal state: win, loss or draw) and ``truncated`` (the
time limit was reached without a terminal state; stored under the episode field ``timeout``).
The learner bootstraps through truncations; treating them as terminal is an ablation.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from .spec import EnvSpec, declared_spec


class MultiAgentEnv:
    """SMAC's per-environment interface (see ``smac.env.MultiAgentEnv``).

    Contract in short (full text: ``docs/environments.md``):

    * ``reset()`` starts an episode; ``step(actions)`` returns ``(reward, terminated, info)``
      with one scalar team reward. ``terminated`` is True on the step that ends the episode,
      time limit included; a time limit is told apart by ``info["episode_limit"]=True`` (or a
      ``timeouts`` counter in ``get_stats()``). Episodes end within ``episode_limit`` steps.
    * Stepping after the episode ended raises, unless the env declares ``auto_reset = True``;
      such an env starts the next episode inside ``step`` and puts the finished episode's last
      arrays in ``info["final_obs"]``, ``info["final_state"]``, ``info["final_avail_actions"]``
      (and ``info["final_alive"]`` with ``provides_alive``).
    * Arrays returned by ``get_obs``/``get_state``/``get_avail_actions`` are borrowed: valid
      until the next ``step``/``reset``; they may be read-only or reused. qmixlab copies them.
    * Declarations (class attributes): ``step_flags`` (names of bool ``info`` keys to store per
      step, e.g. ``("invalid",)``), ``noop_action`` (the index a dead agent is left with) or
      ``provides_alive = True`` with ``get_alive_agents()`` (n_agents bools), ``auto_reset``.
    * Optional hooks: ``get_rng_state()`` / ``set_rng_state(state)`` with plain Python values
      (for exact resume); ``step_checked(actions)`` (below), the fast path of ``VectorisedEnvs``.
    """

    n_agents: int
    episode_limit: int

    def reset(self):
        """Start a new episode; returns ``(obs list, state)``."""
        raise NotImplementedError

    def step(self, actions):
        """Apply one joint action; returns ``(reward, terminated, info)``."""
        raise NotImplementedError

    # Optional, not defined here: ``step_checked(actions) -> (reward, terminated, truncated)``.
    # An environment that has it promises that, given a list of Python ints the caller has
    # checked (one per agent, each available, the episode running; no ``auto_reset`` and no
    # ``step_flags`` declared, since no info is handed over), it steps like ``step`` and
    # reports the end exactly: ``terminated`` a true terminal state,
    # ``truncated`` its time limit (never both; one of them by ``episode_limit`` steps), and
    # that its getters return arrays of exactly the declared shapes and dtypes (float32
    # observations and state, bool availability and alive rows). ``VectorisedEnvs`` then skips
    # its own re-checks and the time-out rule (qmixlab's gymnasium and PettingZoo adapters;
    # their tests compare both paths).

    def get_obs(self):
        raise NotImplementedError

    def get_obs_agent(self, agent_id: int):
        raise NotImplementedError

    def get_obs_size(self) -> int:
        raise NotImplementedError

    def get_state(self):
        raise NotImplementedError

    def get_state_size(self) -> int:
        raise NotImplementedError

    def get_avail_actions(self):
        raise NotImplementedError

    def get_avail_agent_actions(self, agent_id: int):
        raise NotImplementedError

    def get_total_actions(self) -> int:
        raise NotImplementedError

    def get_stats(self) -> dict:
        return {}

    def close(self) -> None:
        pass

    def seed(self):
        return None

    def save_replay(self) -> None:
        pass

    def get_env_info(self) -> dict:
        return {
            "state_shape": self.get_state_size(),
            "obs_shape": self.get_obs_size(),
            "n_actions": self.get_total_actions(),
            "n_agents": self.n_agents,
            "episode_limit": self.episode_limit,
        }

    def get_spec(self) -> EnvSpec:
        """``get_env_info()`` plus the class's declarations (see ``qmixlab.envs.spec``)."""
        return declared_spec(self)


class BatchedStep:
    """What ``BatchedMultiAgentEnv.step`` returns; every array has ``n_envs`` rows.

    Rows of environments that were not active in the step are zeros / False.

    * ``reward`` float32, ``terminated`` bool (true terminal state), ``truncated`` bool (time
      limit reached without a terminal state; ``timeout`` is a read-only alias).
    * ``battle_won`` bool, ``dead_allies`` / ``dead_enemies`` int: SMAC's outcome statistics
      (zeros when not given).
    * ``flags``: one bool ``[n_envs]`` array per flag the spec declares in ``step_flags``, and
      no others (``extra`` is a read-only alias).
    * ``alive``: optional bool ``[n_envs, n_agents]``, the alive mask that goes with the
      observation after this step (for an auto-reset env: the finished episode's last one).
    * ``final_obs`` / ``final_state`` / ``final_avail_actions``: for environments declaring
      ``auto_reset``, the last arrays of every episode that ended in this step (rows of other
      environments are unspecified), since the getters already show the next episode.
    """

    __slots__ = ("reward", "terminated", "truncated", "battle_won", "dead_allies", "dead_enemies",
                 "flags", "alive", "final_obs", "final_state", "final_avail_actions")

    def __init__(self, reward, terminated, truncated=None, battle_won=None, dead_allies=None,
                 dead_enemies=None, flags: Optional[Dict[str, np.ndarray]] = None, *,
                 alive=None, final_obs=None, final_state=None, final_avail_actions=None,
                 timeout=None, extra: Optional[Dict[str, np.ndarray]] = None):
        # ``timeout`` and ``extra`` are the names of the first version of this contract.
        if truncated is not None and timeout is not None:
            raise TypeError("BatchedStep: give truncated or its old name timeout, not both")
        if flags is not None and extra is not None:
            raise TypeError("BatchedStep: give flags or its old name extra, not both")
        truncated = timeout if truncated is None else truncated
        if truncated is None:
            raise TypeError("BatchedStep: truncated (the time-limit flag) is required")
        if battle_won is None or dead_allies is None or dead_enemies is None:
            n = np.shape(reward)[0] if np.ndim(reward) else 1
            battle_won = np.zeros(n, bool) if battle_won is None else battle_won
            dead_allies = np.zeros(n, np.int64) if dead_allies is None else dead_allies
            dead_enemies = np.zeros(n, np.int64) if dead_enemies is None else dead_enemies
        self.reward = reward
        self.terminated = terminated
        self.truncated = truncated
        self.battle_won = battle_won
        self.dead_allies = dead_allies
        self.dead_enemies = dead_enemies
        self.flags = dict(extra if flags is None and extra is not None else (flags or {}))
        self.alive = alive
        self.final_obs = final_obs
        self.final_state = final_state
        self.final_avail_actions = final_avail_actions

    @property
    def timeout(self) -> np.ndarray:
        return self.truncated

    @property
    def extra(self) -> Dict[str, np.ndarray]:
        return self.flags

    @property
    def ended(self) -> np.ndarray:
        return self.terminated | self.truncated

    def __repr__(self) -> str:
        shown = {name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None}
        return "BatchedStep(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


class BatchedMultiAgentEnv:
    """``n_envs`` environments stepped together with arrays.

    Contract in short (full text: ``docs/environments.md``):

    * ``reset(env_ids=None)`` resets all environments, or only those in ``env_ids``.
    * ``step(actions, active=None)`` takes ``actions`` as an int array ``[n_envs, n_agents]``
      and ``active`` as a bool array ``[n_envs]`` (default: all). Inactive environments are not
      advanced and their actions are ignored. Choosing an unavailable action raises
      ``ValueError``; so does stepping an active environment whose episode ended, unless the
      spec declares ``auto_reset`` (then ``step`` starts the next episode itself and the step
      result carries the final arrays). Every episode ends within ``episode_limit`` steps,
      the last one reported as ``truncated`` if it is not a terminal state.
    * ``get_obs()`` -> float32 ``[n_envs, n_agents, obs_dim]``; ``get_state()`` -> float32
      ``[n_envs, state_dim]``; ``get_avail_actions()`` -> bool ``[n_envs, n_agents, n_actions]``;
      with ``provides_alive``, ``get_alive_agents()`` -> bool ``[n_envs, n_agents]``. These are
      borrowed: valid until the next ``step``/``reset``, possibly read-only or reused.
    * ``get_spec()`` describes the environment (``EnvSpec``); by default it is built from
      ``get_env_info()`` (SMAC's dict) and the class attributes ``step_flags``,
      ``noop_action``, ``provides_alive``, ``auto_reset``, ``state_last_action``.
    * ``get_stats()`` aggregates over all environments; optional ``get_rng_state()`` /
      ``set_rng_state(state)`` with plain Python values make resumed runs exact.
    """

    n_envs: int
    n_agents: int
    n_actions: int
    episode_limit: int

    def reset(self, env_ids: Optional[np.ndarray] = None) -> None:
        raise NotImplementedError

    def step(self, actions: np.ndarray, active: Optional[np.ndarray] = None) -> BatchedStep:
        raise NotImplementedError

    def get_obs(self) -> np.ndarray:
        raise NotImplementedError

    def get_state(self) -> np.ndarray:
        raise NotImplementedError

    def get_avail_actions(self) -> np.ndarray:
        raise NotImplementedError

    def get_env_info(self) -> dict:
        """SMAC's dict; by default the sizes of ``get_spec()`` when a subclass defines it."""
        if type(self).get_spec is BatchedMultiAgentEnv.get_spec:
            raise NotImplementedError
        return self.get_spec().to_env_info()

    def get_spec(self) -> EnvSpec:
        return declared_spec(self)

    def get_stats(self) -> dict:
        return {}

    def close(self) -> None:
        pass
