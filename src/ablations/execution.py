"""Running a sweep's runs: run folders, claims, status files, and the local and Ray backends.

Each run owns ``<sweep folder>/runs/<run id>/``:

* ``claim.json``: created with ``O_CREAT | O_EXCL`` by the process that executes the run (host,
  pid), removed when it is done. A claim whose pid is dead on this host is stale and reclaimed;
  a claim from another host is respected (that host may still be running it).
* ``status.json``: ``{state: running|finished|failed|interrupted, error, command, host, pid,
  started, ended, duration_s, attempt}``, replaced atomically; a run trained in a group also has
  ``group`` (the run ids of the group's members, its process's ``command`` shared by all).
* ``run_spec.json``: the run's variant, map, seed and overrides.
* ``sacred/<id>/``: sacred's FileStorageObserver (``run.json``, ``metrics.json``, ...), and
  ``stdout.log`` / ``stderr.log`` of the training process (of a group's process: written in the
  first member's folder while it runs, copied into the others' when it ends).

Runs that differ only in their seed may train together, up to ``seeds_per_process`` of them in
one process (``run_group``): every member is claimed and recorded as a run of its own, and its
outcome is its own sacred run's status, so one member's failure fails only that member. A worker
(pool process or Ray task) runs one such process at a time, whether it trains one run or a group.

A run is finished when its status says so and sacred's ``run.json`` says COMPLETED. Re-running a
sweep skips finished runs, skips (and reports) failed ones unless asked to retry them, and reruns
runs that were interrupted (status ``interrupted``, or ``running`` with no live claim). An
interrupted run whose folder holds a checkpoint of the same run spec continues from its latest
readable checkpoint (``checkpoint_path=<its models folder>``; sacred records the continuation as
the folder's next run id, holding every point logged before the checkpoint); any other attempt,
and every retry of a failed run, starts from an emptied folder.

Ctrl-C (SIGINT) or SIGTERM stops a sweep: no further run is launched, the running ones are stopped
and marked ``interrupted`` (their training processes get SIGTERM, then SIGKILL after
``STOP_GRACE_S``), and ``run_sweep`` returns with ``stopped_by`` set.

The executors are injectable: ``execute_run(run_spec) -> None`` (raising on failure) for single
runs and ``execute_group(run_specs) -> None`` for groups (each member's sacred ``run.json`` then
says how it ended). The defaults (``execute_cli_run``, ``execute_cli_group``) run the real command
line in a fresh interpreter; tests pass fake ones.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

from qmixlab.ablations.sweep import (RunSpec, atomic_write_text, build_command, build_group_command,
                                     check_seeds_per_process, group_runs)
from qmixlab.processes import pid_alive, process_start_ticks

STATUS_FILE = "status.json"
CLAIM_FILE = "claim.json"
SPEC_FILE = "run_spec.json"
LOCK_FILE = ".claims.lock"
# Each run's torch/BLAS use one thread, so a pool of (cores // THREADS_PER_RUN) runs fills the machine.
THREADS_PER_RUN = 1
THREAD_ENV = {name: str(THREADS_PER_RUN) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
ERROR_TAIL_LINES = 20
# A claim file that is still empty after this long belongs to a writer that died mid-creation.
UNREADABLE_CLAIM_GRACE_S = 60.0
# Files and folders of one attempt (a retry starts from none of them).
ATTEMPT_OUTPUTS = ("sacred", "models", "tb_logs", "stdout.log", "stderr.log")
# A stopped run's training process gets this long to exit after SIGTERM before it is killed.
STOP_GRACE_S = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Executor = Callable[[RunSpec], None]
GroupExecutor = Callable[[List[RunSpec]], None]


class RunFailed(RuntimeError):
    """The training process failed; the message holds the end of its stderr."""


class AblationError(RuntimeError):
    """A sweep cannot proceed (bad arguments, missing optional dependency)."""


class SweepStopped(BaseException):
    """SIGINT or SIGTERM asked the sweep to stop. A BaseException, like KeyboardInterrupt, so that
    an executor's ``except Exception`` does not swallow it."""


