"""The report of a sweep folder: ``report.md``, figures, and a marl-eval JSON export.

Only finished runs (status finished and sacred COMPLETED) enter the statistics; the run table lists
every expected run (finished, failed with its error, running, interrupted, missing) and any run
folder the sweep does not expect, and every statistic says how many runs it uses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from qmixlab.ablations import stats
from qmixlab.ablations.execution import (
    FAILED, FINISHED, INTERRUPTED, PENDING, RUNNING, SPEC_FILE, first_line, read_json,
    run_state, sacred_run_dir, write_json,
)
from qmixlab.ablations.sweep import (
    REFERENCE_VARIANT, SweepSpec, atomic_write_text, expand, read_sweep_file, run_overrides,
)

REPORT_METRICS = ("test_battle_won_mean", "test_return_mean")
# Backends whose episodes are battles: their headline metric is the win rate; every other family's
# (LBF, RWARE, MPE, plug-ins) is the return.
BATTLE_ENVS = ("smacsim", "sc2")


def headline_metric(env: str) -> str:
    """The report's default headline metric for backend ``env``."""
    return REPORT_METRICS[0] if env in BATTLE_ENVS else REPORT_METRICS[1]


MISSING = "missing"
CONFLICT = "conflicting"  # a run folder made under another definition of its variant
DEFINING_KEYS = ("variant", "map_name", "seed", "alg", "env", "overrides")
FIGURES_DIR = "figures"
MARL_EVAL_FILE = "marl_eval.json"
FEW_RUNS = 5  # below this many runs per map, the summary warns that CIs are indicative
# The plateau check scores the reference as if its runs had stopped at this fraction of their steps.
EARLIER_FRACTION = 0.8


# --------------------------------------------------------------------------- reading runs
@dataclass
class RunRecord:
    run_id: str
    variant: str
    map_name: str
    seed: int
    state: str  # finished | failed | running | interrupted | missing | conflicting
    expected: bool = True
    detail: str = ""
    duration_s: Optional[float] = None
    metrics: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def read_sacred_metrics(run_dir) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{metric: (steps, values)}`` from sacred's ``metrics.json``, sorted by step."""
    folder = sacred_run_dir(run_dir)
    raw = read_json(folder / "metrics.json") if folder else None
    metrics = {}
    for name, entry in (raw or {}).items():
        steps = np.asarray(entry.get("steps", []), dtype=float)
        values = np.asarray(entry.get("values", []), dtype=float)
        if steps.size and steps.size == values.size:
            order = np.argsort(steps, kind="stable")
            metrics[name] = (steps[order], values[order])
    return metrics


def _record(run_id, variant, map_name, seed, run_dir: Path, expected: bool) -> RunRecord:
    record = RunRecord(run_id, variant, map_name, seed, MISSING, expected)
    if not run_dir.is_dir():
        return record
    state = run_state(run_dir)
    record.duration_s = (state.status or {}).get("duration_s")
    if state.state == PENDING:
        record.detail = "run folder without status.json (never started)"
        return record
    record.state, record.detail = state.state, state.detail
    if state.state == FINISHED:
        record.metrics = read_sacred_metrics(run_dir)
    return record


def extend_with_copied_runs(spec: SweepSpec, sweep_dir) -> Tuple[SweepSpec, List[str]]:
    """Add the seeds and maps of run folders copied in from another machine's share of the same
    sweep (same alg, env, and the same overrides for their variant), so that they are used.
    Folders of variants this sweep defines differently stay out (listed as not used)."""
    runs_dir, notes = Path(sweep_dir) / "runs", []
    seeds, maps = list(spec.seeds), list(spec.maps)
    for folder in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        info = read_json(folder / SPEC_FILE)
        if not info or info.get("variant") not in spec.variants or (info.get("alg"), info.get("env")) != (spec.alg, spec.env):
            continue
        map_name, seed = info.get("map_name"), info.get("seed")
        if info.get("overrides") != run_overrides(spec, info["variant"], map_name) or not isinstance(seed, int):
            continue
        if seed not in seeds:
            seeds.append(seed)
            notes.append(f"seed {seed} (found in `{folder.name}`, not in sweep.yaml) is part of the sweep")
        if map_name not in maps:
            maps.append(map_name)
            notes.append(f"map {map_name} (found in `{folder.name}`, not in sweep.yaml) is part of the sweep")
    return dataclasses.replace(spec, seeds=seeds, maps=maps), notes


