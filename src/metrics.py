"""Training statistics: accumulated between log points, then sent to sacred, TensorBoard and the
console. Running sums and a short window of recent values serve the console; every logged point is
also kept (a few numbers per log point, about 16 bytes each) so that a checkpoint carries the run's
record and a resumed run's record holds every point the uninterrupted run's does.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Dict, List, Optional, Tuple


class RunLogger:
    def __init__(self, sacred_run=None, console: Optional[logging.Logger] = None,
                 tensorboard_dir: Optional[str] = None, recent: int = 20, label: str = ""):
        self.sacred_run = sacred_run
        self.label = label  # names the run on the console when several share it (e.g. "[seed 3] ")
        self.console = console or logging.getLogger("qmixlab")
        self.recent: Dict[str, deque] = {}
        self.recent_size = recent
        self._sums: Dict[str, float] = {}
        self._counts: Dict[str, int] = {}
        self._history: Dict[str, Tuple[List[int], List[float]]] = {}
        self._tensorboard = None
        if tensorboard_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise RuntimeError(
                    "use_tensorboard=True needs the tensorboard package: pip install tensorboard"
                ) from error
            self._tensorboard = SummaryWriter(tensorboard_dir)

    # ----------------------------------------------------------------- accumulate
    def accumulate(self, stats: Dict[str, float], prefix: str = "", weight: int = 1) -> None:
        """Add ``stats`` (means over ``weight`` items) to the running means since the last flush."""
        for key, value in stats.items():
            name = prefix + key
            self._sums[name] = self._sums.get(name, 0.0) + float(value) * weight
            self._counts[name] = self._counts.get(name, 0) + weight

    def log(self, name: str, value: float, t_env: int) -> None:
        """Record one value now (sacred metrics.json, TensorBoard, recent window)."""
        value = float(value)
        window = self.recent.setdefault(name, deque(maxlen=self.recent_size))
        window.append((t_env, value))
        steps, values = self._history.setdefault(name, ([], []))
        steps.append(int(t_env))
        values.append(value)
        if self.sacred_run is not None:
            self.sacred_run.log_scalar(name, value, t_env)
        if self._tensorboard is not None:
            self._tensorboard.add_scalar(name, value, t_env)

    def flush(self, t_env: int, keys: Optional[list] = None) -> Dict[str, float]:
        """Log the means accumulated since the last flush (of ``keys``, default all)."""
        names = [k for k in self._sums if keys is None or k in keys]
        means = {}
        for name in sorted(names):
            means[name] = self._sums.pop(name) / max(self._counts.pop(name), 1)
            self.log(name, means[name], t_env)
        return means

    def persist(self) -> None:
        """Hand what was logged to sacred's observers now rather than at its next heartbeat
        (every 10 s), so that a killed run's record keeps every point logged before the kill."""
        emit = getattr(self.sacred_run, "_emit_heartbeat", None)
        if emit is not None:
            emit()

    def print_summary(self, t_env: int, episode: int, values: Dict[str, float]) -> None:
        parts = [f"t_env: {t_env}", f"episode: {episode}"]
        parts += [f"{k}: {v:.4g}" if math.isfinite(v) else f"{k}: {v}" for k, v in sorted(values.items())]
        self.console.info(self.label + "  ".join(parts))

    def latest(self, name: str, default=float("nan")) -> float:
        window = self.recent.get(name)
        return window[-1][1] if window else default

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "sums": dict(self._sums),
            "counts": dict(self._counts),
            "recent": {k: [list(p) for p in v] for k, v in self.recent.items()},
            "history": {k: [list(steps), list(values)] for k, (steps, values) in self._history.items()},
        }

    def load_state_dict(self, state: dict, replay_history: bool = False) -> None:
        """Restore; with ``replay_history`` every point of the checkpoint's record is logged again
        to sacred (a resumed run is a new sacred run whose record must be complete)."""
        self._sums = {k: float(v) for k, v in state["sums"].items()}
        self._counts = {k: int(v) for k, v in state["counts"].items()}
        self.recent = {k: deque([tuple(p) for p in v], maxlen=self.recent_size)
                       for k, v in state["recent"].items()}
        self._history = {k: ([int(t) for t in steps], [float(v) for v in values])
                         for k, (steps, values) in state.get("history", {}).items()}
        if replay_history and self.sacred_run is not None:
            for name, (steps, values) in self._history.items():
                for t_env, value in zip(steps, values):
                    self.sacred_run.log_scalar(name, value, t_env)
            self.persist()

    def history(self, name: str) -> Tuple[List[int], List[float]]:
        """Every ``(steps, values)`` logged under ``name`` in this run (resumed runs included)."""
        steps, values = self._history.get(name, ([], []))
        return list(steps), list(values)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
