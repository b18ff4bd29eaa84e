"""The gymnasium multi-agent backends (gymma, lbf, rware; src/envs/gymnasium_env.py) against the
real lbforaging 2.0 and rware 2.0 packages, plus small gymnasium fixture environments registered
here for what those two never do (continuous actions, observation sizes that differ, agents that
finish early, masks in info)."""

import copy
import importlib
import math
import re
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from qmixlab.components.action_selectors import EpsilonGreedyActionSelector
from qmixlab.components.mask_options import MaskOptions
from qmixlab.components.masks import episode_end_flags
from qmixlab.components.schedules import LinearSchedule
from qmixlab.controllers.agent_controller import AgentController
from qmixlab.envs import check_env_args, env_arg_defaults, make_batched_env, make_env
from qmixlab.envs.conformance import check_env
from qmixlab.envs.gymnasium_env import GymnasiumMultiAgentEnv, MissingPackageError
from qmixlab.errors import ConfigError
from qmixlab.learners.q_learner import LearnerOptions, QLearner
from qmixlab.modules.agents import RNNAgent
from qmixlab.runners.batch_runner import BatchRunner

from vectorised_paths import assert_fast_path_plays_the_checked_path

LBF_KEY, RWARE_KEY = "Foraging-8x8-2p-3f-v3", "rware-tiny-2ag-v2"
FIXTURE = "QmixlabTest/Fixture-v0"


# ------------------------------------------------------------------------------- fixtures
class FixtureEnv(gymnasium.Env):
    """Two or three agents on a counter. Agent ``i`` finishes after ``finish_at[i]`` steps
    (per-agent ``terminated`` list) or, with ``truncate_agent``, is truncated there; ``obs_sizes``
    sets each agent's observation size; ``continuous`` gives agent 1 a Box action space;
    ``mask_in_info`` puts a mask allowing only actions <= t % 3 in ``info["action_mask"]``, and
    ``mask_in_obs`` the same mask in Dict observations ``{"observation", "action_mask"}``."""

    def __init__(self, obs_sizes=(3, 3), finish_at=None, truncate_agent=None, continuous=False,
                 mask_in_info=False, mask_in_obs=False, n_actions=4):
        self.n = len(obs_sizes)
        self.obs_sizes = obs_sizes
        self.finish_at = finish_at
        self.truncate_agent = truncate_agent
        self.mask_in_info = mask_in_info
        self.mask_in_obs = mask_in_obs
        self.n_actions = n_actions
        boxes = [spaces.Box(-1e3, 1e3, (size,), np.float32) for size in obs_sizes]
        if mask_in_obs:
            boxes = [spaces.Dict({"observation": box, "action_mask": spaces.MultiBinary(n_actions)}) for box in boxes]
        self.observation_space = spaces.Tuple(boxes)
        acts = [spaces.Discrete(n_actions) for _ in range(self.n)]
        if continuous:
            acts[1] = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Tuple(acts)
        self.t = 0
        self.received = []

    def _mask(self):
        mask = np.zeros((self.n, self.n_actions), np.int8)
        mask[:, : self.t % 3 + 1] = 1
        return mask

    def _obs(self):
        obs = tuple(np.full(size, self.t + 10 * i + 1, np.float32) for i, size in enumerate(self.obs_sizes))
        if self.mask_in_obs:
            return tuple({"observation": o, "action_mask": m} for o, m in zip(obs, self._mask()))
        return obs

    def _info(self):
        return {"action_mask": self._mask()} if self.mask_in_info else {}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), self._info()

    def step(self, actions):
        self.received.append(list(actions))
        self.t += 1
        rewards = [float(i + 1) for i in range(self.n)]
        if self.finish_at is None:
            return self._obs(), rewards, False, False, self._info()
        done = [self.t >= at for at in self.finish_at]
        truncated = [done[i] and i == self.truncate_agent for i in range(self.n)]
        terminated = [done[i] and not truncated[i] for i in range(self.n)]
        return self._obs(), rewards, terminated, truncated, self._info()


