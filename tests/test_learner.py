"""The learner's loss against a slow, per-episode reference, for every mask option."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from qmixlab.components.episode_batch import EpisodeBatch, OneHot
from qmixlab.components.masks import MaskOptions, PYMARL_UNAVAILABLE_FILL
from qmixlab.learners.q_learner import LearnerOptions, QLearner
from qmixlab.modules.mixers import build_mixer

N_AGENTS, N_ACTIONS, OBS_DIM, STATE_DIM = 2, 4, 5, 3


def pymarl_options(**overrides):
    """LearnerOptions with PyMARL's QMIX values (one-step targets, RMSprop), which these tests
    were written against, and ``overrides``."""
    return LearnerOptions(**{"td_lambda": 0.0, "optimiser": "rmsprop", "lr": 0.0005, **overrides})


class PerRowQ(nn.Module):
    """A controller stand-in whose Q-values depend on the row's observation only, so the
    reference can read Q-values straight from it."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(OBS_DIM, N_ACTIONS).double()

    def unroll(self, obs, actions, lengths=None):  # computing every row is a valid way to skip none
        return self.linear(obs.double())


class SumMixer(nn.Module):
    def forward(self, agent_qs, states):
        return agent_qs.sum(dim=-1, keepdim=True)


def scheme(with_invalid=False, with_alive=False):
    fields = {
        "state": {"vshape": (STATE_DIM,)},
        "obs": {"vshape": (OBS_DIM,), "group": "agents"},
        "actions": {"vshape": (1,), "group": "agents", "dtype": torch.long},
        "avail_actions": {"vshape": (N_ACTIONS,), "group": "agents", "dtype": torch.bool},
        "reward": {"vshape": (1,)},
        "terminated": {"vshape": (1,), "dtype": torch.bool},
        "timeout": {"vshape": (1,), "dtype": torch.bool},
    }
    if with_invalid:
        fields["invalid"] = {"vshape": (1,), "dtype": torch.bool}
    if with_alive:
        fields["alive"] = {"vshape": (1,), "group": "agents", "dtype": torch.bool}
    return fields


def build_batch(episodes, T, seed=0, with_invalid=False, with_alive=False):
    """episodes: list of dicts (length = number of actions, end in {"terminal", "timeout"},
    optional dead={agent: first dead step}, invalid=[steps]). Row `length` holds the final state.

    Without ``with_alive`` a dead agent has no-op (action 0) as its only action (SMAC). With it,
    the batch has an ``alive`` field that says which agents are dead, and the avail rule
    disagrees with it: dead agents keep other actions, and agents in ``noop_only={agent: first
    step}`` are alive with no-op as their only action."""
    rng = np.random.default_rng(seed)
    batch = EpisodeBatch(
        scheme(with_invalid, with_alive), {"agents": N_AGENTS}, len(episodes), T,
        preprocess={"actions": ("actions_onehot", [OneHot(out_dim=N_ACTIONS)])},
    )
    for b, episode in enumerate(episodes):
        length = episode["length"]
        for t in range(length + 1):
            avail = rng.random((N_AGENTS, N_ACTIONS)) < 0.6
            avail[:, 0] = False
            avail[np.arange(N_AGENTS), rng.integers(1, N_ACTIONS, N_AGENTS)] = True
            alive = np.ones((N_AGENTS, 1), bool)
            for agent, first_dead in episode.get("dead", {}).items():
                if t >= first_dead:
                    alive[agent] = False
                    if not with_alive:
                        avail[agent] = [True] + [False] * (N_ACTIONS - 1)
            for agent, first in episode.get("noop_only", {}).items():
                if t >= first:
                    avail[agent] = [True] + [False] * (N_ACTIONS - 1)
            actions = np.array([rng.choice(np.flatnonzero(row)) for row in avail])
            data = {
                "obs": rng.normal(size=(N_AGENTS, OBS_DIM)),
                "state": rng.normal(size=(STATE_DIM,)),
                "avail_actions": avail,
                "actions": actions.reshape(N_AGENTS, 1),
            }
            if with_alive:
                data["alive"] = alive
            if t < length:
                last = t == length - 1
                data["reward"] = [rng.normal()]
                data["terminated"] = [last and episode["end"] == "terminal"]
                data["timeout"] = [last and episode["end"] == "timeout"]
                if with_invalid:
                    data["invalid"] = [t in episode.get("invalid", [])]
            batch.update(data, bs=b, ts=t)
    return batch


