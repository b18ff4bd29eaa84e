"""The attention mixer and QPLEX (issue 14, item 4), each tested for the property it promises:
the attention mixer is monotone in every utility and reads the state's entities as a set (order
of one type and zero padding change nothing); QPLEX's joint greedy action is the tuple of the
agents' greedy actions (IGM), where Q_tot equals V_tot. Both train end to end."""

import itertools
import math
import re
from pathlib import Path

import pytest
import torch

from qmixlab.__main__ import main as qmixlab_main
from qmixlab.envs.spec import StateLayout
from qmixlab.modules.mixers import AttentionMixer, QPLEXMixer, build_mixer
from qmixlab.run import build_components
from qmixlab.settings import compose_config, deep_merge, validate_config

N_AGENTS, N_ACTIONS = 3, 4
LAYOUT = StateLayout(allies=(N_AGENTS, 4), enemies=(3, 3), last_action=N_AGENTS * N_ACTIONS, timestep=1)


def attention_mixer(layout=LAYOUT, seed=0) -> AttentionMixer:
    torch.manual_seed(seed)
    return AttentionMixer(N_AGENTS, layout, attention_embed_dim=16, attention_heads=4, attention_layers=2,
                          mixing_embed_dim=8).double()


def random_states(rows, layout=LAYOUT, seed=1, dead_enemy=True):
    """SMAC-like states: attributes in [0, 1], a one-hot last action per agent, and (optionally)
    one dead enemy per row, written as zeros as SMAC does."""
    generator = torch.Generator().manual_seed(seed)
    allies = torch.rand(rows, *layout.allies, generator=generator, dtype=torch.float64)
    enemies = torch.rand(rows, *layout.enemies, generator=generator, dtype=torch.float64)
    if dead_enemy:
        enemies[torch.arange(rows), torch.randint(layout.enemies[0], (rows,), generator=generator)] = 0.0
    per_agent = layout.last_action // layout.allies[0]
    last = torch.nn.functional.one_hot(torch.randint(per_agent, (rows, layout.allies[0]), generator=generator),
                                       per_agent).double()
    timestep = torch.rand(rows, layout.timestep, generator=generator, dtype=torch.float64)
    return torch.cat([allies.flatten(1), enemies.flatten(1), last.flatten(1), timestep], dim=1)


def with_enemies(states, enemies, layout=LAYOUT):
    """``states`` with the enemy block replaced by ``enemies [R, count, features]``."""
    blocks = layout.slices()
    return torch.cat([states[:, blocks["allies"]], enemies.flatten(1), states[:, blocks["enemies"].stop:]], dim=1)


def enemies_of(states, layout=LAYOUT):
    return states[:, layout.slices()["enemies"]].reshape(-1, *layout.enemies)


# ------------------------------------------------------------------ attention mixer
def test_attention_mixer_is_monotone_in_every_utility_by_autograd_and_finite_differences():
    mixer = attention_mixer()
    states = random_states(64)
    qs = (3 * torch.randn(64, N_AGENTS, dtype=torch.float64)).requires_grad_()
    q_tot = mixer(qs, states)
    assert q_tot.shape == (64, 1)
    (grad,) = torch.autograd.grad(q_tot.sum(), qs)  # rows are independent: this is each row's gradient
    assert (grad >= 0).all() and (grad > 0).any()
    step = 1e-3
    for agent in range(N_AGENTS):
        raised = qs.detach().clone()
        raised[:, agent] += step
        difference = (mixer(raised, states) - q_tot.detach())[:, 0] / step
        assert (difference >= -1e-9).all(), difference.min()
        assert torch.allclose(difference, grad[:, agent], rtol=1e-3, atol=1e-6)