def collect_runs(spec: SweepSpec, sweep_dir) -> List[RunRecord]:
    sweep_dir = Path(sweep_dir)
    records, expected_ids = [], set()
    for run in expand(spec, sweep_dir):
        expected_ids.add(run.run_id)
        record = _record(run.run_id, run.variant, run.map_name, run.seed, Path(run.run_dir), True)
        stored = read_json(Path(run.run_dir) / SPEC_FILE)
        wanted = run.to_dict()
        if stored and any(stored.get(key) != wanted[key] for key in DEFINING_KEYS):
            record.state, record.metrics = CONFLICT, {}
            record.detail = "run_spec.json defines this run differently from sweep.yaml (another experiment's copy?)"
        records.append(record)
    runs_dir = sweep_dir / "runs"
    for folder in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        if not folder.is_dir() or folder.name in expected_ids:
            continue
        info = read_json(folder / SPEC_FILE) or {}
        parts = folder.name.split("__")
        variant = info.get("variant", parts[0])
        map_name = info.get("map_name", parts[1] if len(parts) > 1 else "?")
        seed = info.get("seed", parts[2][4:] if len(parts) > 2 else "?")
        records.append(_record(folder.name, variant, map_name, seed, folder, False))
    return records


# --------------------------------------------------------------------------- statistics
@dataclass
class MetricAnalysis:
    metric: str
    last_k: int
    finals: Dict[str, Dict[str, List[Tuple[int, float]]]]  # variant -> map -> [(seed, final)]
    per_map: Dict[str, Dict[str, Optional[stats.Estimate]]]  # map -> variant -> IQM
    per_map_poi: Dict[str, Dict[str, Optional[stats.Estimate]]]  # map -> variant -> P(variant > standard)
    aggregate_maps: List[str]
    aggregate: Dict[str, stats.Estimate]
    aggregate_poi: Dict[str, stats.Estimate]
    curves: Dict[str, Tuple[np.ndarray, Dict[str, tuple]]]  # map or "all maps" -> (grid, variant -> (iqm, low, high, runs))
    notes: List[str]
    reference_earlier: Dict[str, "PlateauCheck"] = field(default_factory=dict)  # map -> the reference's plateau check
    reference: str = REFERENCE_VARIANT  # what every variant is compared with (reference_variant)
    best_evaluations: Dict[str, Dict[str, stats.BestEvaluation]] = field(default_factory=dict)  # map -> variant -> EPyMARL's maximum


@dataclass(frozen=True)
class PlateauCheck:
    """The reference's runs scored as if stopped at EARLIER_FRACTION of their steps."""
    cut_step: float  # median over runs of the step where they are cut
    earlier: stats.Estimate  # IQM of those scores
    gain: stats.Estimate  # IQM of each run's final score minus its own earlier score (paired)


def score_at_fraction(steps: np.ndarray, values: np.ndarray, fraction: float, last_k: int) -> Tuple[float, float]:
    """The final score of a run had it stopped at ``fraction`` of its last evaluation's step: the
    mean of the last ``last_k`` evaluations at or before that step. Returns ``(cut step, score)``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction!r} must be in (0, 1]")
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    cut = fraction * steps[-1]
    kept = values[steps <= cut]
    if kept.size == 0:
        raise ValueError(f"no evaluation at or before step {cut:g} (first at {steps[0]:g})")
    return cut, stats.final_score(kept, last_k)


ALL_MAPS = "all maps"


def _curve_block(series_by_variant: Dict[str, List[List[Tuple[np.ndarray, np.ndarray]]]], reps, seed, label):
    """series_by_variant: variant -> per map -> runs' (steps, values). Returns (grid, curves)."""
    every = [s for per_map in series_by_variant.values() for runs in per_map for s in runs]
    if not every:
        return None
    grid = stats.common_grid(every)
    curves = {}
    for variant, per_map in series_by_variant.items():
        if any(not runs for runs in per_map):
            continue
        n = min(len(runs) for runs in per_map)
        cube = np.stack([np.stack([stats.interpolate(s, v, grid) for s, v in runs[:n]]) for runs in per_map], axis=1)
        point, low, high = stats.iqm_curve(cube, reps, stats.key_seed(seed, "curve", label, variant))
        curves[variant] = (point, low, high, n * len(per_map))
    return grid, curves


