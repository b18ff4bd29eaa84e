"""Time per training iteration (rollout + insert + sample + train step) on smacsim 3m, default config.

Builds a run's components with ``qmixlab.run.build_components`` (the code a run uses), fills the
buffer past ``batch_size`` episodes, then times whole iterations. With ``--compare-with REV`` the
same measurement runs, alternating, on the package as it was at git revision REV (checked out into
a temporary folder and imported from there), so both are measured in the same run; the last line is
``iteration_speedup_vs_<REV>=<x>`` (> 1: this tree is faster).

    python benchmarks/iteration.py [--iterations 40] [--rounds 3] [--compare-with 110db14]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MEASURE = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from qmixlab import run as run_module
from qmixlab.settings import compose_config, deep_merge, validate_config

iterations = int(sys.argv[1])
config = deep_merge(compose_config("qmix", "smacsim"), {"seed": 0, "env_args": {"map_name": "3m"},
                                                        "torch_threads": 1})
settings = validate_config(config)
parts = run_module.build_components(settings)
runner, buffer, learner = parts.runner, parts.buffer, parts.learner

def rollout(t_env):
    try:
        return runner.run(test_mode=False, t_env=t_env)
    except TypeError:  # before the runner took t_env from its caller
        return runner.run(test_mode=False)

t_env = 0
while not buffer.can_sample(settings.batch_size):
    batch, stats = rollout(t_env)
    buffer.insert_episode_batch(batch)
    t_env += int(stats.lengths.sum())
times = []
for i in range(iterations):
    started = time.perf_counter()
    with run_module.single_threaded():
        batch, stats = rollout(t_env)
    buffer.insert_episode_batch(batch)
    t_env += int(stats.lengths.sum())
    learner.train(buffer.sample(settings.batch_size), t_env, i * runner.n_envs)
    times.append(time.perf_counter() - started)
times.sort()
print(json.dumps({"median_ms": 1000 * times[len(times) // 2], "mean_ms": 1000 * sum(times) / len(times)}))
"""


def package_tree_at(revision: str, folder: Path) -> Path:
    """An importable ``qmixlab`` package (sources and configs) as of ``revision``."""
    checkout = folder / "checkout"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(checkout), revision],
                   check=True, capture_output=True)
    root = folder / "importable"
    shutil.copytree(checkout / "src", root / "qmixlab")
    shutil.copytree(checkout / "config", root / "qmixlab" / "config")
    for package in (root / "qmixlab" / "config").rglob("*"):
        if package.is_dir():
            (package / "__init__.py").touch()
    (root / "qmixlab" / "config" / "__init__.py").touch()
    return root


def measure(pythonpath, iterations: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run([sys.executable, "-c", MEASURE, str(iterations)], env=env, capture_output=True,
                            text=True, cwd=tempfile.gettempdir())
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-with", metavar="REV")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        baseline_path = package_tree_at(args.compare_with, Path(folder)) if args.compare_with else None
        try:
            ours, theirs = [], []
            for round_index in range(args.rounds):
                ours.append(measure(None, args.iterations)["median_ms"])
                line = f"round {round_index + 1}: this tree {ours[-1]:6.1f} ms"
                if baseline_path:
                    theirs.append(measure(baseline_path, args.iterations)["median_ms"])
                    line += f"   {args.compare_with} {theirs[-1]:6.1f} ms"
                print(line + "  (median per iteration: rollout of 8 episodes + insert + sample 128 + train)",
                      flush=True)
        finally:
            if baseline_path:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(Path(folder) / "checkout")], capture_output=True)
    best = min(ours)
    print(f"iteration_ms={best:.1f}")
    if theirs:
        print(f"iteration_speedup_vs_{args.compare_with}={min(theirs) / best:.2f}")


if __name__ == "__main__":
    main()