class _StopRequest:
    """This process's record of a stop signal. The handler only notes the signal, except while an
    executor runs (``interruptible``): then it raises SweepStopped there, once, so that waiting on a
    training process ends at once while status files are never left half-updated."""

    def __init__(self):
        self.signal_name: Optional[str] = None
        self.interruptible = False
        self.shared_event = None  # set in pool workers: the main process's stop, seen before a run starts

    def reset(self):
        self.signal_name, self.interruptible = None, False

    @property
    def requested(self) -> bool:
        return self.signal_name is not None or (self.shared_event is not None and self.shared_event.is_set())

    def handle(self, signum, frame):
        self.signal_name = self.signal_name or signal.Signals(signum).name
        if self.interruptible:
            self.interruptible = False
            raise SweepStopped(self.signal_name)

    @contextlib.contextmanager
    def interruptible_section(self):
        self.interruptible = True
        try:
            if self.requested:  # asked before this section began
                self.interruptible = False
                raise SweepStopped(self.signal_name or "SIGTERM")
            yield
        finally:
            self.interruptible = False


_STOP = _StopRequest()


def _take_stop_signals_back() -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _STOP.handle)


@contextlib.contextmanager
def _stop_on_signals():
    """SIGINT and SIGTERM stop the sweep (the main thread only; elsewhere handlers cannot be set)."""
    _STOP.reset()
    if threading.current_thread() is not threading.main_thread():
        try:
            yield _STOP
        finally:
            _STOP.reset()
        return
    previous = {signum: signal.signal(signum, _STOP.handle) for signum in STOP_SIGNALS}
    try:
        yield _STOP
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _STOP.reset()


# --------------------------------------------------------------------------- small helpers
def host_name() -> str:
    return socket.gethostname()


def now_iso(timestamp: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() if timestamp is None else timestamp))


def read_json(path) -> Optional[dict]:
    """The JSON object in ``path``; None if it is missing or not (yet) valid JSON."""
    try:
        with open(path) as handle:
            value = json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path, value: dict) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, sort_keys=False) + "\n")


def default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // THREADS_PER_RUN)


def _bind_to_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies, so a killed sweep leaves no orphan
    training processes (their runs are then rerun as interrupted)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------- sacred's files
def sacred_run_dir(run_dir) -> Optional[Path]:
    """The latest sacred run folder (``sacred/<id>/``) of a run, if any."""
    root = Path(run_dir) / "sacred"
    if not root.is_dir():
        return None
    ids = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    return root / str(max(ids)) if ids else None


def sacred_status(run_dir) -> Optional[str]:
    folder = sacred_run_dir(run_dir)
    info = read_json(folder / "run.json") if folder else None
    return info.get("status") if info else None