def test_attention_mixer_joint_greedy_action_is_the_agents_greedy_actions():
    mixer = attention_mixer()
    generator = torch.Generator().manual_seed(5)
    joint_actions = torch.tensor(list(itertools.product(range(N_ACTIONS), repeat=N_AGENTS)))  # [A^N, N]
    for trial in range(10):
        utilities = torch.randn(N_AGENTS, N_ACTIONS, generator=generator, dtype=torch.float64)
        state = random_states(1, seed=trial).expand(len(joint_actions), -1)
        agent_qs = utilities[torch.arange(N_AGENTS), joint_actions]  # [A^N, N]
        q_tot = mixer(agent_qs, state)[:, 0]
        assert tuple(joint_actions[q_tot.argmax()].tolist()) == tuple(utilities.argmax(dim=1).tolist())


def test_attention_mixer_ignores_the_order_of_the_enemies():
    mixer = attention_mixer()
    states, qs = random_states(16), torch.randn(16, N_AGENTS, dtype=torch.float64)
    permuted = with_enemies(states, enemies_of(states)[:, [2, 0, 1]])
    assert not torch.equal(permuted, states)
    assert torch.allclose(mixer(qs, permuted), mixer(qs, states), rtol=0, atol=1e-12)


def test_attention_mixer_follows_its_agents_when_allies_are_permuted():
    """Ally i is agent i: permuting allies, their last actions and the utilities together
    changes nothing."""
    mixer = attention_mixer()
    states, qs = random_states(16), torch.randn(16, N_AGENTS, dtype=torch.float64)
    order = [1, 2, 0]
    blocks = LAYOUT.slices()
    allies = states[:, blocks["allies"]].reshape(16, *LAYOUT.allies)[:, order]
    last = states[:, blocks["last_action"]].reshape(16, N_AGENTS, N_ACTIONS)[:, order]
    permuted = torch.cat([allies.flatten(1), states[:, blocks["enemies"]], last.flatten(1),
                          states[:, blocks["timestep"]]], dim=1)
    assert torch.allclose(mixer(qs[:, order], permuted), mixer(qs, states), rtol=0, atol=1e-12)
    # ... and the utilities are not read as a set: moving only them changes Q_tot.
    assert not torch.allclose(mixer(qs[:, order], states), mixer(qs, states))


def test_attention_mixer_padding_entities_change_nothing():
    """A mixer built for 5 enemies with the same weights gives the 3-enemy answer when the two
    extra enemies are zero (padding, or dead units as SMAC writes them)."""
    small = attention_mixer()
    wide_layout = StateLayout(allies=LAYOUT.allies, enemies=(5, 3), last_action=LAYOUT.last_action, timestep=1)
    wide = attention_mixer(wide_layout, seed=9)
    wide.load_state_dict(small.state_dict())
    states, qs = random_states(16), torch.randn(16, N_AGENTS, dtype=torch.float64)
    padded_enemies = torch.cat([enemies_of(states), torch.zeros(16, 2, 3, dtype=torch.float64)], dim=1)
    padded = with_enemies(states, padded_enemies)
    assert padded.shape[1] == wide_layout.size
    assert torch.allclose(wide(qs, padded), small(qs, states), rtol=0, atol=1e-12)
    # The padding only drops out because it is masked: the same zeros in a present slot count.
    revived = padded_enemies.clone()
    revived[:, 3, 0] = 1e-3
    assert not torch.allclose(wide(qs, with_enemies(states, revived)), small(qs, states), atol=1e-9)


def test_attention_mixer_needs_a_state_layout():
    with pytest.raises(ValueError, match="needs the environment's state layout"):
        build_mixer("attention", N_AGENTS, 30)
    with pytest.raises(ValueError, match="state holds 4 allies but there are 3 agents"):
        AttentionMixer(N_AGENTS, StateLayout(allies=(4, 2), enemies=(1, 1)))


# ------------------------------------------------------------------ QPLEX
def qplex_mixer(state_dim=10, seed=0) -> QPLEXMixer:
    torch.manual_seed(seed)
    return QPLEXMixer(N_AGENTS, N_ACTIONS, state_dim, hypernet_embed=16, qplex_attention_heads=4,
                      qplex_adv_hypernet_embed=16).double()


