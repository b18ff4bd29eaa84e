"""Throughput of the smacsim environment: env steps per second.

One env step = one environment advanced by one step (a batched step of 8 envs = 8 env steps).
Each measured step samples random available actions, steps, builds obs/state/avail arrays and
resets finished environments. Each configuration runs a few short timed repeats and reports
the best (the machine is shared, so the best repeat is the least disturbed one).

    python benchmarks/env.py [--seconds 0.5] [--repeats 3] [--maps 3m,2s3z] [--envs 1,8,64]

The last line is ``env_steps_per_s_3m_8envs=<x> env_steps_per_s_27m_8envs=<x>``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from qmixlab.envs.smacsim import BatchedSMACSim


def random_available(avail: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random available action per agent, ``[n_envs, n_agents]``."""
    return (rng.random(avail.shape, dtype=np.float32) * avail).argmax(-1)


def env_steps_per_second(map_name: str, n_envs: int, seconds: float, repeats: int,
                         seed: int = 0) -> float:
    env = BatchedSMACSim(map_name, n_envs=n_envs, seed=seed)
    rng = np.random.default_rng(seed)

    def run(min_seconds: float) -> float:
        steps = 0
        start = time.perf_counter()
        while True:
            for _ in range(10):
                actions = random_available(env.get_avail_actions(), rng)
                out = env.step(actions)
                env.get_obs()
                env.get_state()
                ended = out.ended
                if ended.any():
                    env.reset(np.flatnonzero(ended))
            steps += 10
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return steps * n_envs / elapsed

    run(0.1)  # warm-up
    return max(run(seconds) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--maps", default="3m,2s3z,MMM2,27m_vs_30m")
    parser.add_argument("--envs", default="1,8,64")
    args = parser.parse_args()
    maps = args.maps.split(",")
    env_counts = [int(n) for n in args.envs.split(",")]

    results = {}
    print("| map | " + " | ".join(f"{n} envs" for n in env_counts) + " |")
    print("|---|" + "---|" * len(env_counts))
    for m in maps:
        row = []
        for n in env_counts:
            results[m, n] = env_steps_per_second(m, n, args.seconds, args.repeats)
            row.append(f"{results[m, n]:,.0f}")
        print(f"| {m} | " + " | ".join(row) + " |", flush=True)

    def get(m: str, n: int) -> float:
        if (m, n) not in results:
            results[m, n] = env_steps_per_second(m, n, args.seconds, args.repeats)
        return results[m, n]

    print(f"env_steps_per_s_3m_8envs={get('3m', 8):.0f} "
          f"env_steps_per_s_27m_8envs={get('27m_vs_30m', 8):.0f}")


if __name__ == "__main__":
    main()
