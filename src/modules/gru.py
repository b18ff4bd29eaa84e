"""A one-layer GRU over whole sequences, with a hand-written backward for the CPU.

``gru_sequence(gru, x, h0)`` gives the same hidden states as ``gru(x, h0[None])[0]`` for a
one-layer ``torch.nn.GRU`` and uses that module's own parameters. On CUDA it is the module's
call (cuDNN). On CPU, ``nn.GRU``'s backward is an op-by-op autograd graph that measured barely
faster than a ``GRUCell`` loop, so the same GRU runs as one autograd function with a
hand-written backward: per time step only the recurrent matrix product and a few elementwise
ops, everything else (input projection, derivative coefficients, weight gradients) batched over
chunks of ``GRU_CHUNK_STEPS`` steps.

``gru_packed`` is the same function over sequences of different lengths in a packed layout:
each chunk of steps holds only the sequences still running (``RNNAgent`` uses it to skip the
rows an episode does not need). Tests compare both with ``nn.GRU`` and with a ``GRUCell`` loop,
values and gradients.

``gru_members_sequence`` and ``gru_members_packed`` run K independent GRUs at once, one per
member of a stack of training runs (``qmixlab.modules.stacked``): weights [K, 3H, I] etc., inputs
[K, ...]. On CPU it is the same kernel with every matrix product batched over members (bmm), so
a step costs the same number of ops for K members as for one; elsewhere it is an autograd
composition of per-step ops (``_gru_members_autograd``).
"""

from __future__ import annotations

from typing import List, NamedTuple

