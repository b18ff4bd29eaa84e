"""The entity-attention agent and the feature-level mask (issue 14, items 2 and 3): attention
against a slow per-entity reference, permutation equivariance over enemies, one set of weights on
3m and 8m, the three visibility guarantees, and a short run through the command line."""

import math

import pytest
import torch

from qmixlab.__main__ import main as qmixlab_main
from qmixlab.components.masks import MaskOptions, masked_attention
from qmixlab.controllers.agent_controller import AgentController
from qmixlab.envs.smacsim import BatchedSMACSim
from qmixlab.envs.spec import ObsLayout
from qmixlab.modules.entities import ObsEntities, split_observation
from qmixlab.modules.entity_agent import EntityAttentionAgent

LAYOUT_3M = ObsLayout(move=4, enemies=(3, 5), allies=(2, 5), own=1)
FILLS = ["-inf", "finfo_min", -1e9, -3.0]


def make_agent(layout=LAYOUT_3M, n_agents=3, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("hidden_dim", 16)
    return EntityAttentionAgent(layout, 6 + layout.enemies[0], n_agents, embed_dim=8, attention_heads=2, **kwargs)


def smacsim_obs(map_name, steps=6, seed=0):
    """Observations [B=2, T, N, D] and last actions of a short random rollout on smacsim."""
    env = BatchedSMACSim(map_name, n_envs=2, seed=seed)
    env.reset()
    generator = torch.Generator().manual_seed(seed)
    observations, last = [], [torch.full((2, env.n_agents), env.n_actions)]
    for _ in range(steps):
        observations.append(torch.as_tensor(env.get_obs()))
        avail = torch.as_tensor(env.get_avail_actions()).float()
        actions = torch.multinomial(avail.view(-1, env.n_actions), 1, generator=generator).view(2, -1)
        last.append(actions)
        env.step(actions.numpy())
    return torch.stack(observations, 1), torch.stack(last[:-1], 1), env.get_spec().obs_layout


def random_entities(layout, rows, generator, ally_visible=None, enemy_visible=None):
    (ne, nfe), (na, nfa) = layout.enemies, layout.allies
    return ObsEntities(
        move=torch.randn(rows, layout.move, generator=generator),
        own=torch.randn(rows, layout.own, generator=generator),
        allies=torch.randn(rows, na, nfa, generator=generator),
        enemies=torch.randn(rows, ne, nfe, generator=generator),
        ally_visible=torch.rand(rows, na, generator=generator) < 0.5 if ally_visible is None else ally_visible,
        enemy_visible=torch.rand(rows, ne, generator=generator) < 0.5 if enemy_visible is None else enemy_visible,
    )


# --------------------------------------------------------------------------- the slow reference
def reference_attend(agent, entities, options):
    """agent.attend written entity by entity: loops over rows, heads, queries and keys."""
    E, heads = agent.embed_dim, agent.attention_heads
    d = E // heads
    Wqkv, bqkv = agent.attention_in.weight, agent.attention_in.bias
    own_out, enemy_out = [], []
    for m in range(entities.own.shape[0]):
        tokens, visible = [], []
        for features, layer, seen in (
                [(entities.own[m], agent.embed_own, True), (entities.move[m], agent.embed_move, True)]
                + [(entities.allies[m, k], agent.embed_ally, bool(entities.ally_visible[m, k]))
                   for k in range(entities.allies.shape[1])]
                + [(entities.enemies[m, j], agent.embed_enemy, bool(entities.enemy_visible[m, j]))
                   for j in range(entities.enemies.shape[1])]):
            features = features if seen else torch.zeros_like(features)
            tokens.append(layer.weight @ features + layer.bias)
            visible.append(seen or options.visibility == "zeros")
        outputs = []
        for i, token in enumerate(tokens):
            heads_out = []
            for h in range(heads):
                rows = slice(h * d, (h + 1) * d)
                query = Wqkv[rows] @ token + bqkv[rows]
                logits, values = [], []
                for j, other in enumerate(tokens):
                    key = Wqkv[E:][rows] @ other + bqkv[E:][rows]
                    logit = query @ key / math.sqrt(d)
                    if not visible[j]:
                        if options.attention_fill_value == "-inf":
                            continue
                        logit = logit + options.attention_fill(torch.float32)
                    logits.append(logit)
                    values.append(Wqkv[2 * E:][rows] @ other + bqkv[2 * E:][rows])
                weights = torch.softmax(torch.stack(logits), 0)
                heads_out.append(sum(w * v for w, v in zip(weights, values)))
            outputs.append(token + agent.attention_out.weight @ torch.cat(heads_out) + agent.attention_out.bias)
        own_out.append(outputs[0])
        enemy_out.append(torch.stack(outputs[len(outputs) - entities.enemies.shape[1]:]))
    return torch.stack(own_out), torch.stack(enemy_out)


@pytest.mark.parametrize("visibility", ["mask", "zeros"])
@pytest.mark.parametrize("fill", FILLS)
def test_attention_matches_the_per_entity_reference(visibility, fill):
    options = MaskOptions(visibility=visibility, attention_fill_value=fill)
    agent = make_agent(masks=options)
    entities = random_entities(LAYOUT_3M, 6, torch.Generator().manual_seed(1))
    own, enemies = agent.attend(entities)
    own_ref, enemies_ref = reference_attend(agent, entities, options)
    torch.testing.assert_close(own, own_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enemies, enemies_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fill", FILLS)
def test_masked_attention_matches_a_loop_and_zeroes_rows_with_no_key(fill):
    options = MaskOptions(attention_fill_value=fill)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, 2, 4, 5, generator=g, requires_grad=True) for _ in range(3))
    key_mask = torch.tensor([[True, False, True, False], [False, False, False, False], [True] * 4])
    out = masked_attention(q, k, v, key_mask, options)
    for m in range(3):
        for h in range(2):
            for i in range(4):
                keys = [j for j in range(4) if key_mask[m, j] or fill != "-inf"]
                if not key_mask[m].any():
                    assert torch.equal(out[m, h, i], torch.zeros(5))
                    continue
                logits = torch.stack([q[m, h, i] @ k[m, h, j] / math.sqrt(5)
                                      + (0.0 if key_mask[m, j] else options.attention_fill(torch.float32))
                                      for j in keys])
                expected = sum(w * v[m, h, j] for w, j in zip(torch.softmax(logits, 0), keys))
                torch.testing.assert_close(out[m, h, i], expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    for tensor in (q, k, v):
        assert torch.isfinite(tensor.grad).all()
        assert torch.equal(tensor.grad[1], torch.zeros_like(tensor.grad[1]))  # the row with no key


# --------------------------------------------------------------------------- the agent
def test_same_function_step_by_step_and_unrolled_and_through_the_controller():
    obs, last, layout = smacsim_obs("3m")
    agent = make_agent(layout)
    q = agent.unroll(obs, last)
    hidden = agent.initial_hidden(2)
    for t in range(obs.shape[1]):
        q_t, hidden = agent.step(obs[:, t], last[:, t], hidden)
        torch.testing.assert_close(q_t, q[:, t], rtol=1e-5, atol=1e-6)
    actions = torch.cat([last[:, 1:], last[:, :1]], 1).unsqueeze(-1)  # last[:, t + 1] is the action at t
    torch.testing.assert_close(AgentController(agent).unroll(obs, actions, lengths=torch.tensor([3, 6])),
                               q, rtol=1e-5, atol=1e-6)


def test_permuting_enemies_permutes_their_attack_values():
    obs, last, layout = smacsim_obs("2s3z")
    agent = make_agent(layout, n_agents=5)
    permutation = torch.tensor([3, 0, 4, 2, 1])
    blocks = layout.slices()
    enemies = obs[..., blocks["enemies"]].unflatten(-1, layout.enemies)
    permuted = obs.clone()
    permuted[..., blocks["enemies"]] = enemies[..., permutation, :].flatten(-2)
    q, q_permuted = agent.unroll(obs, last), agent.unroll(permuted, last)
    torch.testing.assert_close(q_permuted[..., :6], q[..., :6], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q_permuted[..., 6:], q[..., 6:][..., permutation], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(q[..., 6:], q[..., 6:][..., permutation])  # the check can fail


def test_one_set_of_weights_runs_on_3m_and_8m():
    obs3, last3, layout3 = smacsim_obs("3m")
    obs8, last8, layout8 = smacsim_obs("8m")
    agent3 = make_agent(layout3, use_agent_id=False)
    agent8 = make_agent(layout8, n_agents=8, seed=5, use_agent_id=False)
    agent8.load_state_dict(agent3.state_dict())  # strict: no weight depends on the team size
    q3, q8 = agent3.unroll(obs3, last3), agent8.unroll(obs8, last8)
    assert q3.shape == (2, 6, 3, 9) and q8.shape == (2, 6, 8, 14)
    assert torch.isfinite(q8).all()
    with pytest.raises(RuntimeError, match="fc_in_agent_id"):
        make_agent(layout8, n_agents=8).load_state_dict(make_agent(layout3).state_dict())


# --------------------------------------------------------------------------- the guarantees
@pytest.mark.parametrize("visibility", ["mask", "zeros"])
@pytest.mark.parametrize("fill", FILLS)
def test_an_agent_that_sees_only_itself_gets_finite_outputs_and_gradients(visibility, fill):
    agent = make_agent(masks=MaskOptions(visibility=visibility, attention_fill_value=fill))
    obs = torch.zeros(2, 3, 3, LAYOUT_3M.size)
    obs[..., :4] = 1.0  # may move; no ally or enemy in sight
    obs[..., -1] = 0.5  # own health
    view = split_observation(obs, LAYOUT_3M)
    assert not view.ally_visible.any() and not view.enemy_visible.any()
    q = agent.unroll(obs, torch.full((2, 3, 3), 9))
    assert torch.isfinite(q).all()
    q.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in agent.parameters())


@pytest.mark.parametrize("visibility", ["mask", "zeros"])
@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_nan_or_inf_in_unseen_entities_reaches_neither_outputs_nor_gradients(visibility, poison):
    agent = make_agent(masks=MaskOptions(visibility=visibility, attention_fill_value="-inf"))
    g = torch.Generator().manual_seed(3)
    entities = random_entities(LAYOUT_3M, 8, g)
    ally_features = torch.where(entities.ally_visible[..., None], entities.allies, poison).requires_grad_()
    enemy_features = torch.where(entities.enemy_visible[..., None], entities.enemies, poison).requires_grad_()
    poisoned = ObsEntities(entities.move, entities.own, ally_features, enemy_features,
                           entities.ally_visible, entities.enemy_visible)
    own, enemies = agent.attend(poisoned)
    clean_own, clean_enemies = agent.attend(entities)
    torch.testing.assert_close(own, clean_own, rtol=0, atol=0)
    torch.testing.assert_close(enemies, clean_enemies, rtol=0, atol=0)
    (own.sum() + enemies.sum()).backward()
    for tensor in (ally_features, enemy_features, *agent.parameters()):
        if tensor.grad is not None:
            assert torch.isfinite(tensor.grad).all()
    # Through the observation too: an ally whose "visible" feature is 0 is unseen, whatever the rest holds.
    obs, last, layout = smacsim_obs("3m")
    obs = obs.clone()
    ally = layout.slices()["allies"].start
    obs[0, 0, 0, ally] = 0.0
    obs[0, 0, 0, ally + 1: ally + 5] = poison
    obs.requires_grad_()
    q = make_agent(layout, masks=MaskOptions(visibility=visibility)).unroll(obs, last)
    assert torch.isfinite(q).all()
    q.sum().backward()
    assert torch.isfinite(obs.grad).all() and torch.equal(obs.grad[0, 0, 0, ally + 1: ally + 5], torch.zeros(4))


def test_with_mask_unseen_entities_have_zero_gradient_and_change_no_output():
    agent = make_agent(masks=MaskOptions(visibility="mask"))
    g = torch.Generator().manual_seed(4)
    entities = random_entities(LAYOUT_3M, 16, g)
    allies, enemies = entities.allies.clone().requires_grad_(), entities.enemies.clone().requires_grad_()
    own, enemy_out = agent.attend(ObsEntities(entities.move, entities.own, allies, enemies,
                                              entities.ally_visible, entities.enemy_visible))
    (own.square().sum() + enemy_out.square().sum()).backward()
    assert torch.equal(allies.grad[~entities.ally_visible], torch.zeros_like(allies.grad[~entities.ally_visible]))
    assert torch.equal(enemies.grad[~entities.enemy_visible], torch.zeros_like(enemies.grad[~entities.enemy_visible]))
    assert (allies.grad[entities.ally_visible].abs().sum(-1) > 0).all()  # seen entities do get gradients
    # New values for every unseen entity: no output moves.
    changed = ObsEntities(entities.move, entities.own,
                          torch.where(entities.ally_visible[..., None], entities.allies, 7.0),
                          torch.where(entities.enemy_visible[..., None], entities.enemies, -7.0),
                          entities.ally_visible, entities.enemy_visible)
    own2, enemy_out2 = agent.attend(changed)
    assert torch.equal(own2, own) and torch.equal(enemy_out2, enemy_out)
    # Hiding one more enemy in row 0 changes row 0 only.
    enemy_visible = entities.enemy_visible.clone()
    enemy_visible[0] = True
    shown, _ = agent.attend(ObsEntities(entities.move, entities.own, entities.allies, entities.enemies,
                                        entities.ally_visible, enemy_visible))
    hidden = enemy_visible.clone()
    hidden[0, 1] = False
    fewer, _ = agent.attend(ObsEntities(entities.move, entities.own, entities.allies, entities.enemies,
                                        entities.ally_visible, hidden))
    assert not torch.allclose(fewer[0], shown[0]) and torch.equal(fewer[1:], shown[1:])


def test_zeros_differs_from_mask_only_when_something_is_unseen():
    g = torch.Generator().manual_seed(5)
    all_seen = random_entities(LAYOUT_3M, 4, g, ally_visible=torch.ones(4, 2, dtype=torch.bool),
                               enemy_visible=torch.ones(4, 3, dtype=torch.bool))
    masked, zeros = make_agent(masks=MaskOptions(visibility="mask")), make_agent(masks=MaskOptions(visibility="zeros"))
    assert torch.equal(masked.attend(all_seen)[0], zeros.attend(all_seen)[0])
    some_unseen = random_entities(LAYOUT_3M, 4, g, enemy_visible=torch.zeros(4, 3, dtype=torch.bool))
    assert not torch.allclose(masked.attend(some_unseen)[0], zeros.attend(some_unseen)[0])


# --------------------------------------------------------------------------- end to end
TINY = ["env_args.map_name=3m", "batch_size=4", "buffer_size=32", "batch_size_run=2", "test_interval=400",
        "test_nepisode=2", "log_interval=400", "save_model=False", "progress_bar=False", "t_max=300",
        "agent.hidden_dim=16", "agent.embed_dim=8", "agent.attention_heads=2", "mixer.mixing_embed_dim=8",
        "mixer.hypernet_embed=16"]


@pytest.mark.parametrize("visibility", ["mask", "zeros"])
def test_a_short_run_through_the_command_line(tmp_path, visibility):
    code = qmixlab_main(["qmixlab", "-u", "with", "agent.name=entity_attention", f"masks.visibility={visibility}",
                         *TINY, f"local_results_path={tmp_path}"])
    assert code == 0
