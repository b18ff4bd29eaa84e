"""Several seeds in one process (issue 16): each member trains as its separate run does.

The reference is always the plain thing: K separate runs, each with its own seed. Members use
stacked networks (batched matrix products), so losses and parameters agree to float rounding,
not bit for bit; episodes, which depend on the actions chosen, agree exactly over these short runs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from qmixlab import run as run_module
from qmixlab.checkpoints import list_checkpoints, load_checkpoint
from qmixlab.envs import make_batched_env
from qmixlab.envs.members import MemberEnvs
from qmixlab.metrics import RunLogger
from qmixlab.settings import ConfigError, validate_run

QUICK = {"env_args.map_name": "3m", "t_max": 1500, "batch_size": 8, "buffer_size": 64, "test_interval": 500,
         "log_interval": 500, "test_nepisode": 8, "batch_size_run": 4, "progress_bar": False,
         "save_model_interval": 700, "learner.target_update_interval_episodes": 16}


def quick(**overrides):
    return validate_run("qmix", "smacsim", {**QUICK, **overrides})


def separate_run(settings, models_dir=None):
    logger = RunLogger()
    run_module.train(settings, logger, models_dir=models_dir)
    return logger


def group_run(settings, models_dirs=None, **kwargs):
    loggers = [RunLogger() for _ in settings.seeds]
    members = run_module.train_members(settings, loggers, models_dirs or [None] * len(loggers), **kwargs)
    return members, loggers


def assert_same_record(alone: RunLogger, member: RunLogger, rtol=1e-5, atol=1e-6):
    """Episode statistics equal exactly; learner statistics to float rounding."""
    names = set(alone._history) | set(member._history)
    assert names == set(alone._history), f"logged names differ: {sorted(names ^ set(alone._history))}"
    for name in sorted(names):
        steps_a, values_a = alone.history(name)
        steps_m, values_m = member.history(name)
        assert steps_a == steps_m, name
        if name in ("loss", "td_error_abs", "q_taken_mean", "target_mean", "grad_norm"):
            np.testing.assert_allclose(values_m, values_a, rtol=rtol, atol=atol, err_msg=name)
        else:
            assert values_m == values_a, name


def test_members_train_as_their_separate_runs(tmp_path):
    seeds = [0, 3, 5]
    group_dirs = [tmp_path / f"group{s}" for s in seeds]
    members, loggers = group_run(quick(seeds=seeds), group_dirs)
    assert [m.state for m in members] == ["finished"] * 3
    for seed, member_logger, group_dir in zip(seeds, loggers, group_dirs):
        alone_dir = tmp_path / f"alone{seed}"
        alone = separate_run(quick(seed=seed), alone_dir)
        assert alone.history("loss")[1], "the run never trained: the test would prove nothing"
        assert_same_record(alone, member_logger)
        # Checkpoints: the same steps, and the member's is laid out as its separate run's.
        assert sorted(list_checkpoints(alone_dir)) == sorted(list_checkpoints(group_dir))
        last = max(list_checkpoints(alone_dir))
        payload_alone = load_checkpoint(list_checkpoints(alone_dir)[last])
        payload_member = load_checkpoint(list_checkpoints(group_dir)[last])
        assert payload_member["settings"] == payload_alone["settings"]
        assert payload_member["counters"] == payload_alone["counters"]
        for part in ("mac", "target_mac", "mixer", "target_mixer"):
            state_alone, state_member = payload_alone["learner"][part], payload_member["learner"][part]
            assert state_alone.keys() == state_member.keys()
            for key in state_alone:
                torch.testing.assert_close(state_member[key], state_alone[key], rtol=1e-4, atol=1e-5)
        optimiser_alone = payload_alone["learner"]["optimiser"]["state"]
        optimiser_member = payload_member["learner"]["optimiser"]["state"]
        assert optimiser_alone.keys() == optimiser_member.keys()
        for index in optimiser_alone:
            for name, value in optimiser_alone[index].items():
                torch.testing.assert_close(optimiser_member[index][name], value, rtol=1e-4, atol=1e-6)
        buffer_alone, buffer_member = payload_alone["buffer"], payload_member["buffer"]
        for key in ("index", "episodes_in_buffer", "signature"):
            assert buffer_member[key] == buffer_alone[key], key
        assert torch.equal(buffer_member["rng_state"], buffer_alone["rng_state"])
        assert buffer_member["storage"].keys() == buffer_alone["storage"].keys()
        for name, stored in buffer_alone["storage"].items():  # the episodes played: exactly equal
            assert torch.equal(buffer_member["storage"][name], stored), name


def test_a_stopped_group_resumes_exactly_from_its_members_checkpoints(tmp_path):
    seeds = [1, 2]
    uninterrupted_dirs = [tmp_path / f"whole{s}" for s in seeds]
    _, whole = group_run(quick(seeds=seeds, t_max=2000), uninterrupted_dirs)
    first_dirs = [tmp_path / f"part{s}" for s in seeds]
    group_run(quick(seeds=seeds, t_max=900), first_dirs)
    resumed_settings = quick(seeds=seeds, t_max=2000, member_checkpoint_paths=[str(d) for d in first_dirs])
    # Resume from the periodic checkpoint before the end, as a killed run would.
    members, resumed = group_run(resumed_settings, first_dirs)
    assert all(m.counters.t_env > 2000 for m in members)
    # Members resume from checkpoints saved at their own iterations, so after the resume a member
    # may share the stacked call with its partner's batch of another iteration than before: the
    # batch is padded to another length and sums over it may round differently. The episodes
    # played (every return, length and test result) are the same; losses agree to float rounding.
    for whole_logger, resumed_logger in zip(whole, resumed):
        for name in whole_logger._history:
            steps, values = whole_logger.history(name)
            resumed_steps, resumed_values = resumed_logger.history(name)
            assert resumed_steps == steps, name
            if name in ("loss", "grad_norm", "td_error_abs", "q_taken_mean", "target_mean"):
                assert resumed_values == pytest.approx(values, rel=1e-5, abs=1e-7), name
            else:
                assert resumed_values == values, name


def test_a_member_with_a_non_finite_loss_stops_alone(tmp_path, monkeypatch):
    original = run_module.QLearner.train

    def poison_second_member(self, batch, t_env=0, episode_num=0, active=None):
        stats = original(self, batch, t_env, episode_num, active=active)
        if t_env > 600:
            stats[1]["loss"] = float("nan")
        return stats

    monkeypatch.setattr(run_module.QLearner, "train", poison_second_member)
    done = []
    seeds = [0, 1, 2]
    dirs = [tmp_path / str(s) for s in seeds]
    members, loggers = group_run(quick(seeds=seeds), dirs, on_member_done=done.append)
    assert [m.state for m in members] == ["finished", "failed", "finished"]
    assert isinstance(members[1].error, run_module.NonFiniteLossError)
    assert sorted(m.index for m in done) == [0, 1, 2]
    assert max(list_checkpoints(dirs[1])) <= 600 + 2 * 100, "the failed member saved after its failure"
    assert members[1].counters.t_env < 1500
    monkeypatch.setattr(run_module.QLearner, "train", original)
    for seed, member_logger in zip((0, 2), (loggers[0], loggers[2])):
        assert_same_record(separate_run(quick(seed=seed)), member_logger)


def test_nan_parameters_of_one_member_do_not_reach_the_others():
    settings = quick(seeds=[0, 1, 2])
    parts = run_module.build_components(settings)
    clean = run_module.build_components(settings)
    try:
        for components in (parts, clean):
            for member in components.members:
                batch, _ = components.runner.run(t_env=[0, 0, 0], members=np.ones(3, bool))
                break
            for k, member in enumerate(components.members):
                member.buffer.insert_episode_batch(batch[k * 4:(k + 1) * 4])
        with torch.no_grad():
            for parameter in parts.learner.mac.agent.parameters():
                parameter[1] = float("nan")
        torch.manual_seed(0)
        samples = [m.buffer.sample(4) for m in parts.members]
        sample_batch = run_module.EpisodeBatch.concatenate(samples)
        clean_batch = run_module.EpisodeBatch.concatenate(samples)
        stats = parts.learner.train(sample_batch, 0, 0, active=[True, False, True])
        reference = clean.learner.train(clean_batch, 0, 0, active=[True, False, True])
        assert math.isnan(stats[1]["loss"]) and not math.isnan(reference[1]["loss"])
        for k in (0, 2):
            assert stats[k] == reference[k]
        for poisoned, fine in zip(parts.learner.mac.agent.parameters(), clean.learner.mac.agent.parameters()):
            for k in (0, 2):
                assert torch.equal(poisoned[k], fine[k])
    finally:
        parts.env.close()
        clean.env.close()


def test_each_member_trains_and_copies_its_target_on_its_own_schedule():
    """Members at different episode counts (a group resumed from checkpoints of different
    iterations): only members that train move, each copies its target network when its own
    episode count is due, and counts are kept per member."""
    settings = quick(seeds=[0, 1, 2], **{"learner.target_update_interval_episodes": 10})
    parts = run_module.build_components(settings)
    try:
        batch, _ = parts.runner.run(t_env=[0, 0, 0], members=np.ones(3, bool))
        for k, member in enumerate(parts.members):
            member.buffer.insert_episode_batch(batch[k * 4:(k + 1) * 4])
        learner = parts.learner
        online = lambda: [p.detach().clone() for p in learner.mac.agent.parameters()]  # noqa: E731
        target = lambda: [p.detach().clone() for p in learner.target_mac.agent.parameters()]  # noqa: E731
        weights_before, targets_before = online(), target()
        samples = run_module.EpisodeBatch.concatenate([m.buffer.sample(4) for m in parts.members])
        # Member 0 is due (12 episodes), member 1 is not (5), member 2 does not train.
        learner.train(samples, 0, [12, 5, 20], active=[True, True, False])
        weights_after, targets_after = online(), target()
        for before, after, t_before, t_after in zip(weights_before, weights_after, targets_before, targets_after):
            assert not torch.equal(after[0], before[0]) and not torch.equal(after[1], before[1])
            assert torch.equal(after[2], before[2])  # did not train: weights kept
            assert torch.equal(t_after[0], after[0])  # due: target copied from the new weights
            assert torch.equal(t_after[1], t_before[1]) and torch.equal(t_after[2], t_before[2])
        assert learner.last_target_update_episode == [12, 0, 0]
        assert learner.train_steps == [1, 1, 0]
        assert learner.optimiser.state[next(learner.mac.agent.parameters())]["step"].tolist() == [1.0, 1.0, 0.0]
        assert learner.member_state_dict(0)["last_target_update_episode"] == 12
    finally:
        parts.env.close()


def test_member_environments_play_what_separate_environments_play():
    """MemberEnvs (merged smacsim) against each member's own environment, with partial resets."""
    seeds, n = [4, 7], 3
    separate = [make_batched_env("smacsim", n, seed=s, map_name="3m") for s in seeds]
    members = MemberEnvs([make_batched_env("smacsim", n, seed=s, map_name="3m") for s in seeds])
    assert members.merged is not None and members.n_envs == 6
    rng = np.random.default_rng(0)
    members.reset(np.arange(6))
    for env in separate:
        env.reset()
    for step in range(40):
        avail = members.get_avail_actions()
        np.testing.assert_array_equal(avail, np.concatenate([e.get_avail_actions() for e in separate]))
        np.testing.assert_array_equal(members.get_obs(), np.concatenate([e.get_obs() for e in separate]))
        actions = np.array([[rng.choice(np.flatnonzero(a)) for a in env_avail] for env_avail in avail])
        active = np.ones(6, bool)
        active[rng.integers(0, 6)] = False
        result = members.step(actions, active)
        for k, env in enumerate(separate):
            alone = env.step(actions[k * n:(k + 1) * n], active[k * n:(k + 1) * n])
            np.testing.assert_array_equal(result.reward[k * n:(k + 1) * n], alone.reward)
            np.testing.assert_array_equal(result.terminated[k * n:(k + 1) * n], alone.terminated)
        ended = np.flatnonzero(result.terminated | result.truncated)
        if ended.size:
            members.reset(ended)
            for k, env in enumerate(separate):
                mine = ended[(ended >= k * n) & (ended < (k + 1) * n)] - k * n
                if mine.size:
                    env.reset(mine)
    assert members.member_rng_state(1) == separate[1].get_rng_state()


