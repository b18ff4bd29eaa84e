"""Is a process still there? Used by checkpoint clean-up and by sweep claims (Linux ``/proc``;
elsewhere start times are unknown and only liveness is checked)."""

from __future__ import annotations

import os
from typing import Optional


def process_start_ticks(pid: int) -> Optional[str]:
    """Start time of ``pid`` in clock ticks since boot (tells a reused pid apart), or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_started_at(pid: int) -> Optional[float]:
    """When ``pid`` started, in seconds since the epoch, or None."""
    ticks = process_start_ticks(pid)
    try:
        with open("/proc/stat") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    return None if ticks is None else boot + int(ticks) / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int, start_ticks: Optional[str] = None) -> bool:
    """Whether ``pid`` runs (and, given ``start_ticks``, is still the process that had them)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if start_ticks is not None:
        current = process_start_ticks(pid)
        if current is not None and current != start_ticks:
            return False  # the pid was reused by another process
    return True
