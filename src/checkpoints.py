"""Atomic checkpoints under ``<models>/<run>/<t_env>/checkpoint.pt``.

A checkpoint is written into a hidden temporary folder (``.<t_env>.tmp-<pid>``), flushed to disk,
and only then renamed to its final name, so a run killed during a save leaves every earlier
checkpoint intact and never a half-written one under a real step number. A save that fails (a full
disk) removes its temporary folder and says why; one killed outright leaves it behind, and
``cleanup_interrupted_saves`` removes it when the next run starts.

Loading uses ``torch.load(weights_only=True)``: checkpoints hold tensors and plain Python values
only, never pickled objects, and a file that needs unpickling is refused (never unpickled "to try").
When the latest checkpoint cannot be read, ``load_latest_readable`` takes the previous one and says
so.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from qmixlab.errors import CheckpointError  # noqa: F401  (imported from here too)
from qmixlab.processes import pid_alive, process_started_at

CHECKPOINT_FILE = "checkpoint.pt"
# The replay buffer, beside CHECKPOINT_FILE in the step folder, so that it can be pruned from older
# checkpoints (``prune_buffers``) while their networks, optimiser and counters stay.
BUFFER_FILE = "replay_buffer.pt"
# 2: the replay buffer stores per-agent ``alive`` and every declared step flag, and the payload
# records the run's settings; a format-1 checkpoint cannot fill those.
# 3: the replay buffer is in BUFFER_FILE (the payload says so in ``buffer_file``), not inline.
FORMAT_VERSION = 3
READABLE_FORMATS = (2, 3)
SETTINGS_KEY = "settings"  # the run's validated settings, as a plain dict
_TEMPORARY = re.compile(r"^\.(\d+)\.(tmp|stale)-(\d+)$")
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))

log = logging.getLogger("qmixlab")


class UnreadableCheckpointError(CheckpointError):
    """The file is truncated, corrupt, not a checkpoint, or holds objects that need unpickling."""


# --------------------------------------------------------------------------- saving
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _os_error_in_chain(error: BaseException) -> Optional[OSError]:
    """The OSError behind ``error``: torch reports a failed write as ``RuntimeError: [enforce fail
    at inline_container.cc...] unexpected pos`` with the OSError only as its context."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno is not None:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _free_bytes(path: Path) -> Optional[int]:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _save_failure(error: BaseException, target: Path, run_dir: Path) -> CheckpointError:
    """One clear sentence for a failed save: 'disk full' with the path, or the OS's reason."""
    os_error = _os_error_in_chain(error)
    if os_error is None and isinstance(error, RuntimeError) and "inline_container" in str(error):
        # The write failed inside torch and the OS's reason was lost: an empty disk is the usual one.
        free = _free_bytes(run_dir)
        if free is not None and free < 1 << 20:
            os_error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if os_error is not None and os_error.errno in _DISK_FULL:
        reason = f"disk full ({os_error.strerror})"
    elif os_error is not None:
        reason = os_error.strerror or str(os_error)
    else:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    try:
        earlier = len(list_checkpoints(run_dir))
    except CheckpointError:
        earlier = 0
    kept = f"; the {earlier} earlier checkpoint(s) in {str(run_dir)!r} are intact" if earlier else ""
    return CheckpointError(f"cannot save checkpoint {str(target)!r}: {reason}; the partial save was removed{kept}")