def analyse_metric(spec: SweepSpec, records: List[RunRecord], metric: str, last_k: int, reps: int,
                   seed: int) -> Optional[MetricAnalysis]:
    variants, maps = list(spec.variants), list(spec.maps)
    used = [r for r in records if r.expected and r.state == FINISHED]
    notes = []
    without = [r.run_id for r in used if metric not in r.metrics]
    if len(without) == len(used):
        return None
    if without:
        notes.append(f"{len(without)} finished run(s) logged no `{metric}` and are left out: {', '.join(without)}.")
    finals = {v: {m: [] for m in maps} for v in variants}
    series = {v: {m: [] for m in maps} for v in variants}
    for r in sorted(used, key=lambda r: r.seed):
        if metric in r.metrics:
            steps, values = r.metrics[metric]
            finals[r.variant][r.map_name].append((r.seed, stats.final_score(values, last_k)))
            series[r.variant][r.map_name].append((steps, values))
            if values.size < last_k:
                notes.append(f"`{r.run_id}` has only {values.size} evaluation(s) of `{metric}`; its final score averages those.")

    def scores(variant, map_name):
        return [score for _, score in finals[variant][map_name]]

    reference = reference_variant(variants)
    per_map, per_map_poi = {}, {}
    for m in maps:
        per_map[m], per_map_poi[m] = {}, {}
        for v in variants:
            s = scores(v, m)
            per_map[m][v] = stats.iqm_estimate(np.array(s)[:, None], reps, stats.key_seed(seed, metric, m, v)) if s else None
            ref = scores(reference, m) if reference else []
            if reference and v != reference and s and ref:
                per_map_poi[m][v] = stats.improvement_estimate(
                    np.array(s)[:, None], np.array(ref)[:, None], reps, stats.key_seed(seed, metric, "poi", m, v))
            else:
                per_map_poi[m][v] = None

    aggregate_maps = [m for m in maps if all(scores(v, m) for v in variants)]
    left_out_maps = [m for m in maps if m not in aggregate_maps]
    if left_out_maps:
        notes.append(f"Maps {left_out_maps} lack finished runs of some variant; the all-maps statistics "
                     f"use only {aggregate_maps or 'no map'}, so that every variant is compared on the same maps.")
    aggregate, aggregate_poi, matrices = {}, {}, {}
    if len(aggregate_maps) == 1:  # the same quantity as the map's own: report the same draw, not a second one
        only = aggregate_maps[0]
        aggregate = dict(per_map[only])
        aggregate_poi = {v: e for v, e in per_map_poi[only].items() if e is not None}
    elif aggregate_maps:
        for v in variants:
            matrix, dropped = stats.stack_runs([scores(v, m) for m in aggregate_maps])
            matrices[v] = matrix
            if dropped:
                notes.append(f"All-maps `{v}`: runs per map differ, so the stratified bootstrap uses the first "
                             f"{matrix.shape[0]} seeds of every map ({dropped} run(s) left out of the all-maps statistics only).")
            aggregate[v] = stats.iqm_estimate(matrix, reps, stats.key_seed(seed, metric, ALL_MAPS, v))
        if reference:
            for v in variants:
                if v != reference:
                    aggregate_poi[v] = stats.improvement_estimate(
                        matrices[v], matrices[reference], reps, stats.key_seed(seed, metric, "poi", ALL_MAPS, v))

    reference_earlier = {}
    for m in maps:
        runs = series[reference][m] if reference else []
        if runs and all(np.asarray(steps)[0] <= EARLIER_FRACTION * np.asarray(steps)[-1] for steps, _ in runs):
            cuts_scores = [score_at_fraction(steps, values, EARLIER_FRACTION, last_k) for steps, values in runs]
            earlier = np.array([score for _, score in cuts_scores])
            gains = np.array([stats.final_score(values, last_k) for _, values in runs]) - earlier
            reference_earlier[m] = PlateauCheck(
                float(np.median([cut for cut, _ in cuts_scores])),
                stats.iqm_estimate(earlier[:, None], reps, stats.key_seed(seed, metric, "earlier", m)),
                stats.iqm_estimate(gains[:, None], reps, stats.key_seed(seed, metric, "gain", m)))

    best_evaluations = {m: {v: stats.best_mean_evaluation(series[v][m], reps, stats.key_seed(seed, metric, "best", m, v))
                            for v in variants if series[v][m]} for m in maps}

    curves = {}
    for m in maps:
        block = _curve_block({v: [series[v][m]] for v in variants}, reps, seed, f"{metric}|{m}")
        if block:
            curves[m] = block
    if aggregate_maps and len(aggregate_maps) > 1:
        block = _curve_block({v: [series[v][m] for m in aggregate_maps] for v in variants}, reps, seed, f"{metric}|{ALL_MAPS}")
        if block:
            curves[ALL_MAPS] = block
    return MetricAnalysis(metric, last_k, finals, per_map, per_map_poi, aggregate_maps, aggregate, aggregate_poi, curves,
                          notes, reference_earlier, reference, best_evaluations)


