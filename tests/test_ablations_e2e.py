"""A tiny sweep through the real command line: `qmixlab ablate` (2 variants x 1 map x 2 seeds,
a few thousand environment steps each, real training subprocesses), then `qmixlab report`.

Skipped only while `python -m qmixlab print_config` itself fails (the training stack is not
importable yet); a failing training run fails this test with the runs' errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _cli_works() -> bool:
    probe = subprocess.run([sys.executable, "-m", "qmixlab", "print_config"], capture_output=True, text=True,
                           cwd=ROOT, timeout=300)
    return probe.returncode == 0


def ablate_until_finished(sweep_file, out, workers, timeout):
    """``qmixlab ablate`` through the real command line; every run must finish. Returns each
    run's ``status.json`` by run id, and what the command printed."""
    ablate = subprocess.run(
        [sys.executable, "-m", "qmixlab", "ablate", str(sweep_file), "--out", str(out), "--workers", str(workers),
         "--no-progress"], capture_output=True, text=True, timeout=timeout, cwd=Path(sweep_file).parent)
    statuses = {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(out).glob("runs/*/status.json"))}
    errors = {rid: s.get("error") for rid, s in statuses.items() if s["state"] != "finished"}
    assert ablate.returncode == 0 and not errors, f"{ablate.stdout}\n{ablate.stderr}\nrun errors: {errors}"
    return statuses, ablate.stdout


@pytest.mark.slow
def test_tiny_sweep_through_the_real_cli_then_report(tmp_path):
    if not _cli_works():
        pytest.skip("`python -m qmixlab print_config` fails: the training CLI is not usable yet")
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "tiny", "alg": "qmix", "env": "smacsim",
        "base": {"t_max": 3000, "test_interval": 1000, "log_interval": 1000, "test_nepisode": 4,
                 "batch_size_run": 4, "batch_size": 8, "buffer_size": 64, "save_model": False},
        "variants": ["standard", "timeout_as_terminal"], "maps": ["3m"], "seeds": [0, 1],
        "seeds_per_process": 1,  # one process per run: the single-run command line (groups: the test below)
    }))
    out = tmp_path / "sweep"
    statuses, printed = ablate_until_finished(sweep_file, out, workers=2, timeout=1500)
    assert len(statuses) == 4
    for run_id, status in statuses.items():
        assert status["command"][1:4] == ["-m", "qmixlab", "-F"] and "progress_bar=False" in status["command"]
        metrics = json.loads(next((out / "runs" / run_id / "sacred").glob("*/metrics.json")).read_text())
        assert metrics["test_battle_won_mean"]["steps"], run_id

    again = subprocess.run([sys.executable, "-m", "qmixlab", "ablate", str(sweep_file), "--out", str(out), "--no-progress"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0 and "4 already finished" in again.stdout, again.stdout + again.stderr

    pytest.importorskip("rliable", reason="the report needs the ablations extra: pip install rliable 'pandas<3'")
    report = subprocess.run([sys.executable, "-m", "qmixlab", "report", str(out), "--reps", "200"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    text = (out / "report.md").read_text()
    assert "4 expected; 4 finished" in text and "## Summary" in text
    assert (out / "figures" / "curves_test_battle_won_mean.png").exists()
    assert set(json.loads((out / "marl_eval.json").read_text())["smacsim"]["3m"]) == {"standard", "timeout_as_terminal"}


@pytest.mark.slow
def test_the_seeds_of_a_variant_train_in_one_real_process_each_recorded_as_its_own_run(tmp_path):
    if not _cli_works():
        pytest.skip("`python -m qmixlab print_config` fails: the training CLI is not usable yet")
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "tiny-groups", "alg": "qmix", "env": "smacsim",
        "base": {"t_max": 2000, "test_interval": 1000, "log_interval": 1000, "test_nepisode": 4,
                 "batch_size_run": 4, "batch_size": 8, "buffer_size": 64, "save_model": False},
        "variants": ["standard"], "maps": ["3m"], "seeds": [0, 1, 2],  # seeds_per_process: the default, 5
    }))
    out = tmp_path / "sweep"
    statuses, printed = ablate_until_finished(sweep_file, out, workers=1, timeout=1500)
    assert "3 to run in 1 process" in printed
    members = [f"standard__3m__seed{seed}" for seed in (0, 1, 2)]
    assert sorted(statuses) == members
    logs = set()
    for seed, run_id in enumerate(members):
        status, folder = statuses[run_id], out / "runs" / run_id
        assert status["group"] == members and status["command"][1:4] == ["-m", "qmixlab", "with"]
        assert "seeds=[0, 1, 2]" in status["command"] and "-F" not in status["command"]
        (sacred,) = (run_json.parent for run_json in folder.glob("sacred/*/run.json"))  # beside sacred/_sources/
        assert json.loads((sacred / "run.json").read_text())["status"] == "COMPLETED"
        assert json.loads((sacred / "config.json").read_text())["seed"] == seed
        assert json.loads((sacred / "metrics.json").read_text())["test_battle_won_mean"]["steps"], run_id
        logs.add(((folder / "stdout.log").read_text(), (folder / "stderr.log").read_text()))
    assert len(logs) == 1  # the one process's output, in every member's folder

    again = subprocess.run([sys.executable, "-m", "qmixlab", "ablate", str(sweep_file), "--out", str(out), "--no-progress"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0 and "3 already finished" in again.stdout, again.stdout + again.stderr


@pytest.mark.slow
def test_a_sweep_on_another_family_sets_its_task_and_reports_the_return(tmp_path):
    """MPE through the real command line: ``maps`` sets env_args.task, the seeds of a variant
    train in one process, and the report's headline is the return (MPE has no battles)."""
    if not _cli_works():
        pytest.skip("`python -m qmixlab print_config` fails: the training CLI is not usable yet")
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "tiny-mpe", "alg": "qmix", "env": "mpe",
        "base": {"t_max": 600, "test_interval": 200, "log_interval": 200, "test_nepisode": 4,
                 "batch_size_run": 4, "batch_size": 8, "buffer_size": 64, "save_model": False,
                 "env_args": {"max_cycles": 10}},
        "variants": ["standard", "timeout_as_terminal"], "maps": ["simple_spread_v3"], "seeds": [0, 1],
    }))
    out = tmp_path / "sweep"
    statuses, printed = ablate_until_finished(sweep_file, out, workers=1, timeout=900)
    assert len(statuses) == 4 and all(len(s["group"]) == 2 for s in statuses.values())
    for run_id in statuses:
        config = json.loads(next((out / "runs" / run_id / "sacred").glob("*/config.json")).read_text())
        assert config["env_args"]["task"] == "simple_spread_v3" and "map_name" not in config["env_args"]

    pytest.importorskip("rliable", reason="the report needs the ablations extra: pip install rliable 'pandas<3'")
    report = subprocess.run([sys.executable, "-m", "qmixlab", "report", str(out), "--reps", "100"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "- On `test_return_mean`" in (out / "report.md").read_text()
