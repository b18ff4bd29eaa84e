"""Ablation presets, sweep expansion, the command line handed to sacred, and the sweep machinery
(skipping, failures, retries, claims, merging, interrupted runs) with a fake executor."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from qmixlab.ablations import cli, execution, sweep
from qmixlab.ablations.execution import run_state, run_sweep
from qmixlab.settings import ConfigError, compose_config, deep_merge, validate_config

PRESETS = {
    "standard": {},
    "timeout_as_terminal": {"masks.timeout": "terminal"},
    "filled_only": {"masks.post_terminal_shift": False},
    "no_padding_mask": {"masks.mask_padding": False},
    "mean_over_all_rows": {"masks.normalisation": "all_rows"},
    "agent_step_normalisation": {"masks.normalisation": "valid_agent_steps"},
    "no_target_avail_mask": {"masks.target_avail_mask": False},
    "dead_agents_zeroed": {"masks.dead_agents": "zero_utilities"},
    "drop_masked_rows": {"masks.masked_rows": "drop"},
    "episode_normalisation": {"masks.normalisation": "episodes"},
    "no_trimming": {"masks.trim_to_longest": False},
    "inf_fill_value": {"masks.avail_fill_value": "-inf"},
    "visibility_zeros": {"masks.visibility": "zeros"},
}


# --------------------------------------------------------------------------- presets
def test_every_documented_preset_ships():
    assert sorted(sweep.available_presets()) == sorted(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_validates_and_changes_one_option(name):
    overrides, description = sweep.load_preset(name)
    assert description, f"{name} needs a description"
    assert "description" not in overrides
    assert sweep.flatten_overrides(overrides) == PRESETS[name]
    config = compose_config("qmix", "smacsim")
    config["seed"] = 0
    if any(key in ("masks.visibility", "masks.attention_fill_value") for key in PRESETS[name]):
        config["agent"]["name"] = "entity_attention"  # the feature axis needs the entity agent
    settings = validate_config(deep_merge(config, overrides))
    for key, value in PRESETS[name].items():
        assert getattr(settings.masks, key.split(".")[1]) == value


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'filled_only'"):
        sweep.parse_sweep({"name": "s", "variants": ["filled_onl"], "maps": ["3m"], "seeds": [0]})


# --------------------------------------------------------------------------- the spec
def raw_sweep(**updates):
    raw = {"name": "masks", "alg": "qmix", "env": "smacsim", "base": {"t_max": 5000, "save_model": False},
           "variants": ["standard", "timeout_as_terminal", {"lr_low": {"learner": {"lr": 0.0001}, "description": "slow"}}],
           "maps": ["3m", "2s3z"], "seeds": [0, 1], "per_map": {"2s3z": {"t_max": 8000}}}
    raw.update(updates)
    return raw


def test_expansion_is_seeds_by_maps_by_variants_with_overrides_in_order(tmp_path):
    spec = sweep.parse_sweep(raw_sweep(variants=["standard", {"long": {"t_max": 9000}}, {"lr_low": {"learner": {"lr": 0.0001}}}]))
    runs = sweep.expand(spec, tmp_path)
    assert len(runs) == 3 * 2 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    # seed-major: a sweep stopped part-way has every variant on its first seeds
    assert [r.seed for r in runs] == [0] * 6 + [1] * 6
    assert [(r.map_name, r.variant) for r in runs[:6]] == [(m, v) for m in ("3m", "2s3z") for v in ("standard", "long", "lr_low")]
    by_id = {r.run_id: r for r in runs}
    assert by_id["standard__3m__seed0"].overrides == {"t_max": 5000, "save_model": False}
    assert by_id["standard__2s3z__seed1"].overrides["t_max"] == 8000  # per_map over base
    assert by_id["long__2s3z__seed0"].overrides["t_max"] == 9000  # the variant over per_map
    assert by_id["lr_low__3m__seed1"].overrides["learner"] == {"lr": 0.0001}
    assert by_id["lr_low__3m__seed1"].run_dir == str((tmp_path / "runs" / "lr_low__3m__seed1").resolve())
    assert spec.descriptions["standard"] and spec.descriptions["long"] == "inline variant"
    assert sweep.parse_sweep(raw_sweep()).variants["timeout_as_terminal"] == {"masks": {"timeout": "terminal"}}


@pytest.mark.parametrize(
    "updates, message",
    [
        ({"seed": [1]}, "unknown sweep key(s) ['seed']"),
        ({"base": {"t_maxx": 5}}, "variant 'standard' on map '3m': unknown config key 't_maxx'"),
        ({"per_map": {"2s3z": {"masks": {"timeout": "never"}}}}, "on map '2s3z': masks.timeout='never'"),
        ({"per_map": {"8m": {"t_max": 1}}}, "per_map names map '8m'"),
        ({"base": {"seed": 3}}, "'seed' is set by the sweep itself"),
        ({"base": {"env_args": {"map_name": "8m"}}}, "'env_args.map_name' is set by the sweep itself"),
        ({"seeds": [0, 0]}, "lists a seed twice"),
        ({"seeds": [True]}, "seeds must be a non-empty list of integers"),
        ({"variants": ["standard", "standard"]}, "variant 'standard' is listed twice"),
        ({"variants": [{"a__b": {}}]}, "without '__'"),
        ({"maps": []}, "maps must be a non-empty list"),
    ],
)
def test_bad_sweeps_fail_before_any_run_naming_the_problem(updates, message):
    with pytest.raises(ConfigError) as error:
        sweep.parse_sweep(raw_sweep(**updates))
    assert message in str(error.value)


# --------------------------------------------------------------------------- the command line
ROUND_TRIP = {
    "a_bool": True, "b_bool": False, "an_int": 200000, "neg": -3, "a_float": 0.0005, "tiny": 1e-5,
    "big": 2e6, "a_none": None, "a_str": "3m", "looks_bool": "True", "looks_float": "1e5",
    "neg_inf": "-inf", "quote": "it's \"x\"", "spaces": "a b", "a_list": [1, "x", 2.5, None],
}


def test_values_survive_sacreds_command_line_parser_with_their_types():
    from sacred.arg_parser import get_config_updates

    tokens = [f"{key}={sweep.format_value(value)}" for key, value in ROUND_TRIP.items()]
    parsed, named = get_config_updates(tokens)
    assert named == []
    assert parsed == ROUND_TRIP
    assert all(type(parsed[k]) is type(v) for k, v in ROUND_TRIP.items())


def test_non_finite_floats_are_refused():
    with pytest.raises(ConfigError, match="lr=inf"):
        sweep.format_value(float("inf"), "lr")


def test_command_runs_the_cli_and_sacred_reads_back_the_run_config(tmp_path, capsys):
    from qmixlab.experiment import build_experiment

    overrides = {"t_max": 3000, "save_model": False, "learner": {"lr": 0.001, "double_q": False},
                 "masks": {"avail_fill_value": "-inf", "post_terminal_shift": False}, "mixer": {"name": None},
                 "env_args": {"reward_scale_rate": 10.0}}
    run = sweep.RunSpec("v__3m__seed7", "v", "3m", 7, "qmix", "smacsim", overrides, str(tmp_path / "run"))
    command = sweep.build_command(run, python="/usr/bin/python3")
    assert command[:6] == ["/usr/bin/python3", "-m", "qmixlab", "-F", str(tmp_path / "run" / "sacred"), "with"]
    assert "progress_bar=False" in command and "seed=7" in command
    # The same tokens through the real experiment (print_config: no training).
    config = build_experiment("qmix", "smacsim").run_commandline(["qmixlab", "print_config", "with", *command[6:]]).config
    capsys.readouterr()
    settings = validate_config(config)
    assert settings.seed == 7 and settings.env_args["map_name"] == "3m" and settings.t_max == 3000
    assert settings.local_results_path == str(tmp_path / "run") and settings.progress_bar is False
    assert settings.learner.lr == 0.001 and settings.learner.double_q is False
    assert settings.masks.avail_fill_value == "-inf" and settings.masks.post_terminal_shift is False
    assert settings.mixer.name is None and settings.env_args["reward_scale_rate"] == 10.0


# --------------------------------------------------------------------------- fake executors
def write_completed_sacred_run(run_dir, values, interval=1000):
    folder = Path(run_dir) / "sacred" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    steps = [i * interval for i in range(len(values))]
    metrics = {"test_battle_won_mean": {"steps": steps, "values": list(values), "timestamps": ["t"] * len(values)},
               "test_return_mean": {"steps": steps, "values": [20 * v for v in values], "timestamps": ["t"] * len(values)}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "run.json").write_text(json.dumps({"status": "COMPLETED"}))


def fake_executor(run):
    """Synthetic metrics; fails when the sweep folder holds ``fail_<run id>``; logs each call."""
    sweep_dir = Path(run.run_dir).parents[1]
    with open(sweep_dir / "calls.log", "a") as log:
        log.write(run.run_id + "\n")
    if (sweep_dir / f"fail_{run.run_id}").exists():
        raise ValueError(f"synthetic failure of {run.run_id}\nsecond line")
    write_completed_sacred_run(run.run_dir, [0.1 * run.seed, 0.2, 0.3 + 0.01 * run.seed])


def calls(sweep_dir):
    path = Path(sweep_dir) / "calls.log"
    return path.read_text().split() if path.exists() else []


def small_spec(seeds=(0, 1), variants=("standard", "timeout_as_terminal")):
    return sweep.parse_sweep({"name": "fake", "base": {"t_max": 1000}, "variants": list(variants),
                              "maps": ["3m"], "seeds": list(seeds)})


def quiet(*args):
    pass


def test_all_runs_finish_with_status_files_and_a_rerun_skips_them(tmp_path):
    runs = sweep.expand(small_spec(), tmp_path)
    result = run_sweep(runs, tmp_path, executor=fake_executor, workers=1, progress=False, log=quiet)
    assert sorted(o["result"] for o in result.outcomes) == ["finished"] * 4
    status = json.loads((Path(runs[0].run_dir) / "status.json").read_text())
    assert status["state"] == "finished" and status["error"] is None and status["attempt"] == 1
    assert status["command"] == sweep.build_command(runs[0])
    assert {"host", "pid", "started", "ended", "duration_s"} <= set(status)
    assert json.loads((Path(runs[0].run_dir) / "run_spec.json").read_text())["seed"] == runs[0].seed
    assert not (Path(runs[0].run_dir) / "claim.json").exists()
    assert len(calls(tmp_path)) == 4
    again = run_sweep(runs, tmp_path, executor=fake_executor, workers=1, progress=False, log=quiet)
    assert [o["result"] for o in again.outcomes] == ["skipped_finished"] * 4
    assert len(calls(tmp_path)) == 4


def test_a_failed_run_is_recorded_the_others_go_on_and_only_retry_reruns_it(tmp_path):
    runs = sweep.expand(small_spec(), tmp_path)
    broken = runs[1].run_id
    (tmp_path / f"fail_{broken}").touch()
    result = run_sweep(runs, tmp_path, executor=fake_executor, workers=1, progress=False, log=quiet)
    outcomes = {o["run_id"]: o for o in result.outcomes}
    assert outcomes[broken]["result"] == "failed"
    assert outcomes[broken]["detail"] == f"ValueError: synthetic failure of {broken}"
    assert sum(o["result"] == "finished" for o in result.outcomes) == 3
    state = run_state(runs[1].run_dir)
    assert state.state == "failed" and state.detail.startswith(f"ValueError: synthetic failure of {broken}")
    assert "second line" in state.detail

    again = run_sweep(runs, tmp_path, executor=fake_executor, workers=1, progress=False, log=quiet)
    assert {o["run_id"]: o["result"] for o in again.outcomes}[broken] == "skipped_failed"
    assert len(calls(tmp_path)) == 4

    (tmp_path / f"fail_{broken}").unlink()
    retried = run_sweep(runs, tmp_path, executor=fake_executor, workers=1, retry_failed=True, progress=False, log=quiet)
    assert calls(tmp_path)[4:] == [broken]
    assert {o["run_id"]: o["result"] for o in retried.outcomes}[broken] == "finished"
    assert json.loads((Path(runs[1].run_dir) / "status.json").read_text())["attempt"] == 2


def test_a_run_that_returns_without_a_completed_sacred_run_is_failed(tmp_path):
    runs = sweep.expand(small_spec(seeds=[0], variants=["standard"]), tmp_path)
    result = run_sweep(runs, tmp_path, executor=lambda run: None, workers=1, progress=False, log=quiet)
    assert result.outcomes[0]["result"] == "failed"
    assert "sacred's run.json says None" in result.outcomes[0]["detail"]


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_claims_of_live_hosts_are_respected_and_stale_local_claims_reclaimed(tmp_path):
    runs = sweep.expand(small_spec(), tmp_path)
    remote, stale, interrupted = (Path(r.run_dir) for r in runs[:3])
    for folder in (remote, stale, interrupted):
        folder.mkdir(parents=True)
    (remote / "claim.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "claimed": "t", "token": "x"}))
    (stale / "claim.json").write_text(json.dumps({"host": execution.host_name(), "pid": dead_pid(), "token": "y"}))
    # Killed mid-run without even leaving a claim: status "running", nobody alive.
    (interrupted / "status.json").write_text(json.dumps({"state": "running", "host": execution.host_name(), "pid": dead_pid()}))
    assert run_state(remote).state == "running" and run_state(stale).state == "pending"
    assert run_state(interrupted).state == "interrupted"

    result = run_sweep(runs, tmp_path, executor=fake_executor, workers=1, progress=False, log=quiet)
    outcomes = {o["run_id"]: o for o in result.outcomes}
    assert outcomes[runs[0].run_id]["result"] == "skipped_running"
    assert "elsewhere" in outcomes[runs[0].run_id]["detail"]
    assert all(outcomes[r.run_id]["result"] == "finished" for r in runs[1:])
    assert (remote / "claim.json").exists() and not (stale / "claim.json").exists()
    assert sorted(calls(tmp_path)) == sorted(r.run_id for r in runs[1:])


def test_claim_is_exclusive(tmp_path):
    mine, holder = execution.claim_run(tmp_path / "run", tmp_path / ".lock")
    assert mine is not None and holder is None
    again, holder = execution.claim_run(tmp_path / "run", tmp_path / ".lock")
    assert again is None and holder["pid"] == os.getpid()
    execution.release_claim(tmp_path / "run", mine)
    assert not (tmp_path / "run" / "claim.json").exists()


def test_the_resolved_sweep_file_is_itself_a_sweep_file(tmp_path):
    spec = sweep.parse_sweep(raw_sweep())
    sweep.write_sweep_file(spec, tmp_path)
    assert sweep.load_sweep(tmp_path / "sweep.yaml") == spec
    assert sweep.read_sweep_file(tmp_path) == spec


def test_two_machines_shares_merge_into_one_folder(tmp_path):
    first = small_spec(seeds=[0, 1])
    second = small_spec(seeds=[2], variants=["standard", "filled_only"])
    for spec in (first, second):  # what `qmixlab ablate` does on each machine
        merged = sweep.merge_with_existing(spec, tmp_path)
        sweep.write_sweep_file(merged, tmp_path)
        run_sweep(sweep.expand(spec, tmp_path), tmp_path, executor=fake_executor, workers=1, progress=False, log=quiet)
    stored = sweep.read_sweep_file(tmp_path)
    assert stored.seeds == [0, 1, 2] and list(stored.variants) == ["standard", "timeout_as_terminal", "filled_only"]
    finished = [r for r in sweep.expand(stored, tmp_path) if run_state(r.run_dir).state == "finished"]
    assert len(finished) == 2 * 2 + 2  # seeds 0-1 of the first two variants, seed 2 of standard and filled_only
    conflicting = sweep.parse_sweep({"name": "fake", "base": {"t_max": 1000}, "maps": ["3m"], "seeds": [0],
                                     "variants": [{"filled_only": {"masks": {"timeout": "terminal"}}}]})
    with pytest.raises(ConfigError, match=r"variants.filled_only"):
        sweep.merge_with_existing(conflicting, tmp_path)


@pytest.mark.slow
def test_pool_of_worker_processes(tmp_path):
    runs = sweep.expand(small_spec(seeds=[0, 1, 2]), tmp_path)
    (tmp_path / f"fail_{runs[0].run_id}").touch()
    result = run_sweep(runs, tmp_path, executor=fake_executor, workers=2, progress=False, log=quiet)
    assert sorted(o["result"] for o in result.outcomes) == ["failed"] + ["finished"] * 5
    pids = {json.loads((Path(r.run_dir) / "status.json").read_text())["pid"] for r in runs}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


KILLABLE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from qmixlab.ablations import sweep
    from qmixlab.ablations.execution import run_sweep

    def slow(run):
        time.sleep(600)

    spec = sweep.parse_sweep({"name": "k", "variants": ["standard"], "maps": ["3m"], "seeds": [0]}, validate=False)
    run_sweep(sweep.expand(spec, sys.argv[1]), sys.argv[1], executor=slow, workers=1, progress=False)
""")