def reference_variant(variants: List[str]) -> str:
    """``standard`` where the sweep has it (a masking sweep), else its first variant (e.g. the
    first algorithm of a learning sweep)."""
    return REFERENCE_VARIANT if REFERENCE_VARIANT in variants or not variants else variants[0]


def summary_sentences(analysis: MetricAnalysis, reference: Optional[str] = None) -> List[str]:
    """Which variants' CIs do not overlap the reference's, computed mechanically."""
    reference = reference or analysis.reference
    if reference not in analysis.finals:
        return [f"No `{reference}` variant in this sweep: nothing to compare against."]
    scope, estimates = ALL_MAPS, analysis.aggregate
    if not estimates:
        return [f"No map has finished runs of every variant for `{analysis.metric}`: no all-maps comparison is possible."]
    ref = estimates[reference]
    higher, lower, overlap = [], [], []
    for variant, estimate in estimates.items():
        if variant == reference:
            continue
        poi = analysis.aggregate_poi.get(variant)
        text = f"`{variant}` ({estimate.text()}; P(>{reference}) = {poi.text(2) if poi else 'n/a'})"
        if estimate.overlaps(ref):
            overlap.append(text)
        elif estimate.point > ref.point:
            higher.append(text)
        else:
            lower.append(text)
    runs = ", ".join(f"{m}: {min(len(analysis.finals[v][m]) for v in analysis.finals)}" for m in analysis.aggregate_maps)
    lines = [
        f"On `{analysis.metric}` (IQM of the final score over {scope} {analysis.aggregate_maps}, fewest runs per "
        f"variant per map: {runs}), `{reference}` scores {ref.text()}."
    ]
    lines.append("CI does not overlap and is **higher** than the reference: " + ("; ".join(higher) if higher else "none") + ".")
    lines.append("CI does not overlap and is **lower** than the reference: " + ("; ".join(lower) if lower else "none") + ".")
    lines.append("CI overlaps the reference (no difference detected at this number of runs; overlap does not show "
                 "the variants are equal): " + ("; ".join(overlap) if overlap else "none") + ".")
    fewest = min(len(analysis.finals[v][m]) for v in analysis.finals for m in analysis.aggregate_maps)
    if fewest < FEW_RUNS:
        lines.append(f"Only {fewest} run(s) for some variant on some map: percentile-bootstrap CIs from so few runs "
                     "understate the uncertainty; treat every statement above as indicative.")
    for sanity in ("drop_masked_rows", "no_trimming"):
        if sanity in estimates:
            same = estimates[sanity].overlaps(ref)
            lines.append(f"Sanity check `{sanity}` (must match `{reference}` up to noise): "
                         + ("its CI overlaps, as expected." if same else "**its CI does not overlap: investigate.**"))
    per_map_differences = []
    for m, by_variant in analysis.per_map.items():
        if by_variant.get(reference) is None:
            continue
        for v, e in by_variant.items():
            if v != reference and e is not None and not e.overlaps(by_variant[reference]):
                per_map_differences.append(f"`{v}` on {m} ({'higher' if e.point > by_variant[reference].point else 'lower'})")
    lines.append("Per map, non-overlapping CIs: " + (", ".join(per_map_differences) if per_map_differences else "none") + ".")
    lines += plateau_sentences(analysis, reference)
    return lines