def _write(obj, path: Path) -> None:
    with open(path, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def save_checkpoint(run_dir, t_env: int, payload: dict, buffer: Optional[dict] = None) -> Path:
    """Write ``payload`` as the checkpoint of step ``t_env``, and ``buffer`` (a replay buffer's
    state) beside it in BUFFER_FILE; returns its folder. Both appear together or not at all.

    A failed write (full disk, read-only file system) raises CheckpointError saying so, after
    removing the partial temporary folder."""
    run_dir = Path(run_dir)
    final = run_dir / str(int(t_env))
    tmp = run_dir / f".{int(t_env)}.tmp-{os.getpid()}"
    payload = dict(payload, format_version=FORMAT_VERSION, t_env=int(t_env),
                   buffer_file=BUFFER_FILE if buffer is not None else None)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write(payload, tmp / CHECKPOINT_FILE)
        if buffer is not None:
            _write(buffer, tmp / BUFFER_FILE)
        _fsync_dir(tmp)
    except BaseException as error:  # also Ctrl-C: never leave the half-written folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, (OSError, RuntimeError)):
            raise _save_failure(error, final / CHECKPOINT_FILE, run_dir) from None
        raise
    try:
        if final.exists():  # the same step saved again (e.g. Ctrl-C right after a periodic save)
            stale = run_dir / f".{int(t_env)}.stale-{os.getpid()}"
            os.rename(final, stale)
            os.rename(tmp, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(run_dir)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _save_failure(error, final / CHECKPOINT_FILE, run_dir) from None
    return final


def prune_buffers(run_dir, keep: int) -> List[Path]:
    """Remove the replay buffer file of every checkpoint in ``run_dir`` but the latest ``keep``
    (0: keep all); returns the files removed. The checkpoints themselves stay."""
    if keep <= 0:
        return []
    found = list_checkpoints(run_dir)
    removed = []
    for step in sorted(found)[:-keep]:
        path = found[step].parent / BUFFER_FILE
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


# --------------------------------------------------------------------------- leftovers of killed saves
def _may_still_be_writing(pid: int, folder: Path) -> bool:
    """Whether process ``pid`` may still be writing ``folder``: it is alive, is not this process
    (which saves nothing before it cleans up), and did not start after the folder was last
    touched (then the pid was reused by a process that never wrote it)."""
    if pid == os.getpid() or not pid_alive(pid):
        return False
    started = process_started_at(pid)
    try:
        touched = max([folder.stat().st_mtime] + [entry.stat().st_mtime for entry in folder.iterdir()])
    except OSError:
        return True
    return started is None or started <= touched + 1.0


def cleanup_interrupted_saves(run_dir) -> List[Path]:
    """Remove what killed saves left in ``run_dir``; returns the folders removed.

    ``.<step>.tmp-<pid>`` folders of processes that are gone are removed. A ``.<step>.stale-<pid>``
    folder is the complete previous checkpoint of a step whose replacement was killed between two
    renames: when ``<step>/`` is missing it is put back, otherwise removed. Folders of a live
    process (another run saving into the same folder) are left alone."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    removed = []
    leftovers = [(entry, _TEMPORARY.match(entry.name)) for entry in run_dir.iterdir() if entry.is_dir()]
    leftovers = [(entry, match) for entry, match in leftovers if match]
    # Stale folders first: a restored step is then complete when its temporary folder is looked at.
    for entry, match in sorted(leftovers, key=lambda item: item[1].group(2) != "stale"):
        step, kind, pid = match.group(1), match.group(2), int(match.group(3))
        if _may_still_be_writing(pid, entry):
            log.info("leaving %s alone: process %d, which is still running, may be writing it", entry, pid)
            continue
        final = run_dir / step
        if kind == "stale" and not final.exists():
            os.rename(entry, final)
            log.warning("restored checkpoint %s from %s, left by a save that was killed", final, entry.name)
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    if removed:
        log.warning("removed %d temporary folder(s) left by killed checkpoint saves in %s: %s", len(removed),
                    run_dir, ", ".join(p.name for p in removed))
    return removed


# --------------------------------------------------------------------------- finding
def list_checkpoints(run_dir) -> Dict[int, Path]:
    """``{t_env: file}`` of the complete checkpoints in ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"checkpoint_path {str(run_dir)!r} is not a folder")
    found = {}
    for entry in run_dir.iterdir():
        if entry.name.isdigit() and (entry / CHECKPOINT_FILE).is_file():
            found[int(entry.name)] = entry / CHECKPOINT_FILE
    return found


def _closest(steps, load_step: int) -> int:
    return min(steps, key=lambda step: (abs(step - load_step), -step))


def find_checkpoint(run_dir, load_step: int = 0) -> Path:
    """The latest checkpoint (``load_step=0``) or the one closest to ``load_step``."""
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint (<step>/{CHECKPOINT_FILE}) in {str(run_dir)!r}")
    if load_step == 0:
        return found[max(found)]
    return found[_closest(found, load_step)]


# --------------------------------------------------------------------------- loading
def _why_unreadable(error: BaseException) -> str:
    """Our own account of torch's load error. Torch's text advises retrying with unpickling
    allowed, which must never be suggested for a file that may not be ours."""
    text = str(error)
    if isinstance(error, EOFError) or not text.strip():
        return "the file is empty or cut short"
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        return (f"it holds a Python object ({blocked.group(1)}) that would have to be unpickled; qmixlab "
                "checkpoints hold only tensors and plain values, so it was not written by qmixlab or was altered")
    if "weights_only" in text or "Unpickl" in type(error).__name__:
        return "it is not a qmixlab checkpoint (not an archive of tensors and plain values: corrupt or another format)"
    if "PytorchStreamReader" in text or "zip archive" in text:
        return f"the file is truncated or corrupt ({text.split('.')[0].strip()})"
    return f"{type(error).__name__}: {text.splitlines()[0]}"


def _torch_load(path: Path, mmap: bool = False):
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # corrupt, truncated, or holding objects that need unpickling
        raise UnreadableCheckpointError(
            f"checkpoint {str(path)!r} cannot be read safely: {_why_unreadable(error)}"
        ) from None


def _checked_format(path: Path, payload) -> dict:
    if not isinstance(payload, dict) or payload.get("format_version") not in READABLE_FORMATS:
        version = payload.get("format_version") if isinstance(payload, dict) else type(payload).__name__
        expected = " or ".join(map(str, READABLE_FORMATS))
        raise UnreadableCheckpointError(
            f"checkpoint {str(path)!r} has format {version!r}, expected {expected}"
            + (" (it was written by an older qmixlab; start a new run)" if isinstance(version, int)
               and version < min(READABLE_FORMATS) else "")
            + (" (it was written by a newer qmixlab; upgrade qmixlab to read it)" if isinstance(version, int)
               and version > FORMAT_VERSION else "")
        )
    return payload


def _with_buffer(path: Path, payload: dict) -> dict:
    """``payload`` with its replay buffer read from BUFFER_FILE (format 3). A buffer pruned from an
    older checkpoint leaves ``buffer`` None and ``buffer_pruned`` True; an unreadable one makes the
    checkpoint unreadable."""
    name = payload.get("buffer_file")
    if not name:
        return payload
    file = path.parent / name
    if not file.is_file():
        return dict(payload, buffer=None, buffer_pruned=True)
    buffer = _torch_load(file)
    if not isinstance(buffer, dict):
        raise UnreadableCheckpointError(f"replay buffer {str(file)!r} holds {type(buffer).__name__}, expected a mapping")
    return dict(payload, buffer=buffer)


def _checkpoint_file(path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    return path


def check_compatibility(path, stored: dict, expected: Optional[dict]) -> None:
    """Raise CheckpointError naming every key whose checkpoint value differs from this run's."""
    missing = [key for key in (expected or {}) if key not in stored]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} does not record {', '.join(map(repr, missing))}")
    differences = [f"{key} is {stored[key]!r} in the checkpoint but {value!r} here"
                   for key, value in (expected or {}).items() if stored[key] != value]
    if differences:
        raise CheckpointError(f"checkpoint {str(path)!r} does not match this run: {'; '.join(differences)}")


def load_checkpoint(path, expected: Optional[dict] = None, with_buffer: bool = True) -> dict:
    """Load a checkpoint file (or step folder) safely and check that it belongs to a compatible run.

    ``expected`` maps names (``n_agents``, ``obs_shape``, ``mixer``...) to the values this run
    has; any difference raises CheckpointError naming the file, each key and both values. A file
    that cannot be read raises UnreadableCheckpointError (a CheckpointError). ``with_buffer=False``
    leaves the replay buffer file unread (evaluation needs only the networks)."""
    path = _checkpoint_file(path)
    payload = _checked_format(path, _torch_load(path))
    check_compatibility(path, payload.get("compatibility", {}), expected)
    return _with_buffer(path, payload) if with_buffer else payload


def _looks_complete(path: Path) -> bool:
    """A cheap check (no unpickling, no tensor data read) that a file is a whole torch archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_latest_readable(run_dir, load_step: int = 0, expected: Optional[dict] = None) -> Tuple[Path, dict]:
    """``(file, payload)`` of the checkpoint to resume from in ``run_dir``.

    ``load_step=0``: the latest checkpoint; when it cannot be read, the latest earlier one that can,
    with a warning naming the bad file and the one used. An explicit ``load_step`` loads the
    checkpoint closest to it and fails if that one cannot be read, listing the steps whose files
    are complete. A compatibility mismatch is never skipped over: every checkpoint of a run shares
    its settings."""
    return _first_readable(run_dir, load_step, lambda path: load_checkpoint(path, expected))


def find_readable_checkpoint(run_dir, load_step: int = 0) -> Path:
    """As ``load_latest_readable``, but only the file is returned and tensor data is memory-mapped,
    not read (cheap)."""
    return _first_readable(run_dir, load_step, _load_lazily)[0]


def _first_readable(run_dir, load_step: int, load) -> Tuple[Path, dict]:
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint (<step>/{CHECKPOINT_FILE}) in {str(run_dir)!r}")
    if load_step:
        path = found[_closest(found, load_step)]
        try:
            return path, load(path)
        except UnreadableCheckpointError as error:
            raise _unreadable_step(error, path, found, load_step) from None
    unreadable = []
    for step in sorted(found, reverse=True):
        try:
            payload = load(found[step])
        except UnreadableCheckpointError as error:
            unreadable.append(str(error))
            continue
        if unreadable:
            log.warning("%s; using the latest readable checkpoint instead, %s (t_env=%d)",
                        "; ".join(unreadable), found[step], step)
        return found[step], payload
    raise UnreadableCheckpointError(f"no checkpoint in {str(run_dir)!r} can be read: {'; '.join(unreadable)}")


def _unreadable_step(error, path: Path, found: Dict[int, Path], load_step: int) -> UnreadableCheckpointError:
    others = sorted(step for step, file in found.items() if file != path and _looks_complete(file))
    return UnreadableCheckpointError(
        f"{error}; load_step={load_step} asked for it. Steps whose files look complete: "
        f"{others if others else 'none'} (load_step=<step> picks one, load_step=0 the latest readable)"
    )


def read_checkpoint_config(path) -> Optional[dict]:
    """The run's settings recorded in a checkpoint (a plain dict), or None when the checkpoint
    predates that record. ``path``: a checkpoint file, its step folder, or a run's checkpoint
    folder (then the latest readable checkpoint). Tensor data is memory-mapped, not read."""
    path = Path(path)
    if path.is_dir() and not (path / CHECKPOINT_FILE).is_file():  # a run's folder of checkpoints
        path = find_readable_checkpoint(path)
    payload = _load_lazily(_checkpoint_file(path))
    settings = payload.get(SETTINGS_KEY)
    if settings is not None and not isinstance(settings, dict):
        raise UnreadableCheckpointError(
            f"checkpoint {str(path)!r} records its settings as {type(settings).__name__}, expected a mapping"
        )
    return settings


def _load_lazily(path: Path) -> dict:
    """The payload with tensor data memory-mapped rather than read (for its plain values)."""
    return _checked_format(path, _torch_load(path, mmap=True))
