"""Check an environment against qmixlab's contract before training on it.

``check_env(env, env_args)`` builds the environment as a run would, steps it with random
available actions and returns every contract violation it sees, each with a fix;
``qmixlab check-env package.module:Class [key=value ...]`` prints them (``main``). The
contract is ``docs/environments.md``.

Levels: ``error`` (training would fail or learn from wrong data), ``warning`` (it works, but
something the run relies on is missing or handled by a fallback), ``info`` (handled; said so
that the author knows).
"""

from __future__ import annotations

import argparse
import copy
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .multiagentenv import BatchedMultiAgentEnv, BatchedStep
from .random_play import RandomAvailableController, random_available_actions
from .registry import check_env_args, make_batched_env
from .spec import EnvSpec, spec_of
from .vectorised import FINAL_INFO_KEYS, VectorisedEnvs

LEVELS = ("error", "warning", "info")
# SMAC's own info keys, which are not step flags.
SMAC_INFO_KEYS = frozenset({"battle_won", "dead_allies", "dead_enemies", "episode_limit", "invalid_step",
                            *FINAL_INFO_KEYS, "final_alive"})
# An agent left with one single action for this many consecutive steps looks dead.
DEAD_RUN_LENGTH = 3


@dataclass(frozen=True)
class Violation:
    level: str  # "error", "warning" or "info"
    code: str  # short identifier, e.g. "undeclared-auto-reset"
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.level.upper():7s} [{self.code}] {self.message} Fix: {self.fix}"


class _Report:
    def __init__(self):
        self.violations: List[Violation] = []
        self._seen = set()

    def add(self, level: str, code: str, message: str, fix: str, once: bool = True) -> None:
        key = (level, code) if once else (level, code, message)
        if key in self._seen:
            return
        self._seen.add(key)
        self.violations.append(Violation(level, code, message, fix))

    @property
    def has_errors(self) -> bool:
        return any(v.level == "error" for v in self.violations)


# ----------------------------------------------------------------------------- entry point
def check_env(env: str, env_args: Optional[Mapping[str, Any]] = None, n_envs: int = 2, episodes: int = 3,
              seed: int = 0) -> List[Violation]:
    """Every contract violation of environment ``env`` built with ``env_args`` (see the module
    docstring); an empty list when it conforms."""
    env_args = dict(env_args or {})
    report = _Report()
    try:
        check_env_args(env, env_args)
    except (ValueError, ImportError, AttributeError, TypeError) as error:
        report.add("error", "env-args", str(error), "pass only the keyword arguments its constructor takes")
        return report.violations
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batched = make_batched_env(env, n_envs, seed=seed, **env_args)
    except Exception as error:  # anything the author's constructor raises is the finding
        report.add("error", "construction", f"building {env!r} failed: {type(error).__name__}: {error}",
                   "make the constructor work with these env_args (and seed=...)")
        return report.violations
    try:
        spec = _check_spec(batched, report)
        if spec is not None:
            if isinstance(batched, VectorisedEnvs):
                _PerEnvProbe(batched.envs, spec, report).run(episodes, np.random.default_rng(seed))
                hooks_owner = batched.envs[0]
            else:
                _BatchedProbe(batched, spec, report).run(episodes, np.random.default_rng(seed))
                hooks_owner = batched
            _check_rng_hooks(hooks_owner, report)
    finally:
        _close(batched)
    if not report.has_errors:
        _check_rollout(env, env_args, n_envs, seed, report)
    return report.violations


def _close(env) -> None:
    try:
        env.close()
    except Exception:  # closing is best effort here; the findings matter
        pass


def _check_spec(batched, report: _Report) -> Optional[EnvSpec]:
    try:
        spec = spec_of(batched)
    except (ValueError, TypeError) as error:
        report.add("error", "spec", f"the environment's spec is invalid: {error}",
                   "fix get_env_info()/get_spec() or the declared class attributes")
        return None
    if spec.provides_alive and not callable(getattr(batched, "get_alive_agents", None)):
        report.add("error", "alive-mask", "provides_alive is declared but there is no get_alive_agents()",
                   "implement get_alive_agents() (bools, one per agent) or drop provides_alive")
        return None
    return spec


