"""``VectorisedEnvs``: ``n_envs`` per-environment (SMAC API) envs seen as one batched env.

Backends without a native batched form (real SMAC through ``SC2Env``, user classes) are wrapped
here. The environments are stepped one after another in this process; the wrapper's job is to
turn SMAC's per-env lists and ``(reward, terminated, info)`` tuples into the arrays of
``BatchedMultiAgentEnv``, and to check actions before any environment sees them. The arrays a
per-env environment hands out are borrowed (``docs/environments.md``): the wrapper copies them
once, into its own ``[n_envs, ...]`` staging arrays, and its getters return read-only views of
those (valid until the next ``step``/``reset``).

Declarations: the wrapper's ``get_spec()`` is the wrapped environments' spec (their
``get_spec()``, or ``get_env_info()`` plus class attributes) with the flag ``"invalid"`` always
declared, since the wrapper itself flags crashed steps (rule 2), plus every flag of
``info_flags``. A declared flag ``name`` is read from ``info[name]`` each step (missing: False);
``info_flags`` maps other info keys onto flags (default: ``invalid_step`` -> ``invalid``).
An environment declaring ``auto_reset`` starts its next episode inside ``step``; it hands the
finished episode's last arrays over in ``info["final_obs"]``, ``info["final_state"]``,
``info["final_avail_actions"]`` (and ``info["final_alive"]`` with ``provides_alive``), which
the wrapper passes on as ``BatchedStep.final_*``; such an environment may be stepped again
without ``reset``.

How an episode end is classified (the timeout rule)
---------------------------------------------------
The batched contract separates ``terminated`` (a true terminal state: win, loss or draw) from
``timeout`` (the time limit cut the episode). A SMAC-API env reports both as
``terminated=True``, and real SMAC marks a timeout with ``info["episode_limit"]=True`` only when
``continuing_episode=True``. For environment ``i`` at its ``t``-th step since its last reset,
the first rule that applies decides:

1. ``info["episode_limit"]`` is true: timeout (``terminated=False``).
2. ``terminated`` and the env's ``get_stats()`` has a ``restarts`` counter that grew during this
   step: the game crashed and was relaunched (real SMAC then returns ``(0, True, {})``). The
   episode is over (``terminated=True``) and the step is flagged ``flags["invalid"]``: it is not
   a real transition and every loss term must mask it.
3. ``terminated`` and ``get_stats()`` has a ``timeouts`` counter: timeout if and only if the
   counter grew during this step. Real SMAC counts every timeout whatever ``continuing_episode``
   is, so for SMAC (and for any env keeping that counter) the split is exact.
4. ``terminated`` without such counters: timeout if and only if ``t >= episode_limit``, and
   ``info["battle_won"]`` is false, and ``info["dead_allies"] < n_agents`` (missing keys read
   as False / 0). Such an env cannot tell us more: a loss that leaves allies alive (on MMM maps,
   "only medivacs left") or any other non-battle terminal state reached on exactly the last
   step is counted as a timeout.
5. Not ``terminated`` but ``t >= episode_limit``: the wrapper ends the episode as a timeout,
   so that no episode is longer than the ``episode_limit`` the buffers are sized by, and warns
   once (the environment breaks the contract: it must end its episodes by then).

Counters are read with ``get_stats()`` after each reset and on each step that ends an episode.
Real SMAC's ``get_stats()`` divides by the number of finished battles and raises
``ZeroDivisionError`` before the first one; the wrapper then treats the counters as unknown
(rule 4 applies to that first episode). ``SC2Env`` guards against this, so through the adapter
real SMAC always gets rules 2-3.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .multiagentenv import BatchedMultiAgentEnv, BatchedStep, MultiAgentEnv
from .spec import EnvSpec, spec_of

# Methods a per-env backend must provide, and those MultiAgentEnv's default get_env_info calls.
REQUIRED_ENV_METHODS = ("reset", "step", "get_obs", "get_state", "get_avail_actions", "get_env_info")
ENV_INFO_METHODS = ("get_obs_size", "get_state_size", "get_total_actions")
REQUIRED_BATCHED_METHODS = ("reset", "step", "get_obs", "get_state", "get_avail_actions", "get_env_info")
ENV_INFO_KEYS = ("state_shape", "obs_shape", "n_actions", "n_agents", "episode_limit")

# Legacy per-env info keys copied into BatchedStep.flags (info key -> flag name).
DEFAULT_INFO_FLAGS: Mapping[str, str] = {"invalid_step": "invalid"}

_COUNTER_KEYS = ("timeouts", "restarts")
# Keys an auto-resetting per-env environment puts in info when its episode ends.
FINAL_INFO_KEYS = ("final_obs", "final_state", "final_avail_actions")


def _raises_not_implemented(base: type, name: str) -> bool:
    code = getattr(base.__dict__.get(name), "__code__", None)
    return code is not None and "NotImplementedError" in code.co_names


def _implements(cls: type, name: str, base: type) -> bool:
    """True if ``cls`` has a callable ``name`` other than the base contract's stub."""
    attr = getattr(cls, name, None)
    if not callable(attr):
        return False
    return not (attr is base.__dict__.get(name) and _raises_not_implemented(base, name))


