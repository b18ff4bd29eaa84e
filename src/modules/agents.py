"""The recurrent agent network, shared by all agents (PyMARL's RNN agent, computed faster).

Mathematically the network is PyMARL's::

    x_t = [obs_t, one_hot(last_action_t), one_hot(agent_id)]    (last two parts optional)
    h_t = GRU(relu(fc1(x_t)), h_{t-1});   q_t = fc2(h_t)

with one set of weights for every agent (agents are folded into the batch). Two things differ
from the obvious implementation, both for speed; neither changes the function computed:

* The one-hot parts of ``x_t`` are never built. ``fc1`` applied to the concatenation equals
  ``fc1_obs(obs)`` plus the weight column of the last action plus the weight column of the agent,
  so those columns are looked up by index. "No previous action" (index ``n_actions``, used at
  t=0) is the zero one-hot: it adds nothing, and has no parameters.
* A whole sequence goes through one recurrent call, ``gru_sequence``, and fc1, the GRU's input
  projection and fc2 run once over all time steps. On CUDA the call is ``torch.nn.GRU``
  (cuDNN). On CPU, ``nn.GRU``'s backward is an op-by-op autograd graph that measured barely
  faster than a ``GRUCell`` loop, so ``gru_sequence`` runs the same GRU (the ``nn.GRU``'s own
  parameters) as one autograd function with a hand-written backward: per time step only the
  recurrent matrix product and a few elementwise ops, everything else (input projection,
  derivative coefficients, weight gradients) batched over chunks of ``GRU_CHUNK_STEPS`` steps.
  Tests compare it with ``nn.GRU`` and with a ``GRUCell`` loop, values and gradients.

With ``lengths`` (the rows each episode needs, masking axis 9), ``unroll`` sorts the episodes by
length and runs fc1, the GRU (``gru_packed``: the same function over a packed layout in which
each chunk of steps holds only the episodes still running) and fc2 on those rows only.
"""

from __future__ import annotations

import math
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


# Time steps handled together by the CPU GRU's non-recurrent work (input projection, output
# conversion, derivative coefficients, weight gradients): large enough to amortise the per-op
# overhead, small enough for a chunk's intermediates to stay in cache.
GRU_CHUNK_STEPS = 8


def _carried_parameters(w_ih, b_ih, w_hh, b_hh):
    """The GRU parameters rewritten for the carried form used by ``_gru_forward``.

    Two exact rewrites save elementwise ops per step (each op costs more than its arithmetic at
    these sizes): the n-gate pre-activations are doubled, since tanh(a) = 2 * sigmoid(2a) - 1;
    and the hidden state is carried as g = (h + 1) / 2, which turns the update
    h' = (1 - z) * n + z * h into g' = lerp(s, g, z) with s = sigmoid(2a), while
    W h + b = (2 W) g + (b - W 1).
    """
    H = w_hh.shape[1]
    scale = w_hh.new_ones(3 * H)
    scale[2 * H:] = 2
    return (w_ih * scale[:, None], b_ih * scale,
            w_hh * (2 * scale)[:, None], (b_hh - w_hh.sum(1)) * scale)


# The constant factors of the stored derivative coefficients, per gate (r, z, n): the backward
# multiplies them into the weights it uses and into the weight gradients it returns.
_COEFFICIENT_FACTORS = (2.0, 2.0, 4.0)


def _gate_factors(like: torch.Tensor, hidden_dim: int) -> torch.Tensor:
    return like.new_tensor(_COEFFICIENT_FACTORS).repeat_interleave(hidden_dim)


class _Chunk(NamedTuple):
    """``steps`` consecutive time steps from ``t0``, each computing rows ``[:rows]`` of the
    sequences; their rows of the packed layout start at ``offset`` (step-major, row-minor)."""

    t0: int
    steps: int
    rows: int
    offset: int


