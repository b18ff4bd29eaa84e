"""Atomic checkpoint writes, safe loading, and errors that name the file and the mismatch."""

import builtins
import errno
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest
import torch

from qmixlab import checkpoints
from qmixlab.checkpoints import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint


@pytest.fixture(autouse=True)
def fresh_qmixlab_logger(monkeypatch):
    """Each test starts with the "qmixlab" logger as a new process has it: no handler bound to an
    earlier test's captured stream, records reaching caplog."""
    logger = logging.getLogger("qmixlab")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger, "level", logging.NOTSET)


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


# --------------------------------------------------------------------------- a full disk
def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def enospc():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def raises_enospc(obj, handle):
    handle.write(b"partial")
    raise enospc()


def raises_torch_enforce_fail_after_enospc(obj, handle):
    """What torch raises when its writer's write fails: the OSError is only the context."""
    handle.write(b"partial")
    try:
        raise enospc()
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


@pytest.mark.parametrize("fake_save", [raises_enospc, raises_torch_enforce_fail_after_enospc])
def test_a_full_disk_says_so_with_the_path_and_removes_the_partial_save(tmp_path, monkeypatch, fake_save):
    save_checkpoint(tmp_path, 100, payload(1.0))
    monkeypatch.setattr(checkpoints.torch, "save", fake_save)
    with pytest.raises(CheckpointError) as error:
        save_checkpoint(tmp_path, 200, payload(2.0))
    message = str(error.value)
    assert "disk full (No space left on device)" in message
    assert str(tmp_path / "200" / checkpoints.CHECKPOINT_FILE) in message
    assert "inline_container" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no torch traceback underneath
    assert leftovers(tmp_path) == [] and sorted(checkpoints.list_checkpoints(tmp_path)) == [100]


def test_torchs_write_failure_without_its_cause_is_a_full_disk_when_no_space_is_left(tmp_path, monkeypatch):
    def enforce_fail(obj, handle):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoints.torch, "save", enforce_fail)
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: SimpleNamespace(free=4096))
    with pytest.raises(CheckpointError, match=r"cannot save checkpoint '.*/200/checkpoint.pt': disk full"):
        save_checkpoint(tmp_path, 200, payload())
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: SimpleNamespace(free=10**12))
    with pytest.raises(CheckpointError, match=r"RuntimeError: \[enforce fail at inline_container.cc:672\]") as error:
        save_checkpoint(tmp_path, 200, payload())
    assert "disk full" not in str(error.value) and leftovers(tmp_path) == []


def test_other_os_errors_give_their_reason(tmp_path, monkeypatch):
    def read_only(obj, handle):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(checkpoints.torch, "save", read_only)
    with pytest.raises(CheckpointError, match=r"cannot save checkpoint .*: Read-only file system"):
        save_checkpoint(tmp_path, 100, payload())
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full (a device that is always full) is Linux's")
def test_a_real_full_device(tmp_path, monkeypatch):
    """torch writing into a file that fails with ENOSPC, as on a full disk (no fake torch.save)."""
    real_open = builtins.open

    def open_full(path, mode="r", *args, **kwargs):
        full = str(path).endswith(checkpoints.CHECKPOINT_FILE)
        return real_open("/dev/full" if full else path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_full)
    with pytest.raises(CheckpointError, match=r"disk full \(No space left on device\)"):
        save_checkpoint(tmp_path, 100, {"weights": torch.zeros(100_000)})
    monkeypatch.undo()
    assert leftovers(tmp_path) == [] and checkpoints.list_checkpoints(tmp_path) == {}


# --------------------------------------------------------------------------- leftovers of a killed save
KILLED_SAVE = textwrap.dedent("""
    import sys, time
    from qmixlab import checkpoints

    def hangs_half_way(obj, handle):
        handle.write(b"partial")
        handle.flush()
        print("writing", flush=True)
        time.sleep(600)

    checkpoints.save_checkpoint(sys.argv[1], 100, {"weights": 1})
    checkpoints.torch.save = hangs_half_way
    checkpoints.save_checkpoint(sys.argv[1], 200, {"weights": 2})
""")


