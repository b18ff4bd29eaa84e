"""The sweep report on fixed synthetic results: statistics against hand computations and slow
reference loops, the run table, the marl-eval export, the summary and the figures."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rliable", reason="the report needs the ablations extra: pip install rliable 'pandas<3'")

from qmixlab.ablations import cli, report, stats, sweep  # noqa: E402

VARIANTS = ["standard", "timeout_as_terminal", "drop_masked_rows"]
MAPS = ["3m", "2s3z"]
SEEDS = [0, 1, 2, 3, 4]
LEVEL = {"standard": 0.6, "timeout_as_terminal": 0.2, "drop_masked_rows": 0.6}
FAILED_RUN = "drop_masked_rows__2s3z__seed4"
MISSING_RUN = "timeout_as_terminal__3m__seed4"
INTERVAL = 2000


def curve(variant, map_name, seed):
    """Five evaluations; the last three (the final score) scatter around the variant's level."""
    rng = np.random.default_rng([VARIANTS.index(variant), MAPS.index(map_name), seed])
    tail = LEVEL[variant] + rng.uniform(-0.1, 0.1, size=3)
    return [0.0, LEVEL[variant] / 2, *tail.round(4)]


def hand_final(variant, map_name, seed):
    return float(np.mean(curve(variant, map_name, seed)[-3:]))


def write_run(run_dir, values, state="finished", error=None, steps=None):
    run_dir = Path(run_dir)
    folder = run_dir / "sacred" / "1"
    folder.mkdir(parents=True)
    steps = steps or [i * INTERVAL for i in range(len(values))]
    metrics = {"test_battle_won_mean": {"steps": steps, "values": values, "timestamps": ["t"] * len(values)},
               "test_return_mean": {"steps": steps, "values": [10 * v for v in values], "timestamps": ["t"] * len(values)}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "run.json").write_text(json.dumps({"status": "COMPLETED" if state == "finished" else "FAILED"}))
    (run_dir / "status.json").write_text(json.dumps({"state": state, "error": error, "duration_s": 12.5}))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    spec = sweep.parse_sweep({"name": "synthetic", "variants": VARIANTS, "maps": MAPS, "seeds": SEEDS}, validate=False)
    sweep.write_sweep_file(spec, root)
    for run in sweep.expand(spec, root):
        if run.run_id == MISSING_RUN:
            continue
        if run.run_id == FAILED_RUN:
            write_run(run.run_dir, [0.0], state="failed", error="RuntimeError: boom at step 3\nTraceback ...")
            continue
        write_run(run.run_dir, curve(run.variant, run.map_name, run.seed))
    # A run folder the sweep does not expect (e.g. a removed seed): listed, not used.
    write_run(root / "runs" / "standard__3m__seed9", [1.0, 1.0, 1.0])
    return root


@pytest.fixture(scope="module")
def built(sweep_dir):
    path = report.build_report(sweep_dir, reps=300, seed=0)
    return path, path.read_text()


@pytest.fixture(scope="module")
def analysis(sweep_dir):
    spec = sweep.read_sweep_file(sweep_dir)
    records = report.collect_runs(spec, sweep_dir)
    return report.analyse_metric(spec, records, "test_battle_won_mean", last_k=3, reps=300, seed=0)


def hand_iqm(values):
    """Mean of the middle 50%: drop floor(N/4) scores from each end."""
    values = np.sort(np.ravel(values))
    cut = int(np.floor(0.25 * values.size))
    return float(values[cut:values.size - cut].mean())


def hand_poi(x, y):
    """P(X > Y) per map by counting all pairs, ties half; averaged over maps (columns)."""
    per_map = []
    for j in range(x.shape[1]):
        wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x[:, j] for b in y[:, j])
        per_map.append(wins / (x.shape[0] * y.shape[0]))
    return float(np.mean(per_map))


