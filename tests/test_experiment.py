"""The command line end to end: sacred run folders, checkpoints, exact resume, faults."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from qmixlab import run as run_module
from qmixlab.checkpoints import CheckpointError, list_checkpoints, load_checkpoint
from qmixlab.metrics import RunLogger
from qmixlab.settings import compose_config, deep_merge, validate_config

SMALL = {
    "env_args": {"map_name": "3m"},
    "t_max": 1500,
    "batch_size": 4,
    "buffer_size": 32,
    "batch_size_run": 2,
    "test_interval": 500,
    "test_nepisode": 2,
    "log_interval": 500,
    "save_model_interval": 500,
    "progress_bar": False,
    "agent": {"hidden_dim": 16},
    "mixer": {"mixing_embed_dim": 8, "hypernet_embed": 16},
    "epsilon": {"anneal_time": 1000},
    "learner": {"target_update_interval_episodes": 20},
}
CLI_SMALL = [
    "env_args.map_name=3m", "t_max=1200", "batch_size=4", "buffer_size=32", "batch_size_run=2",
    "test_interval=400", "test_nepisode=2", "log_interval=400", "save_model_interval=400",
    "progress_bar=False", "agent.hidden_dim=16", "mixer.mixing_embed_dim=8", "mixer.hypernet_embed=16",
]


def settings_for(tmp_path, **updates):
    config = deep_merge(compose_config("qmix", "smacsim"), SMALL)
    config = deep_merge(config, dict(seed=5, local_results_path=str(tmp_path)))
    return validate_config(deep_merge(config, updates))


class RecordingRun:
    """Stands in for sacred's Run: keeps every logged scalar."""

    def __init__(self):
        self.metrics = {}

    def log_scalar(self, name, value, step):
        self.metrics.setdefault(name, []).append((step, value))


def train_recorded(settings, models_dir):
    recorder = RunLogger(sacred_run=RecordingRun())
    run_module.train(settings, recorder, models_dir=models_dir)
    return recorder.sacred_run.metrics


def cli(*args, cwd, timeout=300, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "qmixlab", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"qmixlab {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.slow
def test_smoke_run_through_the_command_line(tmp_path):
    cli("with", *CLI_SMALL, "seed=1", f"local_results_path={tmp_path}", cwd=tmp_path)
    runs = [p for p in (tmp_path / "sacred").iterdir() if p.name.isdigit()]
    assert len(runs) == 1
    run_dir = runs[0]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_args"]["map_name"] == "3m" and config["seed"] == 1
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test_battle_won_mean", "test_return_mean", "return_mean", "loss", "td_error_abs",
                "grad_norm", "q_taken_mean", "target_mean", "epsilon", "ep_length_mean",
                "dead_allies_mean", "dead_enemies_mean", "battle_won_mean"):
        assert key in metrics, key
        assert all(math.isfinite(v) for v in metrics[key]["values"])
    models = list((tmp_path / "models").iterdir())
    assert len(models) == 1
    steps = sorted(list_checkpoints(models[0]))
    assert steps and steps[-1] >= 1200


def test_resumed_run_reproduces_the_uninterrupted_run(tmp_path):
    full = train_recorded(settings_for(tmp_path, t_max=1500), tmp_path / "full")
    # Stop after ~700 steps, then resume from the last checkpoint to the same t_max.
    train_recorded(settings_for(tmp_path, t_max=700), tmp_path / "part")
    stopped_at = max(list_checkpoints(tmp_path / "part"))
    resumed = train_recorded(
        settings_for(tmp_path, t_max=1500, checkpoint_path=str(tmp_path / "part")), tmp_path / "part"
    )
    assert resumed, "the resumed run logged nothing"
    # The resumed run's record is the whole run: the checkpoint's points, then its own.
    assert set(resumed) == set(full)
    for key, values in resumed.items():
        assert values == full[key], key
    assert any(step > stopped_at for step, _ in full["loss"])


def test_checkpoint_holds_everything_to_continue(tmp_path):
    train_recorded(settings_for(tmp_path, t_max=600), tmp_path / "models")
    found = list_checkpoints(tmp_path / "models")
    raw = torch.load(found[max(found)], weights_only=True)
    assert raw["buffer"] is None and raw["buffer_file"] == "replay_buffer.pt"  # the buffer has its own file
    payload = load_checkpoint(found[max(found)])
    for key in ("learner", "buffer", "counters", "logger", "rng", "compatibility", "settings"):
        assert payload[key] is not None, key
    for key in ("mac", "target_mac", "mixer", "target_mixer", "optimiser"):
        assert key in payload["learner"]


