"""Several seeds of one code path in one training process: the sweep option, the grouping of the
runs that still need running, the group's command line, and the recording of every member as a
run of its own (with fake group executors standing in for `qmixlab with seeds=[...] ...`)."""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from qmixlab.ablations import cli, execution, sweep
from qmixlab.ablations.execution import run_state, run_sweep
from qmixlab.settings import ConfigError


def spec_of(seeds=(0, 1, 2, 3, 4), variants=("standard", "timeout_as_terminal"), maps=("3m",), **extra):
    return sweep.parse_sweep({"name": "groups", "base": {"t_max": 1000}, "variants": list(variants),
                              "maps": list(maps), "seeds": list(seeds), **extra}, validate=False)


def quiet(*args):
    pass


def code_path(run):
    return run.variant, run.map_name


# --------------------------------------------------------------------------- the sweep option
def test_seeds_per_process_defaults_to_five_and_is_recorded_in_the_resolved_sweep_file(tmp_path):
    assert spec_of().seeds_per_process == sweep.DEFAULT_SEEDS_PER_PROCESS == 5
    spec = spec_of(seeds_per_process=2)
    sweep.write_sweep_file(spec, tmp_path)
    assert yaml.safe_load((tmp_path / "sweep.yaml").read_text())["seeds_per_process"] == 2
    assert sweep.read_sweep_file(tmp_path) == spec


@pytest.mark.parametrize("value", [0, -3, True, "5", 2.0, None])
def test_a_bad_seeds_per_process_names_the_value(value):
    with pytest.raises(ConfigError) as error:
        spec_of(seeds_per_process=value)
    assert f"seeds_per_process={value!r} must be a positive integer" in str(error.value)


def test_a_bad_seeds_per_process_in_a_sweep_file_names_its_line(tmp_path, capsys):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: s\nvariants: [standard]\nmaps: [3m]\nseeds: [0]\nseeds_per_process: 0\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ablate", str(sweep_file), "--dry-run"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"qmixlab ablate: {sweep_file}:5: seeds_per_process=0 must be a positive integer")


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_bad_seeds_per_process_flag_names_the_value(tmp_path, capsys, value):
    sweep_file = write_sweep_file(tmp_path / "s.yaml")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ablate", str(sweep_file), "--seeds-per-process", value, "--dry-run"])
    assert exit_info.value.code == 2
    assert f"qmixlab ablate: --seeds-per-process={value} must be a positive integer" in capsys.readouterr().err


def test_merging_sweep_folders_takes_the_new_seeds_per_process_without_a_conflict(tmp_path):
    sweep.write_sweep_file(spec_of(seeds=[0, 1], seeds_per_process=5), tmp_path)
    merged = sweep.merge_with_existing(spec_of(seeds=[2], seeds_per_process=1), tmp_path)
    assert merged.seeds == [0, 1, 2] and merged.seeds_per_process == 1


def test_the_sweep_may_not_override_the_members_keys():
    with pytest.raises(ConfigError, match="'seeds' is set by the sweep itself"):
        sweep.check_reserved_keys(spec_of(base={"seeds": [1, 2]}))
    with pytest.raises(ConfigError, match="'member_results_paths' is set by the sweep itself"):
        sweep.check_reserved_keys(spec_of(base={"member_results_paths": ["x"]}))


# --------------------------------------------------------------------------- grouping
def test_groups_hold_one_code_path_in_seed_order_and_every_first_group_comes_first(tmp_path):
    spec = spec_of(seeds=[10, 11, 12, 13, 14, 15, 16], maps=("3m", "2s3z"))
    runs = sweep.expand(spec, tmp_path)
    groups = sweep.group_runs(runs, 3)
    assert sorted(run.run_id for group in groups for run in group) == sorted(run.run_id for run in runs)
    for group in groups:
        assert len({code_path(run) for run in group}) == 1  # variants and maps never mixed
    paths = [("standard", "3m"), ("timeout_as_terminal", "3m"), ("standard", "2s3z"), ("timeout_as_terminal", "2s3z")]
    # The first group of every code path, then every second group, then every third (seed-major).
    assert [code_path(group[0]) for group in groups] == paths * 3
    assert [[run.seed for run in group] for group in groups] == [[10, 11, 12]] * 4 + [[13, 14, 15]] * 4 + [[16]] * 4