def test_controller_draws_each_members_actions_from_its_own_stream():
    from qmixlab.components.action_selectors import EpsilonGreedyActionSelector
    from qmixlab.components.schedules import LinearSchedule
    from qmixlab.controllers.agent_controller import AgentController
    from qmixlab.modules.agents import RNNAgent
    from qmixlab.modules.stacked import stack_members

    agents = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        agents.append(RNNAgent(5, 4, 2, hidden_dim=8).double())
    selector = EpsilonGreedyActionSelector(LinearSchedule(1.0, 0.05, 1000))
    alone = [AgentController(agent, selector) for agent in agents]
    together = AgentController(stack_members(agents), selector)
    n = 3
    for controller in alone:
        controller.init_hidden(n)
    together.init_hidden(2 * n)
    gens_alone = [torch.Generator().manual_seed(s) for s in (10, 11)]
    gens_together = [torch.Generator().manual_seed(s) for s in (10, 11)]
    rng = np.random.default_rng(0)
    for step in range(6):
        obs = torch.tensor(rng.normal(size=(2 * n, 2, 5)))
        avail = torch.tensor(rng.random((2 * n, 2, 4)) < 0.7)
        avail[..., 0] = True
        mask = torch.tensor(rng.random(2 * n) < 0.8)
        t_envs = [100 * step, 300 * step]
        chosen = together.select_actions(obs, avail, t_envs, env_mask=mask, generator=gens_together)
        for k, controller in enumerate(alone):
            rows = slice(k * n, (k + 1) * n)
            expected = controller.select_actions(obs[rows], avail[rows], t_envs[k], env_mask=mask[rows],
                                                 generator=gens_alone[k])
            assert torch.equal(chosen[rows][mask[rows]], expected[mask[rows]])
            torch.testing.assert_close(together.hidden[rows], controller.hidden)


