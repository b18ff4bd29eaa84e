"""The command line as a new user types it (issue 17, items 1-11): every command goes through the
entry point, and each test asserts the outcome the user sees: the clean one-line message and the
exit code, the record after a kill, the checkpoint schedule after a resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qmixlab.__main__ import main as qmixlab_main
from qmixlab.checkpoints import list_checkpoints

TINY = ["env_args.map_name=3m", "batch_size=4", "buffer_size=32", "batch_size_run=2", "test_interval=400",
        "test_nepisode=2", "log_interval=400", "save_model_interval=400", "progress_bar=False",
        "agent.hidden_dim=16", "mixer.mixing_embed_dim=8", "mixer.hypernet_embed=16"]
FIXTURES = Path(__file__).resolve().parent


def run_cli(capsys, *args):
    """``qmixlab <args>`` in this process; returns (exit code, stdout, stderr)."""
    try:
        code = qmixlab_main(["qmixlab", *args])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def spawn(*args, cwd, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(FIXTURES), **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "qmixlab", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def cli(*args, cwd, timeout=300):
    process = spawn(*args, cwd=cwd)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def sacred_runs(results: Path):
    return sorted((p for p in (results / "sacred").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def metrics_of(run_dir: Path) -> dict:
    raw = json.loads((run_dir / "metrics.json").read_text())
    return {name: list(zip(m["steps"], m["values"])) for name, m in raw.items()}


def one_line_error(err: str, *fragments):
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("qmixlab: ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ------------------------------------------------------------------ 1-5: command line and config
def test_environment_arguments_can_be_set_in_every_form(capsys, tmp_path):
    code, out, err = run_cli(capsys, "print_config", "with", "env_args.flag_invalid_steps=True")
    assert code == 0 and "flag_invalid_steps = True" in out, err
    code, out, err = run_cli(capsys, "print_config", "with", 'env_args={"flag_invalid_steps": True}')
    assert code == 0 and "flag_invalid_steps = True" in out, err
    config_file = tmp_path / "mine.yaml"
    config_file.write_text("env_args:\n  flag_invalid_steps: true\n  map_name: 2s3z\n")
    code, out, err = run_cli(capsys, "print_config", "with", str(config_file))
    assert code == 0 and "flag_invalid_steps = True" in out and "map_name = '2s3z'" in out, err


def test_a_misspelled_environment_argument_is_named_with_its_close_match(capsys):
    code, _, err = run_cli(capsys, "print_config", "with", "env_args.flag_invalid_step=True")
    assert code == 2
    one_line_error(err, "flag_invalid_step", "did you mean 'flag_invalid_steps'")
    code, _, err = run_cli(capsys, "print_config", "with", "env_args.map_name=3mm")
    assert code == 2
    one_line_error(err, "3mm", "did you mean '3m'")


def test_skip_unread_rows_can_be_set(capsys):
    code, out, err = run_cli(capsys, "print_config", "with", "masks.skip_unread_rows=False")
    assert code == 0 and "skip_unread_rows = False" in out, err


@pytest.mark.parametrize("update, answer", [
    ("target_update_interval=100", "learner.target_update_interval_episodes=100"),
    ("map_name=2s3z", "env_args.map_name=2s3z"),
    ("epsilon_start=0.5", "epsilon.start=0.5"),
    ("rnn_hidden_dim=32", "agent.hidden_dim=32"),
    ("use_cuda=True", "device=cuda"),
    ("mixer=vdn", "mixer.name=vdn"),
])
def test_pymarl_flat_keys_are_answered_in_one_line(capsys, update, answer):
    code, _, err = run_cli(capsys, "print_config", "with", update)
    assert code == 2
    one_line_error(err, answer)


def test_config_errors_are_one_line_and_a_non_zero_exit(capsys, tmp_path):
    for update, fragment in (("t_max=long", "t_max='long' must be an integer"),
                             ("masks.timeout=terminl", "masks.timeout='terminl'"),
                             ("alg=qmx", "did you mean 'qmix'"),
                             ("env=smacism", "did you mean 'smacsim'"),
                             ("masks.dead_agents=agent_loss_mask", "needs mixer.name=none")):
        code, _, err = run_cli(capsys, "-u", "with", update, f"local_results_path={tmp_path}")
        assert code == 2, (update, err)
        one_line_error(err, fragment)


def test_device_cuda_without_cuda_fails_at_validation(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path cannot be shown")
    code, _, err = run_cli(capsys, "print_config", "with", "device=cuda")
    assert code == 2
    one_line_error(err, "device='cuda'", "no CUDA device")


def test_zero_test_episodes_run_no_test(capsys, tmp_path):
    code, _, err = run_cli(capsys, "-F", str(tmp_path / "sacred"), "with", *TINY, "t_max=500",
                           "test_nepisode=0", "save_model=False", f"local_results_path={tmp_path}")
    assert code == 0, err
    metrics = metrics_of(sacred_runs(tmp_path)[0])
    assert "loss" in metrics or "return_mean" in metrics
    assert not any(name.startswith("test_") for name in metrics), sorted(metrics)


# ------------------------------------------------------------------ 6-8: resuming
def train_tiny(capsys, tmp_path, *extra):
    code, _, err = run_cli(capsys, "with", *TINY, "seed=7", f"local_results_path={tmp_path}", *extra)
    assert code == 0, err
    run = sacred_runs(tmp_path)[-1]
    return run, Path(json.loads((run / "info.json").read_text())["models_dir"])


def test_resume_refuses_incompatible_settings_before_running(capsys, tmp_path):
    run, models = train_tiny(capsys, tmp_path, "t_max=400")
    runs_before = len(sacred_runs(tmp_path))
    code, _, err = run_cli(capsys, "with", f"checkpoint_path={models}", "learner.optimiser=rmsprop")
    assert code == 2
    one_line_error(err, "learner.optimiser is 'adam' in checkpoint", "'rmsprop' here")
    code, _, err = run_cli(capsys, "with", f"checkpoint_path={models}", "batch_size_run=1")
    assert code == 2
    one_line_error(err, "batch_size_run is 2 in checkpoint", "1 here")
    assert len(sacred_runs(tmp_path)) == runs_before, "a refused resume must not start a run"


def test_resume_continues_the_run_it_resumes(capsys, tmp_path):
    """Its t_max, seed and config, unless overridden; the overrides are announced."""
    run, models = train_tiny(capsys, tmp_path, "t_max=400", "alg=qmix_pymarl", "batch_size_run=1")
    code, _, err = run_cli(capsys, "with", f"checkpoint_path={models}", "t_max=800")
    assert code == 0, err
    assert "t_max: 400 -> 800" in err
    resumed = sacred_runs(tmp_path)[-1]
    config = json.loads((resumed / "config.json").read_text())
    assert config["seed"] == 7 and config["alg"] == "qmix_pymarl" and config["batch_size_run"] == 1
    assert config["learner"]["optimiser"] == "rmsprop" and config["t_max"] == 800
    assert max(list_checkpoints(models)) >= 800


def test_checkpoints_after_a_resume_fall_on_the_uninterrupted_runs_steps(capsys, tmp_path):
    _, full = train_tiny(capsys, tmp_path / "full", "t_max=1300")
    _, part = train_tiny(capsys, tmp_path / "part", "t_max=600")
    stopped_at = max(list_checkpoints(part))  # the first run's final checkpoint
    code, _, err = run_cli(capsys, "with", f"checkpoint_path={part}", "t_max=1300",
                           f"local_results_path={tmp_path / 'part'}")
    assert code == 0, err
    after_resume = sorted(step for step in list_checkpoints(part) if step > stopped_at)
    assert after_resume == sorted(step for step in list_checkpoints(full) if step > stopped_at)
    assert len(after_resume) >= 2


# ------------------------------------------------------------------ 9-11: losing nothing
def wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def checkpoint_steps(results: Path):
    models = results / "models"
    if not models.exists():
        return []
    return [step for run in models.iterdir() for step in list_checkpoints(run)]


@pytest.mark.slow
def test_a_killed_run_resumed_has_every_point_of_the_uninterrupted_run(tmp_path):
    args = ["with", *TINY, "seed=3", "t_max=2400", "test_interval=300", "log_interval=300",
            "save_model_interval=800"]
    code, _, err = cli(*args, f"local_results_path={tmp_path / 'full'}", cwd=tmp_path)
    assert code == 0, err
    full = metrics_of(sacred_runs(tmp_path / "full")[0])

    killed = tmp_path / "killed"
    process = spawn(*args, f"local_results_path={killed}", cwd=tmp_path)
    assert wait_for(lambda: any(step >= 800 for step in checkpoint_steps(killed))), "no checkpoint at 800"
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    models = next((killed / "models").iterdir())
    code, _, err = cli("with", f"checkpoint_path={models}", f"local_results_path={killed}", cwd=tmp_path)
    assert code == 0, err
    resumed = metrics_of(sacred_runs(killed)[-1])
    assert set(resumed) == set(full)
    for name, points in full.items():
        assert resumed[name] == points, name


@pytest.mark.slow
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_save_and_stop_cleanly(tmp_path, signum, exit_code):
    process = spawn("with", *TINY, "t_max=100000000", "save_model_interval=100000000",
                    f"local_results_path={tmp_path}", cwd=tmp_path)
    assert wait_for(lambda: checkpoint_steps(tmp_path)), "no first checkpoint"
    first = max(checkpoint_steps(tmp_path))
    time.sleep(2.0)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == exit_code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert max(checkpoint_steps(tmp_path)) > first
    assert "resume with: qmixlab with checkpoint_path=" in err
    status = json.loads((sacred_runs(tmp_path)[0] / "run.json").read_text())["status"]
    assert status == "INTERRUPTED"


@pytest.mark.slow
def test_ctrl_c_without_saving_says_so(tmp_path):
    log = tmp_path / "stderr.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(FIXTURES))
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "qmixlab", "-u", "with", *TINY, "t_max=100000000", "save_model=False",
             f"local_results_path={tmp_path}"], cwd=tmp_path, env=env, text=True,
            stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            # Past start-up, into training (a fixed sleep is not enough on a loaded machine).
            assert wait_for(lambda: "t_env:" in log.read_text()), log.read_text()[-3000:]
            assert process.poll() is None, log.read_text()[-3000:]
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
        finally:
            if process.poll() is None:  # a failed check must not leave a training process behind
                process.kill()
                process.wait()
    err = log.read_text()
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "saving a checkpoint" not in err
    assert "save_model=False" in err and not (tmp_path / "models").exists()


def test_default_checkpoints_come_often_enough():
    from qmixlab.settings import RunSettings

    defaults = RunSettings()
    # the quick start's 400k-step run gets several checkpoints; at ~1000 steps/s a kill loses ~1 min
    assert defaults.save_model_interval <= 100_000


# ------------------------------------------------------------------ plug-in environments (issue 18)
PLUGIN_RUN = ["t_max=3000", "test_interval=1000", "log_interval=1000", "batch_size=8", "batch_size_run=4",
              "buffer_size=64", "save_model=False", "progress_bar=False", "seed=0"]


@pytest.mark.parametrize("module_dir, env, env_args", [
    (FIXTURES, "plugin_fixtures.line_world:LineWorld", ["env_args.size=4"]),
    (FIXTURES / "plugin_fixtures", "line_world:StopNoopLineWorld", ["env_args.size=4"]),
    (FIXTURES / "plugin_fixtures", "line_world:LateLimitLineWorld", ["env_args.size=4"]),
    (FIXTURES / "plugin_fixtures", "line_world:ReadOnlyLineWorld", ["env_args.size=4"]),
    (FIXTURES / "plugin_fixtures", "line_world:AutoResetLineWorld", ["env_args.size=4"]),
    (FIXTURES.parent / "examples", "plugin_env:CoinGame", ["env_args.n_cells=6", "masks.dead_agents=zero_utilities"]),
])
def test_a_plugin_environment_trains_from_the_command_line_with_its_own_arguments(
        capsys, monkeypatch, recwarn, tmp_path, module_dir, env, env_args):
    monkeypatch.syspath_prepend(str(module_dir))
    code, _, err = run_cli(capsys, "-F", str(tmp_path / "sacred"), "with", f"env={env}", *env_args,
                           *PLUGIN_RUN, f"local_results_path={tmp_path}")
    assert code == 0, err[-3000:]
    run = sacred_runs(tmp_path)[0]
    config = json.loads((run / "config.json").read_text())
    for assignment in env_args:
        key, value = assignment.split("=")
        if key.startswith("env_args."):
            assert str(config["env_args"][key.split(".", 1)[1]]) == value
    metrics = metrics_of(run)
    assert metrics["test_return_mean"] and metrics["loss"], sorted(metrics)
    cut = [w for w in recwarn if "did not end its episode within episode_limit" in str(w.message)]
    assert bool(cut) == env.endswith("LateLimitLineWorld"), [str(w.message) for w in recwarn]
    if env.endswith(":LineWorld"):  # the easy task is learned in 3000 steps
        assert metrics["test_battle_won_mean"][-1][1] >= 0.9, metrics["test_battle_won_mean"]


def test_a_plugin_environment_refuses_a_misspelled_argument(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    code, _, err = run_cli(capsys, "print_config", "with", "env=plugin_fixtures.line_world:LineWorld",
                           "env_args.sise=4")
    assert code == 2
    one_line_error(err, "'sise'", "did you mean 'size'")


def test_dead_agent_masks_need_an_environment_that_can_tell(capsys, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(FIXTURES))
    code, _, err = run_cli(capsys, "-u", "with", "env=plugin_fixtures.line_world:UndeclaredStopNoopLineWorld",
                           "masks.dead_agents=zero_utilities", *PLUGIN_RUN, f"local_results_path={tmp_path}")
    assert code == 2
    one_line_error(err, "masks.dead_agents='zero_utilities'", "neither an alive mask nor a no-op action")


def test_check_env_reports_through_the_entry_point(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    code, out, err = run_cli(capsys, "check-env", "plugin_fixtures.line_world:UndeclaredAutoResetLineWorld")
    assert code == 1, out + err
    assert "auto" in (out + err).lower()
    code, out, err = run_cli(capsys, "check-env", "plugin_fixtures.line_world:LineWorld", "size=4")
    assert code == 0, out + err


def test_more_threads_than_free_cores_warns(monkeypatch):
    import logging

    from qmixlab import run as run_module
    from qmixlab.settings import validate_run

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("qmixlab")
    logger.addHandler(handler)
    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(run_module, "free_cores", lambda: 1)
        run_module.set_threads(validate_run("qmix", "smacsim", {"torch_threads": 2}))
        assert any("torch_threads=2" in r.getMessage() and "1 core(s) look free" in r.getMessage()
                   for r in records)
        records.clear()
        run_module.set_threads(validate_run("qmix", "smacsim", {"torch_threads": 1}))
        assert not records
    finally:
        logger.removeHandler(handler)
        torch.set_num_threads(threads)


def test_resume_shows_its_settings_and_refuses_another_algorithm_by_flag(capsys, tmp_path):
    _, models = train_tiny(capsys, tmp_path, "t_max=400", "alg=vdn")
    code, out, err = run_cli(capsys, "print_config", "with", f"checkpoint_path={models}", "t_max=900")
    assert code == 0, err
    assert "name = 'vdn'" in out and "t_max = 900" in out and "seed = 7" in out
    code, _, err = run_cli(capsys, "--config=qmix", "with", f"checkpoint_path={models}")
    assert code == 2
    one_line_error(err, "alg is 'vdn' in checkpoint", "'qmix' here")