def finals_matrix(variant, maps=MAPS, seeds=None):
    """runs x maps of hand-computed finals; per map the seeds with a finished run, truncated to
    the same count (the report's rule for the all-maps statistics)."""
    per_map = []
    for m in maps:
        present = [s for s in SEEDS if f"{variant}__{m}__seed{s}" not in (FAILED_RUN, MISSING_RUN)]
        per_map.append([hand_final(variant, m, s) for s in present])
    n = min(len(p) for p in per_map)
    return np.array([p[:n] for p in per_map]).T


# --------------------------------------------------------------------------- statistics
def test_final_score_is_the_mean_of_the_last_k_evaluations():
    assert stats.final_score([0, 1, 2, 3, 4], 3) == 3.0
    assert stats.final_score([5.0], 3) == 5.0  # fewer evaluations than K: all of them
    with pytest.raises(ValueError, match="last_k=0"):
        stats.final_score([1.0], 0)


def test_per_map_and_all_maps_iqm_match_a_hand_computation(analysis):
    for m in MAPS:
        for v in VARIANTS:
            expected = finals_matrix(v, maps=[m])
            assert analysis.per_map[m][v].point == pytest.approx(hand_iqm(expected), abs=1e-12)
            assert analysis.per_map[m][v].runs == expected.size
    assert analysis.aggregate_maps == MAPS
    for v in VARIANTS:
        matrix = finals_matrix(v)
        assert analysis.aggregate[v].point == pytest.approx(hand_iqm(matrix), abs=1e-12)
        assert analysis.aggregate[v].runs == matrix.size
    assert analysis.aggregate["timeout_as_terminal"].runs == 8  # 4 seeds x 2 maps: seed 4 of 2s3z left out
    assert any("first 4 seeds" in note and "timeout_as_terminal" in note for note in analysis.notes)


def reference_bootstrap_iqm(matrix, reps, rng):
    """Slow, obvious stratified bootstrap: resample runs with replacement within each map."""
    n, maps = matrix.shape
    samples = []
    for _ in range(reps):
        resampled = np.empty_like(matrix)
        for j in range(maps):
            for i in range(n):
                resampled[i, j] = matrix[rng.integers(n), j]
        samples.append(hand_iqm(resampled))
    return np.percentile(samples, [2.5, 97.5])


def test_stratified_bootstrap_ci_matches_a_slow_reference_loop():
    matrix = np.random.default_rng(7).normal(0.5, 0.15, size=(8, 3))
    estimate = stats.iqm_estimate(matrix, reps=4000, seed=11)
    low, high = reference_bootstrap_iqm(matrix, 4000, np.random.default_rng(3))
    assert estimate.point == pytest.approx(hand_iqm(matrix))
    assert estimate.low == pytest.approx(low, abs=0.01) and estimate.high == pytest.approx(high, abs=0.01)
    assert estimate.low < estimate.point < estimate.high


def test_bootstrap_is_reproducible_and_leaves_numpys_global_generator_alone():
    matrix = np.random.default_rng(1).uniform(size=(6, 2))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = stats.iqm_estimate(matrix, reps=500, seed=5)
    assert np.array_equal(np.random.get_state()[1], before)
    assert stats.iqm_estimate(matrix, reps=500, seed=5) == first
    assert stats.iqm_estimate(matrix, reps=500, seed=6) != first