def plateau_sentences(analysis: MetricAnalysis, reference: Optional[str] = None) -> List[str]:
    """Whether the reference was still improving at the end: each run's final score against its own
    score had it stopped at EARLIER_FRACTION of its steps (paired, so seed-to-seed spread cancels)."""
    reference = reference or analysis.reference
    lines = []
    for m, check in analysis.reference_earlier.items():
        end = analysis.per_map[m].get(reference)
        if end is None:
            continue
        gain = check.gain
        if gain.low > 0:
            verdict = ("**still improving**: the CI of the gain excludes 0, so the variants are compared before the "
                       "reference's plateau")
        elif gain.high < 0:
            verdict = "**degrading**: the CI of the gain lies below 0"
        else:
            verdict = (f"the CI of the gain contains 0: no change detected over the last steps at this number of "
                       f"runs, but a gain of up to {gain.high:.3g} is not ruled out")
        lines.append(f"Plateau check on {m}: `{reference}` scored {check.earlier.text()} with its runs stopped at "
                     f"{EARLIER_FRACTION:.0%} of their steps (median {check.cut_step:,.0f}) and {end.text()} at the end; "
                     f"IQM of the per-run gain {gain.text()}: {verdict}.")
    return lines


# --------------------------------------------------------------------------- figures
def _figure(n_panels: int, width: float = 4.8, height: float = 3.6):
    from matplotlib.figure import Figure

    columns = min(3, n_panels)
    rows = -(-n_panels // columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return figure, axes


def _colours(variants):
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {v: cmap(i % 20) for i, v in enumerate(variants)}


def plot_final_scores(analysis: MetricAnalysis, variants: List[str], path: Path) -> None:
    panels = [(m, analysis.per_map[m]) for m in analysis.per_map]
    if analysis.aggregate and len(analysis.per_map) > 1:
        panels.append((ALL_MAPS, analysis.aggregate))
    figure, axes = _figure(len(panels), height=0.35 * len(variants) + 1.5)
    colours = _colours(variants)
    for ax, (title, estimates) in zip(axes, panels):
        for y, variant in enumerate(variants):
            e = estimates.get(variant)
            if e is None:
                continue
            ax.errorbar(e.point, y, xerr=[[e.point - e.low], [e.high - e.point]], fmt="o", color=colours[variant], capsize=3)
        ref = estimates.get(analysis.reference)
        if ref is not None:
            ax.axvspan(ref.low, ref.high, color="grey", alpha=0.15, lw=0)
        ax.set_yticks(range(len(variants)), variants)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel("IQM of the final score (95% CI)")
    figure.suptitle(f"final {analysis.metric}")
    figure.savefig(path, dpi=110)


def plot_improvement(analysis: MetricAnalysis, variants: List[str], path: Path) -> bool:
    panels = [(m, analysis.per_map_poi[m]) for m in analysis.per_map_poi]
    if analysis.aggregate_poi and len(analysis.per_map_poi) > 1:
        panels.append((ALL_MAPS, analysis.aggregate_poi))
    others = [v for v in variants if v != analysis.reference]
    if not others or not any(any(e is not None for e in p.values()) for _, p in panels):
        return False
    figure, axes = _figure(len(panels), height=0.35 * len(others) + 1.5)
    colours = _colours(variants)
    for ax, (title, estimates) in zip(axes, panels):
        for y, variant in enumerate(others):
            e = estimates.get(variant)
            if e is not None:
                ax.errorbar(e.point, y, xerr=[[e.point - e.low], [e.high - e.point]], fmt="o", color=colours[variant], capsize=3)
        ax.axvline(0.5, color="grey", ls="--", lw=1)
        ax.set_xlim(-0.02, 1.02)
        ax.set_yticks(range(len(others)), others)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(f"P(variant > {analysis.reference}) (95% CI)")
    figure.suptitle(f"probability of improvement on final {analysis.metric}")
    figure.savefig(path, dpi=110)
    return True


def plot_curves(analysis: MetricAnalysis, variants: List[str], path: Path) -> bool:
    if not analysis.curves:
        return False
    from matplotlib.ticker import EngFormatter

    figure, axes = _figure(len(analysis.curves))
    colours = _colours(variants)
    for ax, (title, (grid, curves)) in zip(axes, analysis.curves.items()):
        for variant, (point, low, high, n) in curves.items():
            ax.plot(grid, point, color=colours[variant], label=variant, lw=1.5)
            ax.fill_between(grid, low, high, color=colours[variant], alpha=0.2, lw=0)
        runs = sorted({curve[3] for curve in curves.values()})
        ax.set_title(f"{title} (runs per variant: {runs[0]}{'–' + str(runs[-1]) if len(runs) > 1 else ''})")
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"IQM {analysis.metric}")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    handles, labels = axes[0].get_legend_handles_labels()
    fits = max(1, int(figure.get_figwidth() / 2.4))  # legend columns of variant names that fit the width
    figure.legend(handles, labels, loc="outside lower center", ncols=min(fits, len(labels)), fontsize="small")
    figure.savefig(path, dpi=110)
    return True