def test_mismatched_checkpoint_is_refused(tmp_path):
    train_recorded(settings_for(tmp_path, t_max=300), tmp_path / "models")
    with pytest.raises(CheckpointError, match="hidden_dim is 16 in the checkpoint but 32 here"):
        train_recorded(settings_for(tmp_path, checkpoint_path=str(tmp_path / "models"),
                                    agent={"hidden_dim": 32}), tmp_path / "other")


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    original = run_module.QLearner.train
    calls = {"n": 0}

    def poisoned(self, batch, t_env=0, episode_num=0):
        calls["n"] += 1
        stats = original(self, batch, t_env, episode_num)
        if t_env > 800:
            stats["loss"] = float("nan")
        return stats

    monkeypatch.setattr(run_module.QLearner, "train", poisoned)
    with pytest.raises(run_module.NonFiniteLossError, match="non-finite loss"):
        train_recorded(settings_for(tmp_path, t_max=1500), tmp_path / "models")
    steps = sorted(list_checkpoints(tmp_path / "models"))
    assert steps and steps[-1] <= 800 + 2 * 60


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    args = [sys.executable, "-m", "qmixlab", "-u", "with", *CLI_SMALL, "t_max=10000000",
            "save_model_interval=100000000", f"local_results_path={tmp_path}"]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    models = tmp_path / "models"
    deadline = time.time() + 120
    while time.time() < deadline and not (models.exists() and any(models.iterdir()) and
                                          list_checkpoints(next(models.iterdir()))):
        time.sleep(0.5)
    first = set(list_checkpoints(next(models.iterdir())))
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    steps = set(list_checkpoints(next(models.iterdir())))
    assert "saved checkpoint" in err and "interrupted" in err, err[-2000:]
    assert max(steps) > max(first)


def test_bad_config_fails_before_work_naming_the_key(tmp_path):
    result = cli("-u", "with", "lr=0.1", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "unknown config key 'lr'; did you mean 'learner.lr=0.1'?" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()
    result = cli("-u", "with", "env_args.map_name=3mm", "t_max=100", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "3mm" in result.stderr
    result = cli("-u", "with", "alg=qmx", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "did you mean 'qmix'" in result.stderr


def test_print_config_shows_the_merged_config_in_both_syntaxes(tmp_path):
    out = cli("print_config", "with", "alg=vdn", "masks.timeout=terminal", cwd=tmp_path).stdout
    assert "name = 'vdn'" in out and "timeout = 'terminal'" in out and "map_name = '3m'" in out
    out = cli("--config=iql", "--env-config=smacsim", "print_config", "with", "t_max=10", cwd=tmp_path).stdout
    assert "name = 'iql'" in out and "normalisation = 'valid_agent_steps'" in out and "t_max = 10" in out


def test_evaluate_loads_a_checkpoint_and_reports(tmp_path):
    train_recorded(settings_for(tmp_path, t_max=300), tmp_path / "models")
    result = cli("-u", "with", *CLI_SMALL, "evaluate=True", f"checkpoint_path={tmp_path / 'models'}",
                 f"local_results_path={tmp_path}", cwd=tmp_path)
    assert "test_battle_won_mean" in result.stderr


def test_tensorboard_logging_is_optional_and_writes_events(tmp_path):
    events_dir = tmp_path / "tb"
    logger = RunLogger(sacred_run=RecordingRun(), tensorboard_dir=str(events_dir))
    run_module.train(settings_for(tmp_path, t_max=300, save_model=False, use_tensorboard=True), logger)
    logger.close()
    files = list(events_dir.glob("events.out.tfevents.*"))
    assert files and files[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events_dir))
    accumulator.Reload()
    assert "test_battle_won_mean" in accumulator.Tags()["scalars"]
    # Off by default: the default config writes no TensorBoard folder.
    assert validate_config(dict(compose_config("qmix", "smacsim"), seed=0)).use_tensorboard is False


def test_environment_flagged_invalid_steps_reach_the_buffer_and_the_mask(tmp_path):
    settings = settings_for(tmp_path, env_args={"map_name": "3m", "flag_invalid_steps": True})
    parts = run_module.build_components(settings)
    assert "invalid" in parts.runner.scheme

    class StopForever:  # every live ally stops while the enemy shoots: flagged invalid steps
        def init_hidden(self, n):
            pass

        def select_actions(self, obs, avail, t_env, test_mode=False, env_mask=None, generator=None):
            return torch.as_tensor(avail[..., 1].astype("int64"))

    parts.runner.mac = StopForever()
    batch, _ = parts.runner.run()
    parts.buffer.insert_episode_batch(batch)
    sample = parts.buffer.sample(1)
    assert sample["invalid"].any(), "no step was flagged"
    # Without the option the field is not stored at all.
    assert "invalid" not in run_module.build_components(settings_for(tmp_path)).runner.scheme
