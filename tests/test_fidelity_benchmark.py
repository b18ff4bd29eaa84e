"""benchmarks/fidelity.py: interval code against slow references, the comparison logic, and a
smoke run against SMAClite when it is installed (skipped, with the reason, when it is not)."""

import importlib.util
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "fidelity.py"
_spec = importlib.util.spec_from_file_location("fidelity_benchmark", _PATH)
fidelity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fidelity)


def slow_wilson(successes, n, z=fidelity.Z95, steps=200_000):
    """The Wilson interval by definition: every p whose score test does not reject, on a grid."""
    p_hat = successes / n
    grid = np.linspace(0.0, 1.0, steps + 1)
    inside = [p for p in grid
              if p in (0.0, 1.0) and p == p_hat
              or 0 < p < 1 and abs(p_hat - p) <= z * math.sqrt(p * (1 - p) / n)]
    return min(inside), max(inside)


@pytest.mark.parametrize("successes,n", [(0, 10), (3, 10), (10, 10), (57, 200), (1, 3)])
def test_wilson_matches_score_test_inversion(successes, n):
    lo, hi = fidelity.wilson_interval(successes, n)
    ref_lo, ref_hi = slow_wilson(successes, n, steps=20_000)
    assert lo == pytest.approx(ref_lo, abs=1e-4)
    assert hi == pytest.approx(ref_hi, abs=1e-4)


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError, match="successes=11, n=10"):
        fidelity.wilson_interval(11, 10)


def test_newcombe_difference_is_built_from_the_two_wilson_intervals():
    s1, n1, s2, n2 = 30, 50, 12, 40
    l1, u1 = slow_wilson(s1, n1, steps=20_000)
    l2, u2 = slow_wilson(s2, n2, steps=20_000)
    p1, p2 = s1 / n1, s2 / n2
    ref = (p1 - p2 - math.hypot(p1 - l1, u2 - p2), p1 - p2 + math.hypot(u1 - p1, p2 - l2))
    got = fidelity.newcombe_difference(s1, n1, s2, n2)
    assert got == pytest.approx(ref, abs=2e-4)
    assert got[0] > 0  # 0.60 against 0.30 at these sizes is beyond noise


def exact_bootstrap_quantiles(x, level=0.95):
    """Every one of the n^n resamples, equally likely: the exact bootstrap distribution."""
    means = sorted(sum(s) / len(x) for s in itertools.product(x, repeat=len(x)))
    tail = (1 - level) / 2
    return np.quantile(means, tail), np.quantile(means, 1 - tail)


def test_bootstrap_mean_interval_approaches_the_exact_bootstrap():
    x = [1.0, 4.0, 6.0, 13.0, 20.0]
    lo, hi = fidelity.bootstrap_mean_interval(x, np.random.default_rng(0), reps=100_000)
    ref_lo, ref_hi = exact_bootstrap_quantiles(x)
    assert lo == pytest.approx(ref_lo, abs=0.25)
    assert hi == pytest.approx(ref_hi, abs=0.25)


def test_bootstrap_difference_of_shifted_samples_is_centred_on_the_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(10.0, 1.0, 400)
    lo, hi = fidelity.bootstrap_difference_interval(a + 3.0, a, rng)
    assert lo < 3.0 < hi and hi - lo < 0.5


def test_compare_flags_real_differences_and_not_identical_samples():
    rng = np.random.default_rng(2)
    same = {m: rng.integers(0, 2, 200).tolist() for m in fidelity.METRICS}
    result = fidelity.compare(same, same)
    assert not any(r["differs"] for r in result.values())
    other = dict(same, won=[1.0] * 200, length=[v + 5 for v in same["length"]])
    result = fidelity.compare(other, same)
    assert result["won"]["differs"] and result["length"]["differs"]
    assert not result["damage_dealt"]["differs"]
    assert result["won"]["ours"] == 1.0 and result["won"]["ours_ci"][1] == 1.0


def test_smacsim_runner_records_what_happened():
    rec = fidelity.run_smacsim("3m", "stop", episodes=4, seed=0)
    # Standing still, the allies never shoot: no damage dealt, every ally dies (3m is short).
    assert rec["damage_dealt"] == [0.0] * 4 and rec["enemies_killed"] == [0.0] * 4
    assert rec["allies_lost"] == [3.0] * 4 and rec["won"] == [0.0] * 4
    assert all(t == pytest.approx(3 * 45.0) for t in rec["damage_taken"])
    heur = fidelity.run_smacsim("3m", "smac_heuristic", episodes=4, seed=0)
    assert all(0 < d <= 3 * 45.0 + 1e-3 for d in heur["damage_dealt"])
    assert all(k == 3 for k, w in zip(heur["enemies_killed"], heur["won"]) if w)


def test_run_is_resumable_and_table_compares_both_simulators(tmp_path, monkeypatch):
    calls = []

    def fake(sim):
        def runner(map_name, policy, episodes, seed):
            calls.append((map_name, policy, sim))
            return {m: [float(sim == "smacsim")] * episodes for m in fidelity.METRICS}
        return runner

    monkeypatch.setattr(fidelity, "RUNNERS", {s: fake(s) for s in fidelity.SIMULATORS})
    fidelity.run(["2s3z"], ["stop"], fidelity.SIMULATORS, 5, 0, tmp_path)
    fidelity.run(["2s3z"], ["stop"], fidelity.SIMULATORS, 5, 0, tmp_path)
    assert calls == [("2s3z", "stop", "smacsim"), ("2s3z", "stop", "smaclite")]
    saved = json.loads(fidelity.result_path(tmp_path, "2s3z", "stop", "smacsim").read_text())
    assert saved["won"] == [1.0] * 5 and saved["map"] == "2s3z"
    rows = fidelity.table(tmp_path).splitlines()[2:]
    assert len(rows) == len(fidelity.METRICS)
    assert all("| 2s3z | stop | 5 / 5 |" in r and r.endswith("**yes** |") for r in rows)


def test_smoke_against_smaclite(tmp_path):
    why = fidelity.smaclite_available()
    if why:
        pytest.skip(f"SMAClite is not importable ({why}). Install it from its source tree as "
                    "results/fidelity/README.md describes to run this test.")
    fidelity.run(["2s3z"], fidelity.POLICIES, fidelity.SIMULATORS, 1, 0, tmp_path)
    for policy in fidelity.POLICIES:
        rec = json.loads(fidelity.result_path(tmp_path, "2s3z", policy, "smaclite").read_text())
        assert len(rec["won"]) == 1 and 0 < rec["length"][0] <= 120
        assert 0 <= rec["allies_lost"][0] <= 5 and 0 <= rec["enemies_killed"][0] <= 5
    stop = json.loads(fidelity.result_path(tmp_path, "2s3z", "stop", "smaclite").read_text())
    assert stop["damage_dealt"] == [0.0] and stop["won"] == [0.0]
    assert "| 2s3z | smac_heuristic | 1 / 1 | won |" in fidelity.table(tmp_path)