def test_group_settings_are_validated():
    with pytest.raises(ConfigError, match="lists a seed twice"):
        quick(seeds=[1, 1])
    with pytest.raises(ConfigError, match="member_results_paths has 1 entries"):
        quick(seeds=[1, 2], member_results_paths=["a"])
    with pytest.raises(ConfigError, match=r"seeds\[1\]='x' must be an integer"):
        quick(seeds=[1, "x"])
    with pytest.raises(ConfigError, match="evaluate=True"):
        quick(seeds=[1, 2], evaluate=True)
    settings = quick(seeds=[4, 9], member_results_paths=["r/a", "r/b"])
    member = settings.member(1)
    assert (member.seed, member.local_results_path, member.seeds, member.members) == (9, "r/b", [], 1)


def test_command_line_group_writes_one_sacred_run_per_member_and_resumes(tmp_path):
    paths = [str(tmp_path / "a"), str(tmp_path / "b")]
    common = ["env_args.map_name=3m", "t_max=600", "batch_size=8", "test_interval=300", "log_interval=300",
              "test_nepisode=4", "batch_size_run=4", "progress_bar=False"]
    command = [sys.executable, "-m", "qmixlab", "with", "seeds=[3,8]", f"member_results_paths={paths!r}", *common]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    models = []
    for path, seed in zip(paths, (3, 8)):
        (run_dir,) = [p for p in (tmp_path / path / "sacred").iterdir() if p.name.isdigit()]
        assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
        config = json.loads((run_dir / "config.json").read_text())
        assert (config["seed"], config["seeds"], config["local_results_path"]) == (seed, [], path)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["test_return_mean"]["steps"], "no test point recorded"
        info = json.loads((run_dir / "info.json").read_text())
        assert info["group"] == {"seeds": [3, 8], "member": paths.index(path)}
        models.append(info["models_dir"])
    resume = [sys.executable, "-m", "qmixlab", "with", f"checkpoint_path=[{models[0]},{models[1]}]", "t_max=1000"]
    done = subprocess.run(resume, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stderr and "t_max: 600 -> 1000" in done.stderr
    for path in paths:
        runs = sorted(p for p in (tmp_path / path / "sacred").iterdir() if p.name.isdigit())
        assert len(runs) == 2
        metrics = json.loads((runs[-1] / "metrics.json").read_text())
        assert max(metrics["test_return_mean"]["steps"]) > 600