def test_one_seed_per_process_is_one_group_per_run_in_the_sweeps_order(tmp_path):
    runs = sweep.expand(spec_of(), tmp_path)
    assert sweep.group_runs(runs, 1) == [[run] for run in runs]
    assert execution.execution_units(runs, 1) == [[run] for run in runs]


def test_more_seeds_per_process_than_seeds_is_one_group_per_code_path(tmp_path):
    runs = sweep.expand(spec_of(seeds=[0, 1]), tmp_path)
    groups = sweep.group_runs(runs, 5)
    assert [[run.run_id for run in group] for group in groups] == [
        ["standard__3m__seed0", "standard__3m__seed1"], ["timeout_as_terminal__3m__seed0", "timeout_as_terminal__3m__seed1"]]


def test_runs_whose_overrides_differ_are_never_grouped(tmp_path):
    base = sweep.RunSpec("a__3m__seed0", "a", "3m", 0, "qmix", "smacsim", {"t_max": 1000}, str(tmp_path / "a0"))
    other_value = sweep.RunSpec("a__3m__seed1", "a", "3m", 1, "qmix", "smacsim", {"t_max": 1000.0}, str(tmp_path / "a1"))
    other_env = sweep.RunSpec("a__3m__seed2", "a", "3m", 2, "qmix", "gymnasium", {"t_max": 1000}, str(tmp_path / "a2"))
    same = sweep.RunSpec("a__3m__seed3", "a", "3m", 3, "qmix", "smacsim", {"t_max": 1000}, str(tmp_path / "a3"))
    groups = sweep.group_runs([base, other_value, other_env, same], 5)
    assert [[run.seed for run in group] for group in groups] == [[0, 3], [1], [2]]
    with pytest.raises(ValueError, match=r"runs \['a__3m__seed1'\] do not share a__3m__seed0's code path"):
        sweep.build_group_command([base, other_value])


def test_bad_group_sizes_are_refused(tmp_path):
    runs = sweep.expand(spec_of(), tmp_path)
    for value in (0, -1, True):
        with pytest.raises(ConfigError, match=f"seeds_per_process={value!r} must be a positive integer"):
            sweep.group_runs(runs, value)
        with pytest.raises(ConfigError, match=f"seeds_per_process={value!r} must be a positive integer"):
            run_sweep(runs, tmp_path, seeds_per_process=value, progress=False, log=quiet)


# --------------------------------------------------------------------------- the group's command
def test_the_group_command_sets_the_members_lists_and_the_shared_overrides_only(tmp_path):
    from sacred.arg_parser import get_config_updates

    spec = spec_of(seeds=[3, 7, 9], base={"t_max": 1000, "learner": {"lr": 0.001}, "masks": {"avail_fill_value": "-inf"}})
    runs = [run for run in sweep.expand(spec, tmp_path) if run.variant == "timeout_as_terminal"]
    command = sweep.build_group_command(runs, python="/usr/bin/python3")
    assert command[:4] == ["/usr/bin/python3", "-m", "qmixlab", "with"]
    assert "-F" not in command
    assert not any(token.startswith(("seed=", "local_results_path=")) for token in command)
    # Every token of a member's own command but its seed and results folder, in the same order.
    single = sweep.build_command(runs[0], python="/usr/bin/python3")[6:]
    shared = [token for token in single if not token.startswith(("seed=", "local_results_path="))]
    assert command[6:] == shared
    assert "masks.timeout='terminal'" in shared and "progress_bar=False" in shared
    parsed, _ = get_config_updates(command[4:])
    assert parsed["seeds"] == [3, 7, 9]
    assert parsed["member_results_paths"] == [str(tmp_path.resolve() / "runs" / f"timeout_as_terminal__3m__seed{s}") for s in (3, 7, 9)]
    assert parsed["alg"] == "qmix" and parsed["env"] == "smacsim" and parsed["env_args"] == {"map_name": "3m"}
    assert parsed["learner"] == {"lr": 0.001} and parsed["masks"] == {"avail_fill_value": "-inf", "timeout": "terminal"}