def qplex_reference(mixer: QPLEXMixer, agent_qs, states, actions, max_qs):
    """QPLEX written out row by row: sum_i v'_i + sum_i lambda_i a'_i, each head separately."""
    out = []
    for row in range(agent_qs.shape[0]):
        s = states[row:row + 1]
        scale = mixer.scale(s)[0].abs() + 1e-10
        shift = mixer.shift(s)[0]
        onehot = torch.zeros(N_AGENTS * N_ACTIONS, dtype=states.dtype)
        for agent in range(N_AGENTS):
            onehot[agent * N_ACTIONS + int(actions[row, agent])] = 1.0
        keys = mixer.head_keys(s)[0]
        agents = mixer.head_agents(s)[0].view(mixer.heads, N_AGENTS)
        action = mixer.head_actions(torch.cat([s[0], onehot]).unsqueeze(0))[0].view(mixer.heads, N_AGENTS)
        total = 0.0
        for agent in range(N_AGENTS):
            weight = sum((keys[h].abs() + 1e-10) * torch.sigmoid(agents[h, agent]) * torch.sigmoid(action[h, agent])
                         for h in range(mixer.heads))
            q = scale[agent] * agent_qs[row, agent] + shift[agent]
            v = scale[agent] * max_qs[row, agent] + shift[agent]
            total = total + v + weight * (q - v)
        out.append(total)
    return torch.stack(out).unsqueeze(1)


def utilities_and_joint_actions(seed):
    generator = torch.Generator().manual_seed(seed)
    utilities = torch.randn(N_AGENTS, N_ACTIONS, generator=generator, dtype=torch.float64)
    joint_actions = torch.tensor(list(itertools.product(range(N_ACTIONS), repeat=N_AGENTS)))
    agent_qs = utilities[torch.arange(N_AGENTS), joint_actions]
    max_qs = utilities.max(dim=1).values.expand_as(agent_qs)
    return utilities, joint_actions, agent_qs, max_qs


def test_qplex_matches_a_slow_reference():
    mixer = qplex_mixer()
    _, joint_actions, agent_qs, max_qs = utilities_and_joint_actions(0)
    states = torch.randn(len(joint_actions), 10, dtype=torch.float64)
    expected = qplex_reference(mixer, agent_qs, states, joint_actions, max_qs)
    assert torch.allclose(mixer(agent_qs, states, joint_actions, max_qs), expected, rtol=1e-10, atol=1e-10)


def test_qplex_joint_greedy_action_is_the_agents_greedy_actions_and_there_q_tot_is_v_tot():
    mixer = qplex_mixer()
    for trial in range(10):
        utilities, joint_actions, agent_qs, max_qs = utilities_and_joint_actions(100 + trial)
        state = torch.randn(1, 10, dtype=torch.float64).expand(len(joint_actions), -1)
        q_tot = mixer(agent_qs, state, joint_actions, max_qs)[:, 0]
        greedy = tuple(utilities.argmax(dim=1).tolist())
        assert tuple(joint_actions[q_tot.argmax()].tolist()) == greedy
        scale = mixer.scale(state[:1])[0].abs() + 1e-10
        v_tot = (scale * max_qs[0] + mixer.shift(state[:1])[0]).sum()
        at_greedy = q_tot[[tuple(a) for a in joint_actions.tolist()].index(greedy)]
        assert torch.allclose(at_greedy, v_tot, rtol=0, atol=1e-12)
        others = torch.tensor([tuple(a) != greedy for a in joint_actions.tolist()])
        assert (q_tot[others] < v_tot).all()