def test_probability_of_improvement_matches_brute_force_pair_counting(analysis):
    reference = finals_matrix("standard")
    for v in ("timeout_as_terminal", "drop_masked_rows"):
        assert analysis.aggregate_poi[v].point == pytest.approx(hand_poi(finals_matrix(v), reference), abs=1e-12)
        for m in MAPS:
            expected = hand_poi(finals_matrix(v, maps=[m]), finals_matrix("standard", maps=[m]))
            assert analysis.per_map_poi[m][v].point == pytest.approx(expected, abs=1e-12)
    assert analysis.aggregate_poi["timeout_as_terminal"].point == 0.0
    # Ties count half.
    ties = np.array([[1.0], [1.0]])
    assert stats.improvement_estimate(ties, np.array([[1.0], [0.0], [2.0]]), reps=50).point == pytest.approx(0.5)


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (5, 2), (7, 3), (10, 4)])
def test_interquartile_mean_is_rliables(shape):
    from rliable import metrics

    scores = np.random.default_rng(sum(shape)).random(shape)
    assert stats.interquartile_mean(scores) == pytest.approx(metrics.aggregate_iqm(scores), abs=1e-12)
    assert stats.interquartile_mean(scores) == pytest.approx(hand_iqm(scores), abs=1e-12)
    cube = np.random.default_rng(1).random((*shape, 4))
    per_point = stats.interquartile_mean(cube.reshape(-1, 4), axis=0)
    assert per_point == pytest.approx([metrics.aggregate_iqm(cube[..., k]) for k in range(4)], abs=1e-12)


@pytest.mark.parametrize("shape_x, shape_y, levels", [((5, 2), (5, 2), 0), ((4, 3), (6, 3), 0), ((5, 2), (3, 2), 3)])
def test_probability_of_improvement_is_rliables(shape_x, shape_y, levels):
    from rliable import metrics

    rng = np.random.default_rng(sum(shape_x) + levels)
    draw = (lambda shape: rng.integers(levels, size=shape).astype(float)) if levels else rng.random
    x, y = draw(shape_x), draw(shape_y)  # with levels: many ties
    assert stats.probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y), abs=1e-12)
    assert stats.probability_of_improvement(x, x) == pytest.approx(0.5)


def test_probability_of_improvement_ci_matches_a_slow_reference_loop():
    rng = np.random.default_rng(4)
    x, y = rng.normal(0.55, 0.1, size=(6, 2)), rng.normal(0.5, 0.1, size=(5, 2))
    estimate = stats.improvement_estimate(x, y, reps=3000, seed=2)
    loop_rng, samples = np.random.default_rng(9), []
    for _ in range(3000):
        xs = np.stack([x[loop_rng.integers(6, size=6), j] for j in range(2)], axis=1)
        ys = np.stack([y[loop_rng.integers(5, size=5), j] for j in range(2)], axis=1)
        samples.append(hand_poi(xs, ys))
    low, high = np.percentile(samples, [2.5, 97.5])
    assert estimate.point == pytest.approx(hand_poi(x, y), abs=1e-12)
    assert estimate.low == pytest.approx(low, abs=0.03) and estimate.high == pytest.approx(high, abs=0.03)


def test_curves_interpolate_runs_onto_a_common_grid():
    series = [(np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0])),
              (np.array([5.0, 15.0, 25.0]), np.array([0.0, 1.0, 2.0]))]
    grid = stats.common_grid(series, points=3)
    assert grid.tolist() == [5.0, 12.5, 20.0]
    assert stats.interpolate(*series[0], grid).tolist() == [0.5, 1.25, 2.0]
    cube = np.stack([np.stack([stats.interpolate(s, v, grid) for s, v in series])], axis=1)  # 2 runs x 1 map x 3
    point, low, high = stats.iqm_curve(cube, reps=100, seed=0)
    assert point.tolist() == pytest.approx([0.25, 1.0, 1.75])  # 2 runs: nothing trimmed
    assert np.all(low <= point) and np.all(point <= high)


# --------------------------------------------------------------------------- the report
def test_run_table_lists_failed_missing_and_unexpected_runs(built, sweep_dir):
    _, text = built
    runs = text[text.index("## Runs"):]
    assert f"| `{FAILED_RUN}` | drop_masked_rows | 2s3z | 4 | failed |" in runs
    assert "RuntimeError: boom at step 3 |" in runs
    assert f"| `{MISSING_RUN}` | timeout_as_terminal | 3m | 4 | missing |" in runs
    assert "`standard__3m__seed9`" in runs and "not in sweep.yaml; not used" in runs
    assert "30 expected; 28 finished, 1 failed, 0 running, 0 interrupted, 1 missing" in text
    # Failed and missing rows come before the finished ones.
    assert runs.index(FAILED_RUN) < runs.index("standard__3m__seed0")


