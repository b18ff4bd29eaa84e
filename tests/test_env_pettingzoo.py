"""The PettingZoo backends (``pettingzoo``, ``mpe``) against the real packages: shapes and spec,
observations and rewards against the raw environment, terminated vs truncated, action masks in
selection and in the target max, agents that leave early, seeding, the checker, bad input, and
one training run through the command line.

``Corridor`` (below) is a PettingZoo ``ParallelEnv`` written for these tests: MPE's agents never
leave early and have no action masks, Corridor's do both."""

import copy
import json
import re
import sys

import numpy as np
import pytest
import torch
from torch import nn

import pettingzoo  # the real packages: CI installs the extras, so a missing one fails loudly
from gymnasium import spaces

from qmixlab.components.action_selectors import EpsilonGreedyActionSelector
from qmixlab.components.masks import MaskOptions, episode_end_flags
from qmixlab.components.schedules import LinearSchedule
from qmixlab.controllers.agent_controller import AgentController
from qmixlab.envs import check_env_args, env_arg_defaults, make_batched_env, make_env
from qmixlab.envs import conformance
from qmixlab.envs.pettingzoo_env import MPE_TASKS, MPEEnv, PettingZooEnv
from qmixlab.learners.options import LearnerOptions
from qmixlab.learners.q_learner import QLearner
from qmixlab.modules.agents import RNNAgent
from qmixlab.runners.batch_runner import BatchRunner

from vectorised_paths import assert_fast_path_plays_the_checked_path

STAY, LEFT, RIGHT = 0, 1, 2