def missing_env_methods(cls: type) -> List[str]:
    """Names of the SMAC-API methods ``cls`` does not implement (empty if it is complete)."""
    missing = [name for name in REQUIRED_ENV_METHODS if not _implements(cls, name, MultiAgentEnv)]
    if getattr(cls, "get_env_info", None) is MultiAgentEnv.__dict__["get_env_info"]:
        # MultiAgentEnv's default get_env_info is built from these three.
        missing += [name for name in ENV_INFO_METHODS if not _implements(cls, name, MultiAgentEnv)]
    return missing


def missing_batched_methods(cls: type) -> List[str]:
    """Names of the ``BatchedMultiAgentEnv`` methods ``cls`` does not implement (its own
    ``get_spec`` stands in for ``get_env_info``)."""
    has_spec = getattr(cls, "get_spec", None) not in (None, BatchedMultiAgentEnv.__dict__["get_spec"])
    return [n for n in REQUIRED_BATCHED_METHODS
            if not _implements(cls, n, BatchedMultiAgentEnv) and not (n == "get_env_info" and has_spec)]


def derive_env_seeds(seed: Optional[int], n_envs: int) -> List[Optional[int]]:
    """Distinct, reproducible per-env seeds (31-bit, as SC2 takes an int32) from one seed."""
    if seed is None:
        return [None] * n_envs
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    states = np.random.SeedSequence(int(seed)).generate_state(n_envs, dtype=np.uint32)
    return [int(s) & 0x7FFFFFFF for s in states]


def _read_counters(env) -> Optional[Dict[str, int]]:
    """The env's timeouts/restarts counters, or None when its get_stats() cannot say."""
    get_stats = getattr(env, "get_stats", None)
    if get_stats is None:
        return None
    try:
        stats = get_stats()
    except ZeroDivisionError:  # real SMAC's win_rate before the first finished battle
        return None
    if not isinstance(stats, Mapping):
        return None
    return {
        key: int(stats[key])
        for key in _COUNTER_KEYS
        if isinstance(stats.get(key), numbers.Integral) and not isinstance(stats.get(key), bool)
    }


def _counter_grew(before: Optional[Dict[str, int]], after: Optional[Dict[str, int]], key: str):
    """True/False if both readings have ``key``, else None (unknown)."""
    if before is None or after is None or key not in before or key not in after:
        return None
    return after[key] > before[key]