def test_a_group_of_one_is_still_a_group_command(tmp_path):
    run = sweep.expand(spec_of(seeds=[4]), tmp_path)[0]
    command = sweep.build_group_command([run])
    assert command[4:6] == ["seeds=[4]", f"member_results_paths=[{str(run.run_dir)!r}]"]


def test_a_group_repeating_a_seed_is_refused(tmp_path):
    run = sweep.expand(spec_of(seeds=[4]), tmp_path)[0]
    with pytest.raises(ValueError, match=r"a group's seeds must differ, got \[4, 4\]"):
        sweep.build_group_command([run, run])


def test_with_one_seed_per_process_the_commands_stay_single_run_commands(tmp_path):
    calls = []
    runs = sweep.expand(spec_of(seeds=[0, 1], variants=["standard"]), tmp_path)

    def single(run):
        calls.append(run.run_id)
        write_sacred_run(run.run_dir, "COMPLETED")

    result = run_sweep(runs, tmp_path, executor=single, group_executor=refuse_groups, seeds_per_process=1,
                       workers=1, progress=False, log=quiet)
    assert [o["result"] for o in result.outcomes] == ["finished", "finished"] and calls == [r.run_id for r in runs]
    status = read_status(runs[0])
    assert status["command"] == sweep.build_command(runs[0]) and "group" not in status


# --------------------------------------------------------------------------- fake group executors
def write_sacred_run(run_dir, status, seed=None, fail_trace=None):
    """A sacred run folder as the training side writes it for one member."""
    folder = Path(run_dir) / "sacred" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    info = {"status": status}
    if fail_trace is not None:
        info["fail_trace"] = fail_trace
    (folder / "run.json").write_text(json.dumps(info))
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    steps = [0, 1000, 2000]
    (folder / "metrics.json").write_text(json.dumps(
        {"test_battle_won_mean": {"steps": steps, "values": [0.1, 0.2, 0.3], "timestamps": ["t"] * 3}}))


def fake_group_executor(runs):
    """What `qmixlab with seeds=[...] member_results_paths=[...]` leaves behind: each member's own
    sacred run, FAILED (with its traceback) for a member whose sweep folder holds ``fail_<run id>``;
    the process then exits non-zero. Logs each group's members to ``groups.log``."""
    sweep_dir = Path(runs[0].run_dir).parents[1]
    with open(sweep_dir / "groups.log", "a") as log:
        log.write(" ".join(run.run_id for run in runs) + "\n")
    failed = []
    for run in runs:
        if (sweep_dir / f"fail_{run.run_id}").exists():
            trace = ["Traceback (most recent call last):\n", '  File "run.py", line 1, in train\n',
                     f"FloatingPointError: non-finite loss in member seed={run.seed}\n"]
            write_sacred_run(run.run_dir, "FAILED", seed=run.seed, fail_trace=trace)
            failed.append(run.run_id)
        else:
            write_sacred_run(run.run_dir, "COMPLETED", seed=run.seed)
    if failed:
        raise execution.RunFailed(f"{len(failed)} of {len(runs)} members failed [exit code 1]")


def refuse_groups(runs):
    pytest.fail(f"a group was started: {[run.run_id for run in runs]}")


def groups_run(sweep_dir):
    path = Path(sweep_dir) / "groups.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def read_status(run):
    return json.loads((Path(run.run_dir) / "status.json").read_text())