class Corridor(pettingzoo.ParallelEnv):
    """Walkers on cells ``0 .. length-1``; a walker that reaches the last cell terminates and
    leaves ``env.agents``; everyone left is truncated after ``max_cycles`` steps (None: never). Actions: 0
    stay, 1 left (masked on cell 0), 2 right. The mask is in dict observations
    (``mask_in="obs"``) or in the infos (``"info"``). Observation: ``[cell, t]``."""

    metadata = {"name": "corridor_v0"}

    def __init__(self, starts=(0, 1, 2), length=4, max_cycles=8, mask_in="obs"):
        self.possible_agents = [f"walker_{i}" for i in range(len(starts))]
        self.starts, self.length, self.max_cycles, self.mask_in = tuple(starts), length, max_cycles, mask_in
        self.np_random = np.random.default_rng()
        self.agents = []

    def observation_space(self, agent):
        box = spaces.Box(0, self.length, (2,), np.float32)
        if self.mask_in == "obs":
            return spaces.Dict({"observation": box, "action_mask": spaces.MultiBinary(3)})
        return box

    def action_space(self, agent):
        return spaces.Discrete(3)

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        # A start of -1 draws a random cell (the seeded generator is then visible in the episodes).
        self.cell = {a: int(s if s >= 0 else self.np_random.integers(0, self.length - 1))
                     for a, s in zip(self.agents, self.starts)}
        self.t = 0
        return self._observations(self.agents), self._infos(self.agents)

    def _mask(self, agent):
        return np.array([1, self.cell[agent] > 0, 1], np.int8)

    def _observations(self, agents):
        raw = {a: np.array([self.cell[a], self.t], np.float32) for a in agents}
        if self.mask_in == "obs":
            return {a: {"observation": raw[a], "action_mask": self._mask(a)} for a in agents}
        return raw

    def _infos(self, agents):
        return {a: ({"action_mask": self._mask(a)} if self.mask_in == "info" else {}) for a in agents}

    def step(self, actions):
        assert set(actions) == set(self.agents), (actions, self.agents)
        self.t += 1
        for agent, action in actions.items():
            assert self._mask(agent)[action], (agent, action)
            self.cell[agent] += {STAY: 0, LEFT: -1, RIGHT: 1}[int(action)]
        terminations = {a: self.cell[a] == self.length - 1 for a in self.agents}
        limit_reached = self.max_cycles is not None and self.t >= self.max_cycles
        truncations = {a: limit_reached and not terminations[a] for a in self.agents}
        rewards = {a: (1.0 if terminations[a] else -0.1) for a in self.agents}
        observations, infos = self._observations(self.agents), self._infos(self.agents)
        self.agents = [a for a in self.agents if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, infos


class Policy:
    """A controller stand-in: uniform over available actions, or a fixed preference order."""

    def __init__(self, seed=0, prefer=None):
        self.rng = np.random.default_rng(seed)
        self.prefer = prefer

    def init_hidden(self, n):
        pass

    def select_actions(self, obs, avail, t_env, test_mode=False, env_mask=None):
        avail = np.asarray(avail)
        if self.prefer is None:
            scores = self.rng.random(avail.shape) + avail
        else:
            scores = avail * (1.0 + np.asarray(self.prefer, float))
        return torch.as_tensor(scores.argmax(-1))


def rollout(name, n_envs=2, seed=0, controller=None, **env_args):
    env = make_batched_env(name, n_envs, seed=seed, **env_args)
    runner = BatchRunner(env, controller or Policy(seed))
    batch, stats = runner.run()
    return env, batch, stats


def random_available(rng, avail):
    return [int(rng.choice(np.flatnonzero(row))) for row in np.asarray(avail)]


# ------------------------------------------------------------------------ shapes and spec
@pytest.mark.parametrize("task, env_args, sizes", [
    # (n_agents, obs_shape, state_shape, n_actions): mpe2's documented sizes
    ("simple_spread_v3", {}, (3, 18, 54, 5)),
    ("simple_spread_v3", {"N": 4}, (4, 24, 96, 5)),
    ("simple_speaker_listener_v4", {"pad_observations": True}, (2, 11, 14, 5)),
    ("simple_reference_v3", {}, (2, 21, 42, 50)),
])
def test_mpe_shapes_and_spec(task, env_args, sizes):
    env = make_env("mpe", task=task, seed=0, **env_args)
    info = env.get_env_info()
    assert (info["n_agents"], info["obs_shape"], info["state_shape"], info["n_actions"]) == sizes
    assert info["episode_limit"] == 25  # mpe2's max_cycles default
    spec = env.get_spec()
    assert spec.noop_action == 0 and spec.provides_alive and not spec.step_flags and not spec.auto_reset
    obs, state = env.reset()
    assert np.asarray(obs).shape == (sizes[0], sizes[1]) and np.asarray(state).shape == (sizes[2],)
    assert env.get_alive_agents().all()


def test_every_listed_mpe_task_builds_and_steps():
    rng = np.random.default_rng(0)
    for task in MPE_TASKS:
        env = MPEEnv(task=task, seed=0, pad_observations=True, max_cycles=3)
        env.reset()
        for _ in range(3):
            _, ended, _ = env.step(random_available(rng, env.get_avail_actions()))
        assert ended, task


def test_speaker_listener_pads_observations_and_masks_the_speakers_missing_actions():
    env = MPEEnv(task="simple_speaker_listener_v4", seed=3, pad_observations=True)
    raw = env.env
    env.reset()
    speaker, listener = env.agent_names
    assert (speaker, listener) == ("speaker_0", "listener_0")
    # The speaker has Discrete(3), the listener Discrete(5): the speaker's indices 3, 4 are unavailable.
    assert env.get_avail_actions().tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    obs = env.get_obs()
    np.testing.assert_array_equal(obs[0, :3], raw.unwrapped.observe(speaker))
    assert (obs[0, 3:] == 0).all()
    np.testing.assert_array_equal(obs[1], raw.unwrapped.observe(listener))
    # The state is the environment's: both observations, unpadded.
    np.testing.assert_array_equal(env.get_state(), raw.state())


# ------------------------------------------------------------ values against the raw env
@pytest.mark.parametrize("reward_reduction", ["sum", "mean"])
def test_observations_rewards_and_state_match_the_raw_environment(reward_reduction):
    from mpe2 import simple_spread_v3

    env = MPEEnv(seed=11, max_cycles=6, reward_reduction=reward_reduction)
    raw = simple_spread_v3.parallel_env(max_cycles=6)
    raw_obs, _ = raw.reset(seed=11)
    obs, state = env.reset()
    rng = np.random.default_rng(1)
    for t in range(6):
        np.testing.assert_array_equal(obs, np.stack([raw_obs[a] for a in raw.possible_agents]))
        np.testing.assert_array_equal(state, raw.state())  # MPE's own state, built from the obs
        np.testing.assert_array_equal(state, env.env.state())
        actions = random_available(rng, env.get_avail_actions())
        reward, ended, info = env.step(actions)
        raw_obs, raw_rewards, _, raw_trunc, _ = raw.step(dict(zip(raw.possible_agents, actions)))
        expected = sum(raw_rewards.values()) / (3 if reward_reduction == "mean" else 1)
        assert reward == pytest.approx(expected, rel=1e-12)
        obs, state = env.get_obs(), env.get_state()
        assert ended == (t == 5) and info.get("episode_limit", False) == (t == 5)
    assert all(raw_trunc.values())
    np.testing.assert_array_equal(obs, np.stack([raw_obs[a] for a in raw.possible_agents]))


def test_state_options():
    assert MPEEnv(state="env").get_state_size() == 54
    env = MPEEnv(seed=0, state="env")
    env.reset()
    np.testing.assert_array_equal(env.get_state(), env.env.state())
    generic = PettingZooEnv(env_fn=Corridor, env_kwargs={"mask_in": "info"})
    assert generic.get_state_size() == 6  # no state_space: the observations, concatenated
    with pytest.raises(ValueError, match=r"declares no state_space.*env_args.state=concat_obs"):
        PettingZooEnv(env_fn=Corridor, state="env")
    with pytest.raises(ValueError, match=r"env_args.state='concat' is not one of .*did you mean 'concat_obs'"):
        MPEEnv(state="concat")


# ------------------------------------------------------------------ terminated vs truncated
def test_time_limit_is_a_truncation_and_stepping_after_it_raises():
    env = MPEEnv(seed=0, max_cycles=4)
    env.reset()
    for t in range(4):
        reward, ended, info = env.step([0, 0, 0])
        assert ended == (t == 3) and info == ({"episode_limit": True} if t == 3 else {})
    assert env.get_stats() == {"timeouts": 1, "agents_left_early": 0}
    with pytest.raises(ValueError, match="the episode has ended"):
        env.step([0, 0, 0])
    # A time_limit below the environment's own cuts there, as a truncation too.
    env = MPEEnv(seed=0, max_cycles=25, time_limit=3)
    assert env.episode_limit == 3
    env.reset()
    assert [env.step([1, 2, 3])[1] for _ in range(3)] == [False, False, True]
    assert env.get_stats()["timeouts"] == 1


def test_runner_stores_truncations_and_the_timeout_option_changes_the_bootstrap_flags():
    env, batch, stats = rollout("mpe", n_envs=2, seed=1, task="simple_spread_v3", max_cycles=5)
    assert stats.lengths.tolist() == [5, 5] and stats.timeouts.all()
    assert not batch["terminated"].any()
    assert batch["timeout"][:, :, 0].nonzero().tolist() == [[0, 4], [1, 4]]
    cuts = {}
    for mode in ("bootstrap", "terminal"):
        cuts[mode], ends = episode_end_flags(batch["terminated"], batch["timeout"], MaskOptions(timeout=mode))
        assert ends[:, 4].all() and ends.sum() == 2
    assert not cuts["bootstrap"].any()  # bootstrapped through the time limit
    assert torch.equal(cuts["terminal"], batch["timeout"].bool())  # cut as a terminal state


def test_all_agents_finishing_is_a_terminal_state():
    env, batch, stats = rollout("pettingzoo", n_envs=2, env_fn=Corridor, controller=Policy(prefer=[0, 0, 1]))
    # Walkers start on cells 0, 1, 2 and walk right: they finish after 3, 2 and 1 steps.
    assert stats.lengths.tolist() == [3, 3] and not stats.timeouts.any()
    assert batch["terminated"][:, 2, 0].all() and not batch["timeout"].any()
    cuts, _ = episode_end_flags(batch["terminated"], batch["timeout"], MaskOptions(timeout="bootstrap"))
    assert cuts[:, 2].all()


# --------------------------------------------------------------------- agents leaving early
def test_agents_that_leave_early_are_dead_with_zero_obs_and_only_the_placeholder_action():
    env = PettingZooEnv(env_fn=Corridor, seed=0)
    assert env.noop_action is None and env.get_spec().provides_alive
    env.reset()
    alive_rows, obs_rows, avail_rows = [], [], []
    ended = False
    while not ended:
        _, ended, info = env.step([RIGHT if alive else 0 for alive in env.get_alive_agents()])
        alive_rows.append(env.get_alive_agents().tolist())
        obs_rows.append(env.get_obs().copy())
        avail_rows.append(env.get_avail_actions().copy())
    # walker_2 leaves after step 1, walker_1 after step 2, walker_0 after step 3 (terminal).
    assert alive_rows == [[True, True, False], [True, False, False], [False, False, False]]
    assert info == {}  # terminated
    for alive, obs, avail in zip(alive_rows, obs_rows, avail_rows):
        for i, is_alive in enumerate(alive):
            if is_alive:
                assert obs[i, 0] > 0 and avail[i].tolist() == [True, True, True]
            else:
                assert (obs[i] == 0).all() and avail[i].tolist() == [True, False, False]
    assert env.get_stats() == {"timeouts": 0, "agents_left_early": 2}


def test_mixed_last_step_is_a_truncation_and_the_cut_agent_stays_alive_on_the_final_row():
    # max_cycles=2: walker_2 leaves at step 1; at step 2 walker_1 terminates and walker_0 is cut.
    env = PettingZooEnv(env_fn=Corridor, env_kwargs={"max_cycles": 2}, noop_action=STAY)
    env.reset()
    env.step([RIGHT, RIGHT, RIGHT])
    with pytest.raises(ValueError, match=r"action 2 is not available to agent 2 \('walker_2'\); available: \[0\]"):
        env.step([RIGHT, RIGHT, RIGHT])
    _, ended, info = env.step([RIGHT, RIGHT, STAY])
    assert ended and info == {"episode_limit": True}
    assert env.get_alive_agents().tolist() == [True, False, False]
    np.testing.assert_array_equal(env.get_obs(), [[2, 2], [0, 0], [0, 0]])


def test_runner_stores_the_alive_mask_and_dead_agent_masks_can_use_it():
    env, batch, _ = rollout("pettingzoo", n_envs=2, env_fn=Corridor, noop_action=STAY,
                            controller=Policy(prefer=[0, 0, 1]))
    spec = env.get_spec()
    assert spec.can_tell_dead_agents and spec.noop_action == STAY
    alive = batch["alive"][0, :4, :, 0]
    assert alive.tolist() == [[True, True, True], [True, True, False], [True, False, False],
                              [False, False, False]]
    assert (batch["obs"][0, :4][~alive] == 0).all()


# ---------------------------------------------------------------------------- action masks
@pytest.mark.parametrize("mask_in", ["obs", "info"])
def test_action_masks_from_observations_or_infos(mask_in):
    env = PettingZooEnv(env_fn=Corridor, env_kwargs={"mask_in": mask_in, "starts": (0, 1, 0)})
    env.reset()
    # Slow reference: left is available exactly where the cell (obs feature 0) is above 0.
    for actions in ([STAY, LEFT, RIGHT], [RIGHT, STAY, LEFT], [LEFT, STAY, STAY]):
        expected = [[True, bool(cell > 0), True] for cell in env.get_obs()[:, 0]]
        assert env.get_avail_actions().tolist() == expected
        env.step(actions)


def lured_agent(obs_dim, n_agents):
    """An RNNAgent that prefers LEFT whatever it sees, then RIGHT."""
    agent = RNNAgent(obs_dim, 3, n_agents, hidden_dim=8)
    with torch.no_grad():
        agent.fc2.weight.zero_()
        agent.fc2.bias[:] = torch.tensor([0.0, 10.0, 5.0])
    return agent


def test_masks_are_honoured_by_greedy_selection_in_the_real_controller():
    env = make_batched_env("pettingzoo", 2, seed=0, env_fn=Corridor,
                           env_kwargs={"starts": (0, 1, 2), "max_cycles": 6, "mask_in": "info"})
    mac = AgentController(lured_agent(2, 3), EpsilonGreedyActionSelector(LinearSchedule(0.0, 0.0, 1)))
    batch, stats = BatchRunner(env, mac).run(test_mode=True)
    filled = batch["filled"][..., 0].bool()
    chosen = batch["avail_actions"].gather(3, batch["actions"])[..., 0]
    assert chosen[filled].all(), "a stored action was unavailable"
    on_cell_0 = filled[..., None] & (batch["obs"][..., 0] == 0) & batch["alive"][..., 0]
    assert on_cell_0.any()  # the mask bit, so the lure had to be refused
    assert (batch["actions"][..., 0][on_cell_0] == RIGHT).all()
    assert (batch["actions"][..., 0][filled[..., None] & ~on_cell_0 & batch["alive"][..., 0]] == LEFT).all()


class LuredQ(nn.Module):
    """Q-values from a linear layer, with every unavailable action (in ``avail``) worth 1e6."""

    def __init__(self, obs_dim, avail):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(obs_dim, avail.shape[-1])
        self.avail = avail

    def unroll(self, obs, actions, lengths=None):
        q = self.linear(obs.float())
        return torch.where(self.avail[:, : q.shape[1]], q, torch.full_like(q, 1e6))


def test_unavailable_actions_never_reach_the_target_max():
    env, batch, _ = rollout("pettingzoo", n_envs=3, seed=2, env_fn=Corridor,
                            env_kwargs={"starts": (-1, -1, -1), "max_cycles": 6})
    avail = batch["avail_actions"].bool()
    assert (~avail[batch["filled"][..., 0].bool()]).any()  # masked cells and dead agents
    lured = LuredQ(2, avail)
    learner = QLearner(lured, None, 3, LearnerOptions(td_lambda=0.0, gamma=0.9), MaskOptions())
    learner.target_mac.avail = avail
    stats = learner.train(copy.deepcopy(batch))
    assert abs(stats["target_mean"]) < 100  # a lured target would be ~ 0.9e6


# ------------------------------------------------------------------------------- seeding
def test_same_seed_same_episodes_and_rng_hooks_restore_them():
    batches = [rollout("mpe", n_envs=2, seed=seed, max_cycles=6)[1] for seed in (4, 4, 5)]
    for field in ("obs", "state", "reward", "actions"):
        assert torch.equal(batches[0][field], batches[1][field]), field
    assert not torch.equal(batches[0]["obs"], batches[2]["obs"])

    env = MPEEnv(seed=9, max_cycles=3)
    saved = env.get_rng_state()
    assert saved["pending_seed"] == 9 and conformance._is_plain(saved)
    first = np.array(env.reset()[0])
    env.set_rng_state(copy.deepcopy(saved))
    np.testing.assert_array_equal(env.reset()[0], first)
    env.reset()
    mid = env.get_rng_state()
    second = np.array(env.reset()[0])
    env.set_rng_state(mid)
    np.testing.assert_array_equal(env.reset()[0], second)
    assert not np.array_equal(first, second)


def test_seeded_reset_reaches_a_generator_the_fixture_uses():
    episodes = []
    for seed in (1, 1, 2):
        env = PettingZooEnv(env_fn=Corridor, env_kwargs={"starts": (-1, -1, -1), "length": 50}, seed=seed)
        episodes.append([env.reset()[0][:, 0].tolist() for _ in range(3)])
    assert episodes[0] == episodes[1] and episodes[0] != episodes[2]


# -------------------------------------------------------------------------- the checker
@pytest.mark.parametrize("env_name, env_args", [
    ("mpe", {"max_cycles": 5}),
    ("mpe", {"task": "simple_speaker_listener_v4", "pad_observations": True, "max_cycles": 5}),
    ("pettingzoo", {"env_kwargs": {"max_cycles": 5}}),
    ("pettingzoo", {"env_fn": Corridor, "env_kwargs": {"starts": (-1, -1, -1)}}),
    ("pettingzoo", {"env_fn": Corridor, "noop_action": STAY, "env_kwargs": {"mask_in": "info"}}),
])
def test_the_checker_finds_no_error_or_warning(env_name, env_args):
    violations = conformance.check_env(env_name, env_args, episodes=2)
    assert not [v for v in violations if v.level in ("error", "warning")], violations


def test_check_env_entry_point(capsys):
    from qmixlab.experiment import main

    assert main(["qmixlab", "check-env", "mpe", "task=simple_reference_v3", "max_cycles=4", "--episodes", "1"]) == 0
    assert "OK: 0 error(s), 0 warning(s)" in capsys.readouterr().out


# ---------------------------------------------------------------------------- bad input
def test_env_args_are_the_backends_and_the_tasks_arguments():
    mpe = env_arg_defaults("mpe")
    assert mpe["task"] == "simple_spread_v3" and mpe["pad_observations"] is False
    assert {"N", "local_ratio", "max_cycles", "continuous_actions"} <= set(mpe)
    assert all(mpe[key] is None for key in ("N", "local_ratio", "max_cycles"))  # the task's default
    assert set(env_arg_defaults("pettingzoo")) == {"env_fn", "env_kwargs", "noop_action", "pad_observations",
                                                   "state", "reward_reduction", "time_limit"}
    with pytest.raises(ValueError, match=r"unknown env_args key 'max_cycle' for environment 'mpe'; did you mean "
                                         r"'max_cycles'"):
        check_env_args("mpe", {"max_cycle": 5})


@pytest.mark.parametrize("env_args, error, message", [
    ({"task": "simple_sprad_v3"}, ValueError, r"unknown MPE task 'simple_sprad_v3'; did you mean 'simple_spread_v3'"),
    ({"task": "simple_tag_v3"}, ValueError, r"'simple_tag_v3' is competitive.*env=pettingzoo env_args.env_fn="
                                            r"mpe2.simple_tag_v3:parallel_env"),
    ({"continuous_actions": True}, ValueError, r"agent 'agent_0' has a continuous action space Box.*"
                                               r"continuous_actions=False"),
    ({"task": "simple_speaker_listener_v4"}, ValueError, r"observation sizes differ \(speaker_0: 3, listener_0: "
                                                         r"11\).*env_args.pad_observations=true"),
    ({"task": "simple_speaker_listener_v4", "N": 4}, ValueError, r"'simple_speaker_listener_v4' takes no "
                                                                 r"argument 'N'. Its arguments: max_cycles"),
    ({"reward_reduction": "max"}, ValueError, r"reward_reduction='max' is not one of \['sum', 'mean'\]"),
    ({"time_limit": 0}, ValueError, r"time_limit must be a positive int or null"),
])
def test_mpe_bad_input_fails_at_start_up_naming_the_fix(env_args, error, message):
    with pytest.raises(error, match=message):
        make_batched_env("mpe", 2, seed=0, **env_args)


@pytest.mark.parametrize("env_args, error, message", [
    ({"env_fn": "mpe2.simple_spread_v3"}, ValueError, r"as 'package.module:factory'"),
    ({"env_fn": "mpe2.simple_spread_v3:paralel_env"}, AttributeError, r"did you mean 'parallel_env'"),
    ({"env_fn": "no_such_package.envs:parallel_env"}, ImportError, r"pip install no_such_package"),
    ({"env_fn": "mpe2.simple_spread_v3:env"}, TypeError, r"not a PettingZoo ParallelEnv. It is an AECEnv"),
    ({"env_fn": Corridor, "env_kwargs": {"max_cycles": None}}, ValueError,
     r"cannot tell the environment's time limit.*set env_args.time_limit"),
    ({"env_fn": Corridor, "noop_action": 3}, ValueError, r"noop_action must be null or an action index .*\[0, 3\)"),
])
def test_pettingzoo_bad_input_fails_at_start_up_naming_the_fix(env_args, error, message):
    with pytest.raises(error, match=message):
        make_batched_env("pettingzoo", 2, seed=0, **env_args)
    if env_args.get("env_kwargs") == {"max_cycles": None}:  # fine with an explicit limit
        assert make_batched_env("pettingzoo", 1, time_limit=5, **env_args).episode_limit == 5


@pytest.mark.parametrize("module, backend, install", [
    ("pettingzoo", "pettingzoo", "pip install 'pettingzoo>=1.24'"),
    ("pettingzoo", "mpe", "pip install 'pettingzoo>=1.24'"),
    ("mpe2", "mpe", "pip install 'mpe2>=1.1'"),
])
def test_a_missing_package_names_the_pip_command(monkeypatch, module, backend, install):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` fail
    with pytest.raises(ImportError, match=re.escape(install)) as raised:
        make_batched_env(backend, 1)
    assert "pip install" in str(raised.value)
    if backend == "mpe" and module == "mpe2":
        with pytest.raises(ImportError, match="mpe2"):
            env_arg_defaults("mpe")


def test_importing_qmixlab_envs_does_not_import_the_packages():
    import subprocess

    code = ("import sys, qmixlab.envs, qmixlab.envs.pettingzoo_env\n"
            "print(sorted(m for m in ('pettingzoo', 'mpe2', 'gymnasium') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_training_on_mpe_through_the_command_line(capsys, tmp_path):
    from qmixlab.__main__ import main

    args = ["qmixlab", "-F", str(tmp_path / "sacred"), "with", "env=mpe", "env_args.max_cycles=25",
            "t_max=2500", "test_interval=1000", "log_interval=1000", "test_nepisode=2", "batch_size=8",
            "batch_size_run=4", "buffer_size=64", "agent.hidden_dim=16", "mixer.mixing_embed_dim=8",
            "mixer.hypernet_embed=16", "save_model=False", "progress_bar=False", "seed=0",
            f"local_results_path={tmp_path}"]
    try:
        code = main(args)
    except SystemExit as stop:
        code = stop.code
    assert code in (0, None), capsys.readouterr().err[-3000:]
    run = next(p for p in (tmp_path / "sacred").iterdir() if p.name.isdigit())
    config = json.loads((run / "config.json").read_text())
    assert config["env"] == "mpe" and config["env_args"]["task"] == "simple_spread_v3"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["loss"]["values"] and all(np.isfinite(metrics["loss"]["values"]))
    assert metrics["ep_length_mean"]["values"][-1] == 25 and metrics["timeout_mean"]["values"][-1] == 1.0


# ---------------------------------------------------------------- VectorisedEnvs' fast path
@pytest.mark.parametrize("name, args, kinds", [
    ("mpe", {"task": "simple_spread_v3", "max_cycles": 25}, {"truncated"}),
    ("mpe", {"task": "simple_speaker_listener_v4", "max_cycles": 25, "pad_observations": True}, {"truncated"}),
    ("pettingzoo", {"env_fn": Corridor, "noop_action": STAY}, {"terminated", "truncated"}),
])
def test_the_fast_path_plays_exactly_the_general_path(name, args, kinds):
    ends = assert_fast_path_plays_the_checked_path(lambda: make_batched_env(name, 3, seed=0, **args))
    assert {kind for kind, count in ends.items() if count} == kinds  # both ends were exercised