# ---------------------------------------------------------------------- array checks
class _ArrayChecks:
    """Shape/dtype/value checks shared by both probes; each problem is reported once."""

    def __init__(self, spec: EnvSpec, report: _Report):
        self.spec, self.report = spec, report
        self._previous: Dict[str, Any] = {}

    def arrays(self, where: str, obs, state, avail, batch_shape=()) -> Optional[np.ndarray]:
        """Check the three arrays; returns avail as bool (or None when unusable)."""
        spec, report = self.spec, self.report
        expected = {
            "obs": batch_shape + (spec.n_agents, spec.obs_shape),
            "state": batch_shape + (spec.state_shape,),
            "avail_actions": batch_shape + (spec.n_agents, spec.n_actions),
        }
        ok = True
        for name, raw in (("obs", obs), ("state", state), ("avail_actions", avail)):
            self._ownership(name, raw)
            try:
                array = np.asarray(raw)
            except Exception as error:
                report.add("error", "shape", f"{where}: {name} is not an array ({error})",
                           f"return a numeric array of shape {expected[name]}")
                ok = False
                continue
            if array.shape != expected[name]:
                report.add("error", "shape", f"{where}: {name} has shape {array.shape}, expected "
                           f"{expected[name]}", "make the shape match the sizes in get_env_info()/get_spec()")
                ok = False
                continue
            if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
                report.add("error", "dtype", f"{where}: {name} has dtype {array.dtype}",
                           "return numbers (float32 for obs and state, bool or 0/1 for avail)")
                ok = False
                continue
            if name != "avail_actions" and not np.isfinite(array).all():
                report.add("error", "non-finite", f"{where}: {name} holds NaN or infinite values",
                           "return finite features")
            if batch_shape and name != "avail_actions" and array.dtype != np.float32:
                report.add("info", "dtype-converted", f"{where}: {name} has dtype {array.dtype}; qmixlab "
                           "converts it to float32 when it copies it", "return float32 to skip the conversion")
        if not ok:
            return None
        avail = np.asarray(avail)
        if avail.dtype != bool and not np.all((avail == 0) | (avail == 1)):
            report.add("error", "avail-values", f"{where}: avail_actions holds values other than 0/1",
                       "return bool or 0/1 availability")
            return None
        avail = avail != 0
        if not avail.any(-1).all():
            report.add("error", "no-available-action", f"{where}: an agent has no available action",
                       "always leave at least one action available (dead agents: the no-op)")
            return None
        return avail

    def alive(self, where: str, alive, expected_shape) -> Optional[np.ndarray]:
        array = np.asarray(alive)
        if array.shape != expected_shape or not (array.dtype == bool or np.all((array == 0) | (array == 1))):
            self.report.add("error", "alive-mask", f"{where}: the alive mask has shape {array.shape} "
                            f"dtype {array.dtype}, expected bools of shape {expected_shape}",
                            "return one bool per agent")
            return None
        return array != 0

    def _ownership(self, name: str, raw) -> None:
        """Read-only and reused arrays are allowed (borrowed); say so once."""
        array = raw[0] if isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], np.ndarray) else raw
        if not isinstance(array, np.ndarray):
            return
        if not array.flags.writeable:
            self.report.add("info", "read-only-arrays", f"{name} arrays are read-only; qmixlab copies "
                            "borrowed arrays once, so this is handled", "nothing to do")
        previous = self._previous.get(name)
        if previous is not None and (previous is array or np.shares_memory(previous, array)):
            self.report.add("info", "reused-arrays", f"{name} arrays are reused from one call to the next; "
                            "qmixlab copies them before the next step, so this is handled", "nothing to do")
        self._previous[name] = array


