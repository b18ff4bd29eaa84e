"""The recurrent agent network, shared by all agents (PyMARL's RNN agent, computed faster).

Mathematically the network is PyMARL's::

    x_t = [obs_t, one_hot(last_action_t), one_hot(agent_id)]    (last two parts optional)
    h_t = GRU(relu(fc1(x_t)), h_{t-1});   q_t = fc2(h_t)

with one set of weights for every agent (agents are folded into the batch). Two things differ
from the obvious implementation, both for speed, neither for the result:

* The one-hot parts of ``x_t`` are never built. ``fc1`` applied to the concatenation equals
  ``fc1_obs(obs)`` plus the weight column of the last action plus the weight column of the agent,
  so those columns are looked up by index. "No previous action" (index ``n_actions``, used at
  t=0) is the zero one-hot: it adds nothing, and has no parameters.
* A whole sequence goes through one recurrent call. On CUDA that is ``torch.nn.GRU`` (cuDNN). On
  CPU, ``nn.GRU``'s backward is an op-by-op autograd graph and measured no faster than a
  ``GRUCell`` loop, so ``gru_sequence`` runs the same GRU (the ``nn.GRU``'s own parameters) with a
  hand-written backward that needs four small ops per step and computes the weight gradients
  for all steps in one matrix product each.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def _n_gate_doubled(param: torch.Tensor, hidden_dim: int) -> torch.Tensor:
    """The GRU weight or bias with its n-gate rows times two (exact in floating point).

    With them the candidate state needs no extra multiply: tanh(a) = 2 * sigmoid(2a) - 1, and
    sigmoid is several times cheaper than tanh on CPU.
    """
    return torch.cat([param[: 2 * hidden_dim], param[2 * hidden_dim:] * 2], 0)


def _gru_loop(x, w_ih, b_ih, h0, w_hh, b_hh, keep_for_backward: bool):
    """PyTorch's GRU equations over x [T, M, I] from h0 [M, H]; returns Y [T, M, H] (and saves).

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h.
    With ``keep_for_backward`` it also returns, per step, r|z and the local derivatives
    c_r = dh'/d(r pre-activation) / ..., laid out as ``coef[t] = [c_r, c_z, c_n]`` where, for an
    incoming gradient g on h', g * c_r, g * c_z and g * c_n are the gradients of the r, z and n
    pre-activations (the input side of n; the hidden side is that times r).
    """
    T, M = x.shape[0], x.shape[1]
    H = h0.shape[-1]
    w_hh_t = _n_gate_doubled(w_hh, H).t()
    b_hh2 = _n_gate_doubled(b_hh, H)
    gi = torch.addmm(_n_gate_doubled(b_ih, H), x.reshape(T * M, -1), _n_gate_doubled(w_ih, H).t())
    gi = gi.view(T, M, 3 * H)
    Y = x.new_empty(T, M, H)
    if keep_for_backward:
        RZ = x.new_empty(T, M, 2 * H)
        coef = x.new_empty(T, M, 3, H)
    minus_one = x.new_tensor(-1.0)
    one = x.new_tensor(1.0)
    h = h0
    for t in range(T):
        gh = torch.addmm(b_hh2, h, w_hh_t)
        g = gi[t]
        rz = torch.add(g[:, : 2 * H], gh[:, : 2 * H], out=RZ[t] if keep_for_backward else None).sigmoid_()
        r, z = rz[:, :H], rz[:, H:]
        gh_n2 = gh[:, 2 * H:]  # 2 * (W_hn h + b_hn)
        n = torch.add(minus_one, torch.addcmul(g[:, 2 * H:], r, gh_n2).sigmoid_(), alpha=2)
        h_minus_n = h - n
        h_new = torch.addcmul(n, z, h_minus_n, out=Y[t])
        if keep_for_backward:
            c = coef[t]
            sig_grad = rz * (1 - rz)  # r(1-r) | z(1-z)
            torch.mul(h_minus_n, sig_grad[:, H:], out=c[:, 1])
            c_n = torch.mul(torch.addcmul(one, n, n, value=-1), 1 - z, out=c[:, 2])
            torch.mul(c_n * gh_n2, sig_grad[:, :H], out=c[:, 0]).mul_(0.5)
        h = h_new
    if keep_for_backward:
        return Y, RZ, coef
    return Y


class _GRUSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, b_ih, h0, w_hh, b_hh):
        Y, RZ, coef = _gru_loop(x, w_ih, b_ih, h0, w_hh, b_hh, keep_for_backward=True)
        ctx.save_for_backward(x, w_ih, h0, w_hh, Y, RZ, coef)
        return Y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_Y):
        x, w_ih, h0, w_hh, Y, RZ, coef = ctx.saved_tensors
        T, M, H = Y.shape
        # Pre-activation gradients: hidden side [r, z, n_h] and the input side of n.
        grad_gh = grad_Y.new_empty(T, M, 3, H)
        grad_gi_n = grad_Y.new_empty(T, M, H)
        grad_h = None
        for t in range(T - 1, -1, -1):
            grad_h = grad_Y[t] if grad_h is None else grad_h + grad_Y[t]
            c, out = coef[t], grad_gh[t]
            torch.mul(c[:, :2], grad_h.unsqueeze(1), out=out[:, :2])
            g_n = torch.mul(c[:, 2], grad_h, out=grad_gi_n[t])
            torch.mul(g_n, RZ[t, :, :H], out=out[:, 2])
            grad_h = torch.addmm(grad_h * RZ[t, :, H:], out.view(M, 3 * H), w_hh)
        need = ctx.needs_input_grad
        gh2 = grad_gh.view(T * M, 3 * H)
        g_rz = gh2[:, : 2 * H]  # the r and z gradients are the same on the input side
        g_n = grad_gi_n.view(T * M, H)
        x2 = x.reshape(T * M, -1)
        grad_x = grad_w_ih = grad_b_ih = grad_w_hh = grad_b_hh = None
        if need[0]:
            grad_x = torch.addmm(g_n @ w_ih[2 * H:], g_rz, w_ih[: 2 * H]).view_as(x)
        if need[1]:
            grad_w_ih = torch.cat([g_rz.t() @ x2, g_n.t() @ x2], 0)
        if need[2]:
            grad_b_ih = torch.cat([g_rz.sum(0), g_n.sum(0)], 0)
        if need[4]:
            grad_w_hh = grad_gh[0].view(M, 3 * H).t() @ h0
            if T > 1:
                grad_w_hh += gh2[M:].t() @ Y[:-1].reshape((T - 1) * M, H)
        if need[5]:
            grad_b_hh = gh2.sum(0)
        return grad_x, grad_w_ih, grad_b_ih, (grad_h if need[3] else None), grad_w_hh, grad_b_hh


def gru_sequence(gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """All hidden states [T, M, H] of the one-layer ``gru`` over x [T, M, I] from h0 [M, H].

    Same result as ``gru(x, h0[None])[0]``; on CPU computed by ``_gru_loop`` (see module doc).
    """
    if gru.num_layers != 1 or gru.bidirectional or gru.batch_first or not gru.bias:
        raise ValueError("gru_sequence supports a one-layer, unidirectional, seq-first GRU with biases")
    if x.device.type != "cpu":
        return gru(x, h0.unsqueeze(0))[0]
    params = (gru.weight_ih_l0, gru.bias_ih_l0, gru.weight_hh_l0, gru.bias_hh_l0)
    w_ih, b_ih, w_hh, b_hh = params
    if torch.is_grad_enabled() and (x.requires_grad or h0.requires_grad or any(p.requires_grad for p in params)):
        return _GRUSequence.apply(x, w_ih, b_ih, h0, w_hh, b_hh)
    with torch.no_grad():
        return _gru_loop(x, w_ih, b_ih, h0, w_hh, b_hh, keep_for_backward=False)


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

    def unroll(self, obs: torch.Tensor, last_actions: Optional[torch.Tensor], hidden: Optional[torch.Tensor] = None):
        """A whole sequence: obs [B, T, N, D], last_actions [B, T, N] long, hidden [B, N, H] or
        None (zeros) -> q [B, T, N, A] (contiguous)."""
        self._check_obs(obs, 4, "[B, T, N, obs_dim]")
        la = self._time_major_actions(last_actions, obs, 1)
        q, _ = self._forward_time_major(obs.transpose(0, 1), la, hidden)
        return q.transpose(0, 1).contiguous()

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
            pre = torch.addmm(addend, obs_flat, self.fc1_obs.weight.t())
        return pre.relu_()

    def _forward_time_major(self, obs_tm, last_actions_tm, hidden):
        """obs [T, B, N, D] -> (q [T, B, N, A], last hidden [B, N, H])."""
        T, B, N, _ = obs_tm.shape
        H = self.hidden_dim
        if hidden is None:
            hidden = self.initial_hidden(B)
        elif tuple(hidden.shape) != (B, N, H):
            raise ValueError(f"hidden has shape {tuple(hidden.shape)}, expected {(B, N, H)} [B, N, hidden_dim]")
        x = self._input_layer(obs_tm, last_actions_tm).view(T, B * N, H)
        Y = gru_sequence(self.rnn, x, hidden.reshape(B * N, H))
        q = self.fc2(Y).view(T, B, N, self.n_actions)
        return q, Y[-1].view(B, N, H)
