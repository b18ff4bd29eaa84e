"""Schedules of a scalar (exploration epsilon, ...) over environment steps."""

from __future__ import annotations

import math


def _finite_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class LinearSchedule:
    """``start`` at ``t_env = 0``, linear to ``finish`` at ``t_env = time_length``, then flat.

    Evaluated by environment steps: ``schedule(t_env)`` or ``schedule.value(t_env)``.
    """

    def __init__(self, start: float, finish: float, time_length: float):
        self.start = _finite_number("LinearSchedule start", start)
        self.finish = _finite_number("LinearSchedule finish", finish)
        self.time_length = _finite_number("LinearSchedule time_length", time_length)
        if self.time_length <= 0:
            raise ValueError(f"LinearSchedule time_length must be > 0, got {time_length!r}")

    def value(self, t_env: float) -> float:
        t_env = _finite_number("LinearSchedule t_env", t_env)
        if t_env < 0:
            raise ValueError(f"LinearSchedule t_env must be >= 0, got {t_env!r}")
        fraction = min(t_env / self.time_length, 1.0)
        return self.start + (self.finish - self.start) * fraction

    __call__ = value

    def __repr__(self) -> str:
        return f"LinearSchedule(start={self.start}, finish={self.finish}, time_length={self.time_length})"
