"""Aggregate statistics of a sweep, with rliable's definitions and its implementation.

* Final score of a run: the mean of its last ``last_k`` evaluations (``DEFAULT_LAST_K``).
* IQM: the mean of the middle 50% of the scores pooled over runs (and maps), i.e. a 25% trimmed
  mean: ``floor(N / 4)`` scores are dropped from each end (``rliable.metrics.aggregate_iqm``).
* 95% confidence intervals: percentile stratified bootstrap (``rliable.library``): runs are
  resampled with replacement within each map, maps are kept.
* Probability of improvement of X over Y on one map: P(X > Y) over all pairs of runs, ties
  counted half (Mann-Whitney U / (n_x n_y)); averaged over maps, with an independent stratified
  bootstrap CI.

The resampling is rliable's (``rliable.library.get_interval_estimates``). The two statistics are
rliable's definitions written as plain numpy (``interquartile_mean``,
``probability_of_improvement``): rliable's own functions go through scipy's ``trim_mean`` and
``mannwhitneyu``, whose per-call overhead made a 12-variant report take minutes (thousands of
calls per CI); tests check that both give the same numbers.
* Sample-efficiency curves: each run's evaluations are linearly interpolated onto a common grid
  of environment steps; IQM and CI at every grid point.
* Maximum of the mean curve (``best_mean_evaluation``): EPyMARL's headline statistic (Papoudakis
  et al., 2021, "maximum returns"): the evaluation at which the mean over runs is highest, with
  that mean and its bootstrap CI. Reported beside ours only to compare with published EPyMARL
  tables: picking the best of many evaluations after the fact is biased upwards.

rliable wants rectangular ``runs x maps`` matrices. When a variant has different numbers of usable
runs on different maps, the aggregate uses the first ``min`` runs (by seed order) of every map and
says how many it left out (``stack_runs``).
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

DEFAULT_LAST_K = 3
DEFAULT_REPS = 2000
CONFIDENCE = 0.95
CURVE_POINTS = 50
IQM_TRIM = 0.25


def _rliable():
    try:
        from rliable import library
    except ImportError as error:
        raise ImportError(
            "the ablation report needs rliable (optional extra): pip install rliable 'pandas<3' "
            f"(or pip install 'qmixlab[ablations]'); import failed with: {error}"
        ) from error
    return library


@dataclass(frozen=True)
class Estimate:
    point: float
    low: float
    high: float
    runs: int  # runs used (summed over maps)

    def overlaps(self, other: "Estimate") -> bool:
        return not (self.low > other.high or self.high < other.low)

    def text(self, digits: int = 3) -> str:
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def final_score(values: Sequence[float], last_k: int = DEFAULT_LAST_K) -> float:
    """Mean of the last ``last_k`` evaluations (all of them when there are fewer)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("a run with no evaluations has no final score")
    if last_k < 1:
        raise ValueError(f"last_k={last_k!r} must be >= 1")
    return float(values[-last_k:].mean())


