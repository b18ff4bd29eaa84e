"""A rerun sweep continues its interrupted runs from their checkpoints instead of starting them
over: which attempts continue (interrupted, same run spec, a complete checkpoint of the run's
seed), what stays in the run folder, the command (single runs and groups), and, through the real
command line, that a sweep killed mid-run and rerun ends where an uninterrupted sweep ends."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qmixlab.ablations import cli, execution, sweep
from qmixlab.ablations.execution import run_state, run_sweep
from qmixlab.checkpoints import save_checkpoint


def spec_of(seeds=(0,), base=None):
    return sweep.parse_sweep({"name": "resume", "base": base or {"t_max": 1000}, "variants": ["standard"],
                              "maps": ["3m"], "seeds": list(seeds)}, validate=False)


def quiet(*args):
    pass


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def leave_interrupted(run, steps=(0, 500), seed=None, spec=None):
    """A run folder as a sweep killed mid-run leaves it: its spec, a status still saying running
    (for a pid that is gone), an unfinished sacred run, and complete checkpoints at ``steps``
    recording ``seed`` (the run's own by default)."""
    run_dir = Path(run.run_dir)
    (run_dir / "sacred" / "1").mkdir(parents=True)
    (run_dir / "sacred" / "1" / "run.json").write_text(json.dumps({"status": "RUNNING"}))
    (run_dir / "stderr.log").write_text("first attempt's output\n")
    (run_dir / "run_spec.json").write_text(json.dumps(spec or run.to_dict()))
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "attempt": 1, "host": execution.host_name(),
                                                    "pid": dead_pid()}))
    models = run_dir / "models" / "qmix_3m_seed_1"
    for step in steps:
        save_checkpoint(models, step, {"settings": {"seed": run.seed if seed is None else seed}})
    return models


def completing_executor(seen):
    """A single-run executor that notes what the run folder held when it started."""
    def executor(run):
        run_dir = Path(run.run_dir)
        seen.append({"resume_from": run.resume_from, "command": sweep.build_command(run),
                     "first_sacred_run": (run_dir / "sacred" / "1").is_dir(), "models": (run_dir / "models").is_dir()})
        folder = run_dir / "sacred" / str(len(list((run_dir / "sacred").glob("[0-9]*"))) + 1)
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"status": "COMPLETED"}))
    return executor


def run_once(runs, tmp_path, executor, **options):
    return run_sweep(runs, tmp_path, executor=executor, workers=1, progress=False, log=quiet,
                     seeds_per_process=1, **options)


def read_status(run):
    return json.loads((Path(run.run_dir) / "status.json").read_text())


# --------------------------------------------------------------------------- which attempts continue
def test_an_interrupted_run_continues_its_latest_checkpoint_folder_and_keeps_its_past(tmp_path):
    (run,) = sweep.expand(spec_of(), tmp_path)
    models = leave_interrupted(run)
    assert run_state(run.run_dir).state == "interrupted"
    seen = []
    result = run_once([run], tmp_path, completing_executor(seen))
    assert [o["result"] for o in result.outcomes] == ["finished"]
    assert seen[0]["resume_from"] == str(models) and seen[0]["first_sacred_run"] and seen[0]["models"]
    assert seen[0]["command"][-1] == f"checkpoint_path={sweep.format_value(str(models))}"
    assert seen[0]["command"][:-1] == sweep.build_command(run)  # otherwise the run's own command
    status = read_status(run)
    assert status["attempt"] == 2 and status["resumed_from"] == str(models) and status["command"] == seen[0]["command"]
    assert (Path(run.run_dir) / "sacred" / "1").is_dir() and execution.sacred_run_dir(run.run_dir).name == "2"
    assert run_state(run.run_dir).state == "finished"


def test_the_sweep_says_how_many_runs_continue(tmp_path):
    runs = sweep.expand(spec_of(seeds=[0, 1, 2]), tmp_path)
    for run in runs[:2]:
        leave_interrupted(run)
    said = []
    run_sweep(runs, tmp_path, executor=completing_executor([]), workers=1, progress=False, log=said.append,
              seeds_per_process=1)
    assert said[0].startswith("3 runs: 3 to run (2 continuing from their last checkpoint), 0 already finished")


def test_of_several_checkpoint_folders_the_one_with_the_latest_step_is_continued(tmp_path):
    (run,) = sweep.expand(spec_of(), tmp_path)
    leave_interrupted(run, steps=(0, 500))
    later = Path(run.run_dir) / "models" / "qmix_3m_seed_0"
    save_checkpoint(later, 900, {"settings": {"seed": 0}})
    assert execution.resume_point(run, run_state(run.run_dir)) == str(later)