def test_report_tables_state_runs_used_and_hand_values(built):
    _, text = built
    iqm = hand_iqm(finals_matrix("standard"))
    assert f"| `standard` | {iqm:.3f} [" in text
    assert "| `timeout_as_terminal` | " in text and "| 8 | 0.000 [" in text  # 8 runs used, PoI 0
    assert "last 3 test evaluations" in text and "300 resamples" in text and "rliable" in text


def test_summary_names_the_differences_mechanically(built):
    _, text = built
    summary = text[text.index("## Summary"):text.index("## Method")]
    lower = next(line for line in summary.splitlines() if "**lower**" in line)
    overlap = next(line for line in summary.splitlines() if "overlaps the reference" in line)
    higher = next(line for line in summary.splitlines() if "**higher**" in line)
    assert "`timeout_as_terminal`" in lower and "`drop_masked_rows`" not in lower
    assert "`drop_masked_rows`" in overlap and higher.endswith("none.")
    assert "Sanity check `drop_masked_rows`" in summary and "as expected" in summary


def test_marl_eval_export_layout(built, sweep_dir):
    data = json.loads((sweep_dir / "marl_eval.json").read_text())
    assert list(data) == ["smacsim"]
    assert set(data["smacsim"]) == set(MAPS)
    assert set(data["smacsim"]["3m"]) == set(VARIANTS)
    assert set(data["smacsim"]["3m"]["timeout_as_terminal"]) == {"seed_0", "seed_1", "seed_2", "seed_3"}
    assert "seed_4" not in data["smacsim"]["2s3z"]["drop_masked_rows"]  # failed: not exported
    run = data["smacsim"]["2s3z"]["standard"]["seed_1"]
    values = curve("standard", "2s3z", 1)
    assert list(run) == [f"step_{i}" for i in range(5)] + ["absolute_metrics"]
    assert run["step_2"] == {"step_count": 2 * INTERVAL, "test_battle_won_mean": [values[2]],
                             "test_return_mean": [pytest.approx(10 * values[2])]}
    assert run["absolute_metrics"]["test_battle_won_mean"] == [pytest.approx(hand_final("standard", "2s3z", 1))]


def test_figures_are_written_and_linked(built, sweep_dir):
    path, text = built
    for name in ("final", "improvement", "curves"):
        for metric in ("test_battle_won_mean", "test_return_mean"):
            figure = sweep_dir / "figures" / f"{name}_{metric}.png"
            assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"](figures/{name}_{metric}.png)" in text
    assert path == sweep_dir / "report.md"


def test_runs_with_different_evaluation_steps_share_a_curve_grid(tmp_path):
    spec = sweep.parse_sweep({"name": "grid", "variants": ["standard"], "maps": ["3m"], "seeds": [0, 1]}, validate=False)
    sweep.write_sweep_file(spec, tmp_path)
    first, second = sweep.expand(spec, tmp_path)
    write_run(first.run_dir, [0.0, 0.5, 1.0], steps=[0, 1000, 2000])
    write_run(second.run_dir, [0.0, 1.0], steps=[100, 1600])
    records = report.collect_runs(spec, tmp_path)
    analysis = report.analyse_metric(spec, records, "test_battle_won_mean", last_k=1, reps=50, seed=0)
    grid, curves = analysis.curves["3m"]
    assert grid[0] == 100 and grid[-1] == 1600
    point = curves["standard"][0]
    assert point[0] == pytest.approx((0.05 + 0.0) / 2) and point[-1] == pytest.approx((0.8 + 1.0) / 2)


