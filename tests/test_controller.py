"""AgentController: rollout bookkeeping against the learner's unroll, env_mask, target copies."""

import copy

import numpy as np
import pytest
import torch

from qmixlab.controllers.agent_controller import AgentController, last_actions_from_actions
from qmixlab.modules.agents import RNNAgent

N_ENVS, T, N, D, A, H = 5, 9, 3, 6, 4, 12


class GreedyStandIn:
    """Best available action; records what it was shown."""

    def __init__(self):
        self.calls = []

    def select_actions(self, agent_qs, avail_actions, t_env, test_mode=False, generator=None):
        self.calls.append((tuple(agent_qs.shape), t_env, test_mode))
        return agent_qs.masked_fill(~avail_actions, -float("inf")).argmax(-1)


def make_controller(seed=0):
    torch.manual_seed(seed)
    agent = RNNAgent(D, A, N, hidden_dim=H)
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return AgentController(agent, GreedyStandIn())


def random_rollout_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(N_ENVS, T, N, D, generator=g)
    avail = torch.rand(N_ENVS, T, N, A, generator=g) < 0.6
    avail[..., 0] |= ~avail.any(-1)  # at least one available action
    return obs, avail


def test_greedy_rollout_reproduces_argmax_of_unroll():
    mac = make_controller()
    obs, avail = random_rollout_inputs()
    mac.init_hidden(N_ENVS)
    actions = torch.empty(N_ENVS, T, N, 1, dtype=torch.long)
    for t in range(T):
        actions[:, t, :, 0] = mac.select_actions(obs[:, t], avail[:, t], t_env=t, test_mode=True)
    q = mac.unroll(obs, actions)
    greedy = q.masked_fill(~avail, -float("inf")).argmax(-1)
    assert torch.equal(greedy, actions[..., 0])
    assert mac.action_selector.calls[0] == ((N_ENVS, N, A), 0, True)


def test_unroll_uses_the_previous_action_and_none_at_the_start():
    mac = make_controller()
    obs, _ = random_rollout_inputs()
    actions = torch.randint(0, A, (N_ENVS, T, N, 1))
    last = last_actions_from_actions(actions, A)
    assert (last[:, 0] == A).all()
    assert torch.equal(last[:, 1:], actions[:, :-1, :, 0])
    torch.testing.assert_close(mac.unroll(obs, actions), mac.agent.unroll(obs, last))
    # the action at the final step is never read
    changed = actions.clone()
    changed[:, -1] = (changed[:, -1] + 1) % A
    torch.testing.assert_close(mac.unroll(obs, changed), mac.unroll(obs, actions))
    with pytest.raises(ValueError, match=r"\[B, T, N, 1\]"):
        mac.unroll(obs, actions[..., 0])


def test_env_mask_leaves_masked_rows_untouched():
    mac = make_controller()
    obs, avail = random_rollout_inputs()
    mac.init_hidden(N_ENVS)
    for t in range(3):
        mac.select_actions(obs[:, t], avail[:, t], t_env=0, test_mode=True)
    hidden_before, last_before = mac.hidden.clone(), mac.last_actions.clone()
    env_mask = torch.tensor([True, False, True, False, False])
    chosen = mac.select_actions(obs[:, 3], avail[:, 3], t_env=0, test_mode=True, env_mask=env_mask)
    assert mac.action_selector.calls[-1][0] == (2, N, A)  # the selector sees active rows only
    assert torch.equal(mac.hidden[~env_mask], hidden_before[~env_mask])
    assert torch.equal(mac.last_actions[~env_mask], last_before[~env_mask])
    assert not torch.equal(mac.hidden[env_mask], hidden_before[env_mask])
    assert torch.equal(mac.last_actions[env_mask], chosen[env_mask])
    assert (chosen[~env_mask] == 0).all()
    # active rows advanced exactly as a full step would have advanced them
    full = copy.deepcopy(mac)
    full._hidden, full._last_actions = hidden_before.clone(), last_before.clone()
    expected = full.select_actions(obs[:, 3], avail[:, 3], t_env=0, test_mode=True)
    assert torch.equal(chosen[env_mask], expected[env_mask])
    torch.testing.assert_close(mac.hidden[env_mask], full.hidden[env_mask])
    # an all-False mask changes nothing and does not call the selector
    n_calls = len(mac.action_selector.calls)
    hidden_now = mac.hidden.clone()
    out = mac.select_actions(obs[:, 4], avail[:, 4], 0, env_mask=torch.zeros(N_ENVS, dtype=torch.bool))
    assert (out == 0).all() and torch.equal(mac.hidden, hidden_now)
    assert len(mac.action_selector.calls) == n_calls


def test_episodes_of_different_lengths_match_their_own_unroll():
    """Envs stop at different steps (env_mask): each env's actions still equal the greedy actions
    of unroll on that env's own episode."""
    mac = make_controller(1)
    obs, avail = random_rollout_inputs(1)
    lengths = [T, 4, 7, 1, 9]
    mac.init_hidden(N_ENVS)
    actions = torch.zeros(N_ENVS, T, N, 1, dtype=torch.long)
    for t in range(T):
        env_mask = torch.tensor([t < n for n in lengths])
        actions[:, t, :, 0] = mac.select_actions(obs[:, t], avail[:, t], t, test_mode=True, env_mask=env_mask)
    for e, n in enumerate(lengths):
        q = mac.unroll(obs[e:e + 1, :n], actions[e:e + 1, :n])
        greedy = q.masked_fill(~avail[e:e + 1, :n], -float("inf")).argmax(-1)
        assert torch.equal(greedy, actions[e:e + 1, :n, :, 0])


