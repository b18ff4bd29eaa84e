"""Ablation presets, sweep expansion, the command line handed to sacred, and the sweep machinery
(skipping, failures, retries, claims, merging, interrupted runs) with a fake executor."""

import json
import os
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
    while run_state(run_dir).state != "running":
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
    raw = {"name": "cli", "base": {"t_max": 1000}, "variants": ["standard", "inf_fill_value"], "maps": ["3m"], "seeds": [0, 1]}
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