def test_cli_report_with_another_headline_metric(sweep_dir, tmp_path, capsys):
    out = tmp_path / "r.md"
    assert cli.main(["report", str(sweep_dir), "--metric", "test_return_mean", "--out", str(out), "--reps", "100"]) == 0
    text = out.read_text()
    assert "On `test_return_mean`" in text
    assert "figures/final_test_return_mean.png" in text
    assert str(out) in capsys.readouterr().out


def test_report_of_a_folder_without_sweep_file_fails_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", str(tmp_path)])
    assert exit_info.value.code == 2 and "has no sweep.yaml" in capsys.readouterr().err


def test_runs_copied_from_another_machine_join_the_sweep_when_their_variant_matches(tmp_path):
    spec = sweep.parse_sweep({"name": "copy", "variants": ["standard", "filled_only"], "maps": ["3m"], "seeds": [0]}, validate=False)
    sweep.write_sweep_file(spec, tmp_path)
    for run in sweep.expand(spec, tmp_path):
        write_run(run.run_dir, [0.5, 0.5, 0.5])
    # Another machine ran seed 7 of standard with the same definition, and a different "filled_only".
    other = sweep.parse_sweep({"name": "copy", "variants": ["standard", {"filled_only": {"t_max": 5}}], "maps": ["3m"],
                               "seeds": [7]}, validate=False)
    for run in sweep.expand(other, tmp_path):
        write_run(run.run_dir, [0.9, 0.9, 0.9])
        (Path(run.run_dir) / "run_spec.json").write_text(json.dumps(run.to_dict()))
    text = report.build_report(tmp_path, reps=50).read_text()
    assert "Note: seed 7 (found in `standard__3m__seed7`, not in sweep.yaml) is part of the sweep." in text
    assert "| `standard__3m__seed7` | standard | 3m | 7 | finished |" in text
    # Its "filled_only" is another definition: listed, not used.
    assert "| `filled_only__3m__seed7` | filled_only | 3m | 7 | conflicting |" in text
    assert "4 expected; 3 finished, 0 failed, 0 running, 0 interrupted, 0 missing, 1 conflicting" in text


# --------------------------------------------------------------------------- plateau check
def test_score_at_fraction_averages_the_evaluations_up_to_the_cut():
    steps, values = np.array([0, 2000, 4000, 6000, 8000]), np.array([0.0, 0.3, 0.5, 0.7, 0.9])
    cut, score = report.score_at_fraction(steps, values, 0.8, last_k=3)  # cut at 6400: evaluations 0..6000
    assert cut == 6400 and score == pytest.approx((0.3 + 0.5 + 0.7) / 3)
    assert report.score_at_fraction(steps, values, 1.0, last_k=2)[1] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="fraction=0"):
        report.score_at_fraction(steps, values, 0, last_k=3)
    with pytest.raises(ValueError, match="no evaluation at or before step 50"):
        report.score_at_fraction(np.array([100, 200]), np.array([0.1, 0.2]), 0.25, last_k=1)


def test_plateau_check_scores_the_reference_stopped_earlier(analysis, built):
    # Five evaluations 2000 apart: stopped at 80% of 8000 (6400), the last three are evaluations 1-3.
    for m in MAPS:
        check = analysis.reference_earlier[m]
        earlier = [np.mean(curve("standard", m, s)[1:4]) for s in SEEDS]
        gains = [hand_final("standard", m, s) - e for s, e in zip(SEEDS, earlier)]
        assert check.cut_step == pytest.approx(6400)
        assert check.earlier.point == pytest.approx(hand_iqm(earlier))
        assert check.gain.point == pytest.approx(hand_iqm(gains))
    # The synthetic reference rises from level/2 to its level in every run: still improving.
    _, text = built
    line = next(line for line in text.splitlines() if line.startswith("- Plateau check on 3m"))
    check = analysis.reference_earlier["3m"]
    assert f"scored {check.earlier.text()} with its runs stopped at 80%" in line
    assert f"{analysis.per_map['3m']['standard'].text()} at the end" in line
    assert f"gain {check.gain.text()}: **still improving**" in line