@pytest.mark.parametrize("why", ["failed", "spec_changed", "other_seed", "no_complete_checkpoint", "no_models"])
def test_other_attempts_start_from_an_emptied_folder(tmp_path, why):
    (run,) = sweep.expand(spec_of(), tmp_path)
    spec = dict(run.to_dict(), overrides={"t_max": 2000}) if why == "spec_changed" else None
    models = leave_interrupted(run, seed=7 if why == "other_seed" else None, spec=spec,
                               steps=() if why == "no_complete_checkpoint" else (0, 500))
    if why == "no_complete_checkpoint":  # a save killed half-way: a temporary folder only
        (models / ".500.tmp-1").mkdir(parents=True)
        (models / ".500.tmp-1" / "checkpoint.pt").write_bytes(b"half")
    if why == "no_models":
        import shutil
        shutil.rmtree(Path(run.run_dir) / "models")
    if why == "failed":
        (Path(run.run_dir) / "status.json").write_text(json.dumps({"state": "failed", "attempt": 1, "error": "x"}))
    seen = []
    run_once([run], tmp_path, completing_executor(seen), retry_failed=True)
    assert seen[0]["resume_from"] is None and not any(token.startswith("checkpoint_path=") for token in seen[0]["command"])
    assert not seen[0]["first_sacred_run"] and not seen[0]["models"]  # the last attempt's outputs are gone
    assert read_status(run)["resumed_from"] is None and read_status(run)["attempt"] == 2
    assert not (Path(run.run_dir) / "stderr.log").exists()  # nor the last attempt's logs


def test_a_continued_attempt_appends_to_the_logs_of_the_one_before(tmp_path, monkeypatch):
    (run,) = sweep.expand(spec_of(), tmp_path)
    leave_interrupted(run)
    script = "import sys; print('second attempt', file=sys.stderr)"
    monkeypatch.setattr(execution, "build_command", lambda run: [sys.executable, "-c", script])
    execution.execute_cli_run(execution.continued_and_fresh([run], {run.run_id: run_state(run.run_dir)})[0][0])
    assert (Path(run.run_dir) / "stderr.log").read_text() == "first attempt's output\nsecond attempt\n"


# --------------------------------------------------------------------------- groups
def test_a_group_continues_its_interrupted_members_together_and_starts_the_others_in_a_second_process(tmp_path):
    runs = sweep.expand(spec_of(seeds=[0, 1, 2]), tmp_path)
    folders = [leave_interrupted(run) for run in runs[:2]]
    processes = []

    def group_executor(members):
        processes.append((list(members), sweep.build_group_command(members)))
        for run in members:
            folder = Path(run.run_dir) / "sacred" / "9"
            folder.mkdir(parents=True)
            (folder / "run.json").write_text(json.dumps({"status": "COMPLETED"}))

    result = run_sweep(runs, tmp_path, group_executor=group_executor, workers=1, progress=False, log=quiet,
                       seeds_per_process=5)
    assert sorted(o["result"] for o in result.outcomes) == ["finished"] * 3
    (continued, command), (fresh, fresh_command) = processes
    assert [run.run_id for run in continued] == [runs[0].run_id, runs[1].run_id]
    assert [run.resume_from for run in continued] == [str(folder) for folder in folders]
    assert f"checkpoint_path={sweep.format_value([str(folder) for folder in folders])}" in command
    assert not any(token.startswith("seeds=") for token in command)  # from the checkpoints
    assert f"member_results_paths={sweep.format_value([run.run_dir for run in runs[:2]])}" in command
    assert [run.run_id for run in fresh] == [runs[2].run_id] and fresh[0].resume_from is None
    assert fresh_command == sweep.build_group_command([runs[2]])
    assert [read_status(run)["resumed_from"] for run in runs] == [str(folders[0]), str(folders[1]), None]
    assert read_status(runs[0])["group"] == [runs[0].run_id, runs[1].run_id]


def test_a_group_command_may_not_mix_continued_and_fresh_members(tmp_path):
    runs = sweep.expand(spec_of(seeds=[0, 1]), tmp_path)
    mixed = [dataclasses.replace(runs[0], resume_from="/x/models/a"), runs[1]]
    with pytest.raises(ValueError, match="continued and fresh"):
        sweep.build_group_command(mixed)