def test_a_killed_sweep_leaves_its_run_to_be_rerun(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, str(tmp_path)], stdout=subprocess.DEVNULL)
    run_dir = tmp_path / "runs" / "standard__3m__seed0"
    deadline = time.time() + 60
    # status.json says running once the executor is about to start (the claim alone comes earlier)
    while (execution.read_json(run_dir / "status.json") or {}).get("state") != "running":
        assert time.time() < deadline and process.poll() is None, "the sweep never started its run"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = run_state(run_dir)
    assert state.state == "interrupted" and (run_dir / "claim.json").exists()  # stale claim of a dead pid

    spec = sweep.parse_sweep({"name": "k", "variants": ["standard"], "maps": ["3m"], "seeds": [0]}, validate=False)
    result = run_sweep(sweep.expand(spec, tmp_path), tmp_path, executor=fake_executor, workers=1, progress=False, log=quiet)
    assert result.outcomes[0]["result"] == "finished"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["attempt"] == 2


# --------------------------------------------------------------------------- the CLI
def write_sweep_file(path, **updates):
    """A sweep file run one process per run (the fake executors here are single-run executors;
    tests/test_ablations_groups.py covers several seeds per process)."""
    raw = {"name": "cli", "base": {"t_max": 1000}, "variants": ["standard", "inf_fill_value"], "maps": ["3m"], "seeds": [0, 1],
           "seeds_per_process": 1}
    raw.update(updates)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_dry_run_lists_runs_and_starts_nothing(tmp_path, capsys):
    sweep_file = write_sweep_file(tmp_path / "s.yaml")
    assert cli.main(["ablate", str(sweep_file), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "inf_fill_value__3m__seed1  [pending]" in out and "masks.avail_fill_value=" in out
    assert "4 runs" in out and not (tmp_path / "out").exists()


def test_cli_ablate_with_fake_executor_and_exit_code(tmp_path, capsys):
    sweep_file = write_sweep_file(tmp_path / "s.yaml")
    out = tmp_path / "out"
    (out).mkdir()
    (out / "fail_standard__3m__seed1").touch()
    assert cli.ablate([str(sweep_file), "--out", str(out), "--workers", "1", "--no-progress"], executor=fake_executor) == 1
    text = capsys.readouterr().out
    assert "3/4 runs finished" in text and "failed: standard__3m__seed1: ValueError: synthetic failure" in text
    assert yaml.safe_load((out / "sweep.yaml").read_text())["variants"][1] == {"inf_fill_value": {"masks": {"avail_fill_value": "-inf"}}}


def test_cli_reports_bad_sweeps_with_exit_code_2(tmp_path, capsys):
    sweep_file = write_sweep_file(tmp_path / "s.yaml", base={"t_max": 1000, "batch_sise": 3})
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ablate", str(sweep_file), "--dry-run"])
    assert exit_info.value.code == 2
    assert "unknown config key 'batch_sise'; did you mean 'batch_size'?" in capsys.readouterr().err


def test_ray_backend_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(execution.AblationError, match=r"pip install 'ray>=2.9'"):
        run_sweep(sweep.expand(small_spec(), tmp_path), tmp_path, executor=fake_executor, backend="ray", log=quiet)


@pytest.mark.slow
def test_ray_backend_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'ray>=2.9')")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/
    runs = sweep.expand(small_spec(), tmp_path)
    (tmp_path / f"fail_{runs[0].run_id}").touch()
    result = run_sweep(runs, tmp_path, executor=fake_executor, backend="ray", workers=2, progress=False, log=quiet)
    assert sorted(o["result"] for o in result.outcomes) == ["failed"] + ["finished"] * 3
    assert run_state(runs[0].run_dir).state == "failed" and run_state(runs[1].run_dir).state == "finished"


def test_dry_run_commands_paste_into_a_shell_unchanged():
    import shlex

    tokens = ["plain", "alg='qmix'", "quote='it\\'s \"x\"'", "dollar='$HOME'", "spaces='a b'", "bang='!'"]
    assert shlex.split(" ".join(cli._shell_word(t) for t in tokens)) == tokens


# --------------------------------------------------------------------------- sweep files with mistakes
def ablate_fails(capsys, *argv):
    """Run `qmixlab ablate ...` expecting exit code 2; returns stderr (checked to be free of tracebacks)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ablate", *map(str, argv)])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, out + err
    assert "Traceback" not in out + err
    return err


@pytest.mark.parametrize("text, where, message", [
    ("name: s\nvariants: [standard\nmaps: [3m]\nseeds: [0]\n", ":3:5: YAML syntax error:",
     "expected ',' or ']', but got ':' (while parsing a flow sequence that starts on line 2)"),
    ("name: s\n\tvariants: [standard]\n", ":2:1: YAML syntax error:", "found character '\\t' that cannot start any token"),
    ("name: s\nvariants: [standard]\nmaps: [3m]\nseed: [0]\n", ":4: unknown sweep key(s) ['seed']; did you mean 'seeds'?", "expected keys"),
    ("name: s\nvariants: [standard]\nmaps: [3m]\n", ": missing sweep key(s) ['seeds']", "every sweep file needs"),
    ("name: s\nvariants: [standard]\nmaps: [3m]\nseeds: [0]\nmaps: [8m]\n", ":5: sweep key 'maps' is given twice (first on line 3)", ""),
    ("- standard\n- filled_only\n", ":1: a sweep file holds a mapping of sweep keys", "not a list"),
])
def test_a_mistyped_sweep_file_is_one_line_with_file_and_line(tmp_path, capsys, text, where, message):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(text)
    err = ablate_fails(capsys, sweep_file, "--dry-run")
    assert err.startswith(f"qmixlab ablate: {sweep_file}{where}") and message in err
    assert len(err.strip().splitlines()) == 1


def test_dry_run_validates_every_runs_full_config_and_lists_each_failing_run(tmp_path, capsys):
    sweep_file = write_sweep_file(tmp_path / "s.yaml", maps=["3m", "3mm"],
                                  variants=["standard", {"never": {"masks": {"timeout": "never"}}}])
    err = ablate_fails(capsys, sweep_file, "--out", tmp_path / "out", "--dry-run")
    lines = err.strip().splitlines()
    for seed in (0, 1):
        assert f"qmixlab ablate: run standard__3mm__seed{seed}: unknown map '3mm' for smacsim; did you mean '3m'?" in err
        assert f"qmixlab ablate: run never__3m__seed{seed}: masks.timeout='never' is not one of" in err
        assert f"run never__3mm__seed{seed}:" in err
    assert not any(f"standard__3m__seed{seed}" in err for seed in (0, 1))  # the valid runs are not listed as failing
    assert len(lines) == 6 + 1 and lines[-1] == f"qmixlab ablate: {sweep_file}: 6 of 8 runs have an invalid configuration (listed above); nothing was started"
    assert not (tmp_path / "out").exists()


def test_a_bad_key_or_value_in_the_base_fails_every_run_before_any_starts(tmp_path, capsys, monkeypatch):
    sweep_file = write_sweep_file(tmp_path / "s.yaml", base={"t_max": 1000, "learner": {"gamma": 1.5}})
    monkeypatch.setattr(execution, "execute_cli_run", fake_executor)
    err = ablate_fails(capsys, sweep_file, "--out", tmp_path / "out", "--workers", "1", "--no-progress")
    assert err.count("learner.gamma=1.5") == 4 and "4 of 4 runs have an invalid configuration" in err
    assert not (tmp_path / "out").exists() and calls(tmp_path / "out") == []


def test_the_valid_dry_run_says_every_configuration_was_checked(tmp_path, capsys):
    sweep_file = write_sweep_file(tmp_path / "s.yaml")
    assert cli.main(["ablate", str(sweep_file), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs in" in out and "every configuration valid (dry run: nothing started)" in out


# --------------------------------------------------------------------------- kept results
ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "ablations" / "masks-smacsim"


def test_examples_default_to_fresh_folders_and_the_committed_reproduction_is_kept():
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        spec = sweep.load_sweep(example, validate=False)
        default = ROOT / sweep.default_sweep_dir(spec)
        assert COMMITTED != default and COMMITTED not in default.parents, example
        assert sweep.kept_results_reason(default) is None, example  # the README's commands work as typed
    assert [p.name for p in sweep.sweep_folders(COMMITTED)] == ["2s3z", "3m", "3m-1m", "3m-grouped"]
    assert "README.md" in sweep.kept_results_reason(COMMITTED)
    if (ROOT / ".git").exists() and shutil.which("git"):
        for folder in sweep.sweep_folders(COMMITTED):
            assert "tracked by git" in sweep.kept_results_reason(folder), folder


def test_ablate_into_the_committed_reproduction_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(execution, "execute_cli_run", lambda run: pytest.fail(f"started {run.run_id}"))
    monkeypatch.setattr(execution, "execute_cli_group", lambda runs: pytest.fail(f"started {runs[0].run_id}"))
    monkeypatch.setattr(sweep, "write_sweep_file", lambda *a: pytest.fail("wrote into the committed folder"))
    err = ablate_fails(capsys, "examples/ablations_smacsim.yaml", "--out", "results/ablations/masks-smacsim", "--dry-run")
    assert "results/ablations/masks-smacsim is a folder of sweeps (2s3z, 3m, 3m-1m, 3m-grouped)" in err and "--out DIR" in err
    if (ROOT / ".git").exists() and shutil.which("git"):
        err = ablate_fails(capsys, "examples/masks_smacsim_3m.yaml", "--out", "results/ablations/masks-smacsim/3m")
        assert "results/ablations/masks-smacsim/3m holds kept results" in err and "tracked by git" in err
        assert "--out DIR" in err and "--append" in err


@pytest.mark.skipif(not shutil.which("git"), reason="needs the git command")
def test_a_folder_tracked_by_git_gains_runs_only_with_append(tmp_path, capsys, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(execution, "execute_cli_run", fake_executor)
    sweep_file = write_sweep_file(tmp_path / "s.yaml", seeds=[0])
    out = tmp_path / "results" / "ablations" / "cli"  # the default folder of sweep "cli"
    assert cli.main(["ablate", str(sweep_file), "--workers", "1", "--no-progress"]) == 0  # nothing kept yet
    assert calls(out) == ["standard__3m__seed0", "inf_fill_value__3m__seed0"]
    subprocess.run(["git", "add", "results"], check=True)  # kept: committed (staged is enough for git ls-files)
    capsys.readouterr()
    before = (out / "sweep.yaml").read_text()
    write_sweep_file(sweep_file, seeds=[0, 1])
    err = ablate_fails(capsys, sweep_file, "--workers", "1", "--no-progress")
    assert f"{Path('results/ablations/cli')} holds kept results (" in err and "tracked by git" in err
    assert "Pass --out DIR to run it in another folder, or --append to add its runs to this one on purpose" in err
    assert (out / "sweep.yaml").read_text() == before and len(calls(out)) == 2
    assert cli.main(["ablate", str(sweep_file), "--append", "--workers", "1", "--no-progress"]) == 0
    assert calls(out)[2:] == ["standard__3m__seed1", "inf_fill_value__3m__seed1"]


def test_a_folder_with_a_readme_is_kept(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(execution, "execute_cli_run", fake_executor)
    out = tmp_path / "curated"
    out.mkdir()
    (out / "README.md").write_text("Our reproduction, described by hand.\n")
    sweep_file = write_sweep_file(tmp_path / "s.yaml")
    err = ablate_fails(capsys, sweep_file, "--out", out)
    assert "holds kept results (it holds a README.md)" in err and calls(out) == []
    assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--dry-run"]) == 0
    assert "without --dry-run this sweep is refused there unless you pass --out DIR or --append" in capsys.readouterr().out


# --------------------------------------------------------------------------- Ctrl-C and SIGTERM
def stops_on_second_run(signum):
    def executor(run):
        sweep_dir = Path(run.run_dir).parents[1]
        done = calls(sweep_dir)
        with open(sweep_dir / "calls.log", "a") as log:
            log.write(run.run_id + "\n")
        if len(done) == 1:
            os.kill(os.getpid(), signum)  # as the terminal's Ctrl-C or a `kill` would
            time.sleep(30)
            pytest.fail("the signal did not stop the run")
        write_completed_sacred_run(run.run_dir, [0.5, 0.5, 0.5])
    return executor


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_sweep_marks_the_run_interrupted_and_the_same_command_resumes(tmp_path, capsys, monkeypatch, signum, code):
    sweep_file = write_sweep_file(tmp_path / "s.yaml")
    out = tmp_path / "out"
    argv = ["ablate", str(sweep_file), "--out", str(out), "--workers", "1", "--no-progress"]
    monkeypatch.setattr(execution, "execute_cli_run", stops_on_second_run(signum))
    started = time.time()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert time.time() - started < 20
    stdout, err = capsys.readouterr()
    assert exit_info.value.code == code and "Traceback" not in stdout + err
    name = signal.Signals(signum).name
    assert err.strip() == (f"qmixlab ablate: stopped by {name}: 1 running run(s) marked interrupted, 2 not started, "
                           f"1/4 finished; to resume, run the same command again: qmixlab ablate {' '.join(argv[1:])}")
    runs = sweep.expand(sweep.load_sweep(sweep_file), out)
    assert calls(out) == [runs[0].run_id, runs[1].run_id]  # nothing launched after the signal
    status = json.loads((Path(runs[1].run_dir) / "status.json").read_text())
    assert status["state"] == "interrupted" and status["interrupted_by"] == name and status["ended"]
    assert run_state(runs[1].run_dir).state == "interrupted" and not (Path(runs[1].run_dir) / "claim.json").exists()
    assert not (Path(runs[2].run_dir) / "status.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the sweep's handlers are gone

    monkeypatch.setattr(execution, "execute_cli_run", fake_executor)
    assert cli.main(argv) == 0
    assert calls(out)[2:] == [r.run_id for r in runs[1:]]
    assert json.loads((Path(runs[1].run_dir) / "status.json").read_text())["attempt"] == 2


def test_a_keyboard_interrupt_raised_by_a_run_stops_the_sweep(tmp_path, capsys):
    def interrupted(run):
        raise KeyboardInterrupt

    runs = sweep.expand(small_spec(), tmp_path)
    result = run_sweep(runs, tmp_path, executor=interrupted, workers=1, progress=False, log=quiet)
    assert result.stopped_by == "SIGINT"
    assert [o["result"] for o in result.outcomes] == ["interrupted", "not_started", "not_started", "not_started"]
    assert run_state(runs[0].run_dir).state == "interrupted"


POOL_SWEEP = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from qmixlab.ablations import cli, execution

    def slow(run):
        Path(run.run_dir, "started").touch()
        time.sleep(600)

    if __name__ == "__main__":
        execution.execute_cli_run = slow
        cli.main(["ablate", *sys.argv[1:]])
""")