def mark(run, state, **status):
    """A run folder left by an earlier sweep in ``state``."""
    Path(run.run_dir).mkdir(parents=True, exist_ok=True)
    if state == "finished":
        write_sacred_run(run.run_dir, "COMPLETED", seed=run.seed)
    (Path(run.run_dir) / "status.json").write_text(json.dumps({"state": state, "attempt": 1, **status}))


# --------------------------------------------------------------------------- running groups
def test_every_member_is_recorded_from_its_own_sacred_run_and_one_failure_fails_only_that_member(tmp_path):
    runs = sweep.expand(spec_of(seeds=[0, 1, 2], variants=["standard"]), tmp_path)
    (tmp_path / f"fail_{runs[1].run_id}").touch()
    result = run_sweep(runs, tmp_path, group_executor=fake_group_executor, executor=lambda run: pytest.fail("single run"),
                       seeds_per_process=5, workers=1, progress=False, log=quiet)
    assert groups_run(tmp_path) == [[run.run_id for run in runs]]  # one process for the three
    outcomes = {o["run_id"]: o for o in result.outcomes}
    assert [outcomes[run.run_id]["result"] for run in runs] == ["finished", "failed", "finished"]
    assert outcomes[runs[1].run_id]["detail"] == "FloatingPointError: non-finite loss in member seed=1 [sacred's run.json says 'FAILED', not 'COMPLETED']"
    command = sweep.build_group_command(runs)
    for run in runs:
        status = read_status(run)
        assert status["command"] == command and status["group"] == [r.run_id for r in runs]
        assert status["attempt"] == 1 and status["pid"] == os.getpid() and status["ended"]
        assert json.loads((Path(run.run_dir) / "run_spec.json").read_text()) == run.to_dict()
        assert not (Path(run.run_dir) / "claim.json").exists()
    assert [run_state(run.run_dir).state for run in runs] == ["finished", "failed", "finished"]
    assert "line 1, in train" in run_state(runs[1].run_dir).detail  # the member's own traceback
    assert read_status(runs[0])["error"] is None

    again = run_sweep(runs, tmp_path, group_executor=fake_group_executor, seeds_per_process=5, workers=1,
                      progress=False, log=quiet)
    assert [o["result"] for o in again.outcomes] == ["skipped_finished", "skipped_failed", "skipped_finished"]
    assert len(groups_run(tmp_path)) == 1

    (tmp_path / f"fail_{runs[1].run_id}").unlink()
    retried = run_sweep(runs, tmp_path, group_executor=fake_group_executor, seeds_per_process=5, workers=1,
                        retry_failed=True, progress=False, log=quiet)
    assert groups_run(tmp_path)[1:] == [[runs[1].run_id]]
    assert {o["run_id"]: o["result"] for o in retried.outcomes}[runs[1].run_id] == "finished"
    assert read_status(runs[1])["attempt"] == 2 and read_status(runs[1])["group"] == [runs[1].run_id]


def test_a_half_finished_sweep_groups_only_its_unfinished_members(tmp_path):
    runs = sweep.expand(spec_of(seeds=[0, 1, 2, 3, 4]), tmp_path)
    standard = [run for run in runs if run.variant == "standard"]
    for run in (standard[0], standard[2]):
        mark(run, "finished")
    mark(standard[3], "running", host="gone", pid=1)  # a sweep killed mid-run: rerun as interrupted
    result = run_sweep(runs, tmp_path, group_executor=fake_group_executor, seeds_per_process=5, workers=1,
                       progress=False, log=quiet)
    # timeout_as_terminal's seed 0 is the first run to do: its group comes first
    assert groups_run(tmp_path) == [[f"timeout_as_terminal__3m__seed{seed}" for seed in range(5)],
                                    ["standard__3m__seed1", "standard__3m__seed3", "standard__3m__seed4"]]
    assert sorted(o["result"] for o in result.outcomes) == ["finished"] * 8 + ["skipped_finished"] * 2
    assert read_status(standard[3])["attempt"] == 2


