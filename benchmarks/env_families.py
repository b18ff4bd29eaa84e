"""Environment steps per second of each environment family, raw and through qmixlab, in one run.

For every task: the raw environment alone (its own API, uniformly random actions, reset when an
episode ends) and the same environment through qmixlab (``make_batched_env`` with 1 and with 8
environments, random available actions through the batched API, the observation, state and
availability read after every step as the runner does). One env step = one environment advanced
by one step (a batched step of 8 envs = 8 env steps). The measurements are interleaved (raw, 1,
8, raw, 1, 8, ...) and each reports its best repeat, since the machine is shared. The target
(issue 13) is a ratio qmixlab / raw of at least 0.8.

    python benchmarks/env_families.py [--seconds 12] [--repeats 3] [--tasks mpe-spread,...]

``--seconds`` is the time spent on each task. The last line is
``ratio_<task>_1env=<x> ratio_<task>_8envs=<x> ...``.

Adding a task: one ``TASKS`` entry, ``Task(raw, backend, env_args)``, where ``raw(seed)``
returns a function that advances the raw environment by one step (``pettingzoo_stepper`` for a
PettingZoo ParallelEnv factory, ``gymnasium_stepper`` for a gymnasium id with Tuple spaces).
"""

from __future__ import annotations

import argparse
import importlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import numpy as np

from qmixlab.envs import make_batched_env

N_ENVS = (1, 8)


@dataclass(frozen=True)
class Task:
    raw: Callable[[int], Callable[[], None]]  # seed -> one raw step
    backend: str
    env_args: Dict = field(default_factory=dict)


def pettingzoo_stepper(env_fn: str, **env_kwargs) -> Callable[[int], Callable[[], None]]:
    """A PettingZoo ParallelEnv stepped with its own API: a dict of random actions per step."""
    def make(seed: int) -> Callable[[], None]:
        module_name, factory = env_fn.split(":")
        env = getattr(importlib.import_module(module_name), factory)(**env_kwargs)
        env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        n_actions = {agent: int(env.action_space(agent).n) for agent in env.possible_agents}

        def step() -> None:
            env.step({agent: int(rng.integers(n_actions[agent])) for agent in env.agents})
            if not env.agents:
                env.reset()

        return step

    return make


def gymnasium_stepper(key: str, package: str) -> Callable[[int], Callable[[], None]]:
    """A gymnasium multi-agent env (Tuple spaces) stepped with its own API: a list of random
    actions per step. Built as the gymma/lbf/rware backends build it (``disable_env_checker``:
    the passive checker assumes one agent)."""
    def make(seed: int) -> Callable[[], None]:
        import gymnasium

        importlib.import_module(package)  # registers the ids
        env = gymnasium.make(key, disable_env_checker=True)
        env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        n_actions = [int(space.n) for space in env.action_space.spaces]

        def step() -> None:
            _, _, terminated, truncated, _ = env.step([int(rng.integers(n)) for n in n_actions])
            if terminated or truncated:
                env.reset()

        return step

    return make


TASKS: Dict[str, Task] = {
    "lbf-8x8-2p-3f": Task(gymnasium_stepper("Foraging-8x8-2p-3f-v3", "lbforaging"), "lbf",
                          {"key": "Foraging-8x8-2p-3f-v3"}),
    "rware-tiny-2ag": Task(gymnasium_stepper("rware-tiny-2ag-v2", "rware"), "rware", {"key": "rware-tiny-2ag-v2"}),
    "mpe-spread": Task(pettingzoo_stepper("mpe2.simple_spread_v3:parallel_env", max_cycles=25),
                       "mpe", {"task": "simple_spread_v3", "max_cycles": 25}),
    "mpe-speaker-listener": Task(pettingzoo_stepper("mpe2.simple_speaker_listener_v4:parallel_env", max_cycles=25),
                                 "mpe", {"task": "simple_speaker_listener_v4", "max_cycles": 25,
                                         "pad_observations": True}),
}


def qmixlab_stepper(task: Task, n_envs: int, seed: int) -> Callable[[], None]:
    """``n_envs`` environments through make_batched_env, one batched step per call."""
    env = make_batched_env(task.backend, n_envs, seed=seed, **task.env_args)
    env.reset()
    rng = np.random.default_rng(seed)

    def step() -> None:
        avail = env.get_avail_actions()
        actions = (rng.random(avail.shape, dtype=np.float32) + avail).argmax(-1)
        out = env.step(actions)
        env.get_obs()
        env.get_state()
        ended = np.asarray(out.terminated) | np.asarray(out.truncated)
        if ended.any():
            env.reset(np.flatnonzero(ended))

    return step


def steps_per_second(step: Callable[[], None], env_steps_per_call: int, seconds: float) -> float:
    calls = 0
    start = time.perf_counter()
    while True:
        for _ in range(20):
            step()
        calls += 20
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * env_steps_per_call / elapsed


def measure(task: Task, seconds: float, repeats: int, seed: int = 0) -> Dict[str, float]:
    """Best-of-``repeats`` env steps/s: ``raw`` and ``qmixlab_<n>`` for n in N_ENVS."""
    steppers = {"raw": (task.raw(seed), 1)}
    for n in N_ENVS:
        steppers[f"qmixlab_{n}"] = (qmixlab_stepper(task, n, seed), n)
    for step, n in steppers.values():  # warm-up
        steps_per_second(step, n, 0.1)
    share = seconds / (repeats * len(steppers))
    best = {name: 0.0 for name in steppers}
    for _ in range(repeats):
        for name, (step, n) in steppers.items():
            best[name] = max(best[name], steps_per_second(step, n, share))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="time spent on each task")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)}")
    args = parser.parse_args()
    names: List[str] = [n for n in args.tasks.split(",") if n]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")

    print("| task | raw steps/s | " + " | ".join(f"qmixlab {n} env(s)" for n in N_ENVS) + " | "
          + " | ".join(f"ratio {n}" for n in N_ENVS) + " |")
    print("|---|---|" + "---|" * (2 * len(N_ENVS)))
    summary = []
    for name in names:
        rates = measure(TASKS[name], args.seconds, args.repeats)
        ratios = [rates[f"qmixlab_{n}"] / rates["raw"] for n in N_ENVS]
        print(f"| {name} | {rates['raw']:.0f} | "
              + " | ".join(f"{rates[f'qmixlab_{n}']:.0f}" for n in N_ENVS) + " | "
              + " | ".join(f"{r:.2f}" for r in ratios) + " |", flush=True)
        summary += [f"ratio_{name}_{n}{'env' if n == 1 else 'envs'}={r:.2f}" for n, r in zip(N_ENVS, ratios)]
    print(" ".join(summary))


if __name__ == "__main__":
    main()