@pytest.fixture(scope="module", autouse=True)
def fixture_ids():
    if FIXTURE not in gymnasium.envs.registry:
        gymnasium.register(FIXTURE, entry_point=FixtureEnv, max_episode_steps=20)
    yield


def random_actions(rng, avail):
    return (rng.random(avail.shape) + avail).argmax(-1)


class RandomPolicy:
    """A controller choosing uniformly among available actions (as benchmarks/learner.py)."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)

    def init_hidden(self, n):
        pass

    def select_actions(self, obs, avail, t_env, test_mode=False, env_mask=None):
        return torch.as_tensor(random_actions(self.rng, np.asarray(avail)))


def lbf_valid_actions_reference(unwrapped):
    """LBF's rules written out: a move is valid inside the grid onto a cell without food (other
    agents do not block); LOAD needs food on a neighbouring cell; NONE is always valid."""
    field = unwrapped.field
    rows, cols = field.shape
    avail = np.zeros((len(unwrapped.players), 6), bool)
    for i, player in enumerate(unwrapped.players):
        r, c = player.position
        avail[i, 0] = True
        for action, (dr, dc) in ((1, (-1, 0)), (2, (1, 0)), (3, (0, -1)), (4, (0, 1))):
            nr, nc = r + dr, c + dc
            avail[i, action] = 0 <= nr < rows and 0 <= nc < cols and field[nr, nc] == 0
        neighbours = [(r + dr, c + dc) for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))]
        avail[i, 5] = any(0 <= nr < rows and 0 <= nc < cols and field[nr, nc] > 0 for nr, nc in neighbours)
    return avail


# ----------------------------------------------------------------------------- imports
def test_importing_qmixlab_envs_imports_no_environment_package():
    code = ("import sys, qmixlab.envs; from qmixlab.envs import env_arg_defaults; env_arg_defaults('lbf'); "
            "print(sorted(m for m in ('gymnasium', 'lbforaging', 'rware') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("backend, blocked, pip", [
    ("lbf", "lbforaging", "pip install 'lbforaging>=2.0'"),
    ("rware", "rware", "pip install 'rware>=2.0'"),
    ("lbf", "gymnasium", "pip install 'gymnasium>=1.0'"),
])
def test_a_missing_package_fails_at_start_up_with_the_pip_command(monkeypatch, backend, blocked, pip):
    real_import = importlib.import_module

    def failing_import(name, *args, **kwargs):
        if name == blocked or name.startswith(blocked + "."):
            raise ModuleNotFoundError(f"No module named {blocked!r}", name=blocked)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", failing_import)
    with pytest.raises(MissingPackageError, match="is not importable") as error:
        make_batched_env(backend, 1, seed=0)
    assert pip in str(error.value)


# ------------------------------------------------------------------------ shapes and spec
@pytest.mark.parametrize("backend, key, n_actions, obs, limit", [
    ("lbf", LBF_KEY, 6, 15, 50),
    ("rware", RWARE_KEY, 5, 71, 500),
])
def test_shapes_spec_and_observations_are_the_packages_own(backend, key, n_actions, obs, limit):
    env = make_env(backend, seed=7)
    info = env.get_env_info()
    assert info == {"n_agents": 2, "n_actions": n_actions, "obs_shape": obs, "state_shape": 2 * obs,
                    "episode_limit": limit}
    spec = env.get_spec()
    assert spec.provides_alive and spec.noop_action is None and not spec.auto_reset and spec.step_flags == ()
    assert env.key == key and env.family.backend == backend
    raw = gymnasium.make(key, disable_env_checker=True)
    raw_obs, _ = raw.reset(seed=7)
    obs_list, state = env.reset()
    np.testing.assert_array_equal(obs_list, np.stack(raw_obs))  # same seed, same first observation
    np.testing.assert_array_equal(state, np.concatenate(raw_obs))  # no global state: concat_obs
    assert obs_list.dtype == np.float32 and env.get_alive_agents().all()
    rng = np.random.default_rng(0)
    for _ in range(5):  # the same actions keep them in step
        actions = random_actions(rng, env.get_avail_actions()).tolist()
        reward, _, _ = env.step(actions)
        raw_obs, raw_rewards, _, _, _ = raw.step(actions)
        np.testing.assert_array_equal(env.get_obs(), np.stack(raw_obs))
        assert reward == pytest.approx(sum(raw_rewards))
    env.close()
    raw.close()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_team_reward_is_the_sum_or_mean_of_the_agents_rewards(reduction):
    env = make_env("gymma", key=FIXTURE, reward_reduction=reduction, seed=0)
    env.reset()
    reward, _, _ = env.step([0, 0])
    assert reward == {"sum": 3.0, "mean": 1.5}[reduction]  # the fixture's rewards are 1 and 2


def test_lbf_team_reward_over_whole_episodes_matches_the_raw_environment():
    env = make_env("lbf", key="Foraging-5x5-2p-1f-v3", seed=3)
    raw = gymnasium.make("Foraging-5x5-2p-1f-v3", disable_env_checker=True)
    rng = np.random.default_rng(1)
    returns, raw_returns = [], []
    for episode in range(20):
        env.reset()
        raw.reset(seed=3 if episode == 0 else None)
        total = raw_total = 0.0
        ended = False
        while not ended:
            actions = random_actions(rng, env.get_avail_actions()).tolist()
            reward, ended, _ = env.step(actions)
            _, raw_rewards, terminated, truncated, _ = raw.step(actions)
            total += reward
            raw_total += sum(raw_rewards)
        returns.append(total)
        raw_returns.append(raw_total)
    np.testing.assert_allclose(returns, raw_returns)
    assert max(returns) > 0  # some food was collected: the comparison saw rewards


# --------------------------------------------------------------------- episode ends
def play(env, rng, policy=None):
    """One episode; returns (length, terminated, info of the last step)."""
    env.reset()
    t = 0
    while True:
        avail = env.get_avail_actions()
        actions = policy(env, avail) if policy else random_actions(rng, avail)
        _, terminated, info = env.step(actions.tolist())
        t += 1
        if terminated:
            return t, info


def load_when_possible(rng):
    def policy(env, avail):
        actions = random_actions(rng, avail)
        actions[avail[:, 5]] = 5
        return actions
    return policy


def test_lbf_own_limit_is_a_truncation_and_collecting_all_food_is_terminal():
    env = make_env("lbf", key="Foraging-5x5-2p-1f-v3", env_kwargs={"max_episode_steps": 12}, seed=0)
    assert env.episode_limit == 12
    rng = np.random.default_rng(0)
    ends = {"terminal": 0, "limit": 0}
    for _ in range(60):
        length, info = play(env, rng, load_when_possible(rng))
        food_left = env.env.unwrapped.field.any()
        if info.get("episode_limit"):
            assert length == 12 and food_left
            ends["limit"] += 1
        else:
            assert length <= 12 and not food_left  # a true terminal state: every food collected
            ends["terminal"] += 1
    assert ends["terminal"] > 0 and ends["limit"] > 0, ends
    assert env.get_stats() == {"episodes": 60, "timeouts": ends["limit"]}


def test_rware_every_end_is_a_truncation():
    env = make_env("rware", env_kwargs={"max_steps": 7}, seed=0)
    assert env.episode_limit == 7
    for _ in range(3):
        length, info = play(env, np.random.default_rng(0))
        assert length == 7 and info == {"episode_limit": True}


@pytest.mark.parametrize("backend, limit", [("lbf", 6), ("rware", 9)])
def test_a_forced_short_time_limit_truncates_through_the_batched_wrapper(backend, limit):
    env = make_batched_env(backend, 3, seed=1, time_limit=limit)
    assert env.get_spec().episode_limit == limit
    env.reset()
    rng = np.random.default_rng(0)
    running = np.ones(3, bool)
    for t in range(1, limit + 1):
        step = env.step(random_actions(rng, env.get_avail_actions()), running)
        assert not step.terminated.any()  # these random episodes never clear the map so fast
        assert (step.truncated[running] == (t == limit)).all()
        running &= ~step.truncated
    assert not running.any()


@pytest.mark.parametrize("backend, args", [("lbf", {"time_limit": 5}), ("rware", {"env_kwargs": {"max_steps": 5}})])
def test_timeout_as_terminal_and_bootstrap_store_different_bootstrap_flags(backend, args):
    batch, stats = BatchRunner(make_batched_env(backend, 4, seed=0, **args), RandomPolicy()).run()
    assert stats.timeouts.all() and (stats.lengths == 5).all()
    terminated, timeout = batch["terminated"][:, :-1], batch["timeout"][:, :-1]
    assert timeout.any() and not terminated.any()
    cuts_terminal, ends_terminal = episode_end_flags(terminated, timeout, MaskOptions(timeout="terminal"))
    cuts_bootstrap, ends_bootstrap = episode_end_flags(terminated, timeout, MaskOptions(timeout="bootstrap"))
    assert torch.equal(ends_terminal, ends_bootstrap)
    assert cuts_terminal[:, 4].all() and not cuts_bootstrap.any()  # the cut step: cut vs bootstrapped


def test_a_time_limit_beyond_the_environments_own_is_refused():
    with pytest.raises(ConfigError, match=r"time_limit=80 .* end after 50 steps .*"
                                          r"env_args.env_kwargs.max_episode_steps=80"):
        make_env("lbf", time_limit=80)
    env = make_env("lbf", time_limit=80, env_kwargs={"max_episode_steps": 80})
    assert env.episode_limit == 80


def test_stepping_an_ended_episode_raises():
    env = make_env("rware", time_limit=2, seed=0)
    play(env, np.random.default_rng(0))
    with pytest.raises(ValueError, match="call reset"):
        env.step([0, 0])


# ------------------------------------------------------------------------ action masks
def test_lbf_action_masks_follow_lbfs_rules():
    env = make_env("lbf", seed=5)
    rng = np.random.default_rng(0)
    seen_unavailable = 0
    for _ in range(3):
        env.reset()
        ended = False
        while not ended:
            avail = env.get_avail_actions()
            np.testing.assert_array_equal(avail, lbf_valid_actions_reference(env.env.unwrapped))
            seen_unavailable += int((~avail).sum())
            _, ended, _ = env.step(random_actions(rng, avail).tolist())
    assert seen_unavailable > 0
    env.reset()
    unavailable = np.argwhere(~env.get_avail_actions())[0]
    actions = [0, 0]
    actions[unavailable[0]] = int(unavailable[1])
    with pytest.raises(ValueError, match="not available to agent"):
        env.step(actions)
    everything = make_env("lbf", seed=5, action_masks=False)  # EPyMARL's choice
    everything.reset()
    assert everything.get_avail_actions().all()


@pytest.mark.parametrize("where", ["mask_in_info", "mask_in_obs"])
def test_masks_given_in_info_or_observations_are_used(where):
    env = make_env("gymma", key=FIXTURE, env_kwargs={where: True}, seed=0)
    assert env.get_obs_size() == 3
    env.reset()
    for t in range(5):
        expected = np.zeros((2, 4), bool)
        expected[:, : t % 3 + 1] = True
        np.testing.assert_array_equal(env.get_avail_actions(), expected)
        np.testing.assert_array_equal(env.get_obs(), [[t + 1] * 3, [t + 11] * 3])
        with pytest.raises(ValueError, match="not available"):
            env.step([t % 3 + 1, 0]) if t % 3 < 2 else env.step([4, 0])
        env.step([t % 3, 0])


def test_a_registered_max_episode_steps_is_the_limit_and_a_truncation():
    env = make_env("gymma", key=FIXTURE, seed=0)
    assert env.episode_limit == 20
    length, info = play(env, np.random.default_rng(0))
    assert length == 20 and info == {"episode_limit": True}


def epsilon_greedy_controller(spec, epsilon):
    agent = RNNAgent(spec.obs_shape, spec.n_actions, spec.n_agents, hidden_dim=8)
    return AgentController(agent, EpsilonGreedyActionSelector(LinearSchedule(epsilon, epsilon, 1)))


@pytest.mark.parametrize("epsilon", [1.0, 0.0])
def test_lbf_masks_are_honoured_in_action_selection(epsilon):
    env = make_batched_env("lbf", 4, seed=2, time_limit=20)
    torch.manual_seed(0)
    batch, stats = BatchRunner(env, epsilon_greedy_controller(env.get_spec(), epsilon)).run()
    avail, actions, filled = batch["avail_actions"], batch["actions"], batch["filled"][..., 0]
    chosen_available = avail.gather(-1, actions).squeeze(-1)  # [B, T, n_agents]
    assert (~avail[filled]).any()  # the episodes had unavailable actions to avoid
    assert chosen_available[filled].all()


class LuredQ(nn.Module):
    """Q-values 0 for available actions and 1e6 for unavailable ones: any target that reads an
    unavailable action's value is ~1e6."""

    def __init__(self, avail):
        super().__init__()
        self.avail = avail
        self.bias = nn.Parameter(torch.zeros(()))

    def unroll(self, obs, actions, lengths=None):
        avail = self.avail[:, : obs.shape[1]]
        return torch.where(avail, 0.0, 1e6) + self.bias