def aggregate_stats(all_stats: Sequence[Mapping]) -> dict:
    """Combine per-env ``get_stats()`` dicts.

    Integer counts are summed, other real numbers are averaged over the envs that report them,
    anything else is returned as the list of per-env values. ``win_rate`` is recomputed from the
    summed ``battles_won`` / ``battles_game`` when both exist (0.0 before any battle).
    """
    keys: List[str] = []
    for stats in all_stats:
        keys += [k for k in stats if k not in keys]
    merged: dict = {}
    for key in keys:
        values = [stats[key] for stats in all_stats if key in stats]
        if all(isinstance(v, numbers.Integral) for v in values):
            merged[key] = int(sum(values))
        elif all(isinstance(v, numbers.Real) for v in values):
            merged[key] = float(np.mean(values))
        else:
            merged[key] = values
    if "battles_won" in merged and "battles_game" in merged:
        games = merged["battles_game"]
        merged["win_rate"] = merged["battles_won"] / games if games else 0.0
    return merged


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


class VectorisedEnvs(BatchedMultiAgentEnv):
    """``n_envs`` SMAC-API environments behind the ``BatchedMultiAgentEnv`` array contract.

    ``info_flags`` maps per-env info keys to flag names; each flag is declared in the spec and
    always present in ``BatchedStep.flags`` as a bool ``[n_envs]`` array (default:
    ``invalid_step`` -> ``invalid``). See the module docstring for the terminated/timeout rule.
    """

    def __init__(self, envs: Sequence[MultiAgentEnv], info_flags: Mapping[str, str] = DEFAULT_INFO_FLAGS):
        envs = list(envs)
        if not envs:
            raise ValueError("VectorisedEnvs needs at least one environment, got an empty sequence")
        for i, env in enumerate(envs):
            missing = missing_env_methods(type(env))
            if missing:
                raise TypeError(
                    f"environment {i} ({type(env).__qualname__}) does not implement the SMAC API: "
                    f"missing {', '.join(missing)}"
                )
        infos = [env.get_env_info() for env in envs]
        for i, info in enumerate(infos):
            missing_keys = [k for k in ENV_INFO_KEYS if k not in info]
            if missing_keys:
                raise ValueError(
                    f"get_env_info() of environment {i} ({type(envs[i]).__qualname__}) lacks "
                    f"{', '.join(missing_keys)}; expected keys {', '.join(ENV_INFO_KEYS)}"
                )
            for key in ENV_INFO_KEYS:
                if info[key] != infos[0][key]:
                    raise ValueError(
                        f"environments disagree on {key}: environment 0 has {infos[0][key]!r}, "
                        f"environment {i} has {info[key]!r}"
                    )
        specs = [spec_of(env) for env in envs]
        for i, spec in enumerate(specs):
            if spec != specs[0]:
                raise ValueError(f"environments disagree on their spec: environment 0 has {specs[0]}, "
                                 f"environment {i} has {spec}")
        base = specs[0]
        for key in ENV_INFO_KEYS:
            if getattr(base, key) != infos[0][key]:
                raise ValueError(
                    f"{type(envs[0]).__qualname__}: get_spec().{key}={getattr(base, key)!r} but "
                    f"get_env_info()[{key!r}]={infos[0][key]!r}"
                )
        self._envs = envs
        self._env_info = dict(infos[0])
        # The fast path (MultiAgentEnv.step_checked): every env has it, none resets itself and
        # none declares step flags (step_checked hands over no info to read them from).
        checked = [getattr(env, "step_checked", None) for env in envs]
        fast = all(map(callable, checked)) and not base.auto_reset and not base.step_flags
        self._checked_steps = checked if fast else None
        # flag name -> info keys it is read from
        self._flag_sources: Dict[str, List[str]] = {flag: [flag] for flag in base.step_flags}
        for info_key, flag in dict(info_flags).items():
            self._flag_sources.setdefault(flag, []).append(info_key)
        self._flag_sources.setdefault("invalid", [])  # crashed steps (rule 2)
        self._spec = base.replace(step_flags=tuple(self._flag_sources))
        self.n_envs = len(envs)
        self.n_agents = base.n_agents
        self.n_actions = base.n_actions
        self.episode_limit = base.episode_limit
        self.obs_dim = base.obs_shape
        self.state_dim = base.state_shape

        n = self.n_envs
        self._obs = np.zeros((n, self.n_agents, self.obs_dim), dtype=np.float32)
        self._state = np.zeros((n, self.state_dim), dtype=np.float32)
        self._avail = np.zeros((n, self.n_agents, self.n_actions), dtype=bool)
        self._agent_index = np.arange(self.n_agents)[None, :]
        self._all_ids = np.arange(n)
        self._all_id_list = self._all_ids.tolist()
        self._alive = np.ones((n, self.n_agents), dtype=bool)
        self._views = tuple(_read_only(a) for a in (self._obs, self._state, self._avail, self._alive))
        self._episode_steps = np.zeros(n, dtype=np.int64)
        self._needs_reset = np.ones(n, dtype=bool)  # never reset, or episode ended
        self._resets_owed = n  # how many of _needs_reset are True (skips a check per step)
        self._counters: List[Optional[Dict[str, int]]] = [None] * n
        self._warned_cut = False
        self._closed = False

    @property
    def envs(self) -> tuple:
        """The wrapped per-env instances (for replays, rendering, debugging)."""
        return tuple(self._envs)

    @property
    def episode_steps(self) -> np.ndarray:
        """Steps taken in each environment's current episode, ``[n_envs]`` int."""
        return self._episode_steps.copy()

    def get_spec(self) -> EnvSpec:
        return self._spec

    # ----------------------------------------------------------------------------- reset
    def reset(self, env_ids: Optional[np.ndarray] = None) -> None:
        for i in self._check_env_ids(env_ids):
            env = self._envs[i]
            env.reset()
            self._episode_steps[i] = 0
            self._resets_owed -= bool(self._needs_reset[i])
            self._needs_reset[i] = False
            self._counters[i] = _read_counters(env)
            self._read_arrays(i)

    def _check_env_ids(self, env_ids) -> List[int]:
        if env_ids is None:
            return list(range(self.n_envs))
        ids = np.asarray(env_ids)
        if ids.ndim == 0:
            ids = ids.reshape(1)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            hint = " (for a bool mask pass np.flatnonzero(mask))" if ids.dtype == bool else ""
            raise ValueError(
                f"env_ids must be a 1-D array of integer env indices, got shape {ids.shape} "
                f"dtype {ids.dtype}{hint}"
            )
        bad = [int(i) for i in ids if not 0 <= i < self.n_envs]
        if bad:
            raise ValueError(f"env_ids {bad} out of range for n_envs={self.n_envs}")
        if len(set(ids.tolist())) != ids.size:
            raise ValueError(f"env_ids contains duplicates: {ids.tolist()}")
        return [int(i) for i in ids]

    # ------------------------------------------------------------------------------ step
    def step(self, actions: np.ndarray, active: Optional[np.ndarray] = None) -> BatchedStep:
        actions, active_ids = self._check_step_inputs(actions, active)

        n = self.n_envs
        reward = np.zeros(n, dtype=np.float32)
        # One allocation for every bool row and one for the counts (this runs on every step).
        bools = np.zeros((3 + len(self._flag_sources), n), dtype=bool)
        terminated, truncated, battle_won = bools[0], bools[1], bools[2]
        flags = dict(zip(self._flag_sources, bools[3:]))
        dead_allies, dead_enemies = np.zeros((2, n), dtype=np.int64)
        if self._checked_steps is not None:
            self._step_checked(actions, active_ids, reward, terminated, truncated)
            return BatchedStep(reward, terminated, truncated, battle_won, dead_allies, dead_enemies, flags)
        finals = None
        if self._spec.auto_reset:
            finals = (np.zeros_like(self._obs), np.zeros_like(self._state), np.zeros_like(self._avail),
                      np.zeros_like(self._alive))

        for i in active_ids:
            env = self._envs[i]
            r, env_terminated, info = env.step(actions[i].tolist())
            info = self._check_info(i, info)
            if not isinstance(r, float) and np.ndim(r) != 0:
                raise ValueError(
                    f"environment {i} returned a non-scalar reward of shape {np.shape(r)}; the SMAC "
                    "API has one team reward per step"
                )
            self._episode_steps[i] += 1
            term_i, timeout_i, crashed = self._classify_end(i, bool(env_terminated), info)

            reward[i] = float(r)
            terminated[i] = term_i
            truncated[i] = timeout_i
            if info:
                battle_won[i] = bool(info.get("battle_won", False))
                dead_allies[i] = int(info.get("dead_allies", 0))
                dead_enemies[i] = int(info.get("dead_enemies", 0))
            if info:
                for flag, info_keys in self._flag_sources.items():
                    for key in info_keys:
                        if info.get(key, False):
                            flags[flag][i] = True
                            break
            if crashed:
                flags["invalid"][i] = True
            if not (term_i or timeout_i):
                self._read_arrays(i)
            elif finals is not None and env_terminated:
                # The env started its next episode inside step: the final arrays come in info.
                self._read_final_arrays(i, info, finals)
                self._episode_steps[i] = 0
                self._counters[i] = _read_counters(env)
                self._read_arrays(i)
            else:
                self._needs_reset[i] = True
                self._resets_owed += 1
                self._read_arrays(i)
                if finals is not None:  # cut by rule 5: the current arrays are the final ones
                    for final, current in zip(finals, (self._obs, self._state, self._avail, self._alive)):
                        final[i] = current[i]

        step = BatchedStep(reward, terminated, truncated, battle_won, dead_allies, dead_enemies, flags)
        if finals is not None:
            step.final_obs, step.final_state, step.final_avail_actions = finals[:3]
            if self._spec.provides_alive:
                step.alive = np.where((terminated | truncated)[:, None], finals[3], self._alive)
        return step

    def _step_checked(self, actions, active_ids, reward, terminated, truncated) -> None:
        """The fast path: environments with ``step_checked`` (``MultiAgentEnv``) get the
        actions checked above as Python ints, report terminated and truncated themselves, and
        hand out arrays of the declared shapes and dtypes, copied here without re-checks."""
        steps, envs, rows = self._checked_steps, self._envs, actions.tolist()
        alive = self._spec.provides_alive
        for i in active_ids:
            r, term, trunc = steps[i](rows[i])
            self._episode_steps[i] += 1
            reward[i] = r
            if term or trunc:
                terminated[i], truncated[i] = term, trunc
                self._needs_reset[i] = True
                self._resets_owed += 1
            elif self._episode_steps[i] >= self.episode_limit:
                raise RuntimeError(
                    f"environment {i} ({type(envs[i]).__qualname__}) has step_checked but did not end "
                    f"its episode within episode_limit={self.episode_limit} steps"
                )
            env = envs[i]
            self._obs[i] = env.get_obs()
            self._state[i] = env.get_state()
            self._avail[i] = env.get_avail_actions()
            if alive:
                self._alive[i] = env.get_alive_agents()

    def _check_step_inputs(self, actions, active):
        """Validate everything before any environment is advanced, so a bad call changes nothing.
        A handful of array operations whatever the number of environments and agents: this runs
        on every step, and for fast environments its cost is the wrapper's."""
        actions = np.asarray(actions)
        expected = (self.n_envs, self.n_agents)
        if actions.shape != expected:
            raise ValueError(
                f"actions must have shape (n_envs, n_agents) = {expected}, got {actions.shape}"
            )
        if actions.dtype.kind not in "iu":
            raise ValueError(f"actions must be an integer array, got dtype {actions.dtype}")

        if active is None:
            ids, active_ids, chosen = self._all_ids, self._all_id_list, actions
            needs_reset = self._needs_reset
        else:
            active = np.asarray(active)
            if active.shape != (self.n_envs,) or active.dtype != bool:
                raise ValueError(
                    f"active must be a bool array of shape ({self.n_envs},), got shape "
                    f"{active.shape} dtype {active.dtype}"
                )
            ids = np.flatnonzero(active)
            active_ids = ids.tolist()
            if not active_ids:
                return actions, active_ids
            chosen, needs_reset = actions[ids], self._needs_reset[ids]
        if self._resets_owed and needs_reset.any():
            i = int(ids[needs_reset][0])
            state = "has not been reset" if self._episode_steps[i] == 0 else (
                f"ended its episode at step {self._episode_steps[i]}"
            )
            raise ValueError(f"environment {i} {state}; reset it (reset(env_ids=[{i}])) or mark it inactive")
        # One gather checks every action (it raises for an action >= n_actions; a negative one would
        # wrap around, hence the min); the branches below only name the first bad one.
        try:
            if chosen.min() < 0:
                raise IndexError
            available = self._avail[ids[:, None], self._agent_index, chosen]
        except IndexError:
            in_range = (chosen >= 0) & (chosen < self.n_actions)
            row, agent = map(int, np.argwhere(~in_range)[0])
            raise ValueError(
                f"action {int(chosen[row, agent])} of agent {agent} in environment {int(ids[row])} is out of "
                f"range [0, {self.n_actions})"
            ) from None
        if not available.all():
            row, agent = map(int, np.argwhere(~available)[0])
            i = int(ids[row])
            raise ValueError(
                f"action {int(chosen[row, agent])} is not available to agent {agent} in environment "
                f"{i}; available: {np.flatnonzero(self._avail[i, agent]).tolist()}"
            )
        return actions, active_ids

    def _check_info(self, i: int, info) -> Mapping:
        if info is None:
            return {}
        if type(info) is not dict and not isinstance(info, Mapping):
            raise TypeError(
                f"environment {i} returned info of type {type(info).__name__}; step() must return "
                "(reward, terminated, info dict)"
            )
        return info

    def _classify_end(self, i: int, env_terminated: bool, info: Mapping):
        """Apply the timeout rule of the module docstring; returns (terminated, timeout, crashed)."""
        t = int(self._episode_steps[i])
        if info.get("episode_limit", False):  # rule 1
            return False, True, False
        if not env_terminated:
            if t >= self.episode_limit:  # rule 5
                self._warn_cut(i)
                return False, True, False
            return False, False, False

        before = self._counters[i]
        after = _read_counters(self._envs[i])
        self._counters[i] = after
        if _counter_grew(before, after, "restarts"):  # rule 2
            return True, False, True
        timeouts_grew = _counter_grew(before, after, "timeouts")
        if timeouts_grew is not None:  # rule 3
            return not timeouts_grew, timeouts_grew, False
        timed_out = (  # rule 4
            t >= self.episode_limit
            and not info.get("battle_won", False)
            and int(info.get("dead_allies", 0)) < self.n_agents
        )
        return not timed_out, timed_out, False

    def _warn_cut(self, i: int) -> None:
        if self._warned_cut:
            return
        self._warned_cut = True
        warnings.warn(
            f"environment {i} ({type(self._envs[i]).__qualname__}) did not end its episode within "
            f"episode_limit={self.episode_limit} steps; VectorisedEnvs cut it there as truncated. "
            "An environment must report the time limit on step episode_limit (docs/environments.md; "
            "run `qmixlab check-env` to see every contract problem).",
            stacklevel=3,
        )

    def _read_arrays(self, i: int) -> None:
        """Copy environment ``i``'s borrowed arrays into the staging rows (the one copy)."""
        env = self._envs[i]
        self._obs[i], self._state[i], self._avail[i] = self._checked_arrays(
            i, env.get_obs(), env.get_state(), env.get_avail_actions(),
            ("get_obs()", "get_state()", "get_avail_actions()"))
        if self._spec.provides_alive:
            self._alive[i] = self._checked_alive(i, env.get_alive_agents(), "get_alive_agents()")

    def _read_final_arrays(self, i: int, info: Mapping, finals) -> None:
        keys = FINAL_INFO_KEYS + (("final_alive",) if self._spec.provides_alive else ())
        missing = [key for key in keys if key not in info]
        if missing:
            raise ValueError(
                f"environment {i} ({type(self._envs[i]).__qualname__}) declares auto_reset but its "
                f"info at the end of an episode lacks {', '.join(missing)}: an auto-resetting env "
                "must hand over the finished episode's last arrays (docs/environments.md)"
            )
        finals[0][i], finals[1][i], finals[2][i] = self._checked_arrays(
            i, info["final_obs"], info["final_state"], info["final_avail_actions"],
            tuple(f"info[{key!r}]" for key in FINAL_INFO_KEYS))
        if self._spec.provides_alive:
            finals[3][i] = self._checked_alive(i, info["final_alive"], "info['final_alive']")

    def _checked_arrays(self, i: int, obs, state, avail, sources):
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape != (self.n_agents, self.obs_dim):
            raise ValueError(
                f"environment {i}: {sources[0]} has shape {obs.shape}, expected "
                f"(n_agents, obs_shape) = {(self.n_agents, self.obs_dim)}"
            )
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (self.state_dim,):
            raise ValueError(
                f"environment {i}: {sources[1]} has shape {state.shape}, expected ({self.state_dim},)"
            )
        avail = np.asarray(avail)
        if avail.shape != (self.n_agents, self.n_actions):
            raise ValueError(
                f"environment {i}: {sources[2]} has shape {avail.shape}, expected "
                f"(n_agents, n_actions) = {(self.n_agents, self.n_actions)}"
            )
        if avail.dtype != bool:
            if not np.all((avail == 0) | (avail == 1)):
                raise ValueError(f"environment {i}: {sources[2]} must hold only 0/1, got {avail.tolist()}")
            avail = avail != 0
        return obs, state, avail

    def _checked_alive(self, i: int, alive, source: str) -> np.ndarray:
        alive = np.asarray(alive)
        if alive.shape != (self.n_agents,) or (alive.dtype != bool and not np.all((alive == 0) | (alive == 1))):
            raise ValueError(
                f"environment {i}: {source} must be {self.n_agents} bools (one per agent), got "
                f"{alive.tolist()}"
            )
        return alive if alive.dtype == bool else alive != 0

    # --------------------------------------------------------------------------- getters
    def get_obs(self) -> np.ndarray:
        """Read-only view ``[n_envs, n_agents, obs_dim]``, valid until the next step/reset."""
        return self._views[0]

    def get_state(self) -> np.ndarray:
        return self._views[1]

    def get_avail_actions(self) -> np.ndarray:
        return self._views[2]

    def get_alive_agents(self) -> np.ndarray:
        """Bool ``[n_envs, n_agents]`` from the wrapped envs (only with ``provides_alive``)."""
        if not self._spec.provides_alive:
            raise AttributeError(
                "get_alive_agents: the wrapped environments do not declare provides_alive"
            )
        return self._views[3]

    def get_env_info(self) -> dict:
        return dict(self._env_info)

    def get_stats(self) -> dict:
        all_stats = []
        for env in self._envs:
            get_stats = getattr(env, "get_stats", None)
            if get_stats is None:
                continue
            try:
                all_stats.append(get_stats())
            except ZeroDivisionError:  # real SMAC before its first finished battle: nothing to add
                continue
        return aggregate_stats(all_stats)

    # ----------------------------------------------------------------------- rng hooks
    def get_rng_state(self) -> Optional[list]:
        """Every wrapped env's ``get_rng_state()``, or None when any of them lacks the hook."""
        if not all(callable(getattr(env, "get_rng_state", None)) for env in self._envs):
            return None
        return [env.get_rng_state() for env in self._envs]

    def set_rng_state(self, states: Optional[list]) -> None:
        if states is None:
            return
        if len(states) != self.n_envs:
            raise ValueError(f"got random states for {len(states)} environments, expected {self.n_envs}")
        missing = [i for i, env in enumerate(self._envs) if not callable(getattr(env, "set_rng_state", None))]
        if missing:
            raise ValueError(f"environments {missing} have no set_rng_state(); cannot restore their random state")
        for env, state in zip(self._envs, states):
            env.set_rng_state(state)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for env in self._envs:
            close = getattr(env, "close", None)
            if close is not None:
                close()