def test_init_hidden_restarts_episodes():
    mac = make_controller()
    obs, avail = random_rollout_inputs()
    mac.init_hidden(N_ENVS)
    first = mac.select_actions(obs[:, 0], avail[:, 0], 0, test_mode=True)
    mac.select_actions(obs[:, 1], avail[:, 1], 0, test_mode=True)
    mac.init_hidden(N_ENVS)
    assert (mac.last_actions == A).all() and not mac.hidden.any()
    assert torch.equal(mac.select_actions(obs[:, 0], avail[:, 0], 0, test_mode=True), first)


def test_numpy_inputs_and_cpu_long_output():
    mac = make_controller()
    obs, avail = random_rollout_inputs()
    mac.init_hidden(N_ENVS)
    expected = copy.deepcopy(mac).select_actions(obs[:, 0], avail[:, 0], 0, test_mode=True)
    got = mac.select_actions(obs[:, 0].double().numpy(), avail[:, 0].numpy().astype(np.int64), 0,
                             test_mode=True, env_mask=np.ones(N_ENVS, dtype=bool))
    assert got.dtype == torch.long and got.device.type == "cpu"
    assert torch.equal(got, expected)


def test_deepcopy_is_an_independent_target():
    mac = make_controller()
    obs, _ = random_rollout_inputs()
    actions = torch.randint(0, A, (N_ENVS, T, N, 1))
    target = copy.deepcopy(mac)
    torch.testing.assert_close(target.unroll(obs, actions), mac.unroll(obs, actions))
    assert all(p is not q for p, q in zip(mac.parameters(), target.parameters()))
    with torch.no_grad():
        for p in mac.parameters():
            p.add_(1.0)
    assert not torch.allclose(target.unroll(obs, actions), mac.unroll(obs, actions))
    target.load_state_dict(mac.state_dict())
    torch.testing.assert_close(target.unroll(obs, actions), mac.unroll(obs, actions))
    assert set(mac.state_dict()) == {f"agent.{k}" for k in mac.agent.state_dict()}  # no rollout state


def test_controller_follows_dtype_changes():
    mac = make_controller()
    obs, avail = random_rollout_inputs()
    mac.init_hidden(N_ENVS)
    mac.to(torch.float64)
    mac.select_actions(obs[:, 0], avail[:, 0], 0)
    assert mac.hidden.dtype == torch.float64


def test_generator_is_passed_to_the_selector():
    seen = {}

    class Recording(GreedyStandIn):
        def select_actions(self, agent_qs, avail_actions, t_env, test_mode=False, generator=None):
            seen["generator"] = generator
            return super().select_actions(agent_qs, avail_actions, t_env, test_mode)

    mac = make_controller()
    mac.action_selector = Recording()
    obs, avail = random_rollout_inputs()
    mac.init_hidden(N_ENVS)
    g = torch.Generator()
    mac.select_actions(obs[:, 0], avail[:, 0], 0, generator=g)
    assert seen["generator"] is g


def test_errors_name_what_was_expected():
    mac = make_controller()
    obs, avail = random_rollout_inputs()
    with pytest.raises(RuntimeError, match="init_hidden"):
        mac.select_actions(obs[:, 0], avail[:, 0], 0)
    mac.init_hidden(N_ENVS)
    with pytest.raises(ValueError, match="n_envs=5"):
        mac.select_actions(obs[:2, 0], avail[:2, 0], 0)
    with pytest.raises(ValueError, match=f"n_actions={A}"):
        mac.select_actions(obs[:, 0], avail[:, 0, :, :-1], 0)
    with pytest.raises(ValueError, match="0/1"):
        mac.select_actions(obs[:, 0], avail[:, 0].long() * 2, 0)
    with pytest.raises(ValueError, match="env_mask"):
        mac.select_actions(obs[:, 0], avail[:, 0], 0, env_mask=torch.ones(N_ENVS))
    with pytest.raises(ValueError, match="n_envs must be a positive int"):
        mac.init_hidden(0)
    with pytest.raises(TypeError, match="select_actions"):
        AgentController(mac.agent, object())
    learner_only = AgentController(mac.agent, None)
    learner_only.init_hidden(N_ENVS)
    with pytest.raises(RuntimeError, match="no action_selector"):
        learner_only.select_actions(obs[:, 0], avail[:, 0], 0)


def test_with_the_project_selector():
    selectors = pytest.importorskip("qmixlab.components.action_selectors")
    mac = make_controller()
    mac.action_selector = selectors.EpsilonGreedyActionSelector(lambda t_env: 1.0)
    obs, avail = random_rollout_inputs()
    mac.init_hidden(N_ENVS)
    g = torch.Generator().manual_seed(0)
    for t in range(T):  # epsilon 1: random, but always available actions
        chosen = mac.select_actions(obs[:, t], avail[:, t], t, generator=g)
        assert avail[:, t].gather(-1, chosen.unsqueeze(-1)).all()