def test_the_dry_run_says_which_runs_continue_and_shows_their_command(tmp_path, capsys):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({"name": "dry", "base": {"t_max": 1000}, "variants": ["standard"],
                                          "maps": ["3m"], "seeds": [0, 1]}))
    out = tmp_path / "out"
    (run, other) = sweep.expand(sweep.load_sweep(sweep_file), out)
    folder = leave_interrupted(run)
    assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    first, second = printed.split("process 2/2")
    assert f"(continues {folder})" in first and "checkpoint_path=" in first and "seeds=" not in first
    assert "member_results_paths=" in first
    assert f"seeds [{other.seed}]" in second and "checkpoint_path=" not in second


# --------------------------------------------------------------------------- the real command line
def _ablate(sweep_file, out):
    return subprocess.Popen([sys.executable, "-m", "qmixlab", "ablate", str(sweep_file), "--out", str(out),
                             "--workers", "1", "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=Path(sweep_file).parent, start_new_session=True)


def _metrics(run_dir):
    return json.loads((execution.sacred_run_dir(run_dir) / "metrics.json").read_text())


@pytest.mark.slow
def test_a_sweep_killed_mid_run_and_rerun_ends_where_an_uninterrupted_sweep_ends(tmp_path):
    """Two seeds in one process, killed with SIGKILL (as a machine that goes away) after their
    first periodic checkpoints; the rerun continues both from there. Its members play the same
    episodes as an uninterrupted sweep's (equal test returns), and their last sacred runs hold
    every test point, including the ones logged before the kill."""
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "tiny", "alg": "qmix", "env": "smacsim",
        "base": {"t_max": 4000, "test_interval": 1000, "log_interval": 1000, "test_nepisode": 4, "batch_size_run": 4,
                 "batch_size": 8, "buffer_size": 64, "save_model": True, "save_model_interval": 1000},
        "variants": ["standard"], "maps": ["3m"], "seeds": [0, 1]}))
    whole = tmp_path / "whole"
    _ablate(sweep_file, whole).wait(timeout=900)
    killed = tmp_path / "killed"
    process = _ablate(sweep_file, killed)
    run_dirs = [killed / "runs" / f"standard__3m__seed{seed}" for seed in (0, 1)]
    deadline = time.time() + 600
    while not all(any(int(p.name) >= 1000 for p in d.glob("models/*/[0-9]*")) for d in run_dirs):
        assert process.poll() is None and time.time() < deadline, process.stderr.read().decode()
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert all(run_state(d).state == "interrupted" for d in run_dirs)
    rerun = subprocess.run([sys.executable, "-m", "qmixlab", "ablate", str(sweep_file), "--out", str(killed),
                            "--workers", "1", "--no-progress"], capture_output=True, text=True, timeout=900,
                           cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    for seed, run_dir in enumerate(run_dirs):
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "finished" and status["attempt"] == 2
        assert status["resumed_from"] and Path(status["resumed_from"]).parent == run_dir / "models"
        assert len(list((run_dir / "models").iterdir())) == 1  # the continuation saves beside its past
        assert execution.sacred_run_dir(run_dir).name == "2"
        resumed, reference = _metrics(run_dir), _metrics(whole / "runs" / run_dir.name)
        for key in ("test_return_mean", "test_battle_won_mean"):
            assert resumed[key]["steps"] == reference[key]["steps"], (seed, key)
            assert resumed[key]["values"] == pytest.approx(reference[key]["values"], abs=1e-6), (seed, key)


def test_a_group_continues_into_the_results_folders_it_is_given_not_the_recorded_ones():
    """A sweep folder moved (or copied to another machine) after its runs were interrupted: the
    continued group writes its sacred runs into the run folders the command names."""
    from qmixlab.resume import GroupResumePlan, ResumePlan
    from qmixlab.settings import ConfigError

    def recorded(seed, path):
        return {"alg": "qmix", "env": "smacsim", "seed": seed, "local_results_path": path, "t_max": 100}

    plan = GroupResumePlan((ResumePlan(Path("/old/a/models/m/50/checkpoint.pt"), recorded(1, "/old/a")),
                            ResumePlan(Path("/old/b/models/m/50/checkpoint.pt"), recorded(2, "/old/b"))),
                           ("/new/a/models/m", "/new/b/models/m"))
    moved = plan.apply({"member_results_paths": ["/new/a", "/new/b"], "checkpoint_path": ["x", "y"]})
    assert moved["member_results_paths"] == ["/new/a", "/new/b"] and moved["seeds"] == [1, 2]
    assert moved["member_checkpoint_paths"] == ["/new/a/models/m", "/new/b/models/m"]
    assert plan.apply({})["member_results_paths"] == ["/old/a", "/old/b"]
    with pytest.raises(ConfigError, match="lists 1 folders for 2 checkpoints"):
        plan.apply({"member_results_paths": ["/new/a"]})
