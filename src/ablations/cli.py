"""``qmixlab ablate ...`` and ``qmixlab report ...`` (dispatched here by ``qmixlab.experiment``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import List, Optional

from qmixlab.settings import ConfigError


def _shell_word(token: str) -> str:
    """A copy-pasteable shell word, readable for sacred's quoted literals (``"alg='qmix'"``)."""
    if shlex.quote(token) == token:
        return token
    if not any(c in token for c in '"$`\\!'):
        return f'"{token}"'
    return shlex.quote(token)


def _ablate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmixlab ablate",
        description="Run a sweep of mask ablations: variants x maps x seeds, one training run each.")
    parser.add_argument("sweep", help="sweep file (YAML: name, alg, env, base, variants, maps, seeds, per_map)")
    parser.add_argument("--out", help="sweep folder (default: results/ablations/<name>)")
    parser.add_argument("--workers", type=int, help="runs at once (default: cores // threads per run)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    parser.add_argument("--retry-failed", action="store_true", help="rerun failed runs (otherwise reported and skipped)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their commands, run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _report_parser() -> argparse.ArgumentParser:
    from qmixlab.ablations import stats
    from qmixlab.ablations.report import REPORT_METRICS

    parser = argparse.ArgumentParser(prog="qmixlab report", description="Statistics and figures of a sweep folder.")
    parser.add_argument("sweep_dir", help="the sweep folder (holds sweep.yaml and runs/)")
    parser.add_argument("--metric", default=REPORT_METRICS[0], help="headline metric (default: %(default)s)")
    parser.add_argument("--out", help="report path (default: <sweep folder>/report.md)")
    parser.add_argument("--last-k", type=int, default=stats.DEFAULT_LAST_K,
                        help="final score = mean of the last K evaluations (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=stats.DEFAULT_REPS, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    return parser


def ablate(argv: List[str], executor=None) -> int:
    from qmixlab.ablations import execution, sweep

    args = _ablate_parser().parse_args(argv)
    spec = sweep.load_sweep(args.sweep)
    sweep_dir = Path(args.out) if args.out else sweep.default_sweep_dir(spec)
    spec = sweep.merge_with_existing(spec, sweep_dir)
    runs = sweep.expand(spec, sweep_dir)
    if args.dry_run:
        for run in runs:
            state = execution.run_state(run.run_dir)
            print(f"{run.run_id}  [{state.state}{': ' + execution.first_line(state.detail) if state.detail else ''}]")
            print("    " + " ".join(_shell_word(token) for token in sweep.build_command(run)))
        print(f"{len(runs)} runs in {sweep_dir} (dry run: nothing started)")
        return 0
    sweep.write_sweep_file(spec, sweep_dir)
    result = execution.run_sweep(
        runs, sweep_dir, executor=executor or execution.execute_cli_run, workers=args.workers,
        backend=args.backend, address=args.address, retry_failed=args.retry_failed, progress=not args.no_progress)
    finished = sum(1 for o in result.outcomes if o["result"] in ("finished", "skipped_finished"))
    print(f"{finished}/{len(runs)} runs finished in {sweep_dir}")
    for outcome in result.failed:
        print(f"  failed: {outcome['run_id']}: {outcome.get('detail', '')}  (see {Path(sweep_dir) / 'runs' / outcome['run_id'] / 'status.json'})")
    for outcome in result.outcomes:
        if outcome["result"] in ("skipped_running", "interrupted"):
            print(f"  not finished: {outcome['run_id']}: {outcome.get('detail', '')}")
    if any(o["result"] == "skipped_running" for o in result.outcomes):
        print("  (a run claimed by a host that is gone stays claimed: delete its runs/<id>/claim.json to rerun it)")
    print(f"report: qmixlab report {sweep_dir}")
    return 1 if finished < len(runs) else 0


def report(argv: List[str]) -> int:
    from qmixlab.ablations.report import build_report

    args = _report_parser().parse_args(argv)
    path = build_report(args.sweep_dir, metric=args.metric, out=args.out, last_k=args.last_k, reps=args.reps, seed=args.seed)
    print(f"wrote {path}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``argv[0]`` is ``ablate`` or ``report``. Exits non-zero when a run is not finished."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"ablate": ablate, "report": report}
    if not argv or argv[0] not in commands:
        print("usage: qmixlab ablate <sweep.yaml> [...] | qmixlab report <sweep folder> [...]", file=sys.stderr)
        raise SystemExit(2)
    from qmixlab.ablations.execution import AblationError

    try:
        code = commands[argv[0]](argv[1:])
    except (ConfigError, AblationError, ImportError) as error:
        print(f"qmixlab {argv[0]}: {error}", file=sys.stderr)
        raise SystemExit(2)
    if code:
        raise SystemExit(code)
    return code