@pytest.mark.slow
@pytest.mark.parametrize("how, code", [("sigterm_to_the_sweep", 143), ("ctrl_c_to_the_process_group", 130)])
def test_a_stopped_pool_stops_its_running_runs_and_starts_no_queued_one(tmp_path, how, code):
    script = tmp_path / "pool_sweep.py"
    script.write_text(POOL_SWEEP)
    sweep_file = write_sweep_file(tmp_path / "s.yaml", seeds=[0, 1])
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, str(script), str(sweep_file), "--out", str(out), "--workers", "2",
                                "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(list(out.glob("runs/*/started"))) < 2:
            assert time.time() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.1)
        if how == "sigterm_to_the_sweep":
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == code and "Traceback" not in stdout + stderr, stdout + stderr
    assert "2 running run(s) marked interrupted, 2 not started" in stderr
    states = {p.name: run_state(p).state for p in sorted(out.glob("runs/*"))}
    started = {p.parent.name for p in out.glob("runs/*/started")}
    assert len(started) == 2 and all(states[rid] == "interrupted" for rid in started)
    assert not any((out / "runs" / rid / "status.json").exists() for rid in set(states) - started)


# --------------------------------------------------------------------------- other environment families
@pytest.mark.parametrize("env, task, key", [
    ("smacsim", "3m", "env_args.map_name"),
    ("mpe", "simple_spread_v3", "env_args.task"),
    ("lbf", "Foraging-8x8-2p-2f-coop-v3", "env_args.key"),
    ("rware", "rware-tiny-2ag-v2", "env_args.key"),
])
def test_maps_set_each_backends_own_task_argument(env, task, key):
    spec = sweep.parse_sweep({"name": "families", "alg": "qmix", "env": env, "base": {"t_max": 1000},
                              "variants": ["standard"], "maps": [task], "seeds": [0]})
    (run,) = sweep.expand(spec, "/tmp/unused")
    overrides = sweep.command_overrides(run)
    assert overrides[key] == task
    assert [k for k in overrides if k.startswith("env_args.")] == [key]
    with pytest.raises(ConfigError, match=re.escape(repr(key)) + ".*set by the sweep itself"):
        sweep.parse_sweep({"name": "families", "alg": "qmix", "env": env,
                           "base": {"t_max": 1000, "env_args": {key.split(".")[1]: task}},
                           "variants": ["standard"], "maps": [task], "seeds": [0]})


def test_a_backend_without_a_task_argument_takes_one_map_as_a_label():
    base = {"t_max": 1000, "env_args": {"env_fn": "mpe2.simple_spread_v3:parallel_env"}}
    spec = sweep.parse_sweep({"name": "pz", "alg": "qmix", "env": "pettingzoo", "base": base,
                              "variants": ["standard"], "maps": ["spread"], "seeds": [0]})
    (run,) = sweep.expand(spec, "/tmp/unused")
    overrides = sweep.command_overrides(run)
    assert [k for k in overrides if k.startswith("env_args.")] == ["env_args.env_fn"]  # the label sets nothing
    with pytest.raises(ConfigError, match=r"'pettingzoo' takes none of the task arguments.*one label in maps"):
        sweep.parse_sweep({"name": "pz", "alg": "qmix", "env": "pettingzoo", "base": base,
                           "variants": ["standard"], "maps": ["a", "b"], "seeds": [0]})