import torch
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
    W h + b = (2 W) g + (b - W 1). The parameters may carry a leading member dimension.
    """
    H = w_hh.shape[-1]
    scale = w_hh.new_ones(3 * H)
    scale[2 * H:] = 2
    return (w_ih * scale[:, None], b_ih * scale,
            w_hh * (2 * scale)[:, None], (b_hh - w_hh.sum(-1)) * scale)


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


def _carried_parameters_cached(gru: nn.GRU, params):
    """``_carried_parameters`` of ``gru``, recomputed only when a parameter changed (in place or
    replaced): a rollout calls the GRU once per step with the same weights."""
    key = tuple((p.data_ptr(), p._version) for p in params)
    cached = getattr(gru, "_carried_cache", None)
    if cached is None or cached[0] != key:
        cached = (key, _carried_parameters(*params))
        gru._carried_cache = cached
    return cached[1]


def _gru_forward(x, w_ih, b_ih, h0, w_hh, b_hh, keep_for_backward: bool, chunks: List[_Chunk], carried=None):
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
    w_i, b_i, w_h, b_h = carried if carried is not None else _carried_parameters(w_ih, b_ih, w_hh, b_hh)
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
        carried = _carried_parameters_cached(gru, (w_ih, b_ih, w_hh, b_hh))
        return _gru_forward(x, w_ih, b_ih, h0, w_hh, b_hh, keep_for_backward=False, chunks=chunks, carried=carried)


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


# --------------------------------------------------------------------------- K GRUs at once
# The member-batched kernel below is ``_gru_forward`` / ``_GRUSequence`` line for line, with a
# leading member dimension P on every tensor and bmm for every matrix product. Its scratch is
# member-major ([P, steps, rows, ...]) so that a chunk's rows of one member are contiguous for
# the chunk-wide products; a step's slice [:, j] is then batch-strided, which bmm and the
# elementwise ops take as it is.


def _gru_members_forward(x, w_ih, b_ih, h0, w_hh, b_hh, keep_for_backward: bool, chunks: List[_Chunk],
                         carried=None):
    """``_gru_forward`` for P members: x [P, R, I], h0 [P, M, H], weights [P, 3H, I] etc.;
    returns Y [P, R, H] (and RZ, C, CN with the same leading member dimension)."""
    P, R, I = x.shape
    H = h0.shape[-1]
    w_i, b_i, w_h, b_h = carried if carried is not None else _carried_parameters(w_ih, b_ih, w_hh, b_hh)
    w_i_t, w_h_t = w_i.transpose(1, 2), w_h.transpose(1, 2)
    b_i_row, b_h_row = b_i.unsqueeze(1), b_h.unsqueeze(1)
    K = max(c.steps for c in chunks) if chunks else 1
    Y = x.new_empty(P, R, H)
    if keep_for_backward:
        RZ, C, CN = x.new_empty(P, R, 2 * H), x.new_empty(P, R, 3, H), x.new_empty(P, R, H)
    minus_one = x.new_tensor(-1.0)
    G, scratch_rows = None, -1
    for c in chunks:
        k, m, rows = c.steps, c.rows, slice(c.offset, c.offset + c.steps * c.rows)
        if m != scratch_rows:
            previous = G
            G = x.new_empty(P, K + 1, m, H)
            gi = x.new_empty(P, K, m, 3 * H)
            gh = x.new_empty(P, K, m, 3 * H)
            S = x.new_empty(P, K, m, H)
            RZs = x.new_empty(P, K, m, 2 * H)
            g_, s_, gh_, rz_ = G.unbind(1), S.unbind(1), gh.unbind(1), RZs.unbind(1)
            gi_rz, gi_n = gi[..., : 2 * H].unbind(1), gi[..., 2 * H:].unbind(1)
            gh_rz, gh_n = gh[..., : 2 * H].unbind(1), gh[..., 2 * H:].unbind(1)
            r_, z_ = RZs[..., :H].unbind(1), RZs[..., H:].unbind(1)
            if previous is None:
                torch.add(x.new_tensor(0.5), h0[:, :m], alpha=0.5, out=G[:, 0])
            else:
                G[:, 0].copy_(previous[:, 0, :m])
            scratch_rows = m
        torch.baddbmm(b_i_row, x[:, rows], w_i_t, out=gi[:, :k].view(P, k * m, 3 * H))
        for j in range(k):
            g = g_[j]
            torch.baddbmm(b_h_row, g, w_h_t, out=gh_[j])
            torch.add(gi_rz[j], gh_rz[j], out=rz_[j]).sigmoid_()
            torch.addcmul(gi_n[j], r_[j], gh_n[j], out=s_[j]).sigmoid_()
            torch.lerp(s_[j], g, z_[j], out=g_[j + 1])
        torch.add(minus_one, G[:, 1: k + 1], alpha=2, out=Y[:, rows].view(P, k, m, H))
        if keep_for_backward:  # as in _gru_forward
            rz, s_c = RZ[:, rows].view(P, k, m, 2 * H), S[:, :k]
            rz.copy_(RZs[:, :k])
            sig_grad = torch.addcmul(rz, rz, rz, value=-1)
            s_grad = torch.addcmul(s_c, s_c, s_c, value=-1)
            c_n = torch.addcmul(s_grad, s_grad, rz[..., H:], value=-1, out=CN[:, rows].view(P, k, m, H))
            C_c = C[:, rows].view(P, k, m, 3, H)
            torch.mul(c_n, gh[:, :k, :, 2 * H:], out=C_c[..., 0, :]).mul_(sig_grad[..., :H])
            torch.mul(torch.sub(G[:, :k], s_c), sig_grad[..., H:], out=C_c[..., 1, :])
            torch.mul(c_n, rz[..., :H], out=C_c[..., 2, :])
        G[:, 0].copy_(G[:, k])
    if keep_for_backward:
        return Y, RZ, C, CN
    return Y


class _GRUMembers(torch.autograd.Function):
    """``_GRUSequence`` for P members (``_gru_members_forward``), backward batched likewise."""

    @staticmethod
    def forward(ctx, x, w_ih, b_ih, h0, w_hh, b_hh, chunks):
        Y, RZ, C, CN = _gru_members_forward(x, w_ih, b_ih, h0, w_hh, b_hh, keep_for_backward=True, chunks=chunks)
        ctx.save_for_backward(x, w_ih, h0, w_hh, Y, RZ, C, CN)
        ctx.chunks = chunks
        return Y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_Y):
        x, w_ih, h0, w_hh, Y, RZ, C, CN = ctx.saved_tensors
        chunks = ctx.chunks
        grad_Y = grad_Y.contiguous()  # viewed per chunk below
        P, R, I = x.shape
        M, H = h0.shape[1:]
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w_ih = w_ih.new_zeros(P, 3 * H, I)
        grad_b_ih = w_ih.new_zeros(P, 3 * H)
        grad_w_hh = w_hh.new_zeros(P, 3 * H, H)
        grad_b_hh = w_hh.new_zeros(P, 3 * H)
        grad_h0 = h0.new_zeros(P, M, H)
        f = _gate_factors(w_hh, H)
        w_hh_f, w_ih_f = w_hh * f[:, None], w_ih * f[:, None]
        K = max(c.steps for c in chunks) if chunks else 1
        carry = None
        scratch_rows = -1
        for i in reversed(range(len(chunks))):
            c = chunks[i]
            k, m, rows = c.steps, c.rows, slice(c.offset, c.offset + c.steps * c.rows)
            if m != scratch_rows:
                D = grad_Y.new_empty(P, K, m, H)
                grad_gh = grad_Y.new_empty(P, K, m, 3, H)
                d_, d_row, ggh_ = D.unbind(1), D.unsqueeze(3).unbind(1), grad_gh.unbind(1)
                ggh_flat = grad_gh.view(P, K, m, 3 * H).unbind(1)
                scratch_rows = m
            c_ = C[:, rows].view(P, k, m, 3, H).unbind(1)
            z_ = RZ[:, rows].view(P, k, m, 2 * H)[..., H:].unbind(1)
            gY_ = grad_Y[:, rows].view(P, k, m, H).unbind(1)
            D[:, k - 1].copy_(gY_[k - 1])
            if carry is not None:
                D[:, k - 1, : carry.shape[1]] += carry
            for j in reversed(range(k)):
                torch.mul(c_[j], d_row[j], out=ggh_[j])
                if j > 0:
                    torch.baddbmm(torch.addcmul(gY_[j - 1], d_[j], z_[j]), ggh_flat[j], w_hh_f, out=d_[j - 1])
                else:
                    carry = torch.baddbmm(d_[0] * z_[0], ggh_flat[0], w_hh_f)
            g_gh = grad_gh[:, :k].view(P, k * m, 3 * H)
            g_rz = g_gh[..., : 2 * H]
            g_in = torch.mul(D[:, :k], CN[:, rows].view(P, k, m, H)).view(P, k * m, H)
            x_c = x[:, rows]
            if grad_x is not None:
                torch.baddbmm(torch.bmm(g_in, w_ih_f[:, 2 * H:]), g_rz, w_ih_f[:, : 2 * H], out=grad_x[:, rows])
            grad_w_ih[:, : 2 * H].baddbmm_(g_rz.transpose(1, 2), x_c)
            grad_w_ih[:, 2 * H:].baddbmm_(g_in.transpose(1, 2), x_c)
            grad_b_ih[:, : 2 * H] += g_rz.sum(1)
            grad_b_ih[:, 2 * H:] += g_in.sum(1)
            if i == 0:
                h_before = h0[:, :m]
            else:
                p = chunks[i - 1]
                start = p.offset + (p.steps - 1) * p.rows
                h_before = Y[:, start: start + m]
            grad_w_hh.baddbmm_(g_gh[:, :m].transpose(1, 2), h_before)
            if k > 1:
                grad_w_hh.baddbmm_(g_gh[:, m:].transpose(1, 2), Y[:, c.offset: c.offset + (k - 1) * m])
            grad_b_hh += g_gh.sum(1)
        if carry is not None:
            grad_h0[:, : carry.shape[1]] = carry
        for grad in (grad_w_ih, grad_b_ih, grad_w_hh, grad_b_hh):
            grad.mul_(f if grad.dim() == 2 else f[:, None])
        return grad_x, grad_w_ih, grad_b_ih, grad_h0, grad_w_hh, grad_b_hh, None


def _gru_members_autograd(x, w_ih, b_ih, h0, w_hh, b_hh, chunks: List[_Chunk]):
    """The members' GRU as plain autograd ops (any device): PyTorch's GRU equations step by
    step over the packed layout, each step on the rows its chunk computes."""
    H = h0.shape[-1]
    h, outputs = h0, []
    for c in chunks:
        h = h[:, : c.rows]
        gi = torch.baddbmm(b_ih.unsqueeze(1), x[:, c.offset: c.offset + c.steps * c.rows], w_ih.transpose(1, 2))
        gi = gi.view(x.shape[0], c.steps, c.rows, 3 * H)
        for j in range(c.steps):
            gh = torch.baddbmm(b_hh.unsqueeze(1), h, w_hh.transpose(1, 2))
            i_r, i_z, i_n = gi[:, j].chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = n + z * (h - n)  # (1 - z) * n + z * h
            outputs.append(h)
    if not outputs:
        return x.new_zeros(x.shape[0], 0, H)
    return torch.cat(outputs, dim=1)


def _check_member_weights(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):
    """The members' GRU parameters as ``nn.GRU`` names them, each with a leading member dim."""
    if h0.dim() != 3:
        raise ValueError(f"the members' GRU needs h0 [K, M, H], got {tuple(h0.shape)}")
    P, _, H = h0.shape
    I = x.shape[-1]
    expected = {"weight_ih": (P, 3 * H, I), "weight_hh": (P, 3 * H, H), "bias_ih": (P, 3 * H),
                "bias_hh": (P, 3 * H)}
    for name, value in (("weight_ih", weight_ih), ("weight_hh", weight_hh), ("bias_ih", bias_ih),
                        ("bias_hh", bias_hh)):
        if tuple(value.shape) != expected[name]:
            raise ValueError(f"the members' GRU needs {name} of shape {expected[name]} for K={P} members, "
                             f"hidden size {H} and input size {I}, got {tuple(value.shape)}")