@pytest.mark.parametrize("target_avail_mask", [True, False])
def test_lbf_masks_are_honoured_in_the_target_max(target_avail_mask):
    env = make_batched_env("lbf", 4, seed=2, time_limit=15)
    batch, _ = BatchRunner(env, RandomPolicy()).run()
    avail = batch["avail_actions"].clone()
    learner = QLearner(LuredQ(avail), None, 2, LearnerOptions(td_lambda=0.0, double_q=False),
                       MaskOptions(target_avail_mask=target_avail_mask, trim_to_longest=False))
    stats = learner.train(copy.deepcopy(batch))
    if target_avail_mask:
        assert abs(stats["target_mean"]) < 10.0
    else:  # the ablation reads the lure: the mask is what keeps it out
        assert stats["target_mean"] > 1e5


# ------------------------------------------------------------------ agents that finish early
def test_agents_that_finish_early_are_dead_with_zero_observations_and_action_zero_only():
    env = make_env("gymma", key=FIXTURE, env_kwargs={"finish_at": (2, 4)}, seed=0)
    env.reset()
    alive_per_step, avail_per_step = [], []
    for t in range(1, 5):
        _, ended, info = env.step([1, 1] if t <= 2 else [0, 1])
        alive_per_step.append(env.get_alive_agents().tolist())
        avail_per_step.append(env.get_avail_actions().copy())
        assert env.get_obs()[0].any() == (t < 2) and env.get_obs()[1].all() == (t < 4)
        assert ended == (t == 4)
    assert alive_per_step == [[True, True], [False, True], [False, True], [False, False]]
    np.testing.assert_array_equal(avail_per_step[1][0], [True, False, False, False])
    assert avail_per_step[1][1].all()
    assert info == {}  # every agent terminated: a terminal state
    assert env.env.unwrapped.received[2] == [0, 1]  # the finished agent's stand-in action
    with pytest.raises(ValueError, match="not available to agent 0"):
        env.reset(), env.step([0, 0]), env.step([0, 0]), env.step([1, 0])