# --------------------------------------------------------------------------- claims
@contextlib.contextmanager
def _host_lock(lock_path):
    """Serialises stale-claim removal among this host's processes (claims of other hosts are
    never removed, so a host-local lock is enough)."""
    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _create_claim(path: Path, claim: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump(claim, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def claim_is_live(claim_path) -> Optional[dict]:
    """The holder of a live claim on the run, or None when there is no claim or a stale one."""
    claim_path = Path(claim_path)
    if not claim_path.exists():
        return None
    holder = read_json(claim_path)
    if holder is None:
        try:
            age = time.time() - claim_path.stat().st_mtime
        except FileNotFoundError:
            return None
        return None if age > UNREADABLE_CLAIM_GRACE_S else {"host": "?", "pid": None, "note": "claim being written"}
    if holder.get("host") != host_name():
        return holder  # another machine: it may well be running this run
    return holder if pid_alive(int(holder["pid"]), holder.get("pid_start")) else None


def claim_run(run_dir, lock_path):
    """Claim ``run_dir`` for this process: ``(claim, None)`` on success, ``(None, holder)`` when
    a live process (here or on another host) holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    mine = {"host": host_name(), "pid": os.getpid(), "pid_start": process_start_ticks(os.getpid()),
            "claimed": now_iso(), "token": uuid.uuid4().hex}
    if _create_claim(path, mine):
        return mine, None
    with _host_lock(lock_path):
        holder = claim_is_live(path)
        if holder is not None:
            return None, holder
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # stale: its process died (or an unreadable leftover)
        if _create_claim(path, mine):
            return mine, None
        return None, read_json(path) or {"host": "?", "pid": None}


def release_claim(run_dir, claim: dict) -> None:
    path = Path(run_dir) / CLAIM_FILE
    holder = read_json(path)
    if holder is not None and holder.get("token") == claim["token"]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --------------------------------------------------------------------------- run states
FINISHED, FAILED, RUNNING, INTERRUPTED, PENDING = "finished", "failed", "running", "interrupted", "pending"
NOT_STARTED = "not_started"  # an outcome: the sweep was stopped before this run began


@dataclass
class RunState:
    state: str  # finished | failed | running | interrupted | pending
    detail: str = ""
    status: Optional[dict] = None


def run_state(run_dir, check_claim: bool = True) -> RunState:
    """What a run folder says about its run (``pending``: nothing yet, or no folder at all)."""
    run_dir = Path(run_dir)
    if check_claim:
        holder = claim_is_live(run_dir / CLAIM_FILE)
        if holder is not None:
            return RunState(RUNNING, f"claimed by host {holder.get('host')} pid {holder.get('pid')} since {holder.get('claimed', '?')}",
                            read_json(run_dir / STATUS_FILE))
    status = read_json(run_dir / STATUS_FILE)
    if status is None:
        return RunState(PENDING)
    state = status.get("state")
    if state == FINISHED:
        sacred = sacred_status(run_dir)
        if sacred == "COMPLETED":
            return RunState(FINISHED, status=status)
        return RunState(INTERRUPTED, f"status.json says finished but sacred's run.json says {sacred}", status)
    if state == FAILED:
        return RunState(FAILED, status.get("error") or "", status)
    if state == INTERRUPTED:
        return RunState(INTERRUPTED, f"stopped by {status.get('interrupted_by', 'a signal')} at {status.get('ended')}", status)
    return RunState(INTERRUPTED, f"was {state} on host {status.get('host')} pid {status.get('pid')}, which is gone", status)


def first_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


# --------------------------------------------------------------------------- one run
def resume_point(run: RunSpec, previous: RunState) -> Optional[str]:
    """The models folder a new attempt at ``run`` continues, or None when it starts afresh.

    Only an interrupted attempt is continued (a failed one would fail again the same way), and only
    when its folder's ``run_spec.json`` is this run's spec and one of its models folders holds a
    complete checkpoint recording this run's seed; of several such folders, the one with the latest
    step. Which checkpoint in the folder is readable is the training process's to find (it falls
    back to the latest readable one, with a warning)."""
    if previous.state != INTERRUPTED:
        return None
    run_dir = Path(run.run_dir)
    if read_json(run_dir / SPEC_FILE) != run.to_dict():
        return None
    models = run_dir / "models"
    if not models.is_dir():
        return None
    from qmixlab.checkpoints import list_checkpoints, read_checkpoint_config
    from qmixlab.errors import CheckpointError

    latest = None
    for folder in sorted(path for path in models.iterdir() if path.is_dir()):
        steps = list_checkpoints(folder)
        if not steps:
            continue
        try:
            recorded = read_checkpoint_config(folder) or {}
        except CheckpointError:
            continue  # nothing readable in it
        if recorded.get("seed") != run.seed:
            continue
        if latest is None or max(steps) > latest[0]:
            latest = (max(steps), folder)
    return str(latest[1]) if latest else None


def continued_and_fresh(runs: List[RunSpec], states: Dict[str, RunState]) -> List[List[RunSpec]]:
    """``runs`` with their resume points set, split into the ones that continue a checkpoint and
    the ones that start afresh (empty parts left out): one process continues all its members or
    none."""
    runs = [replace(run, resume_from=resume_point(run, states[run.run_id])) for run in runs]
    parts = [[run for run in runs if run.resume_from], [run for run in runs if not run.resume_from]]
    return [part for part in parts if part]


def _clear_attempt(run_dir: Path) -> None:
    for name in ATTEMPT_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _error_text(error: BaseException) -> str:
    if isinstance(error, RunFailed):
        return str(error)
    # The exception first (the run table shows the first line), then where it happened.
    message = "".join(traceback.format_exception_only(type(error), error)).strip()
    where = "".join(traceback.format_tb(error.__traceback__)).rstrip().splitlines()[-ERROR_TAIL_LINES:]
    return "\n".join([message, "Traceback (innermost calls):", *where])


def _skip_on_recheck(run: RunSpec, retry_failed: bool):
    """``(outcome, state)``: the outcome when a claimed run turns out not to need running (another
    host may have finished it meanwhile), else None with the run's state."""
    state = run_state(run.run_dir, check_claim=False)
    if state.state == FINISHED:
        return {"run_id": run.run_id, "result": "skipped_finished"}, state
    if state.state == FAILED and not retry_failed:
        return {"run_id": run.run_id, "result": "skipped_failed", "detail": first_line(state.detail)}, state
    return None, state


class _Attempt:
    """One attempt at a run: its folder cleared of the last attempt unless the run continues it
    (``run.resume_from``), its ``run_spec.json``, and its ``status.json`` written now (state
    running) and again by ``record``."""

    def __init__(self, run: RunSpec, previous: RunState, command: List[str], **fields):
        self.run, self.run_dir = run, Path(run.run_dir)
        attempt = int((previous.status or {}).get("attempt", 0)) + 1
        if not run.resume_from:
            _clear_attempt(self.run_dir)
        write_json(self.run_dir / SPEC_FILE, run.to_dict())
        self.started = time.time()
        self.status = {"run_id": run.run_id, "state": RUNNING, "error": None, "command": command, **fields,
                       "host": host_name(), "pid": os.getpid(), "started": now_iso(self.started), "ended": None,
                       "duration_s": None, "attempt": attempt, "resumed_from": run.resume_from}
        write_json(self.run_dir / STATUS_FILE, self.status)

    def record(self, state: str, **fields) -> dict:
        """Write the attempt's end into status.json; return the run's outcome."""
        ended = time.time()
        self.status.update(state=state, ended=now_iso(ended), duration_s=round(ended - self.started, 3), **fields)
        write_json(self.run_dir / STATUS_FILE, self.status)
        outcome = {"run_id": self.run.run_id, "result": state}
        if state == FAILED:
            outcome["detail"] = first_line(self.status["error"])
        elif state == INTERRUPTED:
            outcome["detail"] = f"stopped by {fields.get('interrupted_by')}"
        return outcome


def run_one(run: RunSpec, executor: Executor, retry_failed: bool, lock_path: str) -> dict:
    """Claim, execute and record one run; never raises for a failure of the run itself. A stop
    (SweepStopped, or KeyboardInterrupt as Ray's cancel raises it) marks the run interrupted."""
    run_dir = Path(run.run_dir)
    if _STOP.requested:
        return {"run_id": run.run_id, "result": NOT_STARTED}
    claim, holder = claim_run(run_dir, lock_path)
    if claim is None:
        return {"run_id": run.run_id, "result": "skipped_running",
                "detail": f"claimed by host {holder.get('host')} pid {holder.get('pid')}"}
    try:
        skipped, state = _skip_on_recheck(run, retry_failed)
        if skipped:
            return skipped
        run = replace(run, resume_from=resume_point(run, state))
        attempt = _Attempt(run, state, build_command(run))
        try:
            with _STOP.interruptible_section():
                executor(run)
            sacred = sacred_status(run_dir)
            if sacred != "COMPLETED":
                raise RunFailed(f"the run returned but sacred's run.json says {sacred!r}, not 'COMPLETED'")
        except (SweepStopped, KeyboardInterrupt) as stop:
            _STOP.signal_name = _STOP.signal_name or str(stop) or "SIGINT"
            return attempt.record(INTERRUPTED, interrupted_by=_STOP.signal_name)
        except Exception as error:  # a failed run is recorded; the sweep goes on
            if _STOP.requested:  # it died of the stop (e.g. its process got the terminal's Ctrl-C)
                return attempt.record(INTERRUPTED, interrupted_by=_STOP.signal_name or "SIGTERM")
            return attempt.record(FAILED, error=_error_text(error))
        return attempt.record(FINISHED)
    finally:
        release_claim(run_dir, claim)


def _member_error(run_dir: Path, group_error: Optional[BaseException]) -> str:
    """Why a member of a group did not complete: its own traceback when sacred recorded one
    (``fail_trace``), otherwise what the group's process said (exit code and the end of stderr)."""
    folder = sacred_run_dir(run_dir)
    info = (read_json(folder / "run.json") if folder else None) or {}
    said = f"sacred's run.json says {info.get('status')!r}, not 'COMPLETED'"
    trace = "".join(info.get("fail_trace") or []).rstrip()
    if trace:
        lines = trace.splitlines()[-ERROR_TAIL_LINES:]
        last = first_line("\n".join(reversed(lines)))
        return f"{last} [{said}]\n--- last lines of sacred's fail_trace in {folder / 'run.json'}:\n" + "\n".join(lines)
    if group_error is not None:
        return f"{_error_text(group_error)}\n({said})"
    tail = _tail(run_dir / "stderr.log")
    return f"the group's process returned but {said}" + (f"\n--- last lines of {run_dir / 'stderr.log'}:\n{tail}" if tail else "")


def run_group(runs: List[RunSpec], group_executor: GroupExecutor, retry_failed: bool, lock_path: str) -> List[dict]:
    """Claim, execute in one process and record a group of runs sharing a code path; return each
    run's outcome, in the order of ``runs``. Runs claimed by another live process, or finished
    meanwhile, are left out of the group. Each member's outcome is its own sacred run's status:
    COMPLETED is finished; otherwise it failed, or was interrupted when the sweep was stopped."""
    if _STOP.requested:
        return [{"run_id": run.run_id, "result": NOT_STARTED} for run in runs]
    outcomes, claims, members, states = {}, {}, [], {}
    try:
        for run in runs:
            claim, holder = claim_run(run.run_dir, lock_path)
            if claim is None:
                outcomes[run.run_id] = {"run_id": run.run_id, "result": "skipped_running",
                                        "detail": f"claimed by host {holder.get('host')} pid {holder.get('pid')}"}
                continue
            claims[run.run_id] = claim
            skipped, states[run.run_id] = _skip_on_recheck(run, retry_failed)
            if skipped:
                outcomes[run.run_id] = skipped
            else:
                members.append(run)
        for part in continued_and_fresh(members, states):
            outcomes.update(_execute_group(part, states, group_executor))
    finally:
        for run in runs:
            if run.run_id in claims:
                release_claim(run.run_dir, claims[run.run_id])
    return [outcomes[run.run_id] for run in runs]


def _execute_group(members: List[RunSpec], states: Dict[str, RunState], group_executor: GroupExecutor) -> Dict[str, dict]:
    command = build_group_command(members)
    member_ids = [run.run_id for run in members]
    attempts = [_Attempt(run, states[run.run_id], command, group=member_ids) for run in members]
    stopped_by, group_error = None, None
    try:
        with _STOP.interruptible_section():
            group_executor(members)
    except (SweepStopped, KeyboardInterrupt) as stop:
        stopped_by = _STOP.signal_name = _STOP.signal_name or str(stop) or "SIGINT"
    except Exception as error:  # the process failed: each member's own sacred run says which
        if _STOP.requested:  # it died of the stop (e.g. its process got the terminal's Ctrl-C)
            stopped_by = _STOP.signal_name = _STOP.signal_name or "SIGTERM"
        group_error = error
    outcomes = {}
    for attempt in attempts:
        if sacred_status(attempt.run_dir) == "COMPLETED":  # it completed before any failure or stop
            outcomes[attempt.run.run_id] = attempt.record(FINISHED)
        elif stopped_by:
            outcomes[attempt.run.run_id] = attempt.record(INTERRUPTED, interrupted_by=stopped_by)
        else:
            outcomes[attempt.run.run_id] = attempt.record(FAILED, error=_member_error(attempt.run_dir, group_error))
    return outcomes


def _tail(path: Path, lines: int = ERROR_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").rstrip().splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _run_process(command: List[str], log_dir: Path) -> None:
    """Run ``command`` with one thread, its output in ``log_dir``'s stdout.log and stderr.log;
    raise RunFailed with the end of stderr when it exits non-zero."""
    env = {**os.environ, **THREAD_ENV}
    # Binding the child to this process's life needs preexec_fn, unsafe when threads exist.
    preexec = _bind_to_parent if threading.active_count() == 1 else None
    # Appended to: a continued attempt keeps its predecessors' output (a fresh one starts without).
    with open(log_dir / "stdout.log", "a") as out, open(log_dir / "stderr.log", "a") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=log_dir, preexec_fn=preexec)
        try:
            process.wait()
        except BaseException:  # the sweep is stopped: so is its training process
            _stop_process(process)
            raise
    if process.returncode != 0:
        tail = _tail(log_dir / "stderr.log")
        last = first_line("\n".join(reversed(tail.splitlines()))) or "(no stderr)"
        raise RunFailed(f"{last} [exit code {process.returncode}]\n--- last lines of {log_dir / 'stderr.log'}:\n{tail}")


def execute_cli_run(run: RunSpec) -> None:
    """The default executor: the training command line in a fresh interpreter, one thread."""
    _run_process(build_command(run), Path(run.run_dir))


def execute_cli_group(runs: List[RunSpec]) -> None:
    """The default group executor: the group's training command line in a fresh interpreter, one
    thread. Its output goes to the first member's stdout.log and stderr.log while it runs, and is
    copied into every other member's folder when it ends (however it ends)."""
    first = Path(runs[0].run_dir)
    try:
        _run_process(build_group_command(runs), first)
    finally:
        for run in runs[1:]:
            for name in ("stdout.log", "stderr.log"):
                if (first / name).is_file():
                    shutil.copyfile(first / name, Path(run.run_dir) / name)


# --------------------------------------------------------------------------- the sweep
@dataclass
class SweepOutcome:
    outcomes: List[dict] = field(default_factory=list)
    planned: Dict[str, RunState] = field(default_factory=dict)
    stopped_by: Optional[str] = None  # "SIGINT" / "SIGTERM" when a signal stopped the sweep

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o["result"] == result)

    @property
    def failed(self) -> List[dict]:
        return [o for o in self.outcomes if o["result"] in (FAILED, "skipped_failed")]


