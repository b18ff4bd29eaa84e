"""Atomic checkpoints under ``<models>/<run>/<t_env>/checkpoint.pt``.

A checkpoint is written into a hidden temporary folder, flushed to disk, and only then renamed
to its final name, so a run killed during a save leaves every earlier checkpoint intact and never
a half-written one under a real step number. Loading uses ``torch.load(weights_only=True)``:
checkpoints hold tensors and plain Python values only, never pickled objects.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import torch

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match the run; the message names the file."""


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


def save_checkpoint(run_dir, t_env: int, payload: dict) -> Path:
    """Write ``payload`` as the checkpoint of step ``t_env``; returns its folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / str(int(t_env))
    tmp = run_dir / f".{int(t_env)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    payload = dict(payload, format_version=FORMAT_VERSION, t_env=int(t_env))
    with open(tmp / CHECKPOINT_FILE, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. Ctrl-C right after a periodic save)
        stale = run_dir / f".{int(t_env)}.stale-{os.getpid()}"
        os.rename(final, stale)
        os.rename(tmp, final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(run_dir)
    return final


def list_checkpoints(run_dir) -> dict:
    """``{t_env: file}`` of the complete checkpoints in ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"checkpoint_path {str(run_dir)!r} is not a folder")
    found = {}
    for entry in run_dir.iterdir():
        if entry.name.isdigit() and (entry / CHECKPOINT_FILE).is_file():
            found[int(entry.name)] = entry / CHECKPOINT_FILE
    return found


def find_checkpoint(run_dir, load_step: int = 0) -> Path:
    """The latest checkpoint (``load_step=0``) or the one closest to ``load_step``."""
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint (<step>/{CHECKPOINT_FILE}) in {str(run_dir)!r}")
    if load_step == 0:
        return found[max(found)]
    return found[min(found, key=lambda step: (abs(step - load_step), -step))]


def load_checkpoint(path, expected: Optional[dict] = None) -> dict:
    """Load a checkpoint file safely and check that it belongs to a compatible run.

    ``expected`` maps names (``n_agents``, ``obs_shape``, ``mixer``...) to the values this run
    has; any difference raises CheckpointError naming the file, the key and both values.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, truncated, or holding objects that need unpickling
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read safely: {error}") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        version = payload.get("format_version") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format {version!r}, expected {FORMAT_VERSION}"
        )
    stored = payload.get("compatibility", {})
    for key, value in (expected or {}).items():
        if key not in stored:
            raise CheckpointError(f"checkpoint {str(path)!r} does not record {key!r}")
        if stored[key] != value:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not match this run: {key} is {stored[key]!r} "
                f"in the checkpoint but {value!r} here"
            )
    return payload