@pytest.mark.parametrize("truncate_agent, truncated, final_alive", [
    (1, True, [False, True]),  # truncated in the last step: a time limit; it stays on the final row
    (0, False, [False, False]),  # truncated early, the last one terminated: a terminal state
])
def test_how_the_last_agents_finish_decides_the_episode_end_and_the_runner_stores_alive(
        truncate_agent, truncated, final_alive):
    env = make_batched_env("gymma", 2, seed=0, key=FIXTURE,
                           env_kwargs={"finish_at": (2, 3), "truncate_agent": truncate_agent})
    assert env.get_spec().can_tell_dead_agents
    batch, stats = BatchRunner(env, RandomPolicy()).run()
    assert (stats.lengths == 3).all() and (stats.timeouts == truncated).all()
    assert batch["terminated"][:, 2, 0].tolist() == [not truncated] * 2
    alive = batch["alive"][0, :4, :, 0]
    assert alive.tolist() == [[True, True], [True, True], [False, True], final_alive]
    obs = batch["obs"][0, 3]
    assert obs[1].any() == truncated and not obs[0].any()


def test_different_observation_sizes_need_padding():
    with pytest.raises(ConfigError, match=r"agent 0: 3, agent 1: 5.*pad_observations=True"):
        make_env("gymma", key=FIXTURE, env_kwargs={"obs_sizes": (3, 5)})
    env = make_env("gymma", key=FIXTURE, env_kwargs={"obs_sizes": (3, 5)}, pad_observations=True)
    obs, state = env.reset()
    np.testing.assert_array_equal(obs, [[1, 1, 1, 0, 0], [11, 11, 11, 11, 11]])
    np.testing.assert_array_equal(state, obs.reshape(-1))