class _DeadAgentTracker:
    """Runs of steps in which an agent's only available action is one fixed index."""

    def __init__(self, spec: EnvSpec, report: _Report, shape):
        self.spec, self.report = spec, report
        self.single = np.full(shape, -1, np.int64)  # the single action, or -1
        self.run = np.zeros(shape, np.int64)

    def update(self, avail: np.ndarray, rows=None) -> None:
        single = np.where(avail.sum(-1) == 1, avail.argmax(-1), -1)
        if rows is not None:
            single = np.where(rows[..., None], single, self.single)
        same = (single == self.single) & (single >= 0)
        self.run = np.where(same, self.run + 1, np.where(single >= 0, 1, 0))
        self.single = single
        long_runs = self.run >= DEAD_RUN_LENGTH
        if not long_runs.any():
            return
        action = int(self.single[long_runs][0])
        spec = self.spec
        if not spec.can_tell_dead_agents:
            self.report.add(
                "warning", "dead-agents-undeclared",
                f"agents are left with action {action} as their only available action for "
                f"{DEAD_RUN_LENGTH}+ steps (they look dead), but the environment declares neither "
                "noop_action nor provides_alive: qmixlab counts every agent as alive",
                f"declare noop_action = {action} (class attribute or get_spec()), or provides_alive = True "
                "with get_alive_agents()")
        elif spec.noop_action is not None and not spec.provides_alive and action != spec.noop_action:
            self.report.add(
                "warning", "dead-agents-other-action",
                f"agents are left with action {action} alone for {DEAD_RUN_LENGTH}+ steps, but the "
                f"declared noop_action is {spec.noop_action}",
                f"if these agents are dead, declare noop_action = {action}")

    def reset_rows(self, rows) -> None:
        self.single[rows] = -1
        self.run[rows] = 0


def _ended_check(report: _Report, length: int, limit: int, truncated: bool, where: str) -> None:
    if length > limit:
        report.add("warning", "late-end",
                   f"{where}: an episode ended after {length} steps, past episode_limit={limit} "
                   f"({'time limit' if truncated else 'end'} reported late); the runner cuts episodes "
                   "at episode_limit as truncated",
                   f"report the time limit on step {limit} (or declare episode_limit={length})")


# ----------------------------------------------------------------------- per-env probe
class _PerEnvProbe:
    """Steps the raw SMAC-API instances (not the wrapper, which would hide their problems)."""

    def __init__(self, envs: Sequence, spec: EnvSpec, report: _Report):
        self.envs, self.spec, self.report = list(envs), spec, report
        self.checks = _ArrayChecks(spec, report)

    def observe(self, env, where: str):
        avail = self.checks.arrays(where, env.get_obs(), env.get_state(), env.get_avail_actions())
        if avail is not None and self.spec.provides_alive:
            self.checks.alive(where, env.get_alive_agents(), (self.spec.n_agents,))
        return avail

    def run(self, episodes: int, rng: np.random.Generator) -> None:
        spec, report = self.spec, self.report
        cap = 2 * spec.episode_limit + 5
        for episode in range(episodes):
            for i, env in enumerate(self.envs):
                where = f"env {i}, episode {episode}"
                env.reset()
                avail = self.observe(env, f"{where}, after reset")
                if avail is None:
                    return
                dead = _DeadAgentTracker(spec, report, (spec.n_agents,))
                dead.update(avail)
                for t in range(1, cap + 1):
                    actions = random_available_actions(rng, avail)
                    reward, terminated, info = env.step([int(a) for a in actions])
                    if not self._check_step(reward, info, f"{where}, step {t}"):
                        return
                    if terminated:
                        self._after_end(env, info, t, f"{where}", rng)
                        break
                    avail = self.observe(env, f"{where}, step {t}")
                    if avail is None:
                        return
                    dead.update(avail)
                else:
                    report.add("warning", "never-ends", f"{where}: no end after {cap} steps "
                               f"(episode_limit={spec.episode_limit}); the runner cuts it at the limit",
                               f"return terminated=True on step {spec.episode_limit} at the latest")

    def _check_step(self, reward, info, where: str) -> bool:
        report = self.report
        if np.ndim(reward) != 0:
            report.add("error", "reward-not-scalar", f"{where}: reward has shape {np.shape(reward)}",
                       "return one team reward (a float) per step")
            return False
        if not isinstance(reward, numbers.Real) and not np.issubdtype(np.asarray(reward).dtype, np.number):
            report.add("error", "reward-not-scalar", f"{where}: reward is {type(reward).__name__}",
                       "return a float")
            return False
        if not math.isfinite(float(reward)):
            report.add("error", "non-finite", f"{where}: reward is {reward}", "return finite rewards")
        if info is not None and not isinstance(info, Mapping):
            report.add("error", "info", f"{where}: info is {type(info).__name__}, not a dict",
                       "return (reward, terminated, info dict)")
            return False
        for key, value in (info or {}).items():
            if key in SMAC_INFO_KEYS or key in self.spec.step_flags:
                continue
            if isinstance(value, (bool, np.bool_)):
                report.add("warning", "undeclared-flag",
                           f"info[{key!r}] is a per-step bool but not a declared step flag: the runner "
                           "does not store it", f"if it marks steps to treat specially, declare "
                           f"step_flags = ({key!r},) (class attribute or get_spec())", once=False)
        return True

    def _after_end(self, env, info, length: int, where: str, rng) -> None:
        spec, report = self.spec, self.report
        info = info or {}
        _ended_check(report, length, spec.episode_limit, bool(info.get("episode_limit", False)), where)
        if spec.auto_reset:
            missing = [k for k in FINAL_INFO_KEYS + (("final_alive",) if spec.provides_alive else ())
                       if k not in info]
            if missing:
                report.add("error", "auto-reset-final", f"{where}: auto_reset is declared but the info of "
                           f"the last step lacks {', '.join(missing)}",
                           "put the finished episode's last obs/state/avail in info['final_obs'], "
                           "info['final_state'], info['final_avail_actions']")
            return
        # Without a declared auto-reset, stepping an ended episode must raise.
        try:
            avail = np.asarray(env.get_avail_actions()) != 0
            env.step([int(a) for a in random_available_actions(rng, avail)])
        except Exception:
            return
        report.add("error", "undeclared-auto-reset",
                   f"{where}: step() after the episode ended was accepted; an environment that keeps "
                   "going (or auto-resets) without declaring it hands the next episode's first "
                   "observation over as the last one",
                   "raise in step() until reset() is called, or declare auto_reset = True and put the "
                   "final arrays in info['final_obs'/'final_state'/'final_avail_actions']")


