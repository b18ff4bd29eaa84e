"""Networks stacked over members (issue 16: many seeds in one process). Every stacked module is
compared with K modules built separately, each with its own seed: member k's rows of the outputs
and member k's slices of the gradients must be what modules[k] gives on its rows. The members'
GRU kernel is compared with the single kernel run per member and with a GRUCell loop."""

import copy
import itertools

import pytest
import torch
from torch import nn
from torch.func import functional_call

import qmixlab.modules.agents as agents_module
import qmixlab.modules.gru as gru_module
from qmixlab.components.masks import MaskOptions
from qmixlab.envs.spec import ObsLayout, StateLayout
from qmixlab.modules.agents import RNNAgent
from qmixlab.modules.entity_agent import EntityAttentionAgent
from qmixlab.modules.gru import gru_members_packed, gru_members_sequence, gru_packed, gru_sequence, packed_size
from qmixlab.modules.mixers import AttentionMixer, QMixer, QPLEXMixer, VDNMixer
from qmixlab.modules.stacked import (MemberLoop, StackedQMixer, StackedRNNAgent, StackedVDNMixer,
                                     stack_members)

K = 3  # members
B, T, N, D, A, H = 2, 11, 3, 5, 4, 8
S = 6  # state size of the QMIX / QPLEX tests
FLAGS = list(itertools.product([True, False], repeat=2))  # (use_last_action, use_agent_id)
TOLERANCES = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}
OBS_LAYOUT = ObsLayout(move=4, enemies=(3, 5), allies=(2, 5), own=1)  # 3m-like: N = 3, 9 actions
STATE_LAYOUT = StateLayout(allies=(N, 4), enemies=(3, 3), last_action=N * A, timestep=1)


# --------------------------------------------------------------------------- helpers
def perturbed(module, seed, dtype=torch.float64):
    """``module`` with every parameter moved by noise of its own seed: nothing is zero, so every
    parameter matters, and the members differ."""
    generator = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module.to(dtype)


def build_members(factory, dtype=torch.float64, members=K):
    """``members`` modules from ``factory()``, each made under its own seed."""
    modules = []
    for k in range(members):
        torch.manual_seed(k)
        modules.append(perturbed(factory(), k, dtype))
    return modules


def member_rows(value, k, members=K):
    """Member k's block of a member-major tensor (anything else as it is)."""
    if not isinstance(value, torch.Tensor):
        return value
    n = value.shape[0] // members
    return value[k * n: (k + 1) * n]


def as_list(output):
    return list(output) if isinstance(output, (tuple, list)) else [output]


def assert_member_function(stacked, modules, call, inputs, dtype, grad_inputs=()):
    """``call(stacked, *inputs)`` equals member k's ``call(modules[k], *member k's rows)`` on its
    rows, values and gradients of a random weighted sum: for every parameter (member k's slice
    against modules[k]'s parameter) and for the tensors in ``grad_inputs``."""
    tol = TOLERANCES[dtype]
    outputs = as_list(call(stacked, *inputs))
    expected = [as_list(call(m, *(member_rows(x, k) for x in inputs))) for k, m in enumerate(modules)]
    expected = [torch.cat(parts) for parts in zip(*expected)]
    generator = torch.Generator().manual_seed(5)
    weights = [torch.randn(e.shape, generator=generator, dtype=e.dtype) for e in expected]
    for i, (got, want) in enumerate(zip(outputs, expected)):
        torch.testing.assert_close(got, want, **tol, msg=lambda m: f"output {i}: {m}")
    names = [name for name, _ in modules[0].named_parameters()]
    stacked_params = list(stacked.parameters())
    single_params = [p for m in modules for p in m.parameters()]
    ours = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outputs, weights)),
                               stacked_params + list(grad_inputs), allow_unused=True)
    theirs = torch.autograd.grad(sum((e * w).sum() for e, w in zip(expected, weights)),
                                 single_params + list(grad_inputs), allow_unused=True)
    n = len(names)
    for i, name in enumerate(names):
        reference = torch.stack([
            theirs[k * n + i] if theirs[k * n + i] is not None else torch.zeros_like(single_params[k * n + i])
            for k in range(len(modules))])
        got = ours[i] if ours[i] is not None else torch.zeros_like(stacked_params[i])
        torch.testing.assert_close(got, reference, **tol, msg=lambda m: f"gradient of {name}: {m}")
    for j in range(len(grad_inputs)):
        torch.testing.assert_close(ours[n + j], theirs[len(single_params) + j], **tol,
                                   msg=lambda m: f"gradient of input {j}: {m}")
    return outputs


