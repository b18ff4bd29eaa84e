"""RNNAgent and gru_sequence against references written the slow, obvious way: a Linear over the
explicitly concatenated one-hot input and a torch.nn.GRUCell looped over time."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import qmixlab.modules.agents as agents_module
import qmixlab.modules.gru as gru_module
from qmixlab.modules.agents import RNNAgent
from qmixlab.modules.gru import gru_sequence

B, T, N, D, A, H = 4, 11, 3, 7, 5, 16
FLAGS = list(itertools.product([True, False], repeat=2))  # (use_last_action, use_agent_id)


def random_episode(dtype=torch.float32, seed=0, none_rate=0.2):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, T, N, D, generator=g, dtype=dtype)
    last = torch.randint(0, A, (B, T, N), generator=g)
    last[torch.rand(B, T, N, generator=g) < none_rate] = A  # "no previous action" anywhere
    last[:, 0] = A
    return obs, last


def make_agent(use_last_action=True, use_agent_id=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    agent = RNNAgent(D, A, N, hidden_dim=H, use_last_action=use_last_action, use_agent_id=use_agent_id)
    with torch.no_grad():  # non-zero everywhere, so that every parameter matters
        for p in agent.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return agent.to(dtype)


def reference_unroll(agent, obs, last_actions, hidden=None):
    """PyMARL's agent: concatenate [obs, one-hot last action, one-hot id], a Linear, a GRUCell
    loop. Uses the agent's own parameter tensors, so gradients can be compared."""
    weight_parts = [agent.fc1_obs.weight]
    if agent.use_last_action:
        weight_parts.append(agent.fc1_last_action.t())
    if agent.use_agent_id:
        weight_parts.append(agent.fc1_agent_id.t())
    fc1_weight = torch.cat(weight_parts, dim=1)
    cell = nn.GRUCell(H, H).to(obs.dtype)
    cell_params = {"weight_ih": agent.rnn.weight_ih_l0, "weight_hh": agent.rnn.weight_hh_l0,
                   "bias_ih": agent.rnn.bias_ih_l0, "bias_hh": agent.rnn.bias_hh_l0}
    batch, steps = obs.shape[:2]
    h = torch.zeros(batch * N, H, dtype=obs.dtype) if hidden is None else hidden.reshape(batch * N, H)
    qs = []
    for t in range(steps):
        parts = [obs[:, t]]
        if agent.use_last_action:
            # one_hot over A + 1 classes, then drop the "none" column: "none" is all zeros
            parts.append(F.one_hot(last_actions[:, t], A + 1)[..., :A].to(obs.dtype))
        if agent.use_agent_id:
            parts.append(torch.eye(N, dtype=obs.dtype).expand(batch, N, N))
        inputs = torch.cat(parts, dim=-1).reshape(batch * N, -1)
        x = torch.relu(F.linear(inputs, fc1_weight, agent.fc1_obs.bias))
        h = functional_call(cell, cell_params, (x, h))
        qs.append(F.linear(h, agent.fc2.weight, agent.fc2.bias).view(batch, N, A))
    return torch.stack(qs, dim=1), h.view(batch, N, H)