# --------------------------------------------------------------------------- marl-eval export
def marl_eval_export(spec: SweepSpec, records: List[RunRecord], metrics: List[str], last_k: int) -> dict:
    """marl-eval's raw-data layout: ``{env: {task: {algorithm: {"seed_<k>": {"step_<i>":
    {"step_count": steps, metric: [value]}, "absolute_metrics": {metric: [value]}}}}}}``.

    Tasks are maps, algorithms are variants, steps are evaluations in order. ``absolute_metrics``
    holds this report's final score (mean of the last ``last_k`` evaluations), not marl-eval's
    re-evaluation of the best policy, which these runs do not perform.
    """
    export = {spec.env: {}}
    for r in records:
        if not r.expected or r.state != FINISHED:
            continue
        present = [m for m in metrics if m in r.metrics]
        if not present:
            continue
        steps = sorted({float(s) for m in present for s in r.metrics[m][0]})
        run = {}
        for i, step in enumerate(steps):
            entry = {"step_count": int(step) if float(step).is_integer() else step}
            for m in present:
                s, v = r.metrics[m]
                hits = np.nonzero(s == step)[0]
                if hits.size:
                    entry[m] = [float(v[hits[-1]])]
            run[f"step_{i}"] = entry
        run["absolute_metrics"] = {m: [stats.final_score(r.metrics[m][1], last_k)] for m in present}
        export[spec.env].setdefault(r.map_name, {}).setdefault(r.variant, {})[f"seed_{r.seed}"] = run
    return export


# --------------------------------------------------------------------------- markdown
def _table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(estimate: Optional[stats.Estimate]) -> str:
    return estimate.text() if estimate is not None else "–"


