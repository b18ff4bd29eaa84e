"""Evaluating a checkpoint's agent on another map (issue 14, transfer across team sizes).

The entity agent's weights do not depend on the numbers of allies and enemies, so its checkpoint
from 3m plays 8m unchanged; the flat GRU agent's input and output sizes are the map's, so it is
refused with a message that says why and what to do instead.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from qmixlab import run as run_module
from qmixlab.checkpoints import CheckpointError, list_checkpoints, load_checkpoint
from qmixlab.metrics import RunLogger
from qmixlab.settings import validate_run

TRAIN = {"t_max": 300, "batch_size": 4, "buffer_size": 16, "batch_size_run": 4, "test_nepisode": 4,
         "test_interval": 1000, "log_interval": 1000, "progress_bar": False}


def trained(tmp_path, agent: dict, map_name="3m"):
    models = tmp_path / "models"
    settings = validate_run("qmix", "smacsim", {**TRAIN, "env_args.map_name": map_name, "agent": agent})
    run_module.train(settings, RunLogger(), models_dir=models)
    return models


def evaluation(models, agent: dict, map_name: str):
    return validate_run("qmix", "smacsim", {**TRAIN, "env_args.map_name": map_name, "agent": agent,
                                            "evaluate": True, "checkpoint_path": str(models)})


def test_an_entity_agent_trained_on_3m_plays_8m_with_its_own_weights(tmp_path, monkeypatch):
    agent = {"name": "entity_attention", "use_agent_id": False}
    models = trained(tmp_path, agent)
    saved = load_checkpoint(list_checkpoints(models)[max(list_checkpoints(models))])["learner"]["mac"]
    built = {}
    original = run_module.build_components

    def keep(settings):
        built["parts"] = original(settings)
        return built["parts"]

    monkeypatch.setattr(run_module, "build_components", keep)
    results = run_module.evaluate(evaluation(models, agent, "8m"), RunLogger())
    assert built["parts"].env_info["n_agents"] == 8
    assert set(results) >= {"test_return_mean", "test_battle_won_mean"}
    loaded = built["parts"].learner.mac.state_dict()
    assert loaded.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key


def test_an_entity_agent_with_agent_ids_is_held_to_its_team_size(tmp_path):
    agent = {"name": "entity_attention", "use_agent_id": True}
    models = trained(tmp_path, agent)
    with pytest.raises(CheckpointError, match="n_agents is 3 in the checkpoint but 8 here"):
        run_module.evaluate(evaluation(models, agent, "8m"), RunLogger())


def test_the_flat_agent_on_another_team_size_is_refused_with_the_reason(tmp_path):
    agent = {"name": "rnn"}
    models = trained(tmp_path, agent)
    with pytest.raises(CheckpointError, match=r"obs_shape is \d+ in the checkpoint but \d+ here.*sized by the map.*"
                                              r"agent.name=entity_attention"):
        run_module.evaluate(evaluation(models, agent, "8m"), RunLogger())


def test_command_line_transfer_evaluation(tmp_path):
    agent = {"name": "entity_attention", "use_agent_id": False}
    models = trained(tmp_path, agent)
    command = [sys.executable, "-m", "qmixlab", "-u", "with", f"checkpoint_path={models}", "evaluate=True",
               "env_args.map_name=8m", "test_nepisode=4", "batch_size_run=4"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "evaluation over 4 episodes" in done.stderr