@pytest.mark.parametrize("use_last_action,use_agent_id", FLAGS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_agent_equals_one_hot_linear_and_grucell_reference(use_last_action, use_agent_id, dtype, tol):
    agent = make_agent(use_last_action, use_agent_id, dtype)
    obs, last = random_episode(dtype)
    expected, _ = reference_unroll(agent, obs, last)
    torch.testing.assert_close(agent.unroll(obs, last), expected, rtol=tol, atol=tol)
    with torch.no_grad():  # the inference path (no saved state) gives the same numbers
        torch.testing.assert_close(agent.unroll(obs, last), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("use_last_action,use_agent_id", FLAGS)
def test_gradients_equal_the_reference_and_reach_every_parameter(use_last_action, use_agent_id):
    agent = make_agent(use_last_action, use_agent_id, torch.float64)
    obs, last = random_episode(torch.float64)
    weights = torch.randn(B, T, N, A, dtype=torch.float64)
    names = [name for name, _ in agent.named_parameters()]
    params = list(agent.parameters())
    ours = torch.autograd.grad((agent.unroll(obs, last) * weights).sum(), params)
    theirs = torch.autograd.grad((reference_unroll(agent, obs, last)[0] * weights).sum(), params)
    for name, g_ours, g_ref in zip(names, ours, theirs):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-10, msg=f"gradient of {name}")
        assert g_ours.abs().sum() > 0, f"no gradient reaches {name}"


def test_unroll_equals_step_by_step_rollout():
    agent = make_agent()
    obs, last = random_episode()
    h0 = 0.5 * torch.randn(B, N, H)
    q_seq = agent.unroll(obs, last, h0)
    h = h0
    for t in range(T):
        q, h = agent.step(obs[:, t], last[:, t], h)
        torch.testing.assert_close(q, q_seq[:, t], rtol=2e-5, atol=2e-5)
    # and both equal the reference started from the same hidden state
    expected, h_ref = reference_unroll(agent, obs, last, h0)
    torch.testing.assert_close(q_seq, expected, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(h, h_ref, rtol=2e-5, atol=2e-5)


def test_input_size_follows_the_flags():
    for use_last_action, use_agent_id in FLAGS:
        agent = RNNAgent(D, A, N, H, use_last_action=use_last_action, use_agent_id=use_agent_id)
        expected = D + (A if use_last_action else 0) + (N if use_agent_id else 0)
        assert agent.input_dim == expected
        weight, bias = agent.concatenated_input_layer()
        assert weight.shape == (H, expected) and bias.shape == (H,)
        # exactly the parameters of nn.Linear(input_dim, H): no extra row for "no action"
        fc1 = [p for n, p in agent.named_parameters() if n.startswith("fc1")]
        assert sum(p.numel() for p in fc1) == expected * H + H
        # and the same initial scale as nn.Linear(input_dim, H)
        assert weight.abs().max() <= 1 / expected ** 0.5


def test_ignored_parts_do_not_change_the_output():
    obs, last = random_episode()
    other_last = torch.randint(0, A + 1, last.shape)
    agent = make_agent(use_last_action=False)
    torch.testing.assert_close(agent.unroll(obs, last), agent.unroll(obs, other_last))
    torch.testing.assert_close(agent.unroll(obs, last), agent.unroll(obs, None))
    # without agent ids, agents with the same inputs get the same Q-values
    agent = make_agent(use_agent_id=False)
    same = obs[:, :, :1].expand(B, T, N, D)
    same_last = last[:, :, :1].expand(B, T, N)
    q = agent.unroll(same, same_last)
    torch.testing.assert_close(q[:, :, 1:], q[:, :, :1].expand(B, T, N - 1, A))
    q = make_agent().unroll(same, same_last)
    assert not torch.allclose(q[:, :, 1], q[:, :, 0])


def test_no_previous_action_has_no_effect_and_no_parameters():
    agent = make_agent()
    obs, last = random_episode()
    # "none" is the zero one-hot: the same as a model whose last-action weights are all zero
    none = torch.full_like(last, A)
    without = make_agent(use_last_action=True)
    without.load_state_dict(agent.state_dict())
    with torch.no_grad():
        without.fc1_last_action.zero_()
    torch.testing.assert_close(agent.unroll(obs, none), without.unroll(obs, last))
    # no gradient flows into the last-action weights from "none" inputs
    agent.unroll(obs, none).sum().backward()
    assert torch.count_nonzero(agent.fc1_last_action.grad) == 0
    assert agent.state_dict()["fc1_last_action"].shape == (A, H)


@pytest.mark.parametrize("chunk", [1, 3, 8])
@pytest.mark.parametrize("steps", [1, 7, 17])
def test_gru_sequence_equals_nn_gru_values_and_gradients(monkeypatch, chunk, steps):
    monkeypatch.setattr(gru_module, "GRU_CHUNK_STEPS", chunk)
    torch.manual_seed(steps)
    gru = nn.GRU(5, 6).double()
    x = torch.randn(steps, 4, 5, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    expected = gru(x, h0.unsqueeze(0))[0]
    got = gru_sequence(gru, x, h0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(expected)
    inputs = [x, h0] + list(gru.parameters())
    ours = torch.autograd.grad(got, inputs, grad_out)
    theirs = torch.autograd.grad(expected, inputs, grad_out)
    for g_ours, g_ref in zip(ours, theirs):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-11)
    with torch.no_grad():
        torch.testing.assert_close(gru_sequence(gru, x, h0), expected, rtol=1e-12, atol=1e-12)


def test_gru_sequence_passes_gradcheck():
    torch.manual_seed(0)
    gru = nn.GRU(3, 4).double()
    w_ih, w_hh, b_ih, b_hh = [p.detach().clone().requires_grad_() for p in gru.parameters()]
    x = torch.randn(10, 2, 3, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.double, requires_grad=True)

    chunks = gru_module._packed_chunks(10, [2, 2])  # the dense layout: every row in each chunk

    def fn(x, h0, w_ih, b_ih, w_hh, b_hh):
        return gru_module._GRUSequence.apply(x.reshape(20, 3), w_ih, b_ih, h0, w_hh, b_hh, chunks)

    assert torch.autograd.gradcheck(fn, (x, h0, w_ih, b_ih, w_hh, b_hh))


def test_initial_hidden_and_dtype_device():
    agent = make_agent(dtype=torch.float64)
    h0 = agent.initial_hidden(5)
    assert h0.shape == (5, N, H) and h0.dtype == torch.float64 and not h0.any()
    assert h0.device == agent.fc2.weight.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    agent = make_agent()
    obs, last = random_episode()
    expected = agent.unroll(obs, last)
    got = agent.cuda().unroll(obs.cuda(), last.cuda())
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-4)


def test_bad_arguments_raise_with_the_value():
    with pytest.raises(ValueError, match="hidden_dim.*0"):
        RNNAgent(D, A, N, hidden_dim=0)
    with pytest.raises(ValueError, match="n_actions.*2.5"):
        RNNAgent(D, 2.5, N)
    agent = make_agent()
    obs, last = random_episode()
    with pytest.raises(ValueError, match="obs_dim=7"):
        agent.unroll(obs[..., :-1], last)
    with pytest.raises(ValueError, match=r"\[B, T, N, obs_dim\]"):
        agent.unroll(obs[:, 0], last)
    too_big = last.clone()
    too_big[0, 1, 0] = A + 1
    with pytest.raises(ValueError, match=r"last_actions must be in \[0, 5\].*6"):
        agent.unroll(obs, too_big)
    with pytest.raises(ValueError, match=r"-1"):
        agent.unroll(obs, last - 1)
    with pytest.raises(ValueError, match="integer"):
        agent.unroll(obs, last.float())
    with pytest.raises(ValueError, match="shape"):
        agent.unroll(obs, last[:, :-1])
    with pytest.raises(ValueError, match="hidden"):
        agent.unroll(obs, last, torch.zeros(B, N, H + 1))


def test_unroll_with_lengths_equals_full_unroll_on_needed_rows_and_gradients(monkeypatch):
    from qmixlab.modules.gru import GRU_CHUNK_STEPS as RAGGED_CHUNK_STEPS

    monkeypatch.setattr(agents_module, "RAGGED_MIN_SKIPPED_FRACTION", 0.0)  # always skip here
    torch.manual_seed(7)
    B, T, N, D, A = 5, 3 * RAGGED_CHUNK_STEPS + 2, 3, 6, 4
    agent = RNNAgent(D, A, N, hidden_dim=8).double()
    obs = torch.randn(B, T, N, D, dtype=torch.float64)
    last = torch.randint(0, A + 1, (B, T, N))
    lengths = torch.tensor([T, 1, RAGGED_CHUNK_STEPS, 0, 2 * RAGGED_CHUNK_STEPS + 3])
    needed = torch.arange(T)[None, :] < lengths[:, None]  # [B, T]
    weights = torch.randn(B, T, N, A, dtype=torch.float64)

    def loss_and_grads(q):
        loss = (torch.where(needed[..., None, None], q, torch.zeros((), dtype=q.dtype)) * weights).sum()
        grads = torch.autograd.grad(loss, list(agent.parameters()))
        return loss, grads

    full = agent.unroll(obs, last)
    ragged = agent.unroll(obs, last, lengths=lengths)
    torch.testing.assert_close(ragged[needed], full[needed], rtol=1e-12, atol=1e-12)
    assert not ragged[3].any()  # an episode of length 0 is never computed: zero Q-values
    loss_full, grads_full = loss_and_grads(full)
    loss_ragged, grads_ragged = loss_and_grads(ragged)
    torch.testing.assert_close(loss_ragged, loss_full)
    for g_ragged, g_full in zip(grads_ragged, grads_full):
        torch.testing.assert_close(g_ragged, g_full, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="lengths must be an integer tensor of shape"):
        agent.unroll(obs, last, lengths=torch.ones(B + 1, dtype=torch.long))


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_gru_packed_equals_each_sequence_alone(monkeypatch, chunk):
    """Sequences sorted by length, each chunk computing only those still running at its start:
    every computed row, and every gradient, equals nn.GRU run on that sequence alone."""
    monkeypatch.setattr(gru_module, "GRU_CHUNK_STEPS", chunk)
    torch.manual_seed(chunk)
    T, I, Hd = 11, 5, 6
    lengths = [11, 9, 6, 6, 2, 0]  # sorted, longest first
    M = len(lengths)
    gru = nn.GRU(I, Hd).double()
    dense = torch.randn(T, M, I, dtype=torch.double)
    h0 = torch.randn(M, Hd, dtype=torch.double, requires_grad=True)
    chunk_rows = [sum(1 for n in lengths if n > t0) for t0 in range(0, T, chunk)]
    rows_at = [chunk_rows[t // chunk] for t in range(T)]  # rows computed at step t
    x = torch.cat([dense[t, : rows_at[t]] for t in range(T)]).requires_grad_()
    assert x.shape[0] == gru_module.packed_size(T, chunk_rows)
    got = gru_module.gru_packed(gru, x, h0, T, chunk_rows)
    weights = torch.randn_like(got)
    inputs = [x, h0] + list(gru.parameters())
    ours = torch.autograd.grad((got * weights).sum(), inputs)
    # the slow way: each sequence alone, over the steps at which the packed layout holds it
    offsets = [sum(rows_at[:t]) for t in range(T)]
    reference_loss = 0.0
    for m in range(M):
        steps = [t for t in range(T) if m < rows_at[t]]
        if not steps:
            continue
        assert steps == list(range(len(steps))) and len(steps) >= lengths[m]
        packed_rows = [offsets[t] + m for t in steps]
        alone = gru(x[packed_rows].unsqueeze(1), h0[m: m + 1].unsqueeze(0))[0][:, 0]
        torch.testing.assert_close(got[packed_rows], alone, rtol=1e-12, atol=1e-12)
        reference_loss = reference_loss + (alone * weights[packed_rows]).sum()
    theirs = torch.autograd.grad(reference_loss, inputs)
    for g_ours, g_ref in zip(ours, theirs):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-11)
    assert not ours[1][lengths.index(0)].any()  # a sequence never computed gets no gradient
    with torch.no_grad():
        torch.testing.assert_close(gru_module.gru_packed(gru, x, h0, T, chunk_rows), got.detach(), rtol=0, atol=0)


def test_gru_packed_passes_gradcheck(monkeypatch):
    monkeypatch.setattr(gru_module, "GRU_CHUNK_STEPS", 2)
    torch.manual_seed(1)
    gru = nn.GRU(3, 4).double()
    w_ih, w_hh, b_ih, b_hh = [p.detach().clone().requires_grad_() for p in gru.parameters()]
    T, chunk_rows = 7, [3, 3, 2, 1]
    chunks = gru_module._packed_chunks(T, chunk_rows)
    x = torch.randn(gru_module.packed_size(T, chunk_rows), 3, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(3, 4, dtype=torch.double, requires_grad=True)

    def fn(x, h0, w_ih, b_ih, w_hh, b_hh):
        return gru_module._GRUSequence.apply(x, w_ih, b_ih, h0, w_hh, b_hh, chunks)

    assert torch.autograd.gradcheck(fn, (x, h0, w_ih, b_ih, w_hh, b_hh))


def test_gru_packed_rejects_bad_arguments(monkeypatch):
    monkeypatch.setattr(gru_module, "GRU_CHUNK_STEPS", 4)
    gru = nn.GRU(2, 3)
    h0 = torch.zeros(4, 3)
    for bad in ([4, 4], [4, 5, 1], [2, 3, 1], [4, 2, -1]):
        with pytest.raises(ValueError, match=r"chunk_rows must give, for each of the 3 chunks of 4 steps"):
            gru_module.gru_packed(gru, torch.randn(9, 2), h0, 9, bad)
    with pytest.raises(ValueError, match=r"x \[29, 2\] for T=9 and chunk_rows=\[4, 3, 1\], got \(30, 2\)"):
        gru_module.gru_packed(gru, torch.randn(30, 2), h0, 9, [4, 3, 1])
    with pytest.raises(ValueError, match="T >= 1"):
        gru_module.gru_packed(gru, torch.randn(0, 2), h0, 0, [])


def test_inference_reuses_rewritten_weights_only_while_they_are_unchanged():
    """No-grad calls cache the GRU's rewritten parameters; any change of a weight (an optimiser
    step in place, a target-network copy, a replaced tensor) must be seen at the next call."""
    torch.manual_seed(0)
    gru = nn.GRU(5, 4)
    x, h0 = torch.randn(1, 3, 5), torch.randn(3, 4)
    with torch.no_grad():
        assert torch.allclose(gru_sequence(gru, x, h0), gru(x, h0[None])[0], atol=1e-6)
        gru.weight_hh_l0.add_(0.5)  # in place, as an optimiser step
        assert torch.allclose(gru_sequence(gru, x, h0), gru(x, h0[None])[0], atol=1e-6)
        gru.load_state_dict(nn.GRU(5, 4).state_dict())  # copied in, as a target update
        assert torch.allclose(gru_sequence(gru, x, h0), gru(x, h0[None])[0], atol=1e-6)
        gru.bias_ih_l0 = nn.Parameter(torch.randn(12))  # replaced
        assert torch.allclose(gru_sequence(gru, x, h0), gru(x, h0[None])[0], atol=1e-6)