def _packed_chunks(T: int, chunk_rows) -> List[_Chunk]:
    """The chunks of ``GRU_CHUNK_STEPS`` steps over T steps with the given row counts (chunks
    without rows are left out: only trailing ones may have none)."""
    K = min(GRU_CHUNK_STEPS, T)
    chunks, offset = [], 0
    for t0, rows in zip(range(0, T, K), chunk_rows):
        steps = min(t0 + K, T) - t0
        if rows > 0:
            chunks.append(_Chunk(t0, steps, rows, offset))
        offset += steps * rows
    return chunks


def _check_chunk_rows(T: int, M: int, chunk_rows) -> List[int]:
    K = min(GRU_CHUNK_STEPS, T)
    n_chunks = len(range(0, T, K))
    rows = [int(r) for r in chunk_rows]
    if len(rows) != n_chunks or any(not 0 <= r <= M for r in rows) or any(a < b for a, b in zip(rows, rows[1:])):
        raise ValueError(f"chunk_rows must give, for each of the {n_chunks} chunks of {K} steps, a row count "
                         f"in [0, {M}] that never increases; got {rows}")
    return rows


def packed_size(T: int, chunk_rows) -> int:
    """Rows of the packed layout of ``gru_packed`` for T steps and these chunk row counts."""
    K = min(GRU_CHUNK_STEPS, T)
    return sum((min(t0 + K, T) - t0) * int(rows) for t0, rows in zip(range(0, T, K), chunk_rows))


def _gru_forward(x, w_ih, b_ih, h0, w_hh, b_hh, keep_for_backward: bool, chunks: List[_Chunk]):
    """PyTorch's GRU over packed rows x [R, I] (see ``gru_packed``) from h0 [M, H]; returns the
    hidden states Y [R, H] in the same packed layout.

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h.

    With ``keep_for_backward`` it returns ``(Y, RZ, C, CN)``, packed likewise: RZ [R, 2H] holds
    r|z, and for a total gradient d on h_t the pre-activation gradients are f_k * d * C[:, k]
    (k = 0: r, 1: z, 2: the hidden side of n, W_hn h + b_hn) and f_2 * d * CN (the input side of
    n), with the constant factors f = ``_COEFFICIENT_FACTORS`` left out (one op less each).
    """
    R, I = x.shape
    H = h0.shape[-1]
    w_i, b_i, w_h, b_h = _carried_parameters(w_ih, b_ih, w_hh, b_hh)
    w_i_t, w_h_t = w_i.t(), w_h.t()
    K = max(c.steps for c in chunks) if chunks else 1
    Y = x.new_empty(R, H)
    if keep_for_backward:
        RZ, C, CN = x.new_empty(R, 2 * H), x.new_empty(R, 3, H), x.new_empty(R, H)
    minus_one = x.new_tensor(-1.0)
    G, scratch_rows = None, -1
    for c in chunks:
        k, m, rows = c.steps, c.rows, slice(c.offset, c.offset + c.steps * c.rows)
        if m != scratch_rows:
            # Scratch for m rows and its per-step views, made once per row count: slicing
            # inside the step loop would cost more Python time than the arithmetic.
            previous = G
            G = x.new_empty(K + 1, m, H)  # carried state g = (h + 1) / 2; G[0] = state before the chunk
            gi = x.new_empty(K, m, 3 * H)  # W_i x + b_i (n rows doubled)
            gh = x.new_empty(K, m, 3 * H)  # W_h g + b_h (n rows doubled)
            S = x.new_empty(K, m, H)  # s = (n + 1) / 2
            RZs = x.new_empty(K, m, 2 * H)  # r | z
            g_, s_, gh_, rz_ = G.unbind(0), S.unbind(0), gh.unbind(0), RZs.unbind(0)
            gi_rz, gi_n = gi[..., : 2 * H].unbind(0), gi[..., 2 * H:].unbind(0)
            gh_rz, gh_n = gh[..., : 2 * H].unbind(0), gh[..., 2 * H:].unbind(0)
            r_, z_ = RZs[..., :H].unbind(0), RZs[..., H:].unbind(0)
            if previous is None:
                torch.add(x.new_tensor(0.5), h0[:m], alpha=0.5, out=G[0])
            else:
                G[0].copy_(previous[0, :m])
            scratch_rows = m
        torch.addmm(b_i, x[rows], w_i_t, out=gi[:k].view(k * m, 3 * H))
        for j in range(k):
            g = g_[j]
            torch.addmm(b_h, g, w_h_t, out=gh_[j])
            torch.add(gi_rz[j], gh_rz[j], out=rz_[j]).sigmoid_()
            torch.addcmul(gi_n[j], r_[j], gh_n[j], out=s_[j]).sigmoid_()
            torch.lerp(s_[j], g, z_[j], out=g_[j + 1])
        torch.add(minus_one, G[1: k + 1], alpha=2, out=Y[rows].view(k, m, H))
        if keep_for_backward:
            # Local derivatives, with n = 2s - 1 and h = 2g - 1: dh'/dn = 1 - z,
            # dn/da_n = 1 - n^2 = 4 s (1 - s), dh'/dz = h - n = 2 (g - s); gh's n rows are 2x.
            # Stored without their constant factors (2, 2, 4): see _COEFFICIENT_FACTORS.
            rz, s_c = RZ[rows].view(k, m, 2 * H), S[:k]
            rz.copy_(RZs[:k])
            sig_grad = torch.addcmul(rz, rz, rz, value=-1)  # r (1 - r) | z (1 - z)
            s_grad = torch.addcmul(s_c, s_c, s_c, value=-1)  # s (1 - s)
            c_n = torch.addcmul(s_grad, s_grad, rz[..., H:], value=-1, out=CN[rows].view(k, m, H))  # (1 - z) s (1 - s)
            C_c = C[rows].view(k, m, 3, H)
            torch.mul(c_n, gh[:k, :, 2 * H:], out=C_c[:, :, 0]).mul_(sig_grad[..., :H])
            torch.mul(torch.sub(G[:k], s_c), sig_grad[..., H:], out=C_c[:, :, 1])
            torch.mul(c_n, rz[..., :H], out=C_c[:, :, 2])
        G[0].copy_(G[k])
    if keep_for_backward:
        return Y, RZ, C, CN
    return Y