def reference_loss(batch, online, target, options: LearnerOptions, rules: MaskOptions, mixer_name):
    """The loss written the slow way: loops over episodes, steps and agents."""
    gamma, lam = options.gamma, options.td_lambda
    as_np = lambda key: batch[key].detach().double().numpy() if batch[key].is_floating_point() else batch[key].numpy()
    filled, terminated, timeout = as_np("filled")[..., 0], as_np("terminated")[..., 0], as_np("timeout")[..., 0]
    invalid = as_np("invalid")[..., 0] if "invalid" in batch.scheme else np.zeros_like(filled)
    rewards, avail, actions = as_np("reward")[..., 0], as_np("avail_actions"), as_np("actions")[..., 0]
    q = online.unroll(batch["obs"], batch["actions"]).detach().numpy()
    q_target = target.unroll(batch["obs"], batch["actions"]).detach().numpy()
    B, T = filled.shape
    fill = rules.fill_value(torch.float64)
    if "alive" in batch.scheme:
        alive = as_np("alive")[..., 0]
        dead = lambda b, t, i: not alive[b, t, i]
    else:  # SMAC: no-op is a dead agent's only action
        dead = lambda b, t, i: avail[b, t, i, 0] and not avail[b, t, i, 1:].any()

    def in_loss(b, t):
        ok = bool(filled[b, t]) if rules.mask_padding else True
        if rules.post_terminal_shift and t > 0 and (terminated[b, t - 1] or timeout[b, t - 1]):
            ok = False
        if rules.invalid_steps == "mask" and invalid[b, t]:
            ok = False
        return ok

    def agent_next_value(b, t, i):  # value of row t + 1 for agent i
        row_q, row_target = q[b, t + 1, i].copy(), q_target[b, t + 1, i].copy()
        if rules.target_avail_mask:
            for a in range(N_ACTIONS):
                if not avail[b, t + 1, i, a]:
                    row_q[a] = fill
                    row_target[a] = fill
        value = row_target[int(np.argmax(row_q))] if options.double_q else row_target.max()
        if rules.dead_agents == "zero_utilities" and dead(b, t + 1, i):
            return 0.0
        return value

    def chosen(b, t, i):
        if rules.dead_agents == "zero_utilities" and dead(b, t, i):
            return 0.0
        return q[b, t, i, actions[b, t, i]]

    def components(values):  # mixing
        return [sum(values)] if mixer_name == "vdn" else list(values)

    def lambda_return(b, t):
        reward = rewards[b, t] if in_loss(b, t) else 0.0
        next_values = np.array(components([agent_next_value(b, t, i) for i in range(N_AGENTS)]))
        cut = terminated[b, t] or (rules.timeout == "terminal" and timeout[b, t])
        if cut:
            return reward + 0 * next_values
        if terminated[b, t] or timeout[b, t] or t == T - 2:
            return reward + gamma * next_values
        return reward + gamma * ((1 - lam) * next_values + lam * lambda_return(b, t + 1))

    total, steps, elements, per_episode = 0.0, 0, 0, []
    for b in range(B):
        episode_total, episode_steps = 0.0, 0
        for t in range(T - 1):
            if not in_loss(b, t):
                continue
            steps += 1
            episode_steps += 1
            predicted = components([chosen(b, t, i) for i in range(N_AGENTS)])
            targets = lambda_return(b, t)
            for k, (p, y) in enumerate(zip(predicted, targets)):
                if rules.dead_agents == "agent_loss_mask" and dead(b, t, k):
                    continue
                total += (p - y) ** 2
                episode_total += (p - y) ** 2
                elements += 1
        if episode_steps:
            per_episode.append(episode_total / episode_steps)
    K = 1 if mixer_name == "vdn" else N_AGENTS
    if rules.normalisation == "valid_steps":
        return total / max(steps, 1)
    if rules.normalisation == "valid_agent_steps":
        return total / max(elements * (N_AGENTS // K), 1)
    if rules.normalisation == "all_rows":
        return total / (B * (T - 1) * K)
    return sum(per_episode) / max(len(per_episode), 1)


EPISODES = [
    {"length": 4, "end": "terminal"},
    {"length": 6, "end": "timeout"},
    {"length": 2, "end": "terminal", "dead": {1: 1}},
    {"length": 5, "end": "terminal", "dead": {0: 3}},
]


def make_learner(mixer_name, options, masks=MaskOptions(), seed=0):
    online = PerRowQ(seed)
    mixer = SumMixer() if mixer_name == "vdn" else None
    learner = QLearner(online, mixer, N_AGENTS, options, masks)
    with torch.no_grad():  # a target network that differs from the online one
        for p in learner.target_mac.parameters():
            p.add_(torch.randn_like(p))
    return learner


def loss_of(learner, batch):
    return learner.train(copy.deepcopy(batch), t_env=0, episode_num=0)["loss"]


def check_against_reference(mask_kwargs, mixer_name="vdn", td_lambda=0.0, double_q=True, batch=None, T=9):
    options = pymarl_options(td_lambda=td_lambda, double_q=double_q, gamma=0.9)
    masks = MaskOptions(**mask_kwargs)
    learner = make_learner(mixer_name, options, masks)
    batch = batch if batch is not None else build_batch(EPISODES, T)
    trimmed = batch[:, : batch.max_t_filled()] if masks.trim_to_longest else batch
    expected = reference_loss(trimmed, learner.mac, learner.target_mac, options, masks, mixer_name)
    assert loss_of(learner, batch) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("mixer_name", ["vdn", "none"])
@pytest.mark.parametrize("td_lambda", [0.0, 0.6])
@pytest.mark.parametrize("double_q", [True, False])
def test_default_masks_match_reference(mixer_name, td_lambda, double_q):
    check_against_reference({}, mixer_name, td_lambda, double_q)


@pytest.mark.parametrize(
    "mask_kwargs",
    [
        {"timeout": "terminal"},
        {"post_terminal_shift": False},
        {"mask_padding": False},
        {"normalisation": "valid_agent_steps"},
        {"normalisation": "episodes"},
        {"normalisation": "all_rows"},
        {"target_avail_mask": False},
        {"avail_fill_value": "finfo_min"},
        {"dead_agents": "zero_utilities"},
        {"trim_to_longest": False},
        {"masked_rows": "drop"},
    ],
    ids=lambda kwargs: "-".join(f"{k}={v}" for k, v in kwargs.items()),
)
@pytest.mark.parametrize("td_lambda", [0.0, 0.6])
def test_each_mask_option_matches_reference(mask_kwargs, td_lambda):
    check_against_reference(mask_kwargs, "vdn", td_lambda)


def test_agent_loss_mask_matches_reference_for_independent_learners():
    check_against_reference({"dead_agents": "agent_loss_mask", "normalisation": "valid_agent_steps"}, "none")
    with pytest.raises(ValueError, match="agent_loss_mask"):
        QLearner(PerRowQ(), SumMixer(), N_AGENTS, pymarl_options(), MaskOptions(dead_agents="agent_loss_mask"))


# Dead agents that keep other actions, and live agents with no-op as their only action: the
# alive field and SMAC's no-op rule disagree on both.
ALIVE_EPISODES = [
    {"length": 5, "end": "terminal", "dead": {1: 2}, "noop_only": {0: 3}},
    {"length": 4, "end": "timeout", "noop_only": {1: 1}},
    {"length": 6, "end": "terminal", "dead": {0: 1}},
    {"length": 2, "end": "timeout"},
]


def without_field(batch, name):
    """The same episodes without field ``name``."""
    fields = {k: v for k, v in batch.scheme.items() if k not in (name, "filled", "actions_onehot")}
    copy_ = EpisodeBatch(fields, batch.groups, batch.batch_size, batch.max_seq_length,
                         preprocess={"actions": ("actions_onehot", [OneHot(out_dim=N_ACTIONS)])})
    data = {k: batch[k] for k in fields}
    data["filled"] = batch["filled"]
    copy_.update(data, mark_filled=False)
    return copy_


@pytest.mark.parametrize(("mask_kwargs", "mixer_name"), [
    ({"dead_agents": "zero_utilities"}, "vdn"),
    ({"dead_agents": "zero_utilities"}, "none"),
    ({"dead_agents": "agent_loss_mask", "normalisation": "valid_agent_steps"}, "none"),
], ids=["zero_utilities-vdn", "zero_utilities-iql", "agent_loss_mask-iql"])
@pytest.mark.parametrize("td_lambda", [0.0, 0.6])
def test_alive_field_decides_which_agents_are_dead(mask_kwargs, mixer_name, td_lambda):
    batch = build_batch(ALIVE_EPISODES, 8, with_alive=True)
    check_against_reference(mask_kwargs, mixer_name, td_lambda, batch=batch)  # the reference reads the field
    # Without the field the learner falls back to the no-op rule, which gives another loss here
    # (and is the reference's rule for such batches).
    fallback = without_field(batch, "alive")
    assert "alive" not in fallback.scheme and torch.equal(fallback["avail_actions"], batch["avail_actions"])
    check_against_reference(mask_kwargs, mixer_name, td_lambda, batch=fallback)
    options, masks = pymarl_options(td_lambda=td_lambda, gamma=0.9), MaskOptions(**mask_kwargs)
    with_field = loss_of(make_learner(mixer_name, options, masks), batch)
    assert with_field != pytest.approx(loss_of(make_learner(mixer_name, options, masks), fallback), rel=1e-6)


@pytest.mark.parametrize("mode", ["mask", "ignore"])
def test_invalid_steps_match_reference(mode):
    episodes = [{"length": 5, "end": "terminal", "invalid": [1, 2]}, {"length": 3, "end": "timeout"}]
    batch = build_batch(episodes, 7, with_invalid=True)
    check_against_reference({"invalid_steps": mode}, "vdn", 0.6, batch=batch)


@pytest.mark.parametrize("mask_kwargs", [{}, {"timeout": "terminal"}, {"post_terminal_shift": False},
                                         {"mask_padding": False}, {"dead_agents": "zero_utilities"}],
                         ids=lambda kwargs: "-".join(f"{k}={v}" for k, v in kwargs.items()) or "standard")
@pytest.mark.parametrize("td_lambda", [0.0, 0.6])
@pytest.mark.parametrize("mixer", ["qmix", None])
def test_skipping_unread_rows_changes_neither_loss_nor_gradients(mixer, td_lambda, mask_kwargs, monkeypatch):
    from qmixlab.controllers.agent_controller import AgentController
    from qmixlab.modules import agents as agents_module
    from qmixlab.modules.agents import RNNAgent

    monkeypatch.setattr(agents_module, "RAGGED_MIN_SKIPPED_FRACTION", 0.0)  # small batch: force skipping
    # Episodes of very different lengths, long enough to span several chunks, with NaN past
    # every episode's end.
    episodes = [{"length": 3, "end": "terminal"}, {"length": 21, "end": "timeout"},
                {"length": 9, "end": "terminal", "dead": {0: 4}}, {"length": 17, "end": "terminal"}]
    batch = build_batch(episodes, 24)
    results = []
    for skip in (False, True):
        torch.manual_seed(3)
        mac = AgentController(RNNAgent(OBS_DIM, N_ACTIONS, N_AGENTS, hidden_dim=16), None)
        options = pymarl_options(td_lambda=td_lambda)
        masks = MaskOptions(skip_unread_rows=skip, **mask_kwargs)
        learner = QLearner(mac, build_mixer(mixer, N_AGENTS, STATE_DIM, hypernet_layers=1), N_AGENTS, options, masks)
        learner.optimiser = torch.optim.SGD(learner.params, lr=0.0)
        stats = learner.train(copy.deepcopy(batch))
        results.append((stats["loss"], [p.grad.clone() for p in learner.params]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for g_all, g_skip in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g_skip, g_all, rtol=1e-4, atol=1e-6)


def test_trimming_does_not_change_the_loss():
    batch = build_batch(EPISODES, 12)
    losses = [loss_of(make_learner("vdn", pymarl_options(), MaskOptions(trim_to_longest=trim)), batch)
              for trim in (True, False)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)


def gradients_after_one_step(options, batch, masks=MaskOptions()):
    learner = make_learner("vdn", options, masks)
    learner.optimiser = torch.optim.SGD(learner.params, lr=0.0)  # keep parameters fixed
    stats = learner.train(copy.deepcopy(batch))
    return stats["loss"], [p.grad.clone() for p in learner.params]


@pytest.mark.parametrize("normalisation", ["valid_steps", "episodes", "all_rows"])
def test_keep_and_drop_give_same_loss_and_gradients(normalisation):
    batch = build_batch(EPISODES, 9)
    keep = gradients_after_one_step(pymarl_options(), batch, MaskOptions(normalisation=normalisation))
    drop = gradients_after_one_step(pymarl_options(), batch, MaskOptions(normalisation=normalisation, masked_rows="drop"))
    assert keep[0] == pytest.approx(drop[0], rel=1e-12)
    for g_keep, g_drop in zip(keep[1], drop[1]):
        torch.testing.assert_close(g_keep, g_drop)


def test_all_masked_batch_gives_finite_zero_loss():
    # Every episode ends on its first step and the post-terminal row is masked: the only
    # transitions are masked as invalid.
    batch = build_batch([{"length": 1, "end": "terminal", "invalid": [0]}] * 3, 4, with_invalid=True)
    learner = make_learner("vdn", pymarl_options())
    stats = learner.train(batch)
    assert stats["loss"] == 0.0
    assert all(torch.isfinite(p.grad).all() and not p.grad.any() for p in learner.params if p.grad is not None)
    assert all(math.isfinite(v) for v in stats.values())


def test_nan_in_masked_rows_never_reaches_loss_or_gradients():
    clean = build_batch(EPISODES, 9)
    poisoned = copy.deepcopy(clean)
    for b, episode in enumerate(EPISODES):
        length = episode["length"]
        # padding rows, and the final-state row of terminated episodes (never bootstrapped from)
        start = length + 1 if episode["end"] == "timeout" else length
        rows = 9 - start
        poisoned.update(
            {
                "obs": np.full((rows, N_AGENTS, OBS_DIM), np.nan),
                "state": np.full((rows, STATE_DIM), np.nan),
                "reward": np.full((rows, 1), np.nan),
            },
            bs=b, ts=slice(start, 9), mark_filled=False,
        )
    reference = gradients_after_one_step(pymarl_options(), clean)
    result = gradients_after_one_step(pymarl_options(), poisoned)
    assert math.isfinite(result[0]) and result[0] == pytest.approx(reference[0], rel=1e-12)
    for g_ref, g in zip(reference[1], result[1]):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, g_ref)


def test_unavailable_actions_never_used_in_targets():
    batch = build_batch(EPISODES, 9)
    options = pymarl_options(gamma=0.9)
    learner = make_learner("vdn", options)
    with torch.no_grad():  # make unavailable actions look enormously valuable
        for net in (learner.mac, learner.target_mac):
            net.linear.bias[:] = 0.0
    avail = batch["avail_actions"]

    def lure(obs, actions, net):
        q = net.linear(obs.double())
        return torch.where(avail[:, : q.shape[1]], q, torch.full_like(q, 1e6))

    online, target = learner.mac, learner.target_mac
    online.unroll = lambda obs, actions, lengths=None: lure(obs, actions, online)
    target.unroll = lambda obs, actions, lengths=None: lure(obs, actions, target)
    expected = reference_loss(batch[:, : batch.max_t_filled()], online, target, options, MaskOptions(), "vdn")
    stats = learner.train(copy.deepcopy(batch))
    assert abs(stats["target_mean"]) < 1e3  # a lured target would be ~ 1e6
    assert stats["loss"] == pytest.approx(expected, rel=1e-9)


def test_filled_only_bootstraps_from_fill_value():
    # Without the shift, the row after a terminal state is trained towards gamma * fill.
    batch = build_batch([{"length": 2, "end": "terminal"}], 5)
    options = pymarl_options(gamma=0.5)
    masks = MaskOptions(post_terminal_shift=False, normalisation="all_rows", trim_to_longest=False)
    stats = make_learner("vdn", options, masks).train(batch)
    assert stats["target_mean"] < 0.5 * PYMARL_UNAVAILABLE_FILL / 10


def test_statistics_are_over_valid_rows_only():
    batch = build_batch(EPISODES, 9)
    options = pymarl_options()
    learner = make_learner("vdn", options)
    q = learner.mac.unroll(batch["obs"], batch["actions"]).detach()
    chosen = q[:, :-1].gather(3, batch["actions"][:, :-1]).squeeze(3).sum(-1)
    valid = [(b, t) for b, e in enumerate(EPISODES) for t in range(e["length"])]
    expected_q_mean = float(np.mean([chosen[b, t].item() for b, t in valid]))
    stats = learner.train(copy.deepcopy(batch))
    assert stats["q_taken_mean"] == pytest.approx(expected_q_mean, rel=1e-9)
    assert stats["mask_fraction"] == pytest.approx(len(valid) / (len(EPISODES) * (batch.max_t_filled() - 1)))


def test_reward_standardisation_uses_valid_rows_only():
    batch = build_batch(EPISODES, 9)
    poisoned = copy.deepcopy(batch)
    for b, episode in enumerate(EPISODES):
        rows = 9 - episode["length"]
        poisoned.update({"reward": np.full((rows, 1), 1e6)}, bs=b, ts=slice(episode["length"], 9), mark_filled=False)
    options = pymarl_options(standardise_rewards=True)
    assert loss_of(make_learner("vdn", options), batch) == pytest.approx(
        loss_of(make_learner("vdn", options), poisoned), rel=1e-12
    )


def test_hard_and_soft_target_updates():
    batch = build_batch(EPISODES, 9)
    hard = make_learner("vdn", pymarl_options(target_update_interval_episodes=10))
    hard.train(copy.deepcopy(batch), episode_num=5)
    assert not torch.equal(hard.target_mac.linear.weight, hard.mac.linear.weight)
    hard.train(copy.deepcopy(batch), episode_num=10)
    assert torch.equal(hard.target_mac.linear.weight, hard.mac.linear.weight)

    soft = make_learner("vdn", pymarl_options(target_update="soft", target_update_tau=0.25))
    before = soft.target_mac.linear.weight.clone()
    soft.train(copy.deepcopy(batch))
    expected = before + 0.25 * (soft.mac.linear.weight - before)
    torch.testing.assert_close(soft.target_mac.linear.weight, expected)


def test_learner_options_validation():
    from qmixlab.settings import ConfigError, parse_section

    with pytest.raises(ConfigError, match="did you mean 'learner.gamma'"):
        parse_section(LearnerOptions, {"gama": 0.9}, "learner.")
    with pytest.raises(ValueError, match="optimiser='sgd'"):
        LearnerOptions(optimiser="sgd")
    options = parse_section(LearnerOptions, {"td_lambda": 0.3}, "learner.")
    assert options.td_lambda == 0.3 and options == dataclasses.replace(LearnerOptions(), td_lambda=0.3)
    # The mask options are a section of their own, given to the learner once.
    assert "masks" not in {f.name for f in dataclasses.fields(LearnerOptions)}
    with pytest.raises(ConfigError, match="unknown config key 'learner.masks'"):
        parse_section(LearnerOptions, {"masks": {}}, "learner.")
    for bad, message in [({"td_loss_scale": 0.0}, "td_loss_scale=0.0"), ({"optim_eps": -1.0}, "optim_eps=-1.0"),
                         ({"optim_alpha": 1.0}, "optim_alpha=1.0")]:
        with pytest.raises(ValueError, match=message):
            LearnerOptions(**bad)
    with pytest.raises(TypeError, match="masks must be a MaskOptions"):
        QLearner(PerRowQ(), None, N_AGENTS, LearnerOptions(), {"timeout": "terminal"})


def test_learner_option_defaults_are_the_default_config():
    from qmixlab.settings import load_yaml

    section = load_yaml(None, "default")["learner"]
    defaults = {f.name: f.default for f in dataclasses.fields(LearnerOptions)}
    assert {key: defaults.get(key, "<missing>") for key in section} == section


@pytest.mark.parametrize("mixer", ["qmix", "vdn", None])
def test_learner_trains_real_networks_and_reduces_loss(mixer):
    from qmixlab.controllers.agent_controller import AgentController
    from qmixlab.modules.agents import RNNAgent

    torch.manual_seed(0)
    batch = build_batch(EPISODES, 9)
    agent = RNNAgent(OBS_DIM, N_ACTIONS, N_AGENTS, hidden_dim=16)
    mac = AgentController(agent, action_selector=None)
    options = LearnerOptions(optimiser="adam", lr=0.01, target_update_interval_episodes=10**9, td_lambda=0.0)
    learner = QLearner(mac, build_mixer(mixer, N_AGENTS, STATE_DIM, hypernet_layers=1), N_AGENTS, options,
                       MaskOptions())
    losses = [learner.train(copy.deepcopy(batch))["loss"] for _ in range(60)]
    assert losses[-1] < 0.5 * losses[0]