def _run_gru_members(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, chunks, cache_owner):
    params = (weight_ih, bias_ih, weight_hh, bias_hh)
    if x.device.type != "cpu":
        return _gru_members_autograd(x, weight_ih, bias_ih, h0, weight_hh, bias_hh, chunks)
    if torch.is_grad_enabled() and (x.requires_grad or h0.requires_grad or any(p.requires_grad for p in params)):
        return _GRUMembers.apply(x, weight_ih, bias_ih, h0, weight_hh, bias_hh, chunks)
    with torch.no_grad():
        carried = (_carried_parameters_cached(cache_owner, params) if cache_owner is not None
                   else _carried_parameters(*params))
        return _gru_members_forward(x, weight_ih, bias_ih, h0, weight_hh, bias_hh, keep_for_backward=False,
                                    chunks=chunks, carried=carried)


def gru_members_sequence(x: torch.Tensor, h0: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                         bias_ih: torch.Tensor, bias_hh: torch.Tensor, cache_owner=None) -> torch.Tensor:
    """K independent one-layer GRUs: member k's hidden states [T, M, H] over x[k] [T, M, I] from
    h0[k] [M, H] with weights weight_ih[k] [3H, I], weight_hh[k] [3H, H], bias_ih[k], bias_hh[k]
    [3H] (``nn.GRU``'s parameters, gates r|z|n). x [K, T, M, I] -> [K, T, M, H].

    ``cache_owner`` (optional, any object): where no-grad calls keep the rewritten weights
    between calls, recomputed when a weight changes (as ``gru_sequence`` does on its module).
    """
    if x.dim() != 4 or x.shape[1] == 0:
        raise ValueError(f"gru_members_sequence needs x [K, T >= 1, M, I], got {tuple(x.shape)}")
    P, T, M, I = x.shape
    _check_member_weights(x, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    if tuple(h0.shape[:2]) != (P, M):
        raise ValueError(f"gru_members_sequence needs h0 [K={P}, M={M}, H] for x {tuple(x.shape)}, "
                         f"got {tuple(h0.shape)}")
    chunks = _packed_chunks(T, [M] * len(range(0, T, min(GRU_CHUNK_STEPS, T))))
    Y = _run_gru_members(x.reshape(P, T * M, I), h0, weight_ih, weight_hh, bias_ih, bias_hh, chunks, cache_owner)
    return Y.view(P, T, M, h0.shape[-1])


def gru_members_packed(x: torch.Tensor, h0: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                       bias_ih: torch.Tensor, bias_hh: torch.Tensor, T: int, chunk_rows,
                       cache_owner=None) -> torch.Tensor:
    """``gru_packed`` for K members sharing one packed layout: x [K, R, I] (R = ``packed_size(T,
    chunk_rows)``), h0 [K, M, H], weights as in ``gru_members_sequence`` -> [K, R, H]. Chunk c
    computes rows ``[:chunk_rows[c]]`` of every member."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"gru_members_packed needs T >= 1 time steps, got {T!r}")
    if x.dim() != 3:
        raise ValueError(f"gru_members_packed needs x [K, R, I], got {tuple(x.shape)}")
    _check_member_weights(x, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    P, M = h0.shape[:2]
    rows = _check_chunk_rows(T, M, chunk_rows)
    R = packed_size(T, rows)
    if tuple(x.shape[:2]) != (P, R):
        raise ValueError(f"gru_members_packed needs x [K={P}, {R}, I] for T={T} and chunk_rows={rows}, "
                         f"got {tuple(x.shape)}")
    return _run_gru_members(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, _packed_chunks(T, rows), cache_owner)