# ----------------------------------------------------------------------- batched probe
class _BatchedProbe:
    def __init__(self, env: BatchedMultiAgentEnv, spec: EnvSpec, report: _Report):
        self.env, self.spec, self.report = env, spec, report
        self.n = env.n_envs
        self.checks = _ArrayChecks(spec, report)

    def observe(self, where: str):
        env = self.env
        avail = self.checks.arrays(where, env.get_obs(), env.get_state(), env.get_avail_actions(), (self.n,))
        if avail is not None and self.spec.provides_alive:
            self.checks.alive(where, env.get_alive_agents(), (self.n, self.spec.n_agents))
        return avail

    def run(self, episodes: int, rng: np.random.Generator) -> None:
        spec, report, n = self.spec, self.report, self.n
        cap = 2 * spec.episode_limit + 5
        for episode in range(episodes):
            where = f"episode {episode}"
            self.env.reset()
            avail = self.observe(f"{where}, after reset")
            if avail is None:
                return
            dead = _DeadAgentTracker(spec, report, (n, spec.n_agents))
            dead.update(avail)
            running = np.ones(n, bool)
            lengths = np.zeros(n, np.int64)
            for t in range(1, cap + 1):
                actions = np.where(running[:, None], random_available_actions(rng, avail), 0)
                step = self.env.step(actions, running.copy())
                if not self._check_step(step, f"{where}, step {t}"):
                    return
                lengths[running] += 1
                ended = running & (np.asarray(step.terminated) | np.asarray(step.truncated))
                for i in np.flatnonzero(ended):
                    _ended_check(report, int(lengths[i]), spec.episode_limit, bool(step.truncated[i]),
                                 f"{where}, env {i}")
                if ended.any() and self._after_end(step, ended, rng, where):
                    break  # an ended environment was stepped out of turn: start the next episode
                running &= ~ended
                if not running.any():
                    break
                avail = self.observe(f"{where}, step {t}")
                if avail is None:
                    return
                dead.update(avail, rows=running)
            else:
                report.add("warning", "never-ends", f"{where}: environments {np.flatnonzero(running).tolist()} "
                           f"did not end within {cap} steps (episode_limit={spec.episode_limit}); the runner "
                           "cuts them at the limit", f"end every episode by step {spec.episode_limit}")

    def _check_step(self, step, where: str) -> bool:
        spec, report, n = self.spec, self.report, self.n
        if not isinstance(step, BatchedStep):
            report.add("error", "step-result", f"{where}: step() returned {type(step).__name__}, not a BatchedStep",
                       "return qmixlab.envs.BatchedStep")
            return False
        for name in ("reward", "terminated", "truncated"):
            array = np.asarray(getattr(step, name))
            if array.shape != (n,):
                code = "reward-not-scalar" if name == "reward" else "shape"
                report.add("error", code, f"{where}: BatchedStep.{name} has shape {array.shape}, expected ({n},)",
                           f"one {name} value per environment")
                return False
        if not np.isfinite(np.asarray(step.reward, dtype=np.float64)).all():
            report.add("error", "non-finite", f"{where}: reward holds NaN or infinite values", "return finite rewards")
        emitted, declared = set(step.flags), set(spec.step_flags)
        for flag in sorted(emitted - declared):
            report.add("error", "undeclared-flag", f"{where}: BatchedStep.flags[{flag!r}] is emitted but not "
                       "declared: the runner refuses flags it was not told about",
                       f"declare step_flags = ({flag!r},) (class attribute or get_spec())", once=False)
        for flag in sorted(declared - emitted):
            report.add("error", "missing-flag", f"{where}: flag {flag!r} is declared but missing from "
                       "BatchedStep.flags", "emit every declared flag on every step (False when unset)", once=False)
        for flag in sorted(emitted & declared):
            if np.asarray(step.flags[flag]).shape != (n,):
                report.add("error", "shape", f"{where}: flags[{flag!r}] has shape "
                           f"{np.asarray(step.flags[flag]).shape}, expected ({n},)", "one bool per environment")
        if step.alive is not None:
            self.checks.alive(where + " (BatchedStep.alive)", step.alive, (n, spec.n_agents))
        return not report.has_errors

    def _after_end(self, step, ended, rng, where: str) -> bool:
        """Check what an episode end must bring; True when the probe stepped an ended env."""
        spec, report = self.spec, self.report
        if spec.auto_reset:
            missing = [name for name in ("final_obs", "final_state", "final_avail_actions")
                       if getattr(step, name) is None]
            if spec.provides_alive and step.alive is None:
                missing.append("alive")
            if missing:
                report.add("error", "auto-reset-final", f"{where}: auto_reset is declared but the step that "
                           f"ended an episode has no {', '.join(missing)}",
                           "fill BatchedStep.final_obs/final_state/final_avail_actions for ended environments")
            return False
        # Without a declared auto-reset, stepping an ended environment must raise.
        i = int(np.flatnonzero(ended)[0])
        only = np.zeros(self.n, bool)
        only[i] = True
        try:
            avail = np.asarray(self.env.get_avail_actions()) != 0
            self.env.step(np.where(only[:, None], random_available_actions(rng, avail), 0), only)
        except Exception:
            return False  # as the contract asks (and the env was not advanced)
        report.add("error", "undeclared-auto-reset",
                   f"{where}: stepping environment {i} after its episode ended was accepted; an "
                   "environment that auto-resets without declaring it hands the next episode's first "
                   "observation over as the last one",
                   "raise in step() for ended environments until reset(), or declare auto_reset = True "
                   "and fill BatchedStep.final_obs/final_state/final_avail_actions")
        return True


