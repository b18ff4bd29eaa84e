"""``qmixlab ablate ...`` and ``qmixlab report ...`` (dispatched here by ``qmixlab.experiment``)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
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
    from qmixlab.ablations.sweep import DEFAULT_SEEDS_PER_PROCESS

    parser = argparse.ArgumentParser(
        prog="qmixlab ablate",
        description="Run a sweep of mask ablations: variants x maps x seeds, one training run each; runs that "
                    "differ only in their seed train together, several in one process.")
    parser.add_argument("sweep", help="sweep file (YAML: name, alg, env, base, variants, maps, seeds, per_map, seeds_per_process)")
    parser.add_argument("--out", help="sweep folder (default: results/ablations/<name>)")
    parser.add_argument("--append", action="store_true",
                        help="add runs to a sweep folder that holds kept results (tracked by git, or with a README.md)")
    parser.add_argument("--workers", type=int,
                        help="training processes at once, each one run or a group of seeds (default: one per core)")
    parser.add_argument("--seeds-per-process", type=int, metavar="N",
                        help="runs of one variant and map (different seeds) trained in one process; 1 = a process "
                             "per run (default: the sweep file's seeds_per_process, else "
                             f"{DEFAULT_SEEDS_PER_PROCESS})")
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
    parser.add_argument("sweep_dir", help="the sweep folder (holds sweep.yaml and runs/), or a folder of sweep folders")
    parser.add_argument("--metric", default=None,
                        help=f"headline metric (default: {REPORT_METRICS[0]} for smacsim and sc2, {REPORT_METRICS[1]} for every other environment)")
    parser.add_argument("--out", help="report path (default: <sweep folder>/report.md; one sweep folder only)")
    parser.add_argument("--last-k", type=int, default=stats.DEFAULT_LAST_K,
                        help="final score = mean of the last K evaluations (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=stats.DEFAULT_REPS, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    return parser


def _check_destination(sweep_dir: Path, append: bool) -> str:
    """Refuse a folder of sweeps; return why ``sweep_dir`` holds kept results ('' when it does not)."""
    from qmixlab.ablations import sweep
    from qmixlab.ablations.execution import AblationError

    inner = sweep.sweep_folders(sweep_dir)
    if inner and not (sweep_dir / sweep.SWEEP_FILE).is_file():
        raise AblationError(
            f"{sweep_dir} is a folder of sweeps ({', '.join(p.name for p in inner)}), not a sweep folder: "
            "pass --out DIR to run this sweep in a folder of its own")
    reason = sweep.kept_results_reason(sweep_dir)
    return "" if append or reason is None else f"{sweep_dir} {reason}"


def _refuse_invalid_runs(sweep_file, runs, seeds_per_process: int) -> None:
    from qmixlab.ablations import sweep

    failures = sweep.invalid_runs(runs)
    if failures:
        for run, message in failures:
            print(f"qmixlab ablate: run {run.run_id}: {message}", file=sys.stderr)
        raise ConfigError(f"{sweep_file}: {len(failures)} of {len(runs)} runs have an invalid configuration "
                          "(listed above); nothing was started")
    group_failures = sweep.invalid_groups(runs, seeds_per_process)
    if group_failures:
        for group, message in group_failures:
            print(f"qmixlab ablate: {group[0].variant} on {group[0].map_name}, seeds {[run.seed for run in group]} "
                  f"in one process: {message}", file=sys.stderr)
        raise ConfigError(f"{sweep_file}: {len(group_failures)} code path(s) cannot train several seeds in one process "
                          f"(listed above; seeds_per_process={seeds_per_process}); nothing was started. Each run "
                          "alone is valid: --seeds-per-process 1 runs one process per run")


def _print_dry_run(runs, sweep_dir, seeds_per_process: int, retry_failed: bool) -> None:
    """Every run with its state; the command of each run (one process per run) or of each group
    that would run, and which runs would not."""
    from qmixlab.ablations import execution, sweep

    planned = execution.plan(runs)

    def line(run) -> str:
        state = planned[run.run_id]
        return f"{run.run_id}  [{state.state}{': ' + execution.first_line(state.detail) if state.detail else ''}]"

    def command(tokens) -> str:
        return "    " + " ".join(_shell_word(token) for token in tokens)

    def continued(run) -> str:
        return f"  (continues {run.resume_from})" if run.resume_from else ""

    if seeds_per_process == 1:
        for run in runs:
            run = execution.continued_and_fresh([run], planned)[0][0]
            print(line(run) + continued(run))
            print(command(sweep.build_command(run)))
        print(f"{len(runs)} runs in {sweep_dir}, every configuration valid (dry run: nothing started)")
        return
    todo = execution.runs_to_execute(runs, planned, retry_failed)
    groups = [part for group in execution.execution_units(todo, seeds_per_process)
              for part in execution.continued_and_fresh(group, planned)]
    for number, group in enumerate(groups, 1):
        print(f"process {number}/{len(groups)}: {group[0].variant} on {group[0].map_name}, "
              f"seeds {[run.seed for run in group]}")
        for run in group:
            print("  " + line(run) + continued(run))
        print(command(sweep.build_group_command(group)))
    chosen = {run.run_id for run in todo}
    rest = [run for run in runs if run.run_id not in chosen]
    if rest:
        print("not run:")
        for run in rest:
            print("  " + line(run))
    print(f"{len(runs)} runs in {sweep_dir}: {len(todo)} to run in {len(groups)} process{'es' if len(groups) != 1 else ''} "
          f"of up to {seeds_per_process} seeds, every configuration valid (dry run: nothing started)")


def ablate(argv: List[str], executor=None, group_executor=None) -> int:
    """``executor`` runs one run (seeds_per_process 1), ``group_executor`` a group of runs in one
    process; both default to the real command line."""
    from qmixlab.ablations import execution, sweep

    args = _ablate_parser().parse_args(argv)
    spec = sweep.load_sweep(args.sweep, validate=False)
    if args.seeds_per_process is not None:
        spec = dataclasses.replace(
            spec, seeds_per_process=sweep.check_seeds_per_process(args.seeds_per_process, "--seeds-per-process"))
    sweep.check_task_axis(spec)
    sweep.check_reserved_keys(spec)
    sweep_dir = Path(args.out) if args.out else sweep.default_sweep_dir(spec)
    kept = _check_destination(sweep_dir, args.append)
    if kept and not args.dry_run:
        raise execution.AblationError(
            f"{kept}: a sweep does not mix new runs into kept results unless told to. Pass --out DIR to "
            "run it in another folder, or --append to add its runs to this one on purpose")
    spec = sweep.merge_with_existing(spec, sweep_dir)
    runs = sweep.expand(spec, sweep_dir)
    _refuse_invalid_runs(args.sweep, runs, spec.seeds_per_process)
    if args.dry_run:
        _print_dry_run(runs, sweep_dir, spec.seeds_per_process, args.retry_failed)
        if kept:
            print(f"note: {kept}; without --dry-run this sweep is refused there unless you pass --out DIR or --append")
        return 0
    sweep.write_sweep_file(spec, sweep_dir)
    result = execution.run_sweep(
        runs, sweep_dir, executor=executor or execution.execute_cli_run, workers=args.workers,
        backend=args.backend, address=args.address, retry_failed=args.retry_failed, progress=not args.no_progress,
        seeds_per_process=spec.seeds_per_process, group_executor=group_executor or execution.execute_cli_group)
    finished = sum(1 for o in result.outcomes if o["result"] in ("finished", "skipped_finished"))
    if result.stopped_by:
        stopped = result.count(execution.INTERRUPTED)
        print(f"qmixlab ablate: stopped by {result.stopped_by}: {stopped} running run(s) marked interrupted, "
              f"{result.count(execution.NOT_STARTED)} not started, {finished}/{len(runs)} finished; "
              f"to resume, run the same command again: {' '.join(_shell_word(a) for a in ['qmixlab', 'ablate', *argv])}",
              file=sys.stderr)
        return 128 + signal.Signals[result.stopped_by].value
    print(f"{finished}/{len(runs)} runs finished in {sweep_dir}")
    for outcome in result.failed:
        print(f"  failed: {outcome['run_id']}: {outcome.get('detail', '')}  (see {Path(sweep_dir) / 'runs' / outcome['run_id'] / 'status.json'})")
    for outcome in result.outcomes:
        if outcome["result"] in ("skipped_running", execution.INTERRUPTED):
            print(f"  not finished: {outcome['run_id']}: {outcome.get('detail', '')}")
    if any(o["result"] == "skipped_running" for o in result.outcomes):
        print("  (a run claimed by a host that is gone stays claimed: delete its runs/<id>/claim.json to rerun it)")
    print(f"report: qmixlab report {sweep_dir}")
    return 1 if finished < len(runs) else 0


def report(argv: List[str]) -> int:
    from qmixlab.ablations import sweep
    from qmixlab.ablations.execution import AblationError
    from qmixlab.ablations.report import build_report

    args = _report_parser().parse_args(argv)
    folder = Path(args.sweep_dir)
    inner = [] if (folder / sweep.SWEEP_FILE).is_file() else sweep.sweep_folders(folder)
    if not inner:  # one sweep folder (or the error saying it is none)
        path = build_report(folder, metric=args.metric, out=args.out, last_k=args.last_k, reps=args.reps, seed=args.seed)
        print(f"wrote {path}")
        return 0
    if args.out:
        raise AblationError(f"{folder} holds {len(inner)} sweeps ({', '.join(p.name for p in inner)}); --out names "
                            "one report file: leave it out (each report goes into its sweep folder) or report one sweep")
    for sweep_dir in inner:
        path = build_report(sweep_dir, metric=args.metric, last_k=args.last_k, reps=args.reps, seed=args.seed)
        print(f"{sweep_dir.name}: wrote {path}")
    print(f"{len(inner)} sweep reports written under {folder}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``argv[0]`` is ``ablate`` or ``report``. Exits non-zero when a run is not finished: 2 for a
    bad sweep or argument, 1 for a run not finished, 128 + the signal's number when stopped by one."""
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
    except KeyboardInterrupt:  # before any run started (while loading, validating or reporting)
        print(f"qmixlab {argv[0]}: interrupted; nothing was started" if argv[0] == "ablate" else
              f"qmixlab {argv[0]}: interrupted", file=sys.stderr)
        raise SystemExit(130)
    if code:
        raise SystemExit(code)
    return code
