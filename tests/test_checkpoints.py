"""Atomic checkpoint writes, safe loading, and errors that name the file and the mismatch."""

import os

import pytest
import torch

from qmixlab import checkpoints
from qmixlab.checkpoints import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint


def payload(value=1.0):
    return {"compatibility": {"n_agents": 3, "map_name": "3m"}, "weights": torch.full((2,), value)}


def test_round_trip_and_latest_or_closest_step(tmp_path):
    for step in (100, 250, 400):
        save_checkpoint(tmp_path, step, payload(step))
    assert find_checkpoint(tmp_path).parent.name == "400"
    assert find_checkpoint(tmp_path, load_step=260).parent.name == "250"
    loaded = load_checkpoint(find_checkpoint(tmp_path, 100), expected={"n_agents": 3})
    assert loaded["t_env"] == 100 and torch.equal(loaded["weights"], torch.full((2,), 100.0))


def test_killed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 100, payload(1.0))

    def dies_half_way(obj, handle):
        handle.write(b"partial")
        raise KeyboardInterrupt  # the process is killed while writing

    monkeypatch.setattr(checkpoints.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 200, payload(2.0))
    monkeypatch.undo()
    assert sorted(checkpoints.list_checkpoints(tmp_path)) == [100]
    assert find_checkpoint(tmp_path).parent.name == "100"
    assert load_checkpoint(find_checkpoint(tmp_path))["weights"][0].item() == 1.0


def test_saving_the_same_step_twice_replaces_it(tmp_path):
    save_checkpoint(tmp_path, 100, payload(1.0))
    save_checkpoint(tmp_path, 100, payload(3.0))
    assert load_checkpoint(tmp_path / "100")["weights"][0].item() == 3.0
    assert [p.name for p in tmp_path.iterdir()] == ["100"]


def test_corrupt_checkpoint_names_the_file(tmp_path):
    folder = save_checkpoint(tmp_path, 100, payload())
    file = folder / checkpoints.CHECKPOINT_FILE
    file.write_bytes(file.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=str(file)):
        load_checkpoint(file)


def test_arbitrary_objects_are_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    file = tmp_path / "1" / checkpoints.CHECKPOINT_FILE
    file.parent.mkdir()
    with open(file, "wb") as handle:
        torch.save({"format_version": checkpoints.FORMAT_VERSION, "evil": Evil()}, handle)
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(file)


def test_mismatched_checkpoint_names_key_and_values(tmp_path):
    folder = save_checkpoint(tmp_path, 100, payload())
    with pytest.raises(CheckpointError, match=r"n_agents is 3 in the checkpoint but 8 here"):
        load_checkpoint(folder, expected={"n_agents": 8})


def test_missing_checkpoints_are_reported(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        find_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="is not a folder"):
        find_checkpoint(tmp_path / "nope")