def plan(runs: List[RunSpec]) -> Dict[str, RunState]:
    return {run.run_id: run_state(run.run_dir) for run in runs}


def _should_run(state: RunState, retry_failed: bool) -> bool:
    return state.state in (PENDING, INTERRUPTED) or (state.state == FAILED and retry_failed)


def runs_to_execute(runs: List[RunSpec], planned: Dict[str, RunState], retry_failed: bool) -> List[RunSpec]:
    """The runs that need running, in the sweep's order: pending and interrupted ones, and failed
    ones when retried."""
    return [run for run in runs if _should_run(planned[run.run_id], retry_failed)]


def execution_units(todo: List[RunSpec], seeds_per_process: int) -> List[List[RunSpec]]:
    """What each training process runs: one run each when ``seeds_per_process`` is 1, otherwise
    groups of runs sharing a code path (``group_runs``)."""
    return [[run] for run in todo] if check_seeds_per_process(seeds_per_process) == 1 else group_runs(todo, seeds_per_process)


def execute_unit(runs: List[RunSpec], executor, retry_failed: bool, lock_path: str, grouped: bool) -> List[dict]:
    """One training process's share of the sweep, in a worker: a group of runs (``executor`` is a
    group executor) or a single run (``executor`` runs one). Returns each run's outcome."""
    if grouped:
        return run_group(runs, executor, retry_failed, lock_path)
    (run,) = runs
    return [run_one(run, executor, retry_failed, lock_path)]


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    class _Bar(tqdm):
        monitor_interval = 0  # no monitor thread: children are started with preexec_fn

    return _Bar(total=total, unit="run", disable=not enabled, dynamic_ncols=True)