# ------------------------------------------------------------------------ seeding
@pytest.mark.parametrize("backend", ["lbf", "rware"])
def test_the_same_seed_gives_the_same_episodes(backend):
    def rollout(seed):
        batch, stats = BatchRunner(make_batched_env(backend, 2, seed=seed, time_limit=12), RandomPolicy(0)).run()
        return batch["obs"], batch["reward"], stats.lengths

    first, again, other = rollout(4), rollout(4), rollout(5)
    for a, b in zip(first, again):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    assert not torch.equal(first[0], other[0])


def test_the_random_state_restores_the_next_episodes():
    env = make_env("lbf", seed=9)
    env.reset()
    state = copy.deepcopy(env.get_rng_state())
    firsts = [env.reset()[0].copy() for _ in range(3)]
    env.set_rng_state(state)
    np.testing.assert_array_equal([env.reset()[0].copy() for _ in range(3)], firsts)
    resumed = make_env("lbf", seed=1)  # as a resumed run: a new environment given the state
    resumed.set_rng_state(copy.deepcopy(state))
    np.testing.assert_array_equal([resumed.reset()[0].copy() for _ in range(3)], firsts)
    fresh = make_env("lbf", seed=9)  # a seed not yet applied is part of the state
    pending = fresh.get_rng_state()
    assert pending["pending_seed"] == 9
    first = fresh.reset()[0].copy()
    fresh.set_rng_state(pending)
    np.testing.assert_array_equal(fresh.reset()[0], first)