def interquartile_mean(scores: np.ndarray, axis=None) -> np.ndarray:
    """Mean of the middle 50% along ``axis`` (None: all scores pooled)."""
    scores = np.asarray(scores, dtype=float)
    if axis is None:
        scores, axis = scores.ravel(), 0
    ordered = np.sort(scores, axis=axis)
    n = ordered.shape[axis]
    cut = int(IQM_TRIM * n)
    return np.take(ordered, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stack_runs(per_map: Sequence[Sequence[float]]) -> Tuple[np.ndarray, int]:
    """``runs x maps`` matrix of the first ``min`` runs of every map, and how many runs that left
    out. ``per_map`` lists each map's scores in seed order."""
    n = min(len(scores) for scores in per_map)
    if n == 0:
        raise ValueError("a map without runs cannot enter a runs x maps matrix")
    matrix = np.array([list(scores)[:n] for scores in per_map], dtype=float).T
    return matrix, sum(len(scores) for scores in per_map) - n * len(per_map)


@contextlib.contextmanager
def seeded_numpy(seed: int):
    """rliable 1.2 draws its bootstrap indices from numpy's global generator (its
    ``random_state`` argument does not reach them), so a reproducible CI means seeding that
    generator; its previous state is restored afterwards."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


def key_seed(seed: int, *parts: str) -> int:
    """A seed per estimate, so that each CI is reproducible whatever else is computed."""
    return (seed * 1_000_003 + zlib.crc32("|".join(parts).encode())) % 2**32


def _interval(data, func, reps: int, seed: int) -> Tuple[float, float, float]:
    library = _rliable()
    with seeded_numpy(seed):
        points, intervals = library.get_interval_estimates(
            {"x": data}, func, reps=reps, confidence_interval_size=CONFIDENCE)
    return float(np.ravel(points["x"])[0]), float(intervals["x"][0, 0]), float(intervals["x"][1, 0])


def iqm_estimate(scores: np.ndarray, reps: int = DEFAULT_REPS, seed: int = 0) -> Estimate:
    """IQM of a ``runs x maps`` matrix with its stratified-bootstrap CI."""
    scores = np.asarray(scores, dtype=float)
    point, low, high = _interval(scores, lambda x: np.array([interquartile_mean(x)]), reps, seed)
    return Estimate(point, low, high, scores.size)


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y) per map (column) over all pairs of runs, ties counted half, averaged over maps."""
    x, y = scores_x[:, None, :], scores_y[None, :, :]
    per_map = (x > y).mean(axis=(0, 1)) + 0.5 * (x == y).mean(axis=(0, 1))
    return float(per_map.mean())


def improvement_estimate(scores_x: np.ndarray, scores_y: np.ndarray, reps: int = DEFAULT_REPS,
                         seed: int = 0) -> Estimate:
    """P(X > Y) averaged over maps (columns), runs of X and Y resampled independently per map."""
    scores_x, scores_y = np.asarray(scores_x, dtype=float), np.asarray(scores_y, dtype=float)
    if scores_x.shape[1] != scores_y.shape[1]:
        raise ValueError(f"X and Y cover {scores_x.shape[1]} and {scores_y.shape[1]} maps")
    point, low, high = _interval(
        [scores_x, scores_y], lambda x, y: np.array([probability_of_improvement(x, y)]), reps, seed)
    return Estimate(point, low, high, scores_x.size + scores_y.size)


def iqm_curve(scores: np.ndarray, reps: int = DEFAULT_REPS, seed: int = 0):
    """IQM and CI at every grid point of a ``runs x maps x points`` array: ``(point, low, high)``."""
    library = _rliable()
    scores = np.asarray(scores, dtype=float)

    def per_point(x):
        return interquartile_mean(x.reshape(-1, x.shape[-1]), axis=0)

    with seeded_numpy(seed):
        points, intervals = library.get_interval_estimates(
            {"x": scores}, per_point, reps=reps, confidence_interval_size=CONFIDENCE)
    return np.asarray(points["x"]), np.asarray(intervals["x"][0]), np.asarray(intervals["x"][1])


def common_grid(series: List[Tuple[np.ndarray, np.ndarray]], points: int = CURVE_POINTS) -> np.ndarray:
    """Environment steps covered by every run: from the latest first evaluation to the earliest
    last one (no extrapolation)."""
    start = max(float(steps[0]) for steps, _ in series)
    end = min(float(steps[-1]) for steps, _ in series)
    if end <= start:
        return np.array([end])
    return np.linspace(start, end, points)


def interpolate(steps: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return np.interp(grid, np.asarray(steps, dtype=float), np.asarray(values, dtype=float))


@dataclass(frozen=True)
class BestEvaluation:
    """``best_mean_evaluation``'s result: the mean over runs at the chosen evaluation and its CI,
    which evaluation (0-based, in every run's own order) and the runs' steps there."""
    estimate: Estimate
    index: int
    step_low: float
    step_high: float


def best_mean_evaluation(series: Sequence[Tuple[np.ndarray, np.ndarray]], reps: int = DEFAULT_REPS,
                         seed: int = 0) -> BestEvaluation:
    """The evaluation at which the mean over runs is highest (EPyMARL's "maximum return").

    Runs are aligned by evaluation index (every run evaluates at the same ``test_interval``) and
    cut to the shortest; the first highest mean wins ties. The CI is the percentile bootstrap of
    the mean over runs at that evaluation (runs resampled), not accounting for the choice."""
    if not series:
        raise ValueError("no runs to take the best evaluation of")
    n = min(len(values) for _, values in series)
    if n == 0:
        raise ValueError("a run with no evaluations has no best evaluation")
    values = np.array([np.asarray(v, dtype=float)[:n] for _, v in series])
    index = int(np.argmax(values.mean(axis=0)))
    at_best = values[:, index]
    point, low, high = _interval(at_best[:, None], lambda x: np.array([x.mean()]), reps, seed)
    steps = [float(np.asarray(s)[index]) for s, _ in series]
    return BestEvaluation(Estimate(point, low, high, len(series)), index, min(steps), max(steps))