def test_plateau_verdict_follows_the_interval_of_the_gain():
    def check(low, high):
        return report.PlateauCheck(400.0, stats.Estimate(0.9, 0.8, 1.0, 5), stats.Estimate((low + high) / 2, low, high, 5))
    end = stats.Estimate(0.9, 0.8, 1.0, 5)
    analysis = report.MetricAnalysis("m", 3, {}, {m: {"standard": end} for m in ("a", "b", "c")}, {}, [], {}, {}, {}, [],
                                     {"a": check(-0.05, 0.1), "b": check(0.01, 0.2), "c": check(-0.2, -0.01)})
    flat, rising, falling = report.plateau_sentences(analysis)
    assert "no change detected" in flat and "a gain of up to 0.1 is not ruled out" in flat and "**still improving**" in rising and "**degrading**" in falling


def test_a_single_map_sweep_reports_one_interval_for_its_all_maps_and_per_map_tables(tmp_path):
    """With one map, "all maps" is that map: the same estimates, not a second bootstrap draw that
    would print a different CI for the same quantity."""
    spec = sweep.parse_sweep({"name": "one", "variants": ["standard", "timeout_as_terminal"], "maps": ["3m"],
                              "seeds": SEEDS}, validate=False)
    sweep.write_sweep_file(spec, tmp_path)
    for run in sweep.expand(spec, tmp_path):
        write_run(run.run_dir, curve(run.variant, run.map_name, run.seed))
    records = report.collect_runs(spec, tmp_path)
    analysis = report.analyse_metric(spec, records, "test_battle_won_mean", last_k=3, reps=200, seed=0)
    assert analysis.aggregate_maps == ["3m"]
    for v in ("standard", "timeout_as_terminal"):
        assert analysis.aggregate[v] == analysis.per_map["3m"][v]
        assert analysis.aggregate[v].point == pytest.approx(hand_iqm([hand_final(v, "3m", s) for s in SEEDS]))
    assert analysis.aggregate_poi["timeout_as_terminal"] == analysis.per_map_poi["3m"]["timeout_as_terminal"]
    assert "standard" not in analysis.aggregate_poi