class _GRUSequence(torch.autograd.Function):
    """``_gru_forward`` with a hand-written backward: three small ops per step for the
    recurrence; everything else per chunk of steps."""

    @staticmethod
    def forward(ctx, x, w_ih, b_ih, h0, w_hh, b_hh, chunks):
        Y, RZ, C, CN = _gru_forward(x, w_ih, b_ih, h0, w_hh, b_hh, keep_for_backward=True, chunks=chunks)
        ctx.save_for_backward(x, w_ih, h0, w_hh, Y, RZ, C, CN)
        ctx.chunks = chunks
        return Y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_Y):
        x, w_ih, h0, w_hh, Y, RZ, C, CN = ctx.saved_tensors
        chunks = ctx.chunks
        R, I = x.shape
        M, H = h0.shape
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w_ih = w_ih.new_zeros(3 * H, I)
        grad_b_ih = w_ih.new_zeros(3 * H)
        grad_w_hh = w_hh.new_zeros(3 * H, H)
        grad_b_hh = w_hh.new_zeros(3 * H)
        grad_h0 = h0.new_zeros(M, H)
        f = _gate_factors(w_hh, H)  # C and CN lack these factors; the weights used here carry them
        w_hh_f, w_ih_f = w_hh * f[:, None], w_ih * f[:, None]
        K = max(c.steps for c in chunks) if chunks else 1
        carry = None  # gradient on h at the step before the later chunk, from that chunk's steps
        scratch_rows = -1
        for i in reversed(range(len(chunks))):
            c = chunks[i]
            k, m, rows = c.steps, c.rows, slice(c.offset, c.offset + c.steps * c.rows)
            if m != scratch_rows:
                # D = total gradient on h_t; grad_gh = gradients of W_hh h + b_hh.
                D = grad_Y.new_empty(K, m, H)
                grad_gh = grad_Y.new_empty(K, m, 3, H)
                d_, d_row, ggh_ = D.unbind(0), D.unsqueeze(2).unbind(0), grad_gh.unbind(0)
                ggh_flat = grad_gh.view(K, m, 3 * H).unbind(0)
                scratch_rows = m
            c_ = C[rows].view(k, m, 3, H).unbind(0)
            z_ = RZ[rows].view(k, m, 2 * H)[..., H:].unbind(0)
            gY_ = grad_Y[rows].view(k, m, H).unbind(0)
            D[k - 1].copy_(gY_[k - 1])
            if carry is not None:  # the later chunk computes a prefix of these rows
                D[k - 1, : carry.shape[0]] += carry
            for j in reversed(range(k)):
                torch.mul(c_[j], d_row[j], out=ggh_[j])
                if j > 0:  # D_{t-1} = grad_Y[t-1] + D_t * z_t + grad_gh_t @ W_hh
                    torch.addmm(torch.addcmul(gY_[j - 1], d_[j], z_[j]), ggh_flat[j], w_hh_f, out=d_[j - 1])
                else:  # the part of D_{t0-1} that flows back through this chunk's first step
                    carry = torch.addmm(d_[0] * z_[0], ggh_flat[0], w_hh_f)
            g_gh = grad_gh[:k].view(k * m, 3 * H)
            g_rz = g_gh[:, : 2 * H]  # the r and z gates have the same gradient on the input side
            g_in = torch.mul(D[:k], CN[rows].view(k, m, H)).view(k * m, H)
            x_c = x[rows]
            if grad_x is not None:
                torch.addmm(g_in @ w_ih_f[2 * H:], g_rz, w_ih_f[: 2 * H], out=grad_x[rows])
            grad_w_ih[: 2 * H].addmm_(g_rz.t(), x_c)
            grad_w_ih[2 * H:].addmm_(g_in.t(), x_c)
            grad_b_ih[: 2 * H] += g_rz.sum(0)
            grad_b_ih[2 * H:] += g_in.sum(0)
            if i == 0:
                h_before = h0[:m]
            else:  # the previous chunk's last step (it computes at least these rows)
                p = chunks[i - 1]
                start = p.offset + (p.steps - 1) * p.rows
                h_before = Y[start: start + m]
            grad_w_hh.addmm_(g_gh[:m].t(), h_before)
            if k > 1:
                grad_w_hh.addmm_(g_gh[m:].t(), Y[c.offset: c.offset + (k - 1) * m])
            grad_b_hh += g_gh.sum(0)
        if carry is not None:
            grad_h0[: carry.shape[0]] = carry
        for grad in (grad_w_ih, grad_b_ih, grad_w_hh, grad_b_hh):
            grad.mul_(f if grad.dim() == 1 else f[:, None])
        return grad_x, grad_w_ih, grad_b_ih, grad_h0, grad_w_hh, grad_b_hh, None