def random_episodes(members=K, batch=B, steps=T, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(members * batch, steps, N, D, generator=g, dtype=dtype)
    last = torch.randint(0, A + 1, (members * batch, steps, N), generator=g)
    last[:, 0] = A
    return obs, last


def make_rnn_agents(use_last_action=True, use_agent_id=True, dtype=torch.float64, members=K):
    return build_members(lambda: RNNAgent(D, A, N, hidden_dim=H, use_last_action=use_last_action,
                                          use_agent_id=use_agent_id), dtype, members)


def make_qmixers(hypernet_layers, dtype=torch.float64):
    return build_members(lambda: QMixer(N, S, mixing_embed_dim=5, hypernet_layers=hypernet_layers,
                                        hypernet_embed=7), dtype)


def make_qplex(dtype=torch.float64):
    return build_members(lambda: QPLEXMixer(N, A, S, hypernet_embed=6, qplex_attention_heads=2,
                                            qplex_adv_hypernet_embed=5), dtype)


def make_attention_mixers(heads=2, dtype=torch.float64):
    return build_members(lambda: AttentionMixer(N, STATE_LAYOUT, attention_embed_dim=8, attention_heads=heads,
                                                attention_layers=1, mixing_embed_dim=4), dtype)


def make_entity_agents(dtype=torch.float64, masks=MaskOptions()):
    return build_members(lambda: EntityAttentionAgent(OBS_LAYOUT, 6 + OBS_LAYOUT.enemies[0], N, hidden_dim=6,
                                                      embed_dim=4, attention_heads=2, masks=masks), dtype)


def mixer_inputs(rows=K * B, dtype=torch.float64, seed=1, state_dim=S):
    g = torch.Generator().manual_seed(seed)
    qs = 2 * torch.randn(rows, 4, N, generator=g, dtype=dtype)
    states = torch.randn(rows, 4, state_dim, generator=g, dtype=dtype)
    return qs, states


def smac_like_states(rows, steps, dtype=torch.float64, seed=2):
    """States in ``STATE_LAYOUT``: attributes in [0, 1] with some dead (all-zero) enemies, a
    one-hot last action per agent, a timestep."""
    g = torch.Generator().manual_seed(seed)
    allies = torch.rand(rows, steps, *STATE_LAYOUT.allies, generator=g, dtype=dtype)
    enemies = torch.rand(rows, steps, *STATE_LAYOUT.enemies, generator=g, dtype=dtype)
    enemies = enemies * (torch.rand(rows, steps, STATE_LAYOUT.enemies[0], 1, generator=g) < 0.7)
    last = nn.functional.one_hot(torch.randint(A, (rows, steps, N), generator=g), A).to(dtype)
    timestep = torch.rand(rows, steps, 1, generator=g, dtype=dtype)
    return torch.cat([allies.flatten(2), enemies.flatten(2), last.flatten(2), timestep], dim=-1)


def entity_observations(rows, steps, dtype=torch.float64, seed=3):
    """Observations in ``OBS_LAYOUT`` with some unseen (all-zero) ally and enemy blocks."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(rows, steps, N, OBS_LAYOUT.size, generator=g, dtype=dtype)
    (n_enemies, enemy_feats), (n_allies, ally_feats) = OBS_LAYOUT.enemies, OBS_LAYOUT.allies
    start = OBS_LAYOUT.move
    for count, feats in ((n_enemies, enemy_feats), (n_allies, ally_feats)):
        for j in range(count):
            block = obs[..., start + j * feats: start + (j + 1) * feats]
            block.mul_((torch.rand(rows, steps, N, 1, generator=g) < 0.7).to(dtype))
        start += count * feats
    return obs


# --------------------------------------------------------------------------- the members' GRU kernel
def gru_weights(members, input_size, hidden_size, seed):
    """``members`` nn.GRUs (float64) and their parameters stacked: weight_ih, weight_hh, bias_ih,
    bias_hh, each [members, ...], leaves requiring gradients."""
    grus = []
    for k in range(members):
        torch.manual_seed(seed + k)
        grus.append(nn.GRU(input_size, hidden_size).double())
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    stacked = [torch.stack([getattr(g, name).detach() for g in grus]).requires_grad_() for name in names]
    return grus, stacked


def grucell_loop(x_steps, h0, weights):
    """PyTorch's GRUCell step by step over a list of inputs [rows, I], from h0 [rows, H], with
    the cell's parameters given as (weight_ih, weight_hh, bias_ih, bias_hh)."""
    cell = nn.GRUCell(x_steps[0].shape[-1], h0.shape[-1]).double()
    params = dict(zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), weights))
    h, outputs = h0, []
    for x in x_steps:
        h = functional_call(cell, params, (x, h))
        outputs.append(h)
    return torch.stack(outputs)


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_members_gru_dense_equals_each_member_alone_and_a_grucell_loop(monkeypatch, chunk):
    monkeypatch.setattr(gru_module, "GRU_CHUNK_STEPS", chunk)
    members, steps, M, I, Hd = 3, 7, 4, 3, 5
    grus, weights = gru_weights(members, I, Hd, seed=chunk)
    g = torch.Generator().manual_seed(chunk)
    x = torch.randn(members, steps, M, I, generator=g, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(members, M, Hd, generator=g, dtype=torch.double, requires_grad=True)
    got = gru_members_sequence(x, h0, *weights)
    alone = torch.stack([gru_sequence(grus[k], x[k], h0[k]) for k in range(members)])
    cells = torch.stack([grucell_loop(list(x[k]), h0[k], [w[k] for w in weights]) for k in range(members)])
    torch.testing.assert_close(got, alone, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, cells, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn(got.shape, generator=g, dtype=torch.double)
    ours = torch.autograd.grad(got, [x, h0] + weights, grad_out)
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    single = torch.autograd.grad(alone, [x, h0] + [getattr(gru, n) for n in names for gru in grus], grad_out)
    single = list(single[:2]) + [torch.stack(single[2 + i * members: 2 + (i + 1) * members]) for i in range(4)]
    reference = torch.autograd.grad(cells, [x, h0] + weights, grad_out)
    for name, g_ours, g_single, g_ref in zip(("x", "h0") + names, ours, single, reference):
        torch.testing.assert_close(g_ours, g_single, rtol=1e-10, atol=1e-11, msg=lambda m: f"{name}: {m}")
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-11, msg=lambda m: f"{name}: {m}")
    with torch.no_grad():  # the inference path (nothing saved) gives the same numbers
        torch.testing.assert_close(gru_members_sequence(x, h0, *weights), got.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_members_gru_packed_equals_each_sequence_alone(monkeypatch, chunk):
    """One packed layout shared by the members (sequences sorted by length per member, chunk c
    computing rows [:chunk_rows[c]] of every member): every computed row and every gradient equal
    the single kernel on that member (``gru_packed``) and a GRUCell loop on that sequence alone."""
    monkeypatch.setattr(gru_module, "GRU_CHUNK_STEPS", chunk)
    members, steps, I, Hd = 2, 11, 3, 4
    lengths = [11, 9, 6, 2, 0]  # the longest running count over the members, per sequence rank
    M = len(lengths)
    grus, weights = gru_weights(members, I, Hd, seed=10 + chunk)
    chunk_rows = [sum(1 for n in lengths if n > t0) for t0 in range(0, steps, chunk)]
    rows_at = [chunk_rows[t // chunk] for t in range(steps)]
    R = packed_size(steps, chunk_rows)
    g = torch.Generator().manual_seed(chunk)
    x = torch.randn(members, R, I, generator=g, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(members, M, Hd, generator=g, dtype=torch.double, requires_grad=True)
    got = gru_members_packed(x, h0, *weights, steps, chunk_rows)
    assert got.shape == (members, R, Hd)
    grad_out = torch.randn(got.shape, generator=g, dtype=torch.double)
    ours = torch.autograd.grad((got * grad_out).sum(), [x, h0] + weights)

    alone = torch.stack([gru_packed(grus[k], x[k], h0[k], steps, chunk_rows) for k in range(members)])
    torch.testing.assert_close(got, alone, rtol=1e-12, atol=1e-12)
    offsets = [sum(rows_at[:t]) for t in range(steps)]
    reference_loss = 0.0
    for k in range(members):
        for m in range(M):
            held = [t for t in range(steps) if m < rows_at[t]]
            if not held:
                continue
            packed_rows = [offsets[t] + m for t in held]
            cells = grucell_loop([x[k, r][None] for r in packed_rows], h0[k, m][None], [w[k] for w in weights])[:, 0]
            torch.testing.assert_close(got[k, packed_rows], cells, rtol=1e-12, atol=1e-12)
            reference_loss = reference_loss + (cells * grad_out[k, packed_rows]).sum()
    reference = torch.autograd.grad(reference_loss, [x, h0] + weights)
    for name, g_ours, g_ref in zip(("x", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"), ours, reference):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-11, msg=lambda msg: f"{name}: {msg}")
    assert not ours[1][:, lengths.index(0)].any()  # a sequence never computed gets no gradient
    with torch.no_grad():
        torch.testing.assert_close(gru_members_packed(x, h0, *weights, steps, chunk_rows), got.detach(),
                                   rtol=0, atol=0)
    # the autograd composition used off the CPU computes the same function
    chunks = gru_module._packed_chunks(steps, chunk_rows)
    plain = gru_module._gru_members_autograd(x, weights[0], weights[2], h0, weights[1], weights[3], chunks)
    torch.testing.assert_close(plain, got, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad((plain * grad_out).sum(), [x, h0] + weights), ours,
                               rtol=1e-10, atol=1e-11)


def test_members_gru_passes_gradcheck(monkeypatch):
    monkeypatch.setattr(gru_module, "GRU_CHUNK_STEPS", 2)
    _, weights = gru_weights(2, 3, 4, seed=0)
    w_ih, w_hh, b_ih, b_hh = [w.detach().clone().requires_grad_() for w in weights]
    steps, chunk_rows = 5, [3, 2, 1]
    chunks = gru_module._packed_chunks(steps, chunk_rows)
    x = torch.randn(2, packed_size(steps, chunk_rows), 3, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(2, 3, 4, dtype=torch.double, requires_grad=True)

    def fn(x, h0, w_ih, b_ih, w_hh, b_hh):
        return gru_module._GRUMembers.apply(x, w_ih, b_ih, h0, w_hh, b_hh, chunks)

    assert torch.autograd.gradcheck(fn, (x, h0, w_ih, b_ih, w_hh, b_hh))


def test_members_gru_inference_reuses_rewritten_weights_only_while_they_are_unchanged():
    _, weights = gru_weights(2, 3, 4, seed=3)
    weights = [w.detach() for w in weights]
    x, h0 = torch.randn(2, 2, 5, 3, dtype=torch.double), torch.randn(2, 5, 4, dtype=torch.double)
    owner = nn.Module()

    def reference():
        return torch.stack([grucell_loop(list(x[k]), h0[k], [w[k] for w in weights]) for k in range(2)])

    with torch.no_grad():
        torch.testing.assert_close(gru_members_sequence(x, h0, *weights, cache_owner=owner), reference())
        weights[1][1].add_(0.5)  # one member's weight in place, as an optimiser step
        torch.testing.assert_close(gru_members_sequence(x, h0, *weights, cache_owner=owner), reference())


def test_members_gru_rejects_bad_arguments():
    _, weights = gru_weights(2, 3, 4, seed=0)
    h0 = torch.zeros(2, 5, 4, dtype=torch.double)
    with pytest.raises(ValueError, match=r"weight_hh of shape \(2, 12, 4\).*got \(2, 12, 5\)"):
        gru_members_sequence(torch.zeros(2, 3, 5, 3, dtype=torch.double), h0, weights[0],
                             torch.zeros(2, 12, 5, dtype=torch.double), weights[2], weights[3])
    with pytest.raises(ValueError, match=r"h0 \[K=2, M=6, H\]"):
        gru_members_sequence(torch.zeros(2, 3, 6, 3, dtype=torch.double), h0, *weights)
    with pytest.raises(ValueError, match=r"x \[K=2, 20, I\] for T=4 and chunk_rows=\[5\], got \(2, 12, 3\)"):
        gru_members_packed(torch.zeros(2, 12, 3, dtype=torch.double), h0, *weights, 4, [5])
    with pytest.raises(ValueError, match="chunk_rows must give"):
        gru_members_packed(torch.zeros(2, 12, 3, dtype=torch.double), h0, *weights, 4, [6])


# --------------------------------------------------------------------------- the stacked RNNAgent
@pytest.mark.parametrize("use_last_action,use_agent_id", FLAGS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stacked_agent_unroll_equals_the_members(use_last_action, use_agent_id, dtype):
    agents = make_rnn_agents(use_last_action, use_agent_id, dtype)
    stacked = stack_members(agents)
    assert type(stacked) is StackedRNNAgent and stacked.members == K
    obs, last = random_episodes(dtype=dtype)
    obs.requires_grad_()
    h0 = 0.5 * torch.randn(K * B, N, H, dtype=dtype)
    h0.requires_grad_()
    assert_member_function(stacked, agents, lambda m, o, la, h: m.unroll(o, la, h), (obs, last, h0), dtype,
                           grad_inputs=(obs, h0))
    assert_member_function(stacked, agents, lambda m, o, la: m.unroll(o, la), (obs, last), dtype)
    with torch.no_grad():  # the inference path gives the same numbers
        expected = torch.cat([a.unroll(member_rows(obs, k), member_rows(last, k)) for k, a in enumerate(agents)])
        torch.testing.assert_close(stacked.unroll(obs, last), expected, **TOLERANCES[dtype])


def test_stacked_agent_steps_equal_single_steps_and_the_unroll():
    agents = make_rnn_agents()
    stacked = stack_members(agents)
    obs, last = random_episodes()
    h0 = 0.5 * torch.randn(K * B, N, H, dtype=torch.float64)
    q_seq = stacked.unroll(obs, last, h0)
    hidden, hiddens = h0, [member_rows(h0, k) for k in range(K)]
    for t in range(T):
        q, hidden = stacked.step(obs[:, t], last[:, t], hidden)
        singles = [a.step(member_rows(obs[:, t], k), member_rows(last[:, t], k), hiddens[k])
                   for k, a in enumerate(agents)]
        hiddens = [h for _, h in singles]
        torch.testing.assert_close(q, torch.cat([q_k for q_k, _ in singles]), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(hidden, torch.cat(hiddens), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(q, q_seq[:, t], rtol=1e-10, atol=1e-10)
    assert_member_function(stacked, agents, lambda m, o, la, h: m.step(o, la, h), (obs[:, 3], last[:, 3], h0),
                           torch.float64)
    h_init = stacked.initial_hidden(K * 4)
    assert h_init.shape == (K * 4, N, H) and h_init.dtype == torch.float64 and not h_init.any()


@pytest.mark.parametrize("use_last_action,use_agent_id", [(True, True), (False, False)])
def test_stacked_agent_with_lengths_computes_the_needed_rows_exactly(monkeypatch, use_last_action, use_agent_id):
    """Each member's episodes sorted by its own lengths, one packed layout for all members: the
    rows each episode needs, and the gradients through them, equal the members' full unrolls."""
    monkeypatch.setattr(agents_module, "RAGGED_MIN_SKIPPED_FRACTION", 0.0)  # always skip here
    monkeypatch.setattr(gru_module, "GRU_CHUNK_STEPS", 3)
    agents = make_rnn_agents(use_last_action, use_agent_id)
    stacked = stack_members(agents)
    batch = 4
    obs, last = random_episodes(batch=batch)
    h0 = 0.5 * torch.randn(K * batch, N, H, dtype=torch.float64)
    # members with different length profiles: the chunk row counts are the members' maxima;
    # every member has one episode of length 0, so no member computes a fourth row
    lengths = torch.tensor([T, 1, 3, 0,   2, 0, 7, 4,   5, T, 0, 1])
    needed = torch.arange(T)[None, :] < lengths[:, None]  # [K*B, T]
    weights = torch.randn(K * batch, T, N, A, dtype=torch.float64)

    def masked_loss(q):
        return (torch.where(needed[..., None, None], q, torch.zeros((), dtype=q.dtype)) * weights).sum()

    ragged = stacked.unroll(obs, last, h0, lengths=lengths)
    full = torch.cat([a.unroll(member_rows(obs, k), member_rows(last, k), member_rows(h0, k))
                      for k, a in enumerate(agents)])
    torch.testing.assert_close(ragged[needed], full[needed], rtol=1e-10, atol=1e-10)
    assert not ragged[[3, 5, 10]].any()  # episodes of length 0 are never computed
    ours = torch.autograd.grad(masked_loss(ragged), list(stacked.parameters()))
    theirs = torch.autograd.grad(masked_loss(full), [p for a in agents for p in a.parameters()])
    n = len(ours)
    for i, (name, _) in enumerate(agents[0].named_parameters()):
        torch.testing.assert_close(ours[i], torch.stack(theirs[i::n]), rtol=1e-10, atol=1e-10,
                                   msg=lambda m: f"gradient of {name}: {m}")
    with torch.no_grad():
        torch.testing.assert_close(stacked.unroll(obs, last, h0, lengths=lengths), ragged.detach(), rtol=0, atol=0)


def test_stacked_agent_skips_the_ragged_path_when_it_saves_nothing(monkeypatch):
    agents = make_rnn_agents()
    stacked = stack_members(agents)
    obs, last = random_episodes()

    def never(*args, **kwargs):
        raise AssertionError("the ragged path ran although every row is needed")

    monkeypatch.setattr(StackedRNNAgent, "_unroll_ragged", never)
    q = stacked.unroll(obs, last, lengths=torch.full((K * B,), T))
    torch.testing.assert_close(q, stacked.unroll(obs, last), rtol=0, atol=0)


def test_stacked_agent_rejects_bad_arguments():
    stacked = stack_members(make_rnn_agents())
    obs, last = random_episodes()
    with pytest.raises(ValueError, match=r"first dimension K\*B for K=3 members.*got \(5, 11, 3, 5\)"):
        stacked.unroll(obs[:5], last[:5])
    with pytest.raises(ValueError, match="obs_dim=5"):
        stacked.unroll(obs[..., :-1], last)
    with pytest.raises(ValueError, match=r"last_actions must be in \[0, 4\]"):
        stacked.unroll(obs, last + 1)
    with pytest.raises(ValueError, match=r"hidden has shape \(6, 3, 9\), expected \(6, 3, 8\)"):
        stacked.unroll(obs, last, torch.zeros(K * B, N, H + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"lengths must be an integer tensor of shape \(6,\)"):
        stacked.unroll(obs, last, lengths=torch.ones(K * B + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size K\\*n for K=3 members, got 4"):
        stacked.initial_hidden(4)


# --------------------------------------------------------------------------- the stacked mixers
@pytest.mark.parametrize("hypernet_layers", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stacked_qmixer_equals_the_members(hypernet_layers, dtype):
    mixers = make_qmixers(hypernet_layers, dtype)
    stacked = stack_members(mixers)
    assert type(stacked) is StackedQMixer
    qs, states = mixer_inputs(dtype=dtype)
    qs.requires_grad_()
    states.requires_grad_()
    out = assert_member_function(stacked, mixers, lambda m, q, s: m(q, s), (qs, states), dtype,
                                 grad_inputs=(qs, states))
    assert out[0].shape == (K * B, 4, 1)
    with pytest.raises(ValueError, match="same leading dims"):
        stacked(qs, states[:, :3])
    with pytest.raises(ValueError, match=r"first dimension K\*B for K=3 members"):
        stacked(qs[:5], states[:5])


def test_stacked_vdn_sums_each_members_utilities():
    mixers = [VDNMixer(N) for _ in range(K)]
    stacked = stack_members(mixers)
    assert type(stacked) is StackedVDNMixer and list(stacked.parameters()) == []
    qs, states = mixer_inputs()
    qs.requires_grad_()
    assert_member_function(stacked, mixers, lambda m, q, s: m(q, s), (qs, states), torch.float64, grad_inputs=(qs,))
    assert stacked.member_state_dict(1) == {} and stacked.member_grad_sq_norms().shape == (K,)
    stacked.load_member_state_dict(2, {})
    stacked.scale_member_grads(torch.ones(K))


def test_member_loop_runs_qplex_per_member():
    mixers = make_qplex()
    stacked = stack_members(mixers)
    assert type(stacked) is MemberLoop and stacked.n_agents == N and stacked.member_type is QPLEXMixer
    qs, states = mixer_inputs()
    actions = torch.randint(0, A, qs.shape)
    max_qs = qs + torch.rand(qs.shape, dtype=qs.dtype)
    qs.requires_grad_()
    assert_member_function(stacked, mixers, lambda m, *inputs: m(*inputs), (qs, states, actions, max_qs),
                           torch.float64, grad_inputs=(qs,))


def test_member_loop_runs_the_attention_mixer_per_member():
    mixers = make_attention_mixers()
    stacked = stack_members(mixers)
    assert type(stacked) is MemberLoop
    qs, _ = mixer_inputs(state_dim=STATE_LAYOUT.size)
    states = smac_like_states(K * B, 4)
    assert_member_function(stacked, mixers, lambda m, q, s: m(q, s), (qs, states), torch.float64)


def test_member_loop_runs_the_entity_agent_per_member():
    agents = make_entity_agents()
    stacked = stack_members(agents)
    assert type(stacked) is MemberLoop
    assert (stacked.n_agents, stacked.n_actions, stacked.hidden_dim) == (N, 9, 6)
    obs = entity_observations(K * B, 5)
    last = torch.randint(0, 10, (K * B, 5, N))
    h0 = 0.5 * torch.randn(K * B, N, 6, dtype=torch.float64)
    assert_member_function(stacked, agents, lambda m, o, la, h: m.unroll(o, la, h), (obs, last, h0), torch.float64)
    assert_member_function(stacked, agents, lambda m, o, la, h: m.step(o, la, h),
                           (obs[:, 0], last[:, 0], h0), torch.float64)
    hidden = stacked.initial_hidden(K * 2)
    assert hidden.shape == (K * 2, N, 6) and hidden.dtype == torch.float64 and not hidden.any()
    with pytest.raises(AttributeError, match="does not give EntityAttentionAgent.attend per member"):
        stacked.attend
    with pytest.raises(ValueError, match=r"argument 0 must be member-major.*got \(5, 5, 3, 30\)"):
        stacked.unroll(obs[:5], last[:5])
    with pytest.raises(AttributeError, match="QPLEXMixer has no method 'unroll'"):
        stack_members(make_qplex()).unroll(obs, last)


# --------------------------------------------------------------------------- members as single modules
def all_kinds():
    """(name, factory of K modules) for every stacked type."""
    return [
        ("rnn_agent", lambda: make_rnn_agents()),
        ("rnn_agent_no_extras", lambda: make_rnn_agents(False, False)),
        ("qmix_1", lambda: make_qmixers(1)),
        ("qmix_2", lambda: make_qmixers(2)),
        ("vdn", lambda: [VDNMixer(N) for _ in range(K)]),
        ("qplex", make_qplex),
        ("attention", make_attention_mixers),
        ("entity_agent", make_entity_agents),
    ]


@pytest.mark.parametrize("name,factory", all_kinds(), ids=[n for n, _ in all_kinds()])
def test_members_read_and_write_as_single_state_dicts(name, factory):
    modules = factory()
    stacked = stack_members(modules)
    # parameters: the single module's names, each [K, ...], in its order (optimiser slicing)
    assert [n for n, _ in stacked.named_parameters()] == [n for n, _ in modules[0].named_parameters()]
    for (_, p), (_, single) in zip(stacked.named_parameters(), modules[0].named_parameters()):
        assert p.shape == (K, *single.shape)
    assert list(stacked.state_dict()) == list(modules[0].state_dict())
    for k, module in enumerate(modules):
        member = stacked.member_state_dict(k)
        single = module.state_dict()
        assert list(member) == list(single)
        for key in single:
            assert torch.equal(member[key], single[key]), key
            assert not member[key].requires_grad
    # a member's state dict goes in and comes back out, and changes no other member
    replacement = factory()[::-1]  # other values of the same shapes
    before = [stacked.member_state_dict(k) for k in range(K)]
    stacked.load_member_state_dict(1, replacement[1].state_dict())
    for k in range(K):
        expected = replacement[1].state_dict() if k == 1 else before[k]
        assert all(torch.equal(stacked.member_state_dict(k)[key], expected[key]) for key in expected)
    # the stacked module's own state dict, a copy, and a standalone member
    twin = stack_members(replacement)
    twin.load_state_dict(stacked.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(twin.state_dict().values(), stacked.state_dict().values()))
    target = copy.deepcopy(stacked)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(stacked.member_state_dict(0).values(), before[0].values()))
    single = stacked.member_module(2)
    assert type(single) is type(modules[0])
    assert all(torch.equal(single.state_dict()[key], before[2][key]) for key in before[2])
    assert stacked.to(torch.float32).member_state_dict(0).keys() == before[0].keys()


def test_member_module_computes_what_its_member_computes():
    agents = make_entity_agents()
    stacked = stack_members(agents)
    obs = entity_observations(K * B, 4)
    last = torch.randint(0, 10, (K * B, 4, N))
    single = stacked.member_module(1)
    torch.testing.assert_close(single.unroll(member_rows(obs, 1), member_rows(last, 1)),
                               agents[1].unroll(member_rows(obs, 1), member_rows(last, 1)), rtol=0, atol=0)
    copied = copy.deepcopy(stacked)
    torch.testing.assert_close(copied.unroll(obs, last), stacked.unroll(obs, last), rtol=0, atol=0)


def test_bad_member_state_dicts_and_indices_raise_with_the_key():
    stacked = stack_members(make_qmixers(2))
    good = stacked.member_state_dict(0)
    with pytest.raises(ValueError, match=r"missing keys \['V.2.bias'\], unexpected keys \[\]"):
        stacked.load_member_state_dict(0, {k: v for k, v in good.items() if k != "V.2.bias"})
    with pytest.raises(ValueError, match=r"missing keys \[\], unexpected keys \['extra'\]"):
        stacked.load_member_state_dict(0, {**good, "extra": torch.zeros(1)})
    bad = dict(good, **{"hyper_b_1.weight": torch.zeros(5, S + 1)})
    with pytest.raises(ValueError, match=r"hyper_b_1.weight has shape \(5, 7\), expected \(5, 6\)"):
        stacked.load_member_state_dict(0, bad)
    assert torch.equal(stacked.member_state_dict(0)["V.2.bias"], good["V.2.bias"])  # nothing half-loaded
    with pytest.raises(ValueError, match=r"member index must be an int in \[0, 3\), got 3"):
        stacked.member_state_dict(3)


def test_mismatched_members_are_refused_naming_the_difference():
    with pytest.raises(ValueError, match="member 1 is a VDNMixer, member 0 a QMixer"):
        stack_members([make_qmixers(2)[0], VDNMixer(N)])
    with pytest.raises(ValueError, match=r"fc1_last_action of member 1 is \(4, 16\).*member 0's is \(4, 8\)"):
        stack_members([RNNAgent(D, A, N, hidden_dim=H), RNNAgent(D, A, N, hidden_dim=2 * H)])
    with pytest.raises(ValueError, match=r"lacks \['fc1_agent_id'\]"):
        stack_members([RNNAgent(D, A, N, hidden_dim=H), RNNAgent(D, A, N, hidden_dim=H, use_agent_id=False)])
    # same shapes, different hyper-parameters: heads of the attention blocks, mask options
    with pytest.raises(ValueError, match=r"AttentionMixer.blocks.0.heads is 4 in member 1 but 2 in member 0"):
        stack_members([make_attention_mixers(heads=2)[0], make_attention_mixers(heads=4)[1]])
    with pytest.raises(ValueError, match=r"EntityAttentionAgent.masks is .*visibility='zeros'"):
        stack_members([make_entity_agents()[0], make_entity_agents(masks=MaskOptions(visibility="zeros"))[1]])
    with pytest.raises(ValueError, match=r"hyper_w_1.0.weight of member 1 is \(7, 6\) torch.float32 on cpu, "
                                         r"member 0's is \(7, 6\) torch.float64"):
        stack_members(make_qmixers(2)[:1] + make_qmixers(2, torch.float32)[1:])
    with pytest.raises(ValueError, match="non-empty list of modules"):
        stack_members([])


# --------------------------------------------------------------------------- per-member gradient clipping
def test_member_grad_norms_and_scaling_equal_per_module_computations():
    agents = make_rnn_agents()
    stacked = stack_members(agents)
    assert torch.equal(stacked.member_grad_sq_norms(), torch.zeros(K, dtype=torch.float64))  # no gradients yet
    obs, last = random_episodes()
    scales = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    q = stacked.unroll(obs, last)
    (q.square().view(K, -1).sum(1) * scales).sum().backward()
    for k, agent in enumerate(agents):
        (agent.unroll(member_rows(obs, k), member_rows(last, k)).square().sum() * scales[k]).backward()
    expected = torch.stack([sum(p.grad.square().sum() for p in a.parameters()) for a in agents])
    torch.testing.assert_close(stacked.member_grad_sq_norms(), expected, rtol=1e-10, atol=0)
    coefficients = torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64)
    stacked.scale_member_grads(coefficients)
    for (name, p), *singles in zip(stacked.named_parameters(), *(a.parameters() for a in agents)):
        torch.testing.assert_close(p.grad, torch.stack([c * s.grad for c, s in zip(coefficients, singles)]),
                                   rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")
    stacked.fc2.bias.grad = None  # a parameter without a gradient counts zero
    norms = stacked.member_grad_sq_norms()
    fc2_bias_part = torch.stack([(c * a.fc2.bias.grad).square().sum() for c, a in zip(coefficients, agents)])
    torch.testing.assert_close(norms, coefficients ** 2 * expected - fc2_bias_part, rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match=r"one coefficient per member, shape \(3,\), got \(2,\)"):
        stacked.scale_member_grads(torch.ones(2))


def test_one_adam_step_with_per_member_clipping_equals_separate_runs():
    """K=3 members (agent and QMIX mixer) trained as one: the sum of the members' losses,
    each member's gradients clipped by its own norm with torch's formula, one Adam over the
    stacked parameters; against K separate runs with clip_grad_norm_ and their own Adam."""
    agents, mixers = make_rnn_agents(), make_qmixers(2)
    stacked_agent, stacked_mixer = stack_members(agents), stack_members(mixers)
    obs, last = random_episodes()
    states = torch.randn(K * B, T, S, dtype=torch.float64)
    loss_scales = [0.1, 1.0, 10.0]

    def member_loss(agent, mixer, k, rows):
        q_tot = mixer(agent.unroll(rows(obs), rows(last)).mean(-1), rows(states))
        return loss_scales[k] * (q_tot - 1.0).square().mean()

    def stacked_loss():
        q_tot = stacked_mixer(stacked_agent.unroll(obs, last).mean(-1), states)
        per_member = (q_tot - 1.0).square().view(K, -1).mean(1)
        return (per_member * torch.tensor(loss_scales, dtype=torch.float64)).sum()

    # the separate runs' norms before clipping, to put max_norm between them
    norms = []
    for k in range(K):
        params = list(agents[k].parameters()) + list(mixers[k].parameters())
        grads = torch.autograd.grad(member_loss(agents[k], mixers[k], k, lambda x: member_rows(x, k)), params)
        norms.append(torch.sqrt(sum(g.square().sum() for g in grads)).item())
    max_norm = sorted(norms)[0] * 1.5
    assert sum(n > max_norm for n in norms) == K - 1  # one member unclipped, the others clipped

    separate = []
    for k in range(K):
        params = list(agents[k].parameters()) + list(mixers[k].parameters())
        separate.append((params, torch.optim.Adam(params, lr=1e-2)))
    stacked_params = list(stacked_agent.parameters()) + list(stacked_mixer.parameters())
    optimiser = torch.optim.Adam(stacked_params, lr=1e-2)
    for _ in range(2):  # the second step uses Adam's moments
        for k, (params, opt) in enumerate(separate):
            opt.zero_grad()
            member_loss(agents[k], mixers[k], k, lambda x: member_rows(x, k)).backward()
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            opt.step()
        optimiser.zero_grad()
        stacked_loss().backward()
        member_norms = (stacked_agent.member_grad_sq_norms() + stacked_mixer.member_grad_sq_norms()).sqrt()
        coefficients = torch.clamp(max_norm / (member_norms + 1e-6), max=1.0)
        stacked_agent.scale_member_grads(coefficients)
        stacked_mixer.scale_member_grads(coefficients)
        optimiser.step()
    for k in range(K):
        for stacked, single in ((stacked_agent, agents[k]), (stacked_mixer, mixers[k])):
            member = stacked.member_state_dict(k)
            for key, value in single.state_dict().items():
                torch.testing.assert_close(member[key], value, rtol=1e-9, atol=1e-10,
                                           msg=lambda m: f"member {k} {key}: {m}")
