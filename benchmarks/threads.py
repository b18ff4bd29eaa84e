"""Training speed alone and side by side, for each thread setting.

Runs short QMIX trainings on smacsim 3m through the real command line (default config, no
checkpoints, no observer) and reads each run's own "finished N environment steps in S s" line:

* one run alone with ``torch_threads=1`` (the default) and with ``torch_threads=2``;
* two runs side by side with the default (what ``qmixlab ablate`` with one worker per core, or a
  user with two experiments, does), and two side by side with 2 threads each.

Prints env steps per second of each and, last, ``side_by_side_ratio=<x>``: the speed of each of
two side-by-side default runs relative to one default run alone (1.0: no slowdown; the target is
>= 0.4), measured in this run.

    python benchmarks/threads.py [--t-max 40000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

FINISHED = re.compile(r"finished (\d+) environment steps in ([0-9.]+) s")


def command(t_max: int, threads: int, seed: int):
    return [sys.executable, "-m", "qmixlab", "-u", "with", "env_args.map_name=3m", f"t_max={t_max}",
            f"torch_threads={threads}", f"seed={seed}", "save_model=False", "progress_bar=False"]


def run_together(t_max: int, threads: int, copies: int):
    """Start ``copies`` runs at once; returns each run's env steps per second of training."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    with tempfile.TemporaryDirectory() as folder:
        processes = [subprocess.Popen(command(t_max, threads, seed), cwd=folder, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                     for seed in range(copies)]
        outputs = [p.communicate()[0] for p in processes]
    speeds = []
    for process, output in zip(processes, outputs):
        match = FINISHED.search(output or "")
        if process.returncode != 0 or match is None:
            raise RuntimeError(f"run failed (exit {process.returncode}):\n{output[-2000:]}")
        speeds.append(int(match.group(1)) / float(match.group(2)))
    return speeds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--t-max", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    results = {}
    for repeat in range(args.repeats):
        for label, threads, copies in (("alone, 1 thread", 1, 1), ("alone, 2 threads", 2, 1),
                                       ("side by side, 1 thread each", 1, 2),
                                       ("side by side, 2 threads each", 2, 2)):
            started = time.time()
            speeds = run_together(args.t_max, threads, copies)
            results.setdefault(label, []).extend(speeds)
            print(f"{label:32s} env steps/s per run: {', '.join(f'{s:7.0f}' for s in speeds)}"
                  f"   ({time.time() - started:.0f} s wall clock)", flush=True)
    mean = {label: sum(v) / len(v) for label, v in results.items()}
    alone = mean["alone, 1 thread"]
    print(f"2 threads alone vs 1 thread alone: {mean['alone, 2 threads'] / alone:.2f}x")
    print(f"side by side (2 threads each) vs 1 thread alone: {mean['side by side, 2 threads each'] / alone:.2f}")
    print(f"side_by_side_ratio={mean['side by side, 1 thread each'] / alone:.2f}")


if __name__ == "__main__":
    main()
