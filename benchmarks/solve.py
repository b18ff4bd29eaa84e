"""Does QMIX with the default config learn on smacsim? Train on 3m, 2s3z, 5m_vs_6m and MMM2
through the real command line and record the greedy test win-rate curves.

    python benchmarks/solve.py [--maps 3m 2s3z] [--out results/solve] [--seed 1]

Targets (2-core CPU): 3m >= 95% test win rate in under 10 minutes of wall clock; 2s3z >= 90%
within 2M environment steps. Each map runs alone (timings are wall clock of that run, measured
from sacred's own timestamps), one after another. Writes ``<out>/curves.png`` (win rate over
environment steps and over minutes), ``<out>/summary.json`` and ``<out>/summary.md``.

Last line: ``solve_3m_minutes=<x> solve_3m_winrate=<x> solve_2s3z_winrate=<x>``, where
``solve_3m_minutes`` is the wall clock until the first greedy test round at >= 95% (``nan`` if
never), ``solve_3m_winrate`` the best test win rate within 10 minutes, and
``solve_2s3z_winrate`` the best test win rate within 2M steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

# Per map: environment steps to train and command-line overrides on top of the default config.
BUDGETS = {
    "3m": (400_000, []),
    "2s3z": (2_000_000, []),
    "5m_vs_6m": (2_000_000, []),
    "MMM2": (2_000_000, []),
}
TARGETS = {"3m": 0.95, "2s3z": 0.90}


def _parse_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def train_map(map_name: str, t_max: int, extra: list, out: Path, seed: int) -> dict:
    folder = out / map_name
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "qmixlab", "-F", str(folder / "sacred"), "with",
               f"env_args.map_name={map_name}", f"t_max={t_max}", f"seed={seed}", "progress_bar=False",
               f"local_results_path={folder}", "save_model_interval=1000000", *extra]
    print("running:", " ".join(command[1:]), flush=True)
    started = time.time()
    with open(folder / "stdout.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - started
    run_dir = max((p for p in (folder / "sacred").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    result = summarise_run(map_name, run_dir, t_max)
    result.update(wall_minutes=wall / 60.0, command=command[1:])
    return result


def summarise_run(map_name: str, run_dir: Path, t_max: int) -> dict:
    """The test win-rate curve of one sacred run folder (also of a run stopped early)."""
    run_info = json.loads((run_dir / "run.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    start = _parse_time(run_info["start_time"])
    won = metrics["test_battle_won_mean"]
    curve = [{"t_env": s, "minutes": (_parse_time(ts) - start) / 60.0, "win_rate": v}
             for s, v, ts in zip(won["steps"], won["values"], won["timestamps"])]
    stopped = _parse_time(run_info.get("stop_time") or run_info["heartbeat"])
    return {"map": map_name, "t_max": t_max, "wall_minutes": (stopped - start) / 60.0,
            "status": run_info["status"], "curve": curve, "sacred_run": str(run_dir)}


def first_reaching(curve, threshold, key):
    for point in curve:
        if point["win_rate"] >= threshold:
            return point[key]
    return math.nan


def plot(results, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_steps, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for result in results:
        steps = [p["t_env"] / 1e6 for p in result["curve"]]
        minutes = [p["minutes"] for p in result["curve"]]
        wins = [p["win_rate"] for p in result["curve"]]
        by_steps.plot(steps, wins, label=result["map"])
        by_time.plot(minutes, wins, label=result["map"])
    by_steps.set_xlabel("environment steps (millions)")
    by_time.set_xlabel("wall clock (minutes, 2-core CPU)")
    for axis in (by_steps, by_time):
        axis.set_ylabel("greedy test win rate")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("QMIX (default config) on smacsim, one seed per map")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", nargs="+", default=list(BUDGETS))
    parser.add_argument("--out", default="results/solve")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--t-max", type=int, default=None, help="override every map's budget")
    parser.add_argument("--merge", nargs="*", default=[],
                        help="summary.json files of other invocations (e.g. maps trained in parallel)")
    parser.add_argument("--plot-only", action="store_true", help="train nothing; summarise what is there")
    parser.add_argument("--adopt", nargs="*", default=[], metavar="MAP=SACRED_RUN_DIR",
                        help="summarise existing sacred runs (e.g. one stopped early) instead of training")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Maps trained by earlier invocations into the same folder stay in the summary.
    summary = out / "summary.json"
    results = json.loads(summary.read_text()) if summary.exists() else []
    for other in args.merge:
        merged = {r["map"] for r in json.loads(Path(other).read_text())}
        results = [r for r in results if r["map"] not in merged] + json.loads(Path(other).read_text())
    for adopted in args.adopt:
        map_name, run_dir = adopted.split("=", 1)
        result = summarise_run(map_name, Path(run_dir), BUDGETS.get(map_name, (0, []))[0])
        results = [r for r in results if r["map"] != map_name] + [result]
    for map_name in ([] if args.plot_only or args.adopt else args.maps):
        t_max, extra = BUDGETS.get(map_name, (2_000_000, []))
        result = train_map(map_name, args.t_max or t_max, extra, out, args.seed)
        results = [r for r in results if r["map"] != map_name] + [result]
        summary.write_text(json.dumps(results, indent=1))
    summary.write_text(json.dumps(results, indent=1))
    order = list(BUDGETS)
    results.sort(key=lambda r: order.index(r["map"]) if r["map"] in order else len(order))
    plot(results, out / "curves.png")

    lines = ["| map | env steps trained | wall clock (min) | best test win rate | final test win rate | "
             "first >= target at (min / steps) |", "|---|---|---|---|---|---|"]
    for r in results:
        wins = [p["win_rate"] for p in r["curve"]]
        target = TARGETS.get(r["map"])
        reached = "-" if target is None else (
            f"{first_reaching(r['curve'], target, 'minutes'):.1f} / {first_reaching(r['curve'], target, 't_env'):.0f}")
        trained = r["curve"][-1]["t_env"] if r["curve"] else 0
        lines.append(f"| {r['map']} | {trained} | {r['wall_minutes']:.1f} | {max(wins):.2f} | {wins[-1]:.2f} "
                     f"| {reached} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    by_map = {r["map"]: r for r in results}
    minutes_3m = winrate_3m = winrate_2s3z = math.nan
    if "3m" in by_map:
        curve = by_map["3m"]["curve"]
        minutes_3m = first_reaching(curve, 0.95, "minutes")
        winrate_3m = max((p["win_rate"] for p in curve if p["minutes"] <= 10.0), default=math.nan)
    if "2s3z" in by_map:
        winrate_2s3z = max((p["win_rate"] for p in by_map["2s3z"]["curve"] if p["t_env"] <= 2_000_000),
                           default=math.nan)
    print(f"solve_3m_minutes={minutes_3m:.2f} solve_3m_winrate={winrate_3m:.3f} "
          f"solve_2s3z_winrate={winrate_2s3z:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