def test_report_on_a_folder_of_sweeps_writes_one_report_per_sweep(tmp_path, capsys):
    """As `qmixlab report results/ablations/masks-smacsim` (a folder holding several sweep folders)."""
    for name, level in (("3m", 0.8), ("2s3z", 0.4)):
        spec = sweep.parse_sweep({"name": f"masks-{name}", "variants": ["standard", "filled_only"], "maps": [name],
                                  "seeds": [0, 1]}, validate=False)
        sweep.write_sweep_file(spec, tmp_path / name)
        for run in sweep.expand(spec, tmp_path / name):
            write_run(run.run_dir, [0.0, level, level, level])
    (tmp_path / "README.md").write_text("kept by hand\n")
    (tmp_path / "notes").mkdir()  # a folder without sweep.yaml is not a sweep
    assert cli.main(["report", str(tmp_path), "--reps", "50"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"2s3z: wrote {tmp_path / '2s3z' / 'report.md'}", f"3m: wrote {tmp_path / '3m' / 'report.md'}",
                   f"2 sweep reports written under {tmp_path}"]
    for name in ("3m", "2s3z"):
        text = (tmp_path / name / "report.md").read_text()
        assert f"# Ablation report: masks-{name}" in text and "4 expected; 4 finished" in text
    assert not (tmp_path / "report.md").exists()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", str(tmp_path), "--out", str(tmp_path / "r.md")])
    assert exit_info.value.code == 2 and "holds 2 sweeps (2s3z, 3m); --out names one report file" in capsys.readouterr().err


def test_a_sweep_without_standard_compares_its_variants_with_the_first(tmp_path):
    """A learning sweep (variants qmix, vdn, iql): the first variant is the reference."""
    spec = sweep.parse_sweep({"name": "algs", "variants": [{"qmix": {}}, {"vdn": {"mixer": {"name": "vdn"}}}],
                              "maps": ["3m"], "seeds": [0, 1, 2]}, validate=False)
    sweep.write_sweep_file(spec, tmp_path)
    for run in sweep.expand(spec, tmp_path):
        level = 0.9 if run.variant == "qmix" else 0.1
        write_run(run.run_dir, [0.0, level, level, level])
    assert report.reference_variant(list(spec.variants)) == "qmix"
    text = report.build_report(tmp_path, reps=100, seed=0).read_text()
    assert "`qmix` scores 0.900" in text and "**lower** than the reference: `vdn`" in text
    assert "P(X > qmix)" in text and "`standard`" not in text.split("## Variants")[0]


# --------------------------------------------------------------------------- EPyMARL's maximum
def slow_best_mean_evaluation(series):
    """Plain loops: cut every run to the shortest, mean over runs per evaluation, first maximum."""
    n = min(len(values) for _, values in series)
    best_index, best_mean = None, None
    for k in range(n):
        mean = sum(values[k] for _, values in series) / len(series)
        if best_mean is None or mean > best_mean:
            best_index, best_mean = k, mean
    return best_index, best_mean


def test_best_mean_evaluation_matches_a_slow_reference_and_brackets_its_mean():
    rng = np.random.default_rng(3)
    series = []
    for length in (9, 8, 10):  # the shortest run decides how many evaluations count
        values = np.cumsum(rng.normal(0.1, 0.3, size=length))
        steps = np.arange(length) * 50_000 + rng.integers(0, 500)
        series.append((steps, values))
    best = stats.best_mean_evaluation(series, reps=400, seed=1)
    index, mean = slow_best_mean_evaluation(series)
    assert best.index == index
    assert best.estimate.point == pytest.approx(mean)
    assert best.estimate.low <= mean <= best.estimate.high
    assert best.estimate.runs == 3
    assert best.step_low == min(s[index] for s, _ in series) and best.step_high == max(s[index] for s, _ in series)
    # the choice follows the mean over runs: one run's outlier at the first evaluation moves it there
    peaked = [(s, v.copy()) for s, v in series]
    peaked[0][1][0] = 100.0
    assert stats.best_mean_evaluation(peaked, reps=50).index == 0
    with pytest.raises(ValueError, match="no runs"):
        stats.best_mean_evaluation([])


def test_best_mean_evaluation_ci_matches_a_slow_bootstrap_of_the_mean():
    values = np.array([0.2, 0.5, 0.9, 0.4, 0.7])
    series = [(np.array([0, 1]), np.array([0.0, v])) for v in values]
    best = stats.best_mean_evaluation(series, reps=2000, seed=5)
    rng = np.random.default_rng(0)
    means = [values[rng.integers(0, 5, size=5)].mean() for _ in range(4000)]
    low, high = np.percentile(means, [2.5, 97.5])
    assert best.index == 1
    assert best.estimate.low == pytest.approx(low, abs=0.04)
    assert best.estimate.high == pytest.approx(high, abs=0.04)


def test_report_lists_the_best_mean_evaluation_per_map_and_variant(built, analysis):
    _, text = built
    assert "Best mean evaluation (EPyMARL's maximum" in text
    # synthetic curves rise to their level in the last three evaluations: the best is one of them
    best = analysis.best_evaluations["3m"]["standard"]
    finals = [curve("standard", "3m", s) for s in SEEDS]
    index, mean = slow_best_mean_evaluation([(None, c) for c in finals])
    assert best.index == index and best.estimate.point == pytest.approx(mean)
    assert f"| 3m | `standard` | {best.estimate.text()}" in text