# ------------------------------------------------------------------------ checks and bad input
@pytest.mark.parametrize("backend, args", [("lbf", {"time_limit": 10}), ("rware", {"time_limit": 10})])
def test_check_env_reports_no_error(backend, args):
    violations = check_env(backend, args, n_envs=2, episodes=2)
    assert not [v for v in violations if v.level == "error"], violations


def test_check_env_command_line_on_lbf():
    from qmixlab.__main__ import main

    assert main(["qmixlab", "check-env", "lbf", "time_limit=8", "--episodes", "1"]) == 0


@pytest.mark.parametrize("backend, key, expected", [
    ("lbf", "Foraging-8x8-2p-3f-v2", "'Foraging-8x8-2p-3f-v3'"),
    ("rware", "rware-tiny-2ag-v1", "'rware-tiny-2ag-v2'"),
    ("gymma", "lbforaging:Foraging-8x8-2p-3f-v9", "'Foraging-8x8-2p-3f-v3'"),
])
def test_an_unknown_id_names_the_closest_registered_ids(backend, key, expected):
    with pytest.raises(ConfigError, match="unknown gymnasium id") as error:
        make_batched_env(backend, 1, key=key)
    assert "Did you mean" in str(error.value) and expected in str(error.value)


def test_gymma_takes_epymarls_spelling_and_a_plain_id():
    for key in ("lbforaging:Foraging-8x8-2p-3f-v3", "Foraging-8x8-2p-3f-v3", "rware:rware-tiny-2ag-v2"):
        env = make_env("gymma", key=key)
        assert env.family is not None and env.key == key.split(":")[-1]
    with pytest.raises(ConfigError, match="needs env_args.key"):
        make_env("gymma")
    with pytest.raises(ConfigError, match="env=gymma env_args.key='rware-tiny-2ag-v2'"):
        make_env("lbf", key=RWARE_KEY)


