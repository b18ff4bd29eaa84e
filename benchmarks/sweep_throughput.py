"""Sweep throughput: K seeds trained in one process against one seed alone.

    python benchmarks/sweep_throughput.py [--map 3m] [--seeds 5] [--t-max 40000] [--repeats 2]

Both sides run the real training loop (``qmixlab.run.train_members``) with the default config on
one thread, without checkpoints or console output, except ``t_max`` and ``batch_size``: 32 by
default, the masking sweeps' value (``examples/masks_smacsim_*.yaml``). With the default 128 the
learner's matrix products are bound by arithmetic on this CPU, which batching seeds cannot
remove (``--batch-size 128`` measures it). The measure is
environment steps trained per second of wall clock: every member's steps (its own ``t_env``)
over the time the training loop took (networks built, nothing excluded but interpreter start).
Each side runs ``--repeats`` times, alternating, and the best time of each counts (timings here
are noisy; the best is the one least disturbed).

Last line: ``seed_batch_speedup_<map>=<x>``: (steps per second with K seeds in one process) /
(steps per second of one seed alone). Target: >= 3 for K=5 on 3m.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from qmixlab import run as run_module
from qmixlab.metrics import RunLogger
from qmixlab.settings import validate_run


def trained_steps_per_second(map_name: str, seeds: list, t_max: int, batch_size: int) -> float:
    overrides = {"env_args.map_name": map_name, "t_max": t_max, "save_model": False, "progress_bar": False,
                 "torch_threads": 1, "batch_size": batch_size}
    if len(seeds) == 1:
        overrides["seed"] = seeds[0]
    else:
        overrides["seeds"] = seeds
    settings = validate_run("qmix", "smacsim", overrides)
    started = time.perf_counter()
    members = run_module.train_members(settings, [RunLogger() for _ in seeds], [None] * len(seeds))
    elapsed = time.perf_counter() - started
    assert all(m.state == run_module.FINISHED for m in members), [m.error for m in members]
    return sum(m.counters.t_env for m in members) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map", default="3m")
    parser.add_argument("--seeds", type=int, default=5, help="seeds in one process (K)")
    parser.add_argument("--t-max", type=int, default=40_000, help="environment steps per seed")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32,
                        help="episodes per training batch (default: 32, the masking sweeps' value)")
    args = parser.parse_args()
    logging.getLogger("qmixlab").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    alone, together = [], []
    for repeat in range(args.repeats):
        alone.append(trained_steps_per_second(args.map, [100 + repeat], args.t_max, args.batch_size))
        together.append(trained_steps_per_second(args.map, list(range(args.seeds)), args.t_max, args.batch_size))
        print(f"repeat {repeat + 1}: one seed alone {alone[-1]:,.0f} steps/s; {args.seeds} seeds in one process "
              f"{together[-1]:,.0f} steps/s (all members' steps)", flush=True)
    best_alone, best_together = max(alone), max(together)
    print(f"best: one seed {best_alone:,.0f} steps/s, {args.seeds} seeds {best_together:,.0f} steps/s "
          f"({best_together / args.seeds:,.0f} per seed)")
    print(f"seed_batch_speedup_{args.map}={best_together / best_alone:.2f}")


if __name__ == "__main__":
    main()
