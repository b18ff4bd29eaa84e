"""The entity-attention agent and the feature-level mask (issue 14, items 2 and 3): attention
against a slow per-entity reference, the whole network against a plain reference (every token
queried, ``masked_attention``, torch's GRU step by step), skipping rows past episode ends
(``lengths``) against the full unroll, permutation equivariance over enemies, one set of weights
on 3m and 8m, the three visibility guarantees, and a short run through the command line."""

import math

import pytest
import torch
import torch.nn.functional as F

from qmixlab.__main__ import main as qmixlab_main
from qmixlab.components.masks import MaskOptions, masked_attention
from qmixlab.controllers.agent_controller import AgentController
from qmixlab.envs.smacsim import BatchedSMACSim
from qmixlab.envs.spec import ObsLayout
from qmixlab.modules import agents as agents_module
from qmixlab.modules import gru as gru_module
from qmixlab.modules.entities import ObsEntities, split_observation
from qmixlab.modules import entity_agent as entity_agent_module
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
                        logit = logit + options.attention_fill(logit.dtype)
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


@pytest.mark.parametrize("visibility", ["mask", "zeros"])
@pytest.mark.parametrize("fill", FILLS)
def test_attention_gradients_match_the_per_entity_reference_in_float64(visibility, fill):
    options = MaskOptions(visibility=visibility, attention_fill_value=fill)
    agent = make_agent(masks=options).double()
    view = random_entities(LAYOUT_3M, 5, torch.Generator().manual_seed(11))
    features = [view.move.double(), view.own.double(), view.allies.double(), view.enemies.double()]
    for tensor in features:
        tensor.requires_grad_()
    entities = ObsEntities(*features, view.ally_visible, view.enemy_visible)
    g = torch.Generator().manual_seed(12)
    w_own, w_enemies = torch.randn(5, 8, generator=g).double(), torch.randn(5, 3, 8, generator=g).double()
    inputs = features + list(agent.parameters())

    def grads(own, enemies):
        return torch.autograd.grad((own * w_own).sum() + (enemies * w_enemies).sum(), inputs, allow_unused=True)

    own, enemies = agent.attend(entities)
    own_ref, enemies_ref = reference_attend(agent, entities, options)
    torch.testing.assert_close(own, own_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(enemies, enemies_ref, rtol=1e-12, atol=1e-12)
    for ours, theirs in zip(grads(own, enemies), grads(own_ref, enemies_ref)):
        if theirs is None:  # only parameters the attention does not use
            assert ours is None or not ours.any()
            continue
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fill", FILLS)
def test_row_attention_passes_gradcheck(fill):
    """The hand-written backward of the attention over rows, against finite differences."""
    options = MaskOptions(attention_fill_value=fill)
    g = torch.Generator().manual_seed(13)
    heads, d, queried, L, M = 2, 3, 2, 4, 5
    q = torch.randn(heads, d, queried, M, generator=g, dtype=torch.float64, requires_grad=True)
    kv = torch.randn(2, heads, d, L, M, generator=g, dtype=torch.float64, requires_grad=True)
    key_mask = torch.rand(L, M, generator=g) < 0.6
    key_mask[0] = True  # as in the agent: the own token is always a key
    key_bias = entity_agent_module._key_bias(key_mask, options, torch.float64)
    assert torch.autograd.gradcheck(lambda q, kv: entity_agent_module._RowAttention.apply(q, kv, key_bias), (q, kv))


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


# --------------------------------------------------------------------------- the whole network, plainly
def reference_unroll(agent, obs, last_actions, hidden=None):
    """The agent as its module docstring writes it, the obvious way: token embeddings, every
    token queried through ``masked_attention`` (token order own, move, allies, enemies), fc_in on
    the concatenated one-hot last action and agent id, torch's GRU one step at a time, the Q heads.
    obs [B, T, N, D], last_actions [B, T, N] or None -> q [B, T, N, A]."""
    B, T, N, _ = obs.shape
    E, heads, H = agent.embed_dim, agent.attention_heads, agent.hidden_dim
    view = split_observation(obs, agent.obs_layout)
    zero = torch.zeros((), dtype=obs.dtype)
    allies = torch.where(view.ally_visible[..., None], view.allies, zero)
    enemies = torch.where(view.enemy_visible[..., None], view.enemies, zero)
    tokens = torch.cat([agent.embed_own(view.own).unsqueeze(-2), agent.embed_move(view.move).unsqueeze(-2),
                        agent.embed_ally(allies), agent.embed_enemy(enemies)], dim=-2)
    L = tokens.shape[-2]
    flat = tokens.reshape(-1, L, E)
    visible = torch.cat([torch.ones(B, T, N, 2, dtype=torch.bool), view.ally_visible, view.enemy_visible], -1)
    key_mask = visible.reshape(-1, L)
    if agent.masks.visibility == "zeros":  # unseen entities are keys, as zero vectors
        key_mask = torch.ones_like(key_mask)
    q, k, v = agent.attention_in(flat).view(-1, L, 3, heads, E // heads).permute(2, 0, 3, 1, 4)
    attended = masked_attention(q, k, v, key_mask, agent.masks).transpose(1, 2).reshape(-1, L, E)
    z = (flat + agent.attention_out(attended)).view(B, T, N, L, E)
    own, enemy_tokens = z[..., 0, :], z[..., L - agent.obs_layout.enemies[0]:, :]
    # fc_in on [z_own, one_hot(last action as basic action or "an attack"), one_hot(agent id)]
    parts, weights = [own], [agent.fc_in.weight]
    if agent.use_last_action:
        n_basic = agent.n_basic_actions
        embedded = torch.where(last_actions >= n_basic, n_basic, last_actions)  # every attack -> one row
        embedded = torch.where(last_actions == agent.n_actions, n_basic + 1, embedded)  # none -> no row
        parts.append(F.one_hot(embedded, n_basic + 2)[..., : n_basic + 1].to(obs.dtype))
        weights.append(agent.fc_in_last_action.t())
    if agent.use_agent_id:
        parts.append(torch.eye(N, dtype=obs.dtype).expand(B, T, N, N))
        weights.append(agent.fc_in_agent_id.t())
    x = F.linear(torch.cat(parts, -1), torch.cat(weights, 1), agent.fc_in.bias).relu()
    h = torch.zeros(1, B * N, H, dtype=obs.dtype) if hidden is None else hidden.reshape(1, B * N, H)
    outputs = []
    for t in range(T):
        y, h = agent.rnn(x[:, t].reshape(1, B * N, H), h)
        outputs.append(y[0].view(B, N, H))
    Y = torch.stack(outputs, 1)  # [B, T, N, H]
    attack = (agent.attack_hidden(Y).unsqueeze(-2) + agent.attack_enemy(enemy_tokens)).relu()
    return torch.cat([agent.fc_basic(Y), agent.attack_out(attack).squeeze(-1)], -1)


def entity_obs(B, T, N, layout, seed):
    """Random float64 observations with some allies and enemies unseen (SMAC writes zeros:
    ally feature 0, a whole enemy block) and the features of unseen allies left non-zero (the
    mask must hide them)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, T, N, layout.size, generator=g, dtype=torch.float64)
    blocks = layout.slices()
    allies = obs[..., blocks["allies"]].unflatten(-1, layout.allies)
    enemies = obs[..., blocks["enemies"]].unflatten(-1, layout.enemies)
    allies[..., 0] = torch.where(torch.rand(allies.shape[:-1], generator=g) < 0.3, 0.0, allies[..., 0])
    enemies *= (torch.rand(enemies.shape[:-1], generator=g) >= 0.3).unsqueeze(-1)
    obs[..., blocks["allies"]] = allies.flatten(-2)
    obs[..., blocks["enemies"]] = enemies.flatten(-2)
    return obs


OPTION_CASES = [  # (use_last_action, use_agent_id, visibility, fill)
    (True, True, "mask", "-inf"), (True, False, "zeros", "-inf"), (False, True, "mask", -3.0),
    (False, False, "mask", "finfo_min"), (True, True, "zeros", -1e9),
]


@pytest.mark.parametrize("use_last_action, use_agent_id, visibility, fill", OPTION_CASES)
def test_unroll_equals_the_plain_reference_in_float64(use_last_action, use_agent_id, visibility, fill):
    """Values and gradients (parameters, observations, initial hidden state) of the full unroll
    and of one step equal the plain reference: the faster computation is the same function."""
    options = MaskOptions(visibility=visibility, attention_fill_value=fill)
    agent = make_agent(use_last_action=use_last_action, use_agent_id=use_agent_id, masks=options, seed=3).double()
    B, T, N = 3, 5, 3
    obs = entity_obs(B, T, N, LAYOUT_3M, seed=4).requires_grad_()
    last = torch.randint(0, agent.n_actions + 1, (B, T, N), generator=torch.Generator().manual_seed(5))
    hidden = torch.randn(B, N, agent.hidden_dim, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(B, T, N, agent.n_actions, dtype=torch.float64)
    inputs = [obs, hidden] + list(agent.parameters())
    q = agent.unroll(obs, last, hidden)
    q_ref = reference_unroll(agent, obs, last if use_last_action else None, hidden)
    torch.testing.assert_close(q, q_ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad((q * weights).sum(), inputs)
    grads_ref = torch.autograd.grad((q_ref * weights).sum(), inputs)
    for ours, theirs in zip(grads, grads_ref):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    q_step, h_step = agent.step(obs[:, 0], last[:, 0], hidden)
    torch.testing.assert_close(q_step, q_ref[:, 0], rtol=1e-12, atol=1e-12)
    q_next, _ = agent.step(obs[:, 1], last[:, 1], h_step)
    torch.testing.assert_close(q_next, q_ref[:, 1], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- rows past episode ends
def rows_through_attention(monkeypatch):
    """Record how many rows each call of the agent's attention computes."""
    counts = []
    attend_rows = EntityAttentionAgent._attend_rows

    def counting(self, entities):
        counts.append(entities.own.shape[:-1].numel())
        return attend_rows(self, entities)

    monkeypatch.setattr(EntityAttentionAgent, "_attend_rows", counting)
    return counts


@pytest.mark.parametrize("chunk", [1, 3, 8])
@pytest.mark.parametrize("use_last_action, use_agent_id, visibility, fill", OPTION_CASES)
def test_unroll_with_lengths_equals_full_unroll_on_needed_rows_and_gradients(
        monkeypatch, chunk, use_last_action, use_agent_id, visibility, fill):
    monkeypatch.setattr(gru_module, "GRU_CHUNK_STEPS", chunk)
    monkeypatch.setattr(agents_module, "RAGGED_MIN_SKIPPED_FRACTION", 0.0)  # always skip here
    agent = make_agent(use_last_action=use_last_action, use_agent_id=use_agent_id,
                       masks=MaskOptions(visibility=visibility, attention_fill_value=fill), seed=chunk).double()
    B, T, N = 6, 3 * 8 + 2, 3
    obs = entity_obs(B, T, N, LAYOUT_3M, seed=chunk).requires_grad_()
    g = torch.Generator().manual_seed(10 + chunk)
    last = torch.randint(0, agent.n_actions + 1, (B, T, N), generator=g)
    hidden = torch.randn(B, N, agent.hidden_dim, dtype=torch.float64, generator=g, requires_grad=True)
    lengths = torch.tensor([T, 0, 1, 8, 2 * 8 + 3, int(torch.randint(1, T, (), generator=g))])
    needed = torch.arange(T)[None, :] < lengths[:, None]  # [B, T]
    weights = torch.randn(B, T, N, agent.n_actions, dtype=torch.float64, generator=g)
    inputs = [obs, hidden] + list(agent.parameters())

    def loss_grads(q):
        return torch.autograd.grad((torch.where(needed[..., None, None], q, 0.0) * weights).sum(), inputs)

    counts = rows_through_attention(monkeypatch)
    full = agent.unroll(obs, last, hidden)
    ragged = agent.unroll(obs, last, hidden, lengths=lengths)
    chunk_rows = agents_module.RNNAgent._chunk_episodes(lengths, T)
    assert counts == [B * T * N, gru_module.packed_size(T, chunk_rows) * N]
    torch.testing.assert_close(ragged[needed], full[needed], rtol=1e-12, atol=1e-12)
    assert not ragged[1].any()  # an episode of length 0 is never computed: zero Q-values
    for ours, theirs in zip(loss_grads(ragged), loss_grads(full)):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_rows_past_episode_ends_are_skipped_when_it_pays(monkeypatch):
    """With the default threshold (``agents.RAGGED_MIN_SKIPPED_FRACTION``), as for RNNAgent:
    the attention and the GRU see only the rows of running chunks when enough rows are skipped,
    every row otherwise; without ``lengths`` every row."""
    counts = rows_through_attention(monkeypatch)
    agent = make_agent()
    B, T, N = 4, 24, 3
    obs, last = entity_obs(B, T, N, LAYOUT_3M, seed=6).float(), torch.full((B, T, N), 9)
    full = agent.unroll(obs, last)
    short = torch.tensor([24, 20, 5, 3])  # chunks of 8 steps: the last two episodes skip 2 of their 3
    q = agent.unroll(obs, last, lengths=short)
    assert counts[-1] == 8 * N * (4 + 2 + 2) < B * T * N
    needed = torch.arange(T)[None, :] < short[:, None]
    torch.testing.assert_close(q[needed], full[needed], rtol=1e-5, atol=1e-6)
    assert not q[2, 8:].any() and not q[3, 8:].any()
    agent.unroll(obs, last, lengths=torch.tensor([24, 24, 24, 20]))  # nothing skipped (same chunks)
    assert counts[-1] == B * T * N
    monkeypatch.setattr(agents_module, "RAGGED_MIN_SKIPPED_FRACTION", 0.5)  # 4/12 chunks skipped: not enough
    agent.unroll(obs, last, lengths=short)
    assert counts[-1] == B * T * N
    with pytest.raises(ValueError, match="lengths must be an integer tensor of shape"):
        agent.unroll(obs, last, lengths=torch.ones(B + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="lengths must be an integer tensor of shape"):
        agent.unroll(obs, last, lengths=short.float())


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