def _check_gru(gru: nn.GRU):
    if gru.num_layers != 1 or gru.bidirectional or gru.batch_first or not gru.bias:
        raise ValueError("gru_sequence supports a one-layer, unidirectional, seq-first GRU with biases")


def _run_gru(gru: nn.GRU, x, h0, chunks):
    params = (gru.weight_ih_l0, gru.bias_ih_l0, gru.weight_hh_l0, gru.bias_hh_l0)
    w_ih, b_ih, w_hh, b_hh = params
    if torch.is_grad_enabled() and (x.requires_grad or h0.requires_grad or any(p.requires_grad for p in params)):
        return _GRUSequence.apply(x, w_ih, b_ih, h0, w_hh, b_hh, chunks)
    with torch.no_grad():
        return _gru_forward(x, w_ih, b_ih, h0, w_hh, b_hh, keep_for_backward=False, chunks=chunks)


def gru_sequence(gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """All hidden states [T, M, H] of the one-layer ``gru`` over x [T, M, I] from h0 [M, H].

    Same result as ``gru(x, h0[None])[0]``; on CPU computed by ``_gru_forward`` (see module doc).
    """
    _check_gru(gru)
    if x.dim() != 3 or x.shape[0] == 0 or tuple(h0.shape) != (x.shape[1], gru.hidden_size):
        raise ValueError(f"gru_sequence needs x [T >= 1, M, I] and h0 [M, {gru.hidden_size}], "
                         f"got {tuple(x.shape)} and {tuple(h0.shape)}")
    if x.device.type != "cpu":
        return gru(x, h0.unsqueeze(0).contiguous())[0]
    T, M, I = x.shape
    chunks = _packed_chunks(T, [M] * len(range(0, T, min(GRU_CHUNK_STEPS, T))))
    return _run_gru(gru, x.reshape(T * M, I), h0, chunks).view(T, M, gru.hidden_size)


def gru_packed(gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor, T: int, chunk_rows) -> torch.Tensor:
    """The one-layer ``gru`` over sequences of different lengths, in a packed layout.

    The M sequences are sorted so that those still running form a prefix: chunk c of
    ``GRU_CHUNK_STEPS`` steps computes rows ``[:chunk_rows[c]]`` only (a non-increasing count).
    x [R, I] holds, step after step, the computed rows of each step (R = ``packed_size(T,
    chunk_rows)``); the result [R, H] holds their hidden states in the same layout, from h0
    [M, H]. Each row equals ``gru_sequence`` on the full sequences: rows past a sequence's end in
    a dense layout are simply never computed (PyTorch's PackedSequence does the same per step).
    """
    _check_gru(gru)
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"gru_packed needs T >= 1 time steps, got {T!r}")
    if h0.dim() != 2 or h0.shape[1] != gru.hidden_size:
        raise ValueError(f"gru_packed needs h0 [M, {gru.hidden_size}], got {tuple(h0.shape)}")
    rows = _check_chunk_rows(T, h0.shape[0], chunk_rows)
    R = packed_size(T, rows)
    if tuple(x.shape) != (R, gru.input_size):
        raise ValueError(f"gru_packed needs x [{R}, {gru.input_size}] for T={T} and chunk_rows={rows}, "
                         f"got {tuple(x.shape)}")
    return _run_gru(gru, x.contiguous(), h0, _packed_chunks(T, rows))