def test_a_save_killed_mid_write_is_cleaned_up_at_start_up(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
        assert leftovers(tmp_path) == [f".200.tmp-{process.pid}"]
        # While the saving process lives, its folder is left alone.
        assert checkpoints.cleanup_interrupted_saves(tmp_path) == [] and leftovers(tmp_path) == [f".200.tmp-{process.pid}"]
    finally:
        process.kill()
        process.wait()
    assert checkpoints.cleanup_interrupted_saves(tmp_path) == [tmp_path / f".200.tmp-{process.pid}"]
    assert leftovers(tmp_path) == [] and sorted(checkpoints.list_checkpoints(tmp_path)) == [100]
    assert load_checkpoint(tmp_path / "100")["weights"] == 1


def test_cleanup_keeps_a_live_writers_folder_but_not_one_whose_pid_was_reused(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".300.tmp-{sleeper.pid}"
        live.mkdir()
        (live / checkpoints.CHECKPOINT_FILE).write_bytes(b"partial")
        reused = tmp_path / f".400.tmp-{sleeper.pid}"
        reused.mkdir()
        (reused / checkpoints.CHECKPOINT_FILE).write_bytes(b"partial")
        long_ago = time.time() - 3600  # written an hour before the process with that pid started
        for path in (reused / checkpoints.CHECKPOINT_FILE, reused):
            os.utime(path, (long_ago, long_ago))
        mine = tmp_path / f".500.tmp-{os.getpid()}"  # this process saves nothing before cleaning up
        mine.mkdir()
        removed = checkpoints.cleanup_interrupted_saves(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(removed) == sorted([reused, mine])
    assert leftovers(tmp_path) == [live.name]


def test_a_replacement_killed_between_renames_gets_the_old_checkpoint_back(tmp_path):
    save_checkpoint(tmp_path, 100, payload(1.0))
    pid = dead_pid()
    os.rename(tmp_path / "100", tmp_path / f".100.stale-{pid}")  # killed after the first rename
    (tmp_path / f".100.tmp-{pid}").mkdir()
    (tmp_path / f".100.tmp-{pid}" / checkpoints.CHECKPOINT_FILE).write_bytes(b"new")
    assert checkpoints.cleanup_interrupted_saves(tmp_path) == [tmp_path / f".100.tmp-{pid}"]
    assert leftovers(tmp_path) == [] and load_checkpoint(tmp_path / "100")["weights"][0].item() == 1.0


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --------------------------------------------------------------------------- unreadable checkpoints
def corrupt(file, how):
    data = file.read_bytes()
    file.write_bytes({"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 4, "empty": b""}[how])


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path, caplog, how):
    for step in (100, 200, 300):
        save_checkpoint(tmp_path, step, payload(step))
    corrupt(tmp_path / "300" / checkpoints.CHECKPOINT_FILE, how)
    with caplog.at_level(logging.WARNING, logger="qmixlab"):
        path, loaded = checkpoints.load_latest_readable(tmp_path, expected={"n_agents": 3})
    assert path == tmp_path / "200" / checkpoints.CHECKPOINT_FILE and loaded["weights"][0].item() == 200.0
    warning = caplog.text
    assert str(tmp_path / "300" / checkpoints.CHECKPOINT_FILE) in warning and str(path) in warning
    assert "weights_only" not in warning


def test_an_explicit_unreadable_step_fails_listing_the_readable_ones(tmp_path):
    for step in (100, 200, 300):
        save_checkpoint(tmp_path, step, payload(step))
    corrupt(tmp_path / "200" / checkpoints.CHECKPOINT_FILE, "truncated")
    with pytest.raises(checkpoints.UnreadableCheckpointError) as error:
        checkpoints.load_latest_readable(tmp_path, load_step=210)
    message = str(error.value)
    assert str(tmp_path / "200" / checkpoints.CHECKPOINT_FILE) in message and "truncated or corrupt" in message
    assert "[100, 300]" in message
    path, _ = checkpoints.load_latest_readable(tmp_path, load_step=290)
    assert path.parent.name == "300"


def test_a_mismatch_is_never_skipped_over_to_an_older_checkpoint(tmp_path):
    for step in (100, 200):
        save_checkpoint(tmp_path, step, payload(step))
    both = r"200.*n_agents is 3 in the checkpoint but 5 here; map_name is '3m' in the checkpoint but '8m' here"
    with pytest.raises(CheckpointError, match=both):
        checkpoints.load_latest_readable(tmp_path, expected={"n_agents": 5, "map_name": "8m"})


def test_no_readable_checkpoint_at_all(tmp_path):
    save_checkpoint(tmp_path, 100, payload())
    corrupt(tmp_path / "100" / checkpoints.CHECKPOINT_FILE, "garbage")
    with pytest.raises(CheckpointError, match="no checkpoint in .* can be read: .*100"):
        checkpoints.load_latest_readable(tmp_path)


def test_unreadable_messages_never_suggest_unpickling(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    files = {}
    for how in ("truncated", "garbage", "empty"):
        folder = save_checkpoint(tmp_path / how, 1, payload())
        corrupt(folder / checkpoints.CHECKPOINT_FILE, how)
        files[how] = folder / checkpoints.CHECKPOINT_FILE
    files["evil"] = tmp_path / "evil.pt"
    with open(files["evil"], "wb") as handle:
        torch.save({"format_version": checkpoints.FORMAT_VERSION, "evil": Evil()}, handle)
    files["plain_pickle"] = tmp_path / "plain.pt"
    files["plain_pickle"].write_bytes(pickle.dumps({"evil": Evil()}))
    for how, file in files.items():
        with pytest.raises(checkpoints.UnreadableCheckpointError) as error:
            load_checkpoint(file)
        message = str(error.value)
        assert str(file) in message and "weights_only" not in message, (how, message)
        assert error.value.__cause__ is None and error.value.__suppress_context__, how
    assert "posix.system" in str(pytest.raises(CheckpointError, load_checkpoint, files["evil"]).value)


# --------------------------------------------------------------------------- the recorded settings
def test_read_checkpoint_config_returns_the_recorded_settings(tmp_path):
    settings = {"alg": "qmix", "t_max": 400000, "learner": {"lr": 0.0005, "optimiser": "rmsprop"}}
    save_checkpoint(tmp_path, 100, dict(payload(), settings=settings))
    save_checkpoint(tmp_path, 200, dict(payload(), settings=dict(settings, t_max=800000)))
    assert checkpoints.read_checkpoint_config(tmp_path / "100" / checkpoints.CHECKPOINT_FILE) == settings
    assert checkpoints.read_checkpoint_config(tmp_path / "100") == settings
    assert checkpoints.read_checkpoint_config(tmp_path)["t_max"] == 800000  # a run folder: its latest
    corrupt(tmp_path / "200" / checkpoints.CHECKPOINT_FILE, "truncated")
    assert checkpoints.read_checkpoint_config(tmp_path) == settings
    save_checkpoint(tmp_path / "old", 100, payload())
    assert checkpoints.read_checkpoint_config(tmp_path / "old" / "100") is None


# --------------------------------------------------------------------------- through the command line
TINY_RUN = [
    "env_args.map_name=3m", "t_max=600", "batch_size=4", "buffer_size=32", "batch_size_run=2", "test_interval=1000",
    "test_nepisode=2", "log_interval=1000", "save_model=True", "save_model_interval=200", "progress_bar=False",
    "agent.hidden_dim=16", "mixer.mixing_embed_dim=8", "mixer.hypernet_embed=16", "seed=3",
]


def qmixlab(capsys, *args):
    """``qmixlab <args>`` in this process: (exit code, stdout + stderr)."""
    from qmixlab import experiment

    try:
        experiment.main(["qmixlab", *args])
        code = 0
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out + err


def run_folders(results):
    return sorted(p for p in (results / "models").iterdir() if p.is_dir())


@pytest.mark.parametrize("fake_save", [raises_enospc, raises_torch_enforce_fail_after_enospc])
def test_cli_a_full_disk_ends_the_run_with_one_clear_line(tmp_path, capsys, monkeypatch, fake_save):
    monkeypatch.setattr(checkpoints.torch, "save", fake_save)
    code, output = qmixlab(capsys, "with", *TINY_RUN, f"local_results_path={tmp_path}")
    assert code not in (0, None) and "Traceback" not in output and "inline_container" not in output
    lines = [line for line in output.splitlines() if "disk full" in line]
    assert len(lines) == 1 and "disk full (No space left on device)" in lines[0]
    (models,) = run_folders(tmp_path)
    assert str(models) in lines[0] and leftovers(models) == []


def test_cli_resume_skips_an_unreadable_latest_checkpoint_with_a_warning(tmp_path, capsys):
    code, output = qmixlab(capsys, "with", *TINY_RUN, f"local_results_path={tmp_path / 'first'}")
    assert code in (0, None), output
    (models,) = run_folders(tmp_path / "first")
    steps = sorted(checkpoints.list_checkpoints(models))
    assert len(steps) >= 2
    latest, previous = checkpoints.list_checkpoints(models)[steps[-1]], checkpoints.list_checkpoints(models)[steps[-2]]
    corrupt(latest, "truncated")
    code, output = qmixlab(capsys, "with", *TINY_RUN, "t_max=900", f"checkpoint_path={models}",
                           f"local_results_path={tmp_path / 'second'}")
    assert code in (0, None), output
    assert str(latest) in output and str(previous) in output and "weights_only" not in output
    assert f"t_env={steps[-2]}" in output


def test_cli_a_garbage_checkpoint_is_refused_without_suggesting_unpickling(tmp_path, capsys):
    folder = tmp_path / "run" / "100"
    folder.mkdir(parents=True)
    (folder / checkpoints.CHECKPOINT_FILE).write_bytes(pickle.dumps({"format_version": 1}) + b"garbage")
    code, output = qmixlab(capsys, "with", *TINY_RUN, f"checkpoint_path={tmp_path / 'run'}",
                           f"local_results_path={tmp_path}")
    assert code == 2 and "Traceback" not in output, output
    assert str(folder / checkpoints.CHECKPOINT_FILE) in output and "weights_only" not in output


def test_find_readable_checkpoint_reads_the_file_cheaply_and_falls_back(tmp_path, caplog):
    for step in (100, 200, 300):
        save_checkpoint(tmp_path, step, payload(step))
    assert checkpoints.find_readable_checkpoint(tmp_path).parent.name == "300"
    corrupt(tmp_path / "300" / checkpoints.CHECKPOINT_FILE, "garbage")
    with caplog.at_level(logging.WARNING, logger="qmixlab"):
        assert checkpoints.find_readable_checkpoint(tmp_path).parent.name == "200"
    assert str(tmp_path / "300" / checkpoints.CHECKPOINT_FILE) in caplog.text
    assert checkpoints.find_readable_checkpoint(tmp_path, load_step=110).parent.name == "100"
    with pytest.raises(checkpoints.UnreadableCheckpointError, match=r"load_step=290 .* \[100, 200\]"):
        checkpoints.find_readable_checkpoint(tmp_path, load_step=290)


# --------------------------------------------------------------------------- the replay buffer's own file
def buffer_state(value):
    return {"storage": {"obs": torch.full((4, 3), float(value))}, "index": int(value)}


def test_the_buffer_is_saved_beside_the_checkpoint_and_read_back_with_it(tmp_path):
    folder = save_checkpoint(tmp_path, 100, payload(1.0), buffer=buffer_state(7))
    assert sorted(p.name for p in folder.iterdir()) == [checkpoints.CHECKPOINT_FILE, checkpoints.BUFFER_FILE]
    loaded = load_checkpoint(folder)
    assert loaded["buffer_file"] == checkpoints.BUFFER_FILE and loaded["buffer"]["index"] == 7
    assert torch.equal(loaded["buffer"]["storage"]["obs"], torch.full((4, 3), 7.0))
    without = load_checkpoint(save_checkpoint(tmp_path, 200, payload(2.0)))  # buffer.save_in_checkpoint=false
    assert without["buffer_file"] is None and "buffer" not in without


@pytest.mark.parametrize("keep", [0, 1, 2, 5])
def test_pruning_keeps_the_buffer_of_the_latest_checkpoints_only_and_every_checkpoint(tmp_path, keep):
    steps = [100, 200, 300, 400]
    for step in steps:
        save_checkpoint(tmp_path, step, payload(step), buffer=buffer_state(step))
    removed = checkpoints.prune_buffers(tmp_path, keep)
    with_buffer = [s for s in steps if (tmp_path / str(s) / checkpoints.BUFFER_FILE).is_file()]
    assert with_buffer == (steps if keep == 0 else steps[-keep:])
    assert sorted(removed) == sorted(tmp_path / str(s) / checkpoints.BUFFER_FILE for s in steps if s not in with_buffer)
    assert sorted(checkpoints.list_checkpoints(tmp_path)) == steps  # the checkpoints themselves stay
    for step in steps:
        loaded = load_checkpoint(tmp_path / str(step))
        assert loaded["weights"][0].item() == step
        if step in with_buffer:
            assert loaded["buffer"]["index"] == step and not loaded.get("buffer_pruned")
        else:
            assert loaded["buffer"] is None and loaded["buffer_pruned"] is True


def test_evaluation_reads_the_networks_without_the_buffer_file(tmp_path):
    folder = save_checkpoint(tmp_path, 100, payload(1.0), buffer=buffer_state(7))
    corrupt(folder / checkpoints.BUFFER_FILE, "garbage")  # would fail if it were read
    loaded = load_checkpoint(folder, expected={"n_agents": 3}, with_buffer=False)
    assert loaded["weights"][0].item() == 1.0 and loaded.get("buffer") is None
    with pytest.raises(CheckpointError, match="replay_buffer.pt"):
        load_checkpoint(folder)


def test_an_unreadable_buffer_makes_its_checkpoint_unreadable_and_the_previous_one_is_used(tmp_path, caplog):
    for step in (100, 200):
        save_checkpoint(tmp_path, step, payload(step), buffer=buffer_state(step))
    corrupt(tmp_path / "200" / checkpoints.BUFFER_FILE, "truncated")
    with caplog.at_level(logging.WARNING, logger="qmixlab"):
        path, loaded = checkpoints.load_latest_readable(tmp_path, expected={"n_agents": 3})
    assert path == tmp_path / "100" / checkpoints.CHECKPOINT_FILE and loaded["buffer"]["index"] == 100
    assert str(tmp_path / "200" / checkpoints.BUFFER_FILE) in caplog.text


def test_a_format_2_checkpoint_with_its_buffer_inline_still_loads(tmp_path):
    folder = tmp_path / "100"
    folder.mkdir()
    torch.save({**payload(1.0), "format_version": 2, "t_env": 100, "buffer": buffer_state(3)},
               folder / checkpoints.CHECKPOINT_FILE)
    loaded = load_checkpoint(folder)
    assert loaded["buffer"]["index"] == 3 and "buffer_pruned" not in loaded


def test_a_checkpoint_of_a_newer_format_says_to_upgrade(tmp_path):
    folder = tmp_path / "100"
    folder.mkdir()
    torch.save({**payload(1.0), "format_version": checkpoints.FORMAT_VERSION + 1}, folder / checkpoints.CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="newer qmixlab"):
        load_checkpoint(folder)


@pytest.mark.parametrize("value", [-1, True, 1.5])
def test_a_bad_checkpoints_with_buffer_names_the_value(value):
    from qmixlab.settings import ConfigError, compose_config, deep_merge, validate_config

    with pytest.raises(ConfigError, match="checkpoints_with_buffer"):
        validate_config(deep_merge(compose_config("qmix", "smacsim"), {"buffer": {"checkpoints_with_buffer": value}}))


def test_cli_a_run_keeps_its_buffer_in_its_latest_checkpoints_and_resumes_an_older_one_without(tmp_path, capsys, caplog):
    code, output = qmixlab(capsys, "with", *TINY_RUN, "buffer.checkpoints_with_buffer=1",
                           f"local_results_path={tmp_path / 'first'}")
    assert code in (0, None), output
    (models,) = run_folders(tmp_path / "first")
    found = checkpoints.list_checkpoints(models)
    steps = sorted(found)
    assert len(steps) >= 3
    assert [s for s in steps if (found[s].parent / checkpoints.BUFFER_FILE).is_file()] == steps[-1:]
    with caplog.at_level(logging.WARNING, logger="qmixlab"):
        code, output = qmixlab(capsys, "with", *TINY_RUN, "t_max=900", f"checkpoint_path={models}", f"load_step={steps[0]}",
                               f"local_results_path={tmp_path / 'second'}")
    assert code in (0, None), output
    assert "no longer holds its replay buffer" in output + caplog.text