def test_failed_runs_join_a_group_only_when_retried(tmp_path):
    runs = sweep.expand(spec_of(seeds=[0, 1, 2], variants=["standard"]), tmp_path)
    mark(runs[1], "failed", error="ValueError: earlier")
    run_sweep(runs, tmp_path, group_executor=fake_group_executor, seeds_per_process=5, workers=1, progress=False, log=quiet)
    assert groups_run(tmp_path) == [[runs[0].run_id, runs[2].run_id]]
    assert run_state(runs[1].run_dir).state == "failed"
    run_sweep(runs, tmp_path, group_executor=fake_group_executor, seeds_per_process=5, workers=1, retry_failed=True,
              progress=False, log=quiet)
    assert groups_run(tmp_path)[1:] == [[runs[1].run_id]]
    assert run_state(runs[1].run_dir).state == "finished"


def test_a_member_claimed_by_a_live_process_is_left_out_of_the_group(tmp_path):
    runs = sweep.expand(spec_of(seeds=[0, 1, 2], variants=["standard"]), tmp_path)
    Path(runs[1].run_dir).mkdir(parents=True)
    (Path(runs[1].run_dir) / "claim.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "x"}))
    outcomes = execution.run_group(runs, fake_group_executor, False, str(tmp_path / ".claims.lock"))
    assert [o["result"] for o in outcomes] == ["finished", "skipped_running", "finished"]
    assert "claimed by host elsewhere" in outcomes[1]["detail"]
    assert groups_run(tmp_path) == [[runs[0].run_id, runs[2].run_id]]
    assert read_status(runs[0])["group"] == [runs[0].run_id, runs[2].run_id]
    assert not (Path(runs[1].run_dir) / "status.json").exists() and (Path(runs[1].run_dir) / "claim.json").exists()


def test_a_member_without_a_sacred_run_fails_with_the_processs_error(tmp_path):
    runs = sweep.expand(spec_of(seeds=[0, 1], variants=["standard"]), tmp_path)

    def crashes_after_the_first_member(group):
        write_sacred_run(group[0].run_dir, "COMPLETED", seed=group[0].seed)
        raise execution.RunFailed("MemoryError: out of memory [exit code -9]\n--- last lines of stderr.log:\nMemoryError")

    result = run_sweep(runs, tmp_path, group_executor=crashes_after_the_first_member, seeds_per_process=2, workers=1,
                       progress=False, log=quiet)
    assert [o["result"] for o in result.outcomes] == ["finished", "failed"]
    assert result.outcomes[1]["detail"] == "MemoryError: out of memory [exit code -9]"
    assert "(sacred's run.json says None, not 'COMPLETED')" in read_status(runs[1])["error"]


def test_a_group_that_returns_without_completed_sacred_runs_fails_its_members(tmp_path):
    runs = sweep.expand(spec_of(seeds=[0, 1], variants=["standard"]), tmp_path)
    result = run_sweep(runs, tmp_path, group_executor=lambda group: None, seeds_per_process=2, workers=1,
                       progress=False, log=quiet)
    assert [o["detail"] for o in result.outcomes] == [
        "the group's process returned but sacred's run.json says None, not 'COMPLETED'"] * 2


# --------------------------------------------------------------------------- the real group executor's plumbing
FAKE_TRAINING = """
import json, os, sys, time
from pathlib import Path
seeds, folders = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("training seeds", seeds, flush=True)
print("a warning on stderr", file=sys.stderr, flush=True)
for seed, folder in zip(seeds, folders):
    Path(folder, "started").touch()
if os.environ.get("FAKE_TRAINING_SLEEP"):
    time.sleep(float(os.environ["FAKE_TRAINING_SLEEP"]))
for k, (seed, folder) in enumerate(zip(seeds, folders)):
    run = Path(folder, "sacred", "1")
    run.mkdir(parents=True)
    status = "FAILED" if k == 1 else "COMPLETED"
    trace = ["Traceback:\\n", f"FloatingPointError: loss of seed {seed} is nan\\n"] if status == "FAILED" else None
    (run / "run.json").write_text(json.dumps({"status": status, "fail_trace": trace}))
    (run / "config.json").write_text(json.dumps({"seed": seed, "threads": os.environ["OMP_NUM_THREADS"]}))
sys.exit(1 if len(seeds) > 1 else 0)
"""


@pytest.fixture
def fake_training_command(monkeypatch):
    """The real group executor, its training command replaced by a small script with the same
    contract (per-member sacred runs, the second member FAILED, exit code 1)."""
    def command(runs, python=None):
        return [sys.executable, "-c", FAKE_TRAINING, json.dumps([run.seed for run in runs]),
                json.dumps([str(run.run_dir) for run in runs])]
    monkeypatch.setattr(execution, "build_group_command", command)
    return command


def test_the_cli_group_executor_logs_to_every_member_and_records_each_outcome(tmp_path, fake_training_command):
    runs = sweep.expand(spec_of(seeds=[0, 1, 2], variants=["standard"]), tmp_path)
    result = run_sweep(runs, tmp_path, seeds_per_process=3, workers=1, progress=False, log=quiet)
    assert [o["result"] for o in result.outcomes] == ["finished", "failed", "finished"]
    assert result.outcomes[1]["detail"].startswith("FloatingPointError: loss of seed 1 is nan")
    for run in runs:
        folder = Path(run.run_dir)
        assert (folder / "stdout.log").read_text() == "training seeds [0, 1, 2]\n"
        assert (folder / "stderr.log").read_text() == "a warning on stderr\n"
        assert json.loads(next(folder.glob("sacred/*/config.json")).read_text()) == {"seed": run.seed, "threads": "1"}
        assert read_status(run)["command"] == fake_training_command(runs)


def test_stopping_the_cli_group_executor_stops_its_process_and_interrupts_every_member(tmp_path, fake_training_command,
                                                                                        monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SLEEP", "60")
    runs = sweep.expand(spec_of(seeds=[0, 1], variants=["standard"]), tmp_path)

    def stop_when_started():
        deadline = time.time() + 60
        while not all((Path(run.run_dir) / "started").exists() for run in runs) and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_started, daemon=True).start()
    started = time.time()
    result = run_sweep(runs, tmp_path, seeds_per_process=2, workers=1, progress=False, log=quiet)
    assert time.time() - started < 30
    assert result.stopped_by == "SIGTERM" and [o["result"] for o in result.outcomes] == ["interrupted"] * 2
    for run in runs:
        assert read_status(run)["interrupted_by"] == "SIGTERM" and run_state(run.run_dir).state == "interrupted"
        assert (Path(run.run_dir) / "stdout.log").read_text() == "training seeds [0, 1]\n"  # copied on the stop too
        assert not (Path(run.run_dir) / "sacred").exists()  # the process was stopped before writing its runs


# --------------------------------------------------------------------------- the command line
def write_sweep_file(path, **updates):
    raw = {"name": "cli", "base": {"t_max": 1000}, "variants": ["standard", "inf_fill_value"], "maps": ["3m"],
           "seeds": [0, 1, 2]}
    raw.update(updates)
    path.write_text(yaml.safe_dump(raw))
    return path


def stops_on_second_group(signum):
    def executor(runs):
        sweep_dir = Path(runs[0].run_dir).parents[1]
        earlier = groups_run(sweep_dir)
        with open(sweep_dir / "groups.log", "a") as log:
            log.write(" ".join(run.run_id for run in runs) + "\n")
        if len(earlier) == 1:
            os.kill(os.getpid(), signum)  # as the terminal's Ctrl-C or a `kill` would
            time.sleep(30)
            pytest.fail("the signal did not stop the group")
        for run in runs:
            write_sacred_run(run.run_dir, "COMPLETED", seed=run.seed)
    return executor


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_mid_group_interrupts_every_member_and_the_same_command_reruns_them(tmp_path, capsys, monkeypatch,
                                                                                   signum, code):
    sweep_file = write_sweep_file(tmp_path / "s.yaml")
    out = tmp_path / "out"
    argv = ["ablate", str(sweep_file), "--out", str(out), "--seeds-per-process", "2", "--workers", "1", "--no-progress"]
    monkeypatch.setattr(execution, "execute_cli_group", stops_on_second_group(signum))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    stdout, err = capsys.readouterr()
    assert exit_info.value.code == code and "Traceback" not in stdout + err
    name = signal.Signals(signum).name
    assert err.strip().startswith(f"qmixlab ablate: stopped by {name}: 2 running run(s) marked interrupted, "
                                  "2 not started, 2/6 finished; to resume, run the same command again")
    assert groups_run(out) == [["standard__3m__seed0", "standard__3m__seed1"],
                               ["inf_fill_value__3m__seed0", "inf_fill_value__3m__seed1"]]
    runs = {run.run_id: run for run in sweep.expand(sweep.load_sweep(sweep_file), out)}
    for run_id in ("inf_fill_value__3m__seed0", "inf_fill_value__3m__seed1"):
        status = read_status(runs[run_id])
        assert status["state"] == "interrupted" and status["interrupted_by"] == name
        assert not (Path(runs[run_id].run_dir) / "claim.json").exists()
    assert not (Path(runs["standard__3m__seed2"].run_dir) / "status.json").exists()
    assert yaml.safe_load((out / "sweep.yaml").read_text())["seeds_per_process"] == 2  # the flag, recorded

    monkeypatch.setattr(execution, "execute_cli_group", fake_group_executor)
    assert cli.main(argv) == 0
    assert groups_run(out)[2:] == [["inf_fill_value__3m__seed0", "inf_fill_value__3m__seed1"],
                                   ["standard__3m__seed2"], ["inf_fill_value__3m__seed2"]]
    assert read_status(runs["inf_fill_value__3m__seed1"])["attempt"] == 2
    assert "6/6 runs finished" in capsys.readouterr().out


def test_the_cli_counts_runs_and_names_each_failed_member(tmp_path, capsys):
    sweep_file = write_sweep_file(tmp_path / "s.yaml")
    out = tmp_path / "out"
    out.mkdir()
    (out / "fail_inf_fill_value__3m__seed2").touch()
    code = cli.ablate([str(sweep_file), "--out", str(out), "--workers", "1", "--no-progress"],
                      executor=lambda run: pytest.fail("single run"), group_executor=fake_group_executor)
    assert code == 1
    text = capsys.readouterr().out
    assert "6 runs: 6 to run in 2 processes, 0 already finished" in text
    assert "5/6 runs finished" in text
    assert "failed: inf_fill_value__3m__seed2: FloatingPointError: non-finite loss in member seed=2" in text
    assert yaml.safe_load((out / "sweep.yaml").read_text())["seeds_per_process"] == 5  # the default, recorded


def test_dry_run_lists_the_groups_that_would_run_and_their_commands(tmp_path, capsys):
    sweep_file = write_sweep_file(tmp_path / "s.yaml", seeds_per_process=2)
    out = tmp_path / "out"
    runs = {run.run_id: run for run in sweep.expand(sweep.load_sweep(sweep_file), out)}
    mark(runs["standard__3m__seed0"], "finished")
    mark(runs["inf_fill_value__3m__seed1"], "failed", error="ValueError: earlier\nmore")
    assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    commands = [line for line in lines if " -m qmixlab with " in line]
    # inf_fill_value's seed 0 is the first run to do: its group comes first
    groups = [["inf_fill_value__3m__seed0", "inf_fill_value__3m__seed2"], ["standard__3m__seed1", "standard__3m__seed2"]]
    assert commands == ["    " + " ".join(cli._shell_word(t) for t in sweep.build_group_command([runs[i] for i in group]))
                        for group in groups]
    assert lines[0] == "process 1/2: inf_fill_value on 3m, seeds [0, 2]"
    assert lines[1:3] == ["  inf_fill_value__3m__seed0  [pending]", "  inf_fill_value__3m__seed2  [pending]"]
    assert "process 2/2: standard on 3m, seeds [1, 2]" in lines
    rest = lines[lines.index("not run:") + 1:]
    assert rest[:2] == ["  standard__3m__seed0  [finished]", "  inf_fill_value__3m__seed1  [failed: ValueError: earlier]"]
    assert rest[2] == (f"6 runs in {out}: 4 to run in 2 processes of up to 2 seeds, every configuration valid "
                       "(dry run: nothing started)")
    assert not (out / "sweep.yaml").exists()

    assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--dry-run", "--retry-failed"]) == 0
    retried = capsys.readouterr().out.splitlines()
    assert [line for line in retried if line.startswith("process ")] == [
        "process 1/3: inf_fill_value on 3m, seeds [0, 1]", "process 2/3: standard on 3m, seeds [1, 2]",
        "process 3/3: inf_fill_value on 3m, seeds [2]"]


def test_dry_run_with_one_seed_per_process_lists_single_run_commands(tmp_path, capsys):
    sweep_file = write_sweep_file(tmp_path / "s.yaml")
    out = tmp_path / "out"
    assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--seeds-per-process", "1", "--dry-run"]) == 0
    text = capsys.readouterr().out
    run = sweep.expand(sweep.load_sweep(sweep_file), out)[0]
    assert "    " + " ".join(cli._shell_word(t) for t in sweep.build_command(run)) in text.splitlines()
    assert "seeds=" not in text and f"6 runs in {out}, every configuration valid" in text


def test_a_code_path_that_cannot_train_several_seeds_is_refused_before_anything_starts(tmp_path, capsys, monkeypatch):
    sweep_file = write_sweep_file(tmp_path / "s.yaml", base={"t_max": 1000, "evaluate": True})
    monkeypatch.setattr(execution, "execute_cli_group", refuse_groups)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ablate", str(sweep_file), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "qmixlab ablate: standard on 3m, seeds [0, 1, 2] in one process: seeds=[0, 1, 2] trains several seeds" in err
    assert "--seeds-per-process 1 runs one process per run" in err and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- workers and Ray
@pytest.mark.slow
def test_a_pool_runs_one_group_per_worker_process(tmp_path):
    runs = sweep.expand(spec_of(seeds=[0, 1, 2, 3]), tmp_path)
    (tmp_path / f"fail_{runs[0].run_id}").touch()
    result = run_sweep(runs, tmp_path, group_executor=fake_group_executor, seeds_per_process=2, workers=2,
                       progress=False, log=quiet)
    assert sorted(o["result"] for o in result.outcomes) == ["failed"] + ["finished"] * 7
    assert len(groups_run(tmp_path)) == 4
    for group in groups_run(tmp_path):  # the members of one group were claimed and run by one worker
        statuses = [json.loads((tmp_path / "runs" / run_id / "status.json").read_text()) for run_id in group]
        assert len({status["pid"] for status in statuses}) == 1 and statuses[0]["pid"] != os.getpid()
        assert all(status["group"] == group for status in statuses)


@pytest.mark.slow
def test_ray_runs_one_task_per_group(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'ray>=2.9')")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/
    runs = sweep.expand(spec_of(seeds=[0, 1, 2]), tmp_path)
    (tmp_path / f"fail_{runs[1].run_id}").touch()
    result = run_sweep(runs, tmp_path, group_executor=fake_group_executor, seeds_per_process=3, backend="ray",
                       workers=2, progress=False, log=quiet)
    assert sorted(o["result"] for o in result.outcomes) == ["failed"] + ["finished"] * 5
    assert sorted(map(len, groups_run(tmp_path))) == [3, 3]
    assert run_state(runs[1].run_dir).state == "failed" and run_state(runs[0].run_dir).state == "finished"