# Skipping rows past episode ends has a fixed cost (sorting the batch by length, rebuilding
# per-step views when the row count changes); below this fraction of skipped rows the whole
# (trimmed) batch is computed instead.
RAGGED_MIN_SKIPPED_FRACTION = 0.1


class RNNAgent(nn.Module):
    """fc1 + ReLU -> GRU -> fc2, shared by ``n_agents`` agents; Q-values over ``n_actions``.

    Shapes: B batch, T time, N = n_agents, D = obs_dim, H = hidden_dim, A = n_actions.
    ``last_actions`` hold action indices; the value ``n_actions`` means "no previous action".
    Parameters: ``fc1_obs`` (the observation columns of fc1, and fc1's bias),
    ``fc1_last_action`` [A, H] and ``fc1_agent_id`` [N, H] (the one-hot columns of fc1, as rows;
    absent when the part is not used), ``rnn`` (an ``nn.GRU``), ``fc2``.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        n_agents: int,
        hidden_dim: int = 64,
        use_last_action: bool = True,
        use_agent_id: bool = True,
    ):
        super().__init__()
        for name, value in (("obs_dim", obs_dim), ("n_actions", n_actions), ("n_agents", n_agents),
                            ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RNNAgent: {name} must be a positive int, got {value!r}")
        self.obs_dim, self.n_actions, self.n_agents = obs_dim, n_actions, n_agents
        self.hidden_dim = hidden_dim
        self.use_last_action, self.use_agent_id = bool(use_last_action), bool(use_agent_id)
        self.fc1_obs = nn.Linear(obs_dim, hidden_dim)
        self.fc1_last_action = nn.Parameter(torch.empty(n_actions, hidden_dim)) if use_last_action else None
        self.fc1_agent_id = nn.Parameter(torch.empty(n_agents, hidden_dim)) if use_agent_id else None
        self.rnn = nn.GRU(hidden_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, n_actions)
        self.reset_input_layer()

    @property
    def input_dim(self) -> int:
        """Width of PyMARL's concatenated input: obs [+ one-hot last action] [+ one-hot agent id]."""
        return (self.obs_dim + (self.n_actions if self.use_last_action else 0)
                + (self.n_agents if self.use_agent_id else 0))

    @torch.no_grad()
    def reset_input_layer(self):
        """Initialise fc1 as ``nn.Linear(input_dim, hidden_dim)`` would: U(+-1/sqrt(input_dim))."""
        bound = 1.0 / math.sqrt(self.input_dim)
        for p in (self.fc1_obs.weight, self.fc1_obs.bias, self.fc1_last_action, self.fc1_agent_id):
            if p is not None:
                p.uniform_(-bound, bound)

    def concatenated_input_layer(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """fc1 as the (weight [H, input_dim], bias [H]) of a Linear on the concatenated input."""
        parts = [self.fc1_obs.weight]
        if self.use_last_action:
            parts.append(self.fc1_last_action.t())
        if self.use_agent_id:
            parts.append(self.fc1_agent_id.t())
        return torch.cat(parts, 1), self.fc1_obs.bias

    def initial_hidden(self, batch_size: int) -> torch.Tensor:
        """Zero hidden state [batch_size, N, H] on the agent's device and dtype."""
        w = self.fc2.weight
        return w.new_zeros(batch_size, self.n_agents, self.hidden_dim)

    def step(self, obs: torch.Tensor, last_actions: Optional[torch.Tensor], hidden: torch.Tensor):
        """One time step: obs [B, N, D], last_actions [B, N] long, hidden [B, N, H] ->
        (q [B, N, A], new hidden [B, N, H])."""
        self._check_obs(obs, 3, "[B, N, obs_dim]")
        q, h = self._forward_time_major(obs.unsqueeze(0), self._time_major_actions(last_actions, obs, 0), hidden)
        return q[0], h

    def unroll(self, obs: torch.Tensor, last_actions: Optional[torch.Tensor], hidden: Optional[torch.Tensor] = None,
               lengths: Optional[torch.Tensor] = None):
        """A whole sequence: obs [B, T, N, D], last_actions [B, T, N] long, hidden [B, N, H] or
        None (zeros) -> q [B, T, N, A] (contiguous).

        ``lengths`` [B] (optional): only rows ``t < lengths[b]`` of episode ``b`` are needed. Rows
        past an episode's length are then skipped where possible (see ``_unroll_ragged``): their
        Q-values are zero or computed anyway, the needed rows are exactly as without ``lengths``.
        """
        self._check_obs(obs, 4, "[B, T, N, obs_dim]")
        if obs.shape[1] == 0:
            raise ValueError(f"obs has no time steps: shape {tuple(obs.shape)}, expected T >= 1")
        la = self._time_major_actions(last_actions, obs, 1)
        B, T, N, _ = obs.shape
        if lengths is not None:
            if tuple(lengths.shape) != (B,) or lengths.is_floating_point():
                raise ValueError(f"lengths must be an integer tensor of shape ({B},), got "
                                 f"{tuple(lengths.shape)} {lengths.dtype}")
            episodes_per_chunk = self._chunk_episodes(lengths, T)
            skipped = B * T - packed_size(T, episodes_per_chunk)  # episode-rows never computed
            if obs.device.type == "cpu" and skipped >= RAGGED_MIN_SKIPPED_FRACTION * B * T:
                return self._unroll_ragged(obs, None if la is None else la.transpose(0, 1), hidden, lengths,
                                           episodes_per_chunk)
        # fc1 in the batch's own layout, so the wide observations are never copied; only the
        # narrow hidden activations are transposed to time-major for the recurrence.
        x = self._input_layer(obs, None if la is None else la.transpose(0, 1))
        x = x.view(B, T, N, self.hidden_dim).transpose(0, 1).reshape(T, B * N, self.hidden_dim)
        q, _ = self._recur(x, hidden, T, B, N)
        return q.transpose(0, 1).contiguous()

    @staticmethod
    def _chunk_episodes(lengths: torch.Tensor, T: int) -> list:
        """Per chunk of ``GRU_CHUNK_STEPS`` steps, how many episodes are still running at its start
        (whatever their order)."""
        K = min(GRU_CHUNK_STEPS, T)
        running = lengths.clamp(0, T).tolist()
        return [sum(1 for length in running if length > t0) for t0 in range(0, T, K)]

    def _unroll_ragged(self, obs, last_actions, hidden, lengths, episodes_per_chunk):
        """``unroll`` computing only the rows episodes need (masking axis 9: no forward passes on
        padded or post-terminal rows). Episodes are sorted by length so that those still running
        form a prefix; per chunk of ``GRU_CHUNK_STEPS`` steps only the episodes running at the
        chunk's start go through fc1, the GRU (``gru_packed``) and fc2.
        Needed rows and their gradients are exactly the full unroll's (the network is causal);
        rows never computed hold zero Q-values.
        """
        B, T, N, D = obs.shape
        H, A = self.hidden_dim, self.n_actions
        device = obs.device
        lengths = lengths.to(device=device, dtype=torch.long).clamp(0, T)
        order = torch.argsort(lengths, descending=True, stable=True)
        # The computed (time step, episode) pairs in the GRU's packed order: step-major, and
        # within a step the episodes still running, longest first.
        K = min(GRU_CHUNK_STEPS, T)
        steps, ranks = [], []
        for t0, n in zip(range(0, T, K), episodes_per_chunk):
            t = torch.arange(t0, min(t0 + K, T), device=device)
            steps.append(t.repeat_interleave(n))
            ranks.append(torch.arange(n, device=device).repeat(len(t)))
        steps, episodes = torch.cat(steps), order[torch.cat(ranks)]
        R = steps.numel()
        obs_rows = obs[episodes, steps].unsqueeze(0)  # [1, R, N, D]: gathered, never a full copy
        actions_rows = None if last_actions is None else last_actions[episodes, steps].unsqueeze(0)
        x_rows = self._input_layer(obs_rows, actions_rows)  # [R * N, H]: packed, as the GRU wants
        h0 = self.initial_hidden(B) if hidden is None else self._checked_hidden(hidden, B, N)
        Y = gru_packed(self.rnn, x_rows, h0.index_select(0, order).view(B * N, H), T,
                       [n * N for n in episodes_per_chunk])
        q_rows = self.fc2(Y).view(R, N, A)
        return q_rows.new_zeros(B * T, N, A).index_copy(0, episodes * T + steps, q_rows).view(B, T, N, A)

    # -- internals ---------------------------------------------------------------------------

    def _check_obs(self, obs, dims, layout):
        if not isinstance(obs, torch.Tensor) or not obs.is_floating_point() or obs.dim() != dims:
            got = f"{tuple(obs.shape)} {obs.dtype}" if isinstance(obs, torch.Tensor) else type(obs).__name__
            raise ValueError(f"obs must be a float tensor {layout}, got {got}")
        if obs.shape[-2] != self.n_agents or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"obs has shape {tuple(obs.shape)}, expected {layout} with "
                             f"n_agents={self.n_agents}, obs_dim={self.obs_dim}")

    def _time_major_actions(self, last_actions, obs, time_dim):
        """Validate last_actions against obs and return them as [T, B, N] (None if unused)."""
        if not self.use_last_action:
            return None
        expected = tuple(obs.shape[:-1])
        if not isinstance(last_actions, torch.Tensor) or tuple(last_actions.shape) != expected:
            got = tuple(last_actions.shape) if isinstance(last_actions, torch.Tensor) else repr(last_actions)
            raise ValueError(f"last_actions must be a tensor of shape {expected} (obs without its last dim), got {got}")
        if last_actions.is_floating_point() or last_actions.dtype == torch.bool:
            raise ValueError(f"last_actions must hold integer action indices, got dtype {last_actions.dtype}")
        if last_actions.numel():
            low, high = torch.aminmax(last_actions)
            if low < 0 or high > self.n_actions:
                raise ValueError(f"last_actions must be in [0, {self.n_actions}] ({self.n_actions} = no previous "
                                 f"action), got values in [{int(low)}, {int(high)}]")
        if time_dim == 0:
            return last_actions.unsqueeze(0)
        return last_actions.transpose(0, 1)

    def _input_layer(self, obs_tm, last_actions_tm):
        """relu(fc1([obs, one-hot last action, one-hot id])) for obs [T, B, N, D] -> [T*B*N, H].

        The bias and the one-hot columns form a small table with one row per (last action, agent)
        pair; its rows are gathered and used as the addend of the obs matrix product.
        """
        T, B, N, D = obs_tm.shape
        H = self.hidden_dim
        table = self.fc1_obs.bias.view(1, 1, H)
        index = None
        if self.use_last_action:
            # Row n_actions ("no previous action") is a constant zero: the zero one-hot.
            la_rows = torch.cat([self.fc1_last_action, self.fc1_last_action.new_zeros(1, H)], 0)
            table = table + la_rows.unsqueeze(1)
            index = last_actions_tm.long() * (N if self.use_agent_id else 1)
        if self.use_agent_id:
            table = table + self.fc1_agent_id.unsqueeze(0)
            agents = torch.arange(N, device=obs_tm.device)
            index = agents if index is None else index + agents
        obs_flat = obs_tm.reshape(T * B * N, D)
        if index is None:
            pre = F.linear(obs_flat, self.fc1_obs.weight, self.fc1_obs.bias)
        else:
            addend = F.embedding(index.expand(T, B, N).reshape(-1), table.reshape(-1, H))
            pre = addend.addmm_(obs_flat, self.fc1_obs.weight.t())
        return pre.relu_()

    def _forward_time_major(self, obs_tm, last_actions_tm, hidden):
        """obs [T, B, N, D] -> (q [T, B, N, A], last hidden [B, N, H])."""
        T, B, N, _ = obs_tm.shape
        x = self._input_layer(obs_tm, last_actions_tm).view(T, B * N, self.hidden_dim)
        return self._recur(x, hidden, T, B, N)

    def _checked_hidden(self, hidden, B, N):
        if tuple(hidden.shape) != (B, N, self.hidden_dim):
            raise ValueError(f"hidden has shape {tuple(hidden.shape)}, expected {(B, N, self.hidden_dim)} "
                             "[B, N, hidden_dim]")
        return hidden

    def _recur(self, x, hidden, T, B, N):
        """x [T, B*N, H] (after fc1) -> (q [T, B, N, A], last hidden [B, N, H])."""
        H = self.hidden_dim
        hidden = self.initial_hidden(B) if hidden is None else self._checked_hidden(hidden, B, N)
        Y = gru_sequence(self.rnn, x, hidden.reshape(B * N, H))
        q = self.fc2(Y).view(T, B, N, self.n_actions)
        return q, Y[-1].view(B, N, H)