def run_table(records: List[RunRecord], metrics: List[str], last_k: int) -> str:
    order = {FAILED: 0, CONFLICT: 1, INTERRUPTED: 2, RUNNING: 3, MISSING: 4, FINISHED: 5}
    rows = []
    for r in sorted(records, key=lambda r: (order.get(r.state, 5), r.variant, r.map_name, str(r.seed))):
        state = r.state if r.expected else f"{r.state} (not in sweep.yaml; not used)"
        finals = [f"{stats.final_score(r.metrics[m][1], last_k):.3f}" if m in r.metrics else "–" for m in metrics]
        duration = f"{r.duration_s:.0f}" if isinstance(r.duration_s, (int, float)) else "–"
        rows.append([f"`{r.run_id}`", r.variant, r.map_name, r.seed, state, *finals, duration, first_line(r.detail)])
    return _table(["run", "variant", "map", "seed", "state", *[f"final {m}" for m in metrics], "duration (s)", "error / note"], rows)


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def build_report(sweep_dir, metric: Optional[str] = None, out=None, last_k: int = stats.DEFAULT_LAST_K,
                 reps: int = stats.DEFAULT_REPS, seed: int = 0) -> Path:
    """Write ``report.md`` (or ``out``), ``figures/*.png`` and ``marl_eval.json``; return the
    report's path. ``metric``: the headline (default: ``headline_metric`` of the sweep's env)."""
    sweep_dir = Path(sweep_dir)
    spec, extension_notes = extend_with_copied_runs(read_sweep_file(sweep_dir), sweep_dir)
    metric = metric or headline_metric(spec.env)
    out = Path(out) if out else sweep_dir / "report.md"
    figures_dir = sweep_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    records = collect_runs(spec, sweep_dir)
    metrics = [metric] + [m for m in REPORT_METRICS if m != metric]
    expected = [r for r in records if r.expected]
    counts = {s: sum(1 for r in expected if r.state == s) for s in (FINISHED, FAILED, RUNNING, INTERRUPTED, MISSING, CONFLICT)}
    analyses = {m: analyse_metric(spec, records, m, last_k, reps, seed) for m in metrics}
    variants = list(spec.variants)
    reference = reference_variant(variants)

    md = [f"# Ablation report: {spec.name}", ""]
    md.append(f"Sweep folder `{sweep_dir}`; algorithm `{spec.alg}`, environment `{spec.env}`, maps {spec.maps}, "
              f"seeds {spec.seeds}; generated {time.strftime('%Y-%m-%d %H:%M:%S')}.")
    md.append("")
    md.append(f"**Runs:** {len(expected)} expected; {counts[FINISHED]} finished, {counts[FAILED]} failed, "
              f"{counts[RUNNING]} running, {counts[INTERRUPTED]} interrupted, {counts[MISSING]} missing"
              + (f", {counts[CONFLICT]} conflicting (defined differently; not used)" if counts[CONFLICT] else "")
              + (f"; {len(records) - len(expected)} run folder(s) not in sweep.yaml (not used)" if len(records) > len(expected) else "")
              + ". Only finished runs enter the statistics."
              + "".join(f" Note: {note}." for note in extension_notes))
    md += ["", "## Summary", ""]
    headline = analyses[metric]
    if headline is None:
        md.append(f"No finished run logged `{metric}`: there is nothing to compare yet.")
    else:
        md += [f"- {line}" for line in summary_sentences(headline)]
    md += ["", "## Method", ""]
    md.append(
        f"- Final score of a run: mean of its last {last_k} test evaluations (x axis: environment steps).\n"
        "- IQM: mean of the middle 50% of the final scores pooled over runs (and maps), i.e. a 25% trimmed mean.\n"
        f"- 95% CIs: percentile stratified bootstrap ({reps} resamples, seed {seed}): runs are resampled within each map.\n"
        f"- Probability of improvement P(X > {reference}): over all pairs of runs of a map, ties counted half; "
        "averaged over maps; runs of X and of the reference resampled independently within each map for the CI.\n"
        "- Sample-efficiency curves: each run linearly interpolated onto a common grid of environment steps (the range every run "
        "covers); IQM and 95% CI at each grid point.\n"
        f"- Implementation: rliable {_rliable_version()}'s stratified bootstrap (`get_interval_estimates`); IQM and "
        "probability of improvement as defined by rliable, computed with numpy (checked against `rliable.metrics` in the "
        "tests). Scores are not normalised.\n"
        f"- Plateau check: each `{reference}` run is scored as if it had stopped at {EARLIER_FRACTION:.0%} of its "
        f"last evaluation's step (mean of its last {last_k} evaluations up to there); the IQM [CI] of each run's "
        "final score minus that earlier score (paired by run) tells whether it was still improving.\n"
        "- Non-overlapping 95% CIs are a conservative sign of a difference; overlapping CIs do not show equality.\n"
        "- Best mean evaluation (EPyMARL's \"maximum return\", Papoudakis et al. 2021, for comparison with its "
        "published tables only): runs aligned by evaluation index, the evaluation where the mean over runs is highest, "
        "that mean and its bootstrap CI (runs resampled). Choosing the best of many evaluations after the fact biases it "
        "upwards; the final score above does not have that bias.")
    md += ["", "## Variants", ""]
    md.append(_table(["variant", "overrides", "description"],
                     [[f"`{v}`", f"`{json.dumps(spec.variants[v])}`" if spec.variants[v] else "(none)",
                       spec.descriptions.get(v, "")] for v in variants]))
    for m in metrics:
        analysis = analyses[m]
        md += ["", f"## `{m}`", ""]
        if analysis is None:
            md.append(f"No finished run logged `{m}`.")
            continue
        if analysis.aggregate:
            md.append(f"### All maps ({', '.join(analysis.aggregate_maps)})")
            md.append("")
            md.append(_table(["variant", "IQM of final score [95% CI]", "runs used", f"P(> {reference}) [95% CI]"],
                             [[f"`{v}`", _fmt(e), e.runs, _fmt(analysis.aggregate_poi.get(v))]
                              for v, e in analysis.aggregate.items()]))
            md.append("")
        for map_name, estimates in analysis.per_map.items():
            md.append(f"### {map_name}")
            md.append("")
            md.append(_table(["variant", "IQM of final score [95% CI]", "runs used", f"P(> {reference}) [95% CI]"],
                             [[f"`{v}`", _fmt(e), e.runs if e else 0, _fmt(analysis.per_map_poi[map_name].get(v))]
                              for v, e in estimates.items()]))
            md.append("")
        if any(analysis.best_evaluations.values()):
            md.append("Best mean evaluation (EPyMARL's maximum; biased upwards, see Method):")
            md.append("")
            md.append(_table(["map", "variant", "mean over runs [95% CI]", "evaluation (steps)", "runs"],
                             [[map_name, f"`{v}`", _fmt(best.estimate), f"{best.index} ({best.step_low:,.0f}"
                               + (f"-{best.step_high:,.0f})" if best.step_high != best.step_low else ")"),
                               best.estimate.runs]
                              for map_name, per_variant in analysis.best_evaluations.items()
                              for v, best in per_variant.items()]))
            md.append("")
        figures = []
        path = figures_dir / f"final_{m}.png"
        plot_final_scores(analysis, variants, path)
        figures.append(("Final scores (IQM, 95% CI; grey band: the reference's CI)", path))
        path = figures_dir / f"improvement_{m}.png"
        if plot_improvement(analysis, variants, path):
            figures.append((f"Probability of improvement over `{reference}`", path))
        path = figures_dir / f"curves_{m}.png"
        if plot_curves(analysis, variants, path):
            figures.append(("Sample-efficiency curves (IQM, 95% CI bands)", path))
        for caption, path in figures:
            md += [f"![{caption}]({_rel(path, out.parent)})", "", f"*{caption}.*", ""]
        if analysis.notes:
            md += ["Notes:", ""] + [f"- {note}" for note in analysis.notes] + [""]
    md += ["## Runs", ""]
    md.append(run_table(records, metrics, last_k))
    export_path = sweep_dir / MARL_EVAL_FILE
    write_json(export_path, marl_eval_export(spec, records, metrics, last_k))
    md += ["", f"Raw evaluations of the finished runs in marl-eval's layout: `{_rel(export_path, out.parent)}` "
           f"(`absolute_metrics` = the final score above).", ""]
    atomic_write_text(out, "\n".join(md))
    return out


def _rliable_version() -> str:
    try:
        from importlib.metadata import version

        return version("rliable")
    except Exception:  # metadata missing: report without a version
        return "(version unknown)"