def test_a_continuous_action_space_is_refused():
    with pytest.raises(ConfigError, match=r"agent 1 of .* continuous \(Box\) action space.*Discrete"):
        make_env("gymma", key=FIXTURE, env_kwargs={"continuous": True})


@pytest.mark.parametrize("args, fragment", [
    ({"state": "global"}, "env_args.state='global'"),
    ({"reward_reduction": "avg"}, "expected one of sum, mean"),
    ({"time_limit": 0}, "time_limit must be a positive int"),
    ({"state": "env"}, "has no global state"),
    ({"env_kwargs": {"no_such_argument": 1}}, "refused env_kwargs"),
])
def test_bad_options_are_refused_with_the_fix(args, fragment):
    with pytest.raises(ConfigError) as error:
        make_env("lbf", **args)
    assert fragment in str(error.value)


def test_env_args_are_the_constructor_arguments():
    defaults = env_arg_defaults("rware")
    assert defaults["key"] == RWARE_KEY and defaults["time_limit"] is None
    with pytest.raises(ValueError, match="did you mean 'time_limit'"):
        check_env_args("lbf", {"time_limt": 5})
    import inspect

    accepted = set(inspect.signature(GymnasiumMultiAgentEnv).parameters) - {"seed", "backend"}
    assert set(defaults) == accepted


# ------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("env_name, extra", [("lbf", []), ("rware", ["env_args.time_limit=50"])])
def test_training_from_the_command_line(capsys, caplog, tmp_path, env_name, extra):
    from qmixlab.__main__ import main

    code = main(["qmixlab", "-u", "with", f"env={env_name}", *extra, "t_max=3000", "batch_size=8",
                 "batch_size_run=4", "buffer_size=32", "test_interval=1000", "test_nepisode=4",
                 "log_interval=1000", "save_model=False", "progress_bar=False", "agent.hidden_dim=16",
                 "mixer.mixing_embed_dim=8", "mixer.hypernet_embed=16", f"local_results_path={tmp_path}",
                 "seed=0"])
    assert code == 0
    logged = caplog.text + capsys.readouterr().err
    losses = [float(value) for value in re.findall(r"\bloss: (\S+)", logged)]
    assert losses and all(math.isfinite(loss) for loss in losses), logged[-2000:]
    assert re.search(r"finished \d{4,} environment steps", logged), logged[-2000:]


def test_an_unknown_id_is_a_one_line_error_on_the_command_line(capsys, tmp_path):
    from qmixlab.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["qmixlab", "-u", "with", "env=lbf", "env_args.key=Foraging-8x8-2p-3f-v2",
              f"local_results_path={tmp_path}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "qmixlab: unknown gymnasium id 'Foraging-8x8-2p-3f-v2' for env=lbf" in err
    assert "Did you mean 'Foraging-8x8-2p-3f-v3'" in err


# ---------------------------------------------------------------- VectorisedEnvs' fast path
@pytest.mark.parametrize("backend, args, kinds", [
    ("lbf", {"key": LBF_KEY}, {"truncated"}),  # random play never clears the field
    ("rware", {"key": RWARE_KEY, "time_limit": 25}, {"truncated"}),
    ("gymma", {"key": FIXTURE, "env_kwargs": {"finish_at": (2, 4)}}, {"terminated"}),
    ("gymma", {"key": FIXTURE, "env_kwargs": {"finish_at": (2, 3), "truncate_agent": 1}}, {"truncated"}),
    ("gymma", {"key": FIXTURE, "env_kwargs": {"mask_in_info": True}}, {"truncated"}),
])
def test_the_fast_path_plays_exactly_the_general_path(backend, args, kinds):
    ends = assert_fast_path_plays_the_checked_path(lambda: make_batched_env(backend, 3, seed=0, **args))
    assert {kind for kind, count in ends.items() if count} == kinds  # both ends were exercised