def _worker_init(stop_event, worker_pids):
    _bind_to_parent()
    os.environ.update(THREAD_ENV)
    _STOP.shared_event = stop_event
    for signum in STOP_SIGNALS:  # the terminal's Ctrl-C reaches workers too: they stop their run
        signal.signal(signum, _STOP.handle)
    worker_pids.put(os.getpid())


def _interrupted(unit: List[RunSpec], detail: str) -> List[dict]:
    return [{"run_id": run.run_id, "result": INTERRUPTED, "detail": detail} for run in unit]


def _run_in_process(units, work_args, on_outcomes):
    """One unit (a run or a group) at a time in this process: no pickling, the executor may be
    any callable."""
    for unit in units:
        if _STOP.requested:
            return
        on_outcomes(execute_unit(unit, *work_args))


def _run_pool(units, work_args, workers, on_outcomes):
    """``workers`` processes, each handed one unit (a run or a group) at a time, so that a stop
    leaves nothing queued inside the pool. On a stop the workers get SIGTERM: each stops its
    training process and marks its runs."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that imported torch
    stop_event, pid_queue, worker_pids = context.Event(), context.SimpleQueue(), set()
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                                  initargs=(stop_event, pid_queue))
    queue, in_flight, deadline = list(units), {}, None
    try:
        while in_flight or (queue and deadline is None):
            while queue and len(in_flight) < workers and not _STOP.requested:
                unit = queue.pop(0)
                in_flight[pool.submit(execute_unit, unit, *work_args)] = unit
            if _STOP.requested and deadline is None:
                stop_event.set()  # a worker still starting up will not begin its run
                while not pid_queue.empty():
                    worker_pids.add(pid_queue.get())
                for pid in worker_pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                deadline = time.time() + STOP_GRACE_S + 30.0
            done, _ = concurrent.futures.wait(in_flight, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                unit = in_flight.pop(future)
                try:
                    outcomes = future.result()
                except Exception as error:  # the worker itself died (e.g. killed): rerun next time
                    outcomes = _interrupted(unit, repr(error))
                on_outcomes(outcomes)
            if deadline is not None and time.time() > deadline:
                for pid in worker_pids:  # a worker that does not stop: its runs stay "running", rerun next time
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def import_ray():
    try:
        import ray
    except ImportError as error:
        raise AblationError(
            "the ray backend needs Ray, which is an optional extra: pip install 'ray>=2.9' "
            f"(or pip install 'qmixlab[ray]'); import failed with: {error}"
        ) from error
    return ray


def _run_ray(units, work_args, workers, address, on_outcomes):
    """One Ray task (one CPU) per unit: a run, or a group of runs in one training process."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        if address in (None, "", "local"):
            ray.init(num_cpus=workers or default_workers(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        _take_stop_signals_back()  # ray.init installs its own handlers
    try:
        remote_unit = ray.remote(num_cpus=THREADS_PER_RUN, max_retries=0)(execute_unit)
        queue = list(units)
        limit = workers or len(queue)
        in_flight, deadline = {}, None
        while in_flight or (queue and deadline is None):
            while queue and len(in_flight) < limit and not _STOP.requested:
                unit = queue.pop(0)
                in_flight[remote_unit.remote(unit, *work_args)] = unit
            if _STOP.requested and deadline is None:
                for ref in in_flight:  # KeyboardInterrupt inside the task: its runs are marked interrupted
                    ray.cancel(ref)
                deadline = time.time() + STOP_GRACE_S
            elif deadline is not None and time.time() > deadline:
                for ref, unit in in_flight.items():  # not stopped in time: statuses stay "running"; rerun next time
                    ray.cancel(ref, force=True)
                    on_outcomes(_interrupted(unit, "force-cancelled after the stop"))
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)  # a timeout: signals are seen
            for ref in ready:
                unit = in_flight.pop(ref)
                try:
                    outcomes = ray.get(ref)
                except Exception as error:  # cancelled, or the task's worker died: rerun next time
                    outcomes = _interrupted(unit, first_line(str(error)))
                on_outcomes(outcomes)
    finally:
        if started_here:
            ray.shutdown()


def run_sweep(
    runs: List[RunSpec],
    sweep_dir,
    executor: Executor = execute_cli_run,
    workers: Optional[int] = None,
    backend: str = "local",
    address: Optional[str] = None,
    retry_failed: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    seeds_per_process: int = 1,
    group_executor: GroupExecutor = execute_cli_group,
) -> SweepOutcome:
    """Execute the runs that still need it; return what happened to every run.

    With ``seeds_per_process`` 1 each run is one process (``executor``); above 1, runs sharing a
    code path train in groups of up to that many, one process per group (``group_executor``).
    ``workers`` counts processes. SIGINT or SIGTERM stops the sweep: nothing is launched after
    it, the running processes are stopped, their runs marked interrupted, and the result's
    ``stopped_by`` names the signal."""
    if backend not in ("local", "ray"):
        raise AblationError(f"backend {backend!r} is not one of ['local', 'ray']")
    if workers is not None and workers < 1:
        raise AblationError(f"workers={workers!r} must be >= 1")
    check_seeds_per_process(seeds_per_process)
    if backend == "ray":
        import_ray()  # fail before anything else with the install hint
    lock_path = str(Path(sweep_dir).resolve() / LOCK_FILE)
    result = SweepOutcome(planned=plan(runs))
    todo = runs_to_execute(runs, result.planned, retry_failed)
    for run in runs:
        state = result.planned[run.run_id]
        if _should_run(state, retry_failed):
            continue
        if state.state == FINISHED:
            result.outcomes.append({"run_id": run.run_id, "result": "skipped_finished"})
        elif state.state == FAILED:
            result.outcomes.append({"run_id": run.run_id, "result": "skipped_failed", "detail": first_line(state.detail)})
        else:
            result.outcomes.append({"run_id": run.run_id, "result": "skipped_running", "detail": state.detail})
    grouped = seeds_per_process > 1
    units = execution_units(todo, seeds_per_process)
    in_processes = f" in {len(units)} process{'es' if len(units) != 1 else ''}" if grouped else ""
    continuing = sum(1 for run in todo if resume_point(run, result.planned[run.run_id]))
    if continuing:
        in_processes += f" ({continuing} continuing from {'its' if continuing == 1 else 'their'} last checkpoint)"
    log(f"{len(runs)} runs: {len(todo)} to run{in_processes}, {result.count('skipped_finished')} already finished, "
        f"{result.count('skipped_failed')} failed before (skipped{'' if retry_failed else '; --retry-failed reruns them'}), "
        f"{result.count('skipped_running')} running elsewhere")
    work_args = (group_executor if grouped else executor, retry_failed, lock_path, grouped)
    local_workers = workers or default_workers()
    with _stop_on_signals() as stop, _progress(len(todo), progress) as bar:
        def on_outcomes(outcomes):
            for outcome in outcomes:
                result.outcomes.append(outcome)
                bar.update(1)
                if outcome["result"] == FAILED:
                    bar.write(f"run {outcome['run_id']} failed: {outcome.get('detail', '')}")

        if units and backend == "local" and local_workers == 1:
            _run_in_process(units, work_args, on_outcomes)
        elif units and backend == "local":
            _run_pool(units, work_args, local_workers, on_outcomes)
        elif units:
            _run_ray(units, work_args, workers, address, on_outcomes)
        result.stopped_by = stop.signal_name
    reported = {o["run_id"] for o in result.outcomes}
    result.outcomes += [{"run_id": run.run_id, "result": NOT_STARTED} for run in todo if run.run_id not in reported]
    return result