# ------------------------------------------------------------------------ other checks
def _is_plain(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return type(value) in (type(None), bool, int, float, str)
    if isinstance(value, (list, tuple)):
        return type(value) in (list, tuple) and all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return type(value) is dict and all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _check_rng_hooks(env, report: _Report) -> None:
    get_state = getattr(env, "get_rng_state", None)
    set_state = getattr(env, "set_rng_state", None)
    name = type(env).__qualname__
    if not callable(get_state) or not callable(set_state):
        missing = [n for n, f in (("get_rng_state", get_state), ("set_rng_state", set_state)) if not callable(f)]
        report.add("warning", "rng-hooks", f"{name} has no {' / '.join(missing)}: a resumed run cannot "
                   "restore the environment's random state, so it will not reproduce the uninterrupted one",
                   "add get_rng_state() returning plain Python values (e.g. "
                   "rng.bit_generator.state) and set_rng_state(state)")
        return
    state = get_state()
    if not _is_plain(state):
        report.add("error", "rng-state-not-plain", f"{name}.get_rng_state() returned {type(state).__name__} "
                   "holding non-plain values (numpy arrays or objects)",
                   "return only dict/list/tuple/int/float/str/bool/None (checkpoints store it as such)")
        return
    try:
        set_state(copy.deepcopy(state))
        env.reset()
        first = np.array(env.get_obs(), dtype=np.float64, copy=True)
        set_state(copy.deepcopy(state))
        env.reset()
        second = np.array(env.get_obs(), dtype=np.float64, copy=True)
    except Exception as error:
        report.add("error", "rng-hooks", f"{name}.set_rng_state(get_rng_state()) failed: "
                   f"{type(error).__name__}: {error}", "make set_rng_state accept what get_rng_state returns")
        return
    if not np.array_equal(first, second):
        report.add("warning", "rng-hooks", f"{name}: after set_rng_state(state) the first observation of a "
                   "reset differs between two restores of the same state",
                   "include every random generator the environment uses in get_rng_state()")


def _check_rollout(env: str, env_args: dict, n_envs: int, seed: int, report: _Report) -> None:
    """One rollout through make_batched_env and BatchRunner, as training does it."""
    from qmixlab.runners.batch_runner import BatchRunner

    batched = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # problems it warns about were reported by the probes
            batched = make_batched_env(env, n_envs, seed=seed, **env_args)
            BatchRunner(batched, RandomAvailableController(seed)).run(test_mode=False)
    except Exception as error:
        report.add("error", "rollout", f"a rollout through the runner failed: {type(error).__name__}: {error}",
                   "see docs/environments.md for what the runner expects")
    finally:
        if batched is not None:
            _close(batched)


# ----------------------------------------------------------------------------------- CLI
USAGE = "qmixlab check-env package.module:Class [key=value ...] [--episodes N] [--n-envs N] [--seed N]"


def _parse_env_args(items: Sequence[str]) -> Dict[str, Any]:
    import yaml

    env_args: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        if key.startswith("env_args."):
            key = key[len("env_args."):]
        try:
            env_args[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"cannot parse the value of {key!r} ({value!r}): {error}") from None
    return env_args


def main(argv: Optional[List[str]] = None) -> int:
    """``qmixlab check-env``: 0 when no error-level violation, 1 otherwise, 2 on a usage error."""
    parser = argparse.ArgumentParser(prog="qmixlab check-env", usage=USAGE,
                                     description="Check an environment against qmixlab's contract "
                                                 "(docs/environments.md).")
    parser.add_argument("env", help="'package.module:Class', or a registered name such as smacsim")
    parser.add_argument("env_args", nargs="*", help="constructor arguments as key=value (values are YAML)")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--n-envs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return 0 if exit_.code == 0 else 2
    if args.episodes < 1 or args.n_envs < 1 or args.seed < 0:
        print(f"qmixlab check-env: --episodes and --n-envs must be >= 1 and --seed >= 0\nusage: {USAGE}")
        return 2
    try:
        env_args = _parse_env_args(args.env_args)
    except ValueError as error:
        print(f"qmixlab check-env: {error}\nusage: {USAGE}")
        return 2
    violations = check_env(args.env, env_args, n_envs=args.n_envs, episodes=args.episodes, seed=args.seed)
    for violation in violations:
        print(violation)
    counts = {level: sum(v.level == level for v in violations) for level in LEVELS}
    verdict = "FAILED" if counts["error"] else "OK"
    print(f"check-env {args.env}: {verdict}: {counts['error']} error(s), {counts['warning']} warning(s), "
          f"{counts['info']} note(s)")
    return 1 if counts["error"] else 0
