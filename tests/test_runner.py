"""The batch runner writes episodes exactly as the environment played them."""

import numpy as np
import pytest
import torch

from qmixlab.envs import make_batched_env
from qmixlab.runners.batch_runner import BatchRunner


class RandomController:
    """A controller stand-in that picks uniformly among available actions and records calls."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.calls = []

    def init_hidden(self, n):
        self.n = n

    def select_actions(self, obs, avail, t_env, test_mode=False, env_mask=None):
        self.calls.append((np.array(obs), np.array(avail), np.asarray(env_mask.numpy() if torch.is_tensor(env_mask) else env_mask), t_env, test_mode))
        scores = self.rng.random(avail.shape) + avail
        return torch.as_tensor(scores.argmax(-1))


def replay_reference(map_name, seed, n_envs, runner_batch, **env_args):
    """Replay the runner's stored actions in fresh per-environment copies, the slow way."""
    env = make_batched_env("smacsim", n_envs, seed=seed, map_name=map_name, **env_args)
    env.reset()
    actions = runner_batch["actions"][..., 0].numpy()
    lengths = (runner_batch["filled"][..., 0].sum(1) - 1).numpy()
    running = np.ones(n_envs, bool)
    rows = []
    t = 0
    while running.any():
        rows.append((env.get_obs().copy(), env.get_state().copy(), env.get_avail_actions().copy()))
        step = env.step(actions[:, t], running)
        rows[-1] += (step,)
        running &= ~step.ended
        t += 1
    rows.append((env.get_obs().copy(), env.get_state().copy(), env.get_avail_actions().copy(), None))
    return rows, lengths


@pytest.mark.parametrize("continuing_episode", [False, True])
def test_runner_writes_what_the_environment_played(continuing_episode):
    n_envs, seed = 3, 11
    env = make_batched_env("smacsim", n_envs, seed=seed, map_name="3m", continuing_episode=continuing_episode)
    controller = RandomController(seed)
    runner = BatchRunner(env, controller)
    batch, stats = runner.run(test_mode=False, t_env=1234)
    filled = batch["filled"][..., 0]
    lengths = filled.sum(1) - 1  # actions per episode; one extra filled row holds the final state
    assert np.array_equal(stats.lengths, lengths.numpy())
    assert all(call[3] == 1234 for call in controller.calls), "the caller's t_env reaches the controller"
    for b in range(n_envs):
        length = int(lengths[b])
        assert filled[b, : length + 1].all() and not filled[b, length + 1:].any()
        ended = batch["terminated"][b, :, 0] | batch["timeout"][b, :, 0]
        assert ended.nonzero().view(-1).tolist() == [length - 1]  # exactly the last action ends it
        assert not (batch["terminated"][b, length - 1, 0] and batch["timeout"][b, length - 1, 0])
        assert stats.returns[b] == pytest.approx(float(batch["reward"][b, :length, 0].sum()), rel=1e-5)
        avail, actions = batch["avail_actions"][b, : length + 1], batch["actions"][b, : length + 1, :, 0]
        assert avail.gather(2, actions.unsqueeze(-1)).all(), "a stored action was unavailable"

    # Same seed, same actions, replayed separately: identical observations, states and flags.
    rows, _ = replay_reference("3m", seed, n_envs, batch, continuing_episode=continuing_episode)
    for t, (obs, state, avail, step) in enumerate(rows):
        live = filled[:, t].numpy()
        np.testing.assert_array_equal(batch["obs"][:, t].numpy()[live], obs[live])
        np.testing.assert_array_equal(batch["state"][:, t].numpy()[live], state[live])
        np.testing.assert_array_equal(batch["avail_actions"][:, t].numpy()[live], avail[live])
        if step is not None:
            acted = live & (lengths.numpy() > t)
            np.testing.assert_allclose(batch["reward"][:, t, 0].numpy()[acted], step.reward[acted], rtol=1e-6)
            np.testing.assert_array_equal(batch["terminated"][:, t, 0].numpy()[acted], step.terminated[acted])
            np.testing.assert_array_equal(batch["timeout"][:, t, 0].numpy()[acted], step.timeout[acted])


def test_runner_owns_no_step_counter_and_passes_test_mode():
    env = make_batched_env("smacsim", 2, seed=0, map_name="3m")
    controller = RandomController()
    runner = BatchRunner(env, controller)
    runner.run(test_mode=True, t_env=77)
    assert not hasattr(runner, "t_env")
    assert all(call[4] and call[3] == 77 for call in controller.calls)


def test_one_network_call_per_step_for_all_environments():
    env = make_batched_env("smacsim", 4, seed=2, map_name="3m")
    controller = RandomController()
    batch, _ = BatchRunner(env, controller).run()
    # One call per row of the longest episode (its final row included), each for every env.
    assert len(controller.calls) == batch.max_t_filled()
    assert all(call[0].shape[0] == 4 for call in controller.calls)


def test_timeouts_are_stored_apart_from_terminals():
    env = make_batched_env("smacsim", 2, seed=0, map_name="3m")

    class StandStill(RandomController):  # stop forever: the time limit ends the episode
        def select_actions(self, obs, avail, t_env, test_mode=False, env_mask=None):
            return torch.as_tensor(np.where(avail[..., 1], 1, 0))

    batch, stats = BatchRunner(env, StandStill()).run()
    limit = env.get_env_info()["episode_limit"]
    for b in range(2):
        length = int(batch["filled"][b, :, 0].sum()) - 1
        if stats.timeouts[b]:
            assert length == limit and batch["timeout"][b, length - 1, 0] and not batch["terminated"][b].any()
        else:
            assert batch["terminated"][b, length - 1, 0]