def test_qplex_trains_the_agents_through_the_scaled_utilities():
    """As QPLEX's implementation: the advantages enter the weights detached, so d Q_tot / d q_i
    is the agent's positive scale w_i(s), whatever the joint action."""
    mixer = qplex_mixer()
    _, joint_actions, agent_qs, max_qs = utilities_and_joint_actions(3)
    states = torch.randn(len(joint_actions), 10, dtype=torch.float64)
    agent_qs = agent_qs.clone().requires_grad_()
    (grad,) = torch.autograd.grad(mixer(agent_qs, states, joint_actions, max_qs).sum(), agent_qs)
    assert torch.allclose(grad, mixer.scale(states).abs() + 1e-10, rtol=0, atol=1e-12)


def test_qplex_checks_its_inputs():
    mixer = qplex_mixer()
    qs = torch.zeros(2, N_AGENTS, dtype=torch.float64)
    states = torch.zeros(2, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"max_qs must have agent_qs's shape \(2, 3\), got \(2, 2\)"):
        mixer(qs, states, torch.zeros(2, N_AGENTS, dtype=torch.long), qs[:, :2])
    with pytest.raises(ValueError, match="qplex' reads the joint action: pass n_actions"):
        build_mixer("qplex", N_AGENTS, 10)


# ------------------------------------------------------------------ both, end to end
TINY = ["env_args.map_name=3m", "batch_size=4", "buffer_size=32", "batch_size_run=2", "test_interval=1000",
        "test_nepisode=2", "log_interval=500", "save_model=False", "progress_bar=False", "seed=3",
        "agent.hidden_dim=16", "mixer.mixing_embed_dim=8", "mixer.hypernet_embed=16",
        "mixer.attention_embed_dim=8", "mixer.attention_heads=2", "mixer.attention_layers=1",
        "mixer.qplex_attention_heads=2", "mixer.qplex_adv_hypernet_embed=16"]


@pytest.mark.parametrize("name", ["attention", "qplex"])
def test_gradients_reach_every_mixer_parameter_in_a_training_step(name):
    overrides = dict(arg.split("=", 1) for arg in TINY if arg.startswith("mixer."))
    mixer_section = {key.split(".", 1)[1]: int(value) for key, value in overrides.items()}
    config = deep_merge(compose_config("qmix", "smacsim"), {
        "seed": 3, "batch_size": 2, "buffer_size": 4, "batch_size_run": 2, "env_args": {"map_name": "3m"},
        "agent": {"hidden_dim": 16}, "mixer": {"name": name, **mixer_section}})
    parts = build_components(validate_config(config))
    try:
        batch, _ = parts.runner.run(test_mode=False, t_env=0)
        parts.buffer.insert_episode_batch(batch)
        stats = parts.learner.train(parts.buffer.sample(2), t_env=100, episode_num=2)
    finally:
        parts.env.close()
    assert math.isfinite(stats["loss"])
    mixer = parts.learner.mixer
    assert isinstance(mixer, AttentionMixer if name == "attention" else QPLEXMixer)
    starved = [n for n, p in mixer.named_parameters() if p.grad is None or not bool(p.grad.ne(0).any())]
    assert not starved, f"no gradient reached {starved}"


@pytest.mark.parametrize("name", ["attention", "qplex"])
def test_a_short_training_run_through_the_command_line_logs_a_finite_loss(capsys, name):
    try:
        code = qmixlab_main(["qmixlab", "-u", "with", f"mixer.name={name}", "t_max=1500", *TINY])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code in (0, None), err
    assert "finished" in err, err
    losses = [float(value) for value in re.findall(r"\bloss: (\S+)", err)]
    assert losses and all(math.isfinite(value) for value in losses), err


def test_the_attention_mixer_on_an_environment_without_a_state_layout_is_a_clear_config_error(
        capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    try:
        code = qmixlab_main(["qmixlab", "-u", "with", "env=plugin_fixtures.line_world:LineWorld", "env_args.size=4",
                             "mixer.name=attention", "t_max=100", "progress_bar=False"])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("qmixlab: ")]
    assert len(lines) == 1 and "mixer.name='attention'" in lines[0], err
    assert "'plugin_fixtures.line_world:LineWorld' declares no state layout" in lines[0], err
    assert "use mixer.name=qmix or qplex" in lines[0], err
