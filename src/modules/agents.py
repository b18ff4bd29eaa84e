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
* A whole sequence goes through one recurrent call (``qmixlab.modules.gru``: the ``nn.GRU``'s
  own parameters, with a hand-written backward on CPU), and fc1, the GRU's input projection and
  fc2 run once over all time steps.

With ``lengths`` (the rows each episode needs, masking axis 9 of ``docs/masking.md``),
``unroll`` sorts the episodes by length and runs fc1, the GRU (``gru_packed``: the same function
over a packed layout in which each chunk of steps holds only the episodes still running) and fc2
on those rows only.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from qmixlab.modules import gru as gru_kernel
from qmixlab.modules.gru import gru_packed, gru_sequence, packed_size


# Skipping rows past episode ends has a fixed cost (sorting the batch by length, rebuilding
# per-step views when the row count changes); below this fraction of skipped rows the whole
# (trimmed) batch is computed instead.
RAGGED_MIN_SKIPPED_FRACTION = 0.1


def check_agent_obs(obs, dims: int, layout: str, n_agents: int, obs_dim: int, detail: str = "") -> None:
    """An agent network's observation input: a float tensor of ``dims`` dimensions ending in
    ``[n_agents, obs_dim]``; the error names the shape expected (``layout``)."""
    if not isinstance(obs, torch.Tensor) or not obs.is_floating_point() or obs.dim() != dims:
        got = f"{tuple(obs.shape)} {obs.dtype}" if isinstance(obs, torch.Tensor) else type(obs).__name__
        raise ValueError(f"obs must be a float tensor {layout}, got {got}")
    if obs.shape[-2] != n_agents or obs.shape[-1] != obs_dim:
        raise ValueError(f"obs has shape {tuple(obs.shape)}, expected {layout} with "
                         f"n_agents={n_agents}, obs_dim={obs_dim}{detail}")


def check_last_actions(last_actions, obs, n_actions: int) -> None:
    """Previous actions shaped like ``obs`` without its last dimension, integer indices in
    ``[0, n_actions]`` (``n_actions``: no previous action)."""
    expected = tuple(obs.shape[:-1])
    if not isinstance(last_actions, torch.Tensor) or tuple(last_actions.shape) != expected:
        got = tuple(last_actions.shape) if isinstance(last_actions, torch.Tensor) else repr(last_actions)
        raise ValueError(f"last_actions must be a tensor of shape {expected} (obs without its last dim), got {got}")
    if last_actions.is_floating_point() or last_actions.dtype == torch.bool:
        raise ValueError(f"last_actions must hold integer action indices, got dtype {last_actions.dtype}")
    if last_actions.numel():
        low, high = torch.aminmax(last_actions)
        if low < 0 or high > n_actions:
            raise ValueError(f"last_actions must be in [0, {n_actions}] ({n_actions} = no previous "
                             f"action), got values in [{int(low)}, {int(high)}]")


def ragged_chunks(lengths: Optional[torch.Tensor], obs: torch.Tensor, chunk_episodes, members: int = 1):
    """Whether an unroll of ``obs`` [B', T, ...] should skip rows: with ``lengths`` [B'] (the rows
    each episode needs, checked here), the per-chunk episode counts ``chunk_episodes(lengths, T)``
    when skipping saves at least ``RAGGED_MIN_SKIPPED_FRACTION`` of the rows on CPU (``members``
    runs share each chunk's count), else None (compute every row)."""
    if lengths is None:
        return None
    rows, T = obs.shape[:2]
    if tuple(lengths.shape) != (rows,) or lengths.is_floating_point():
        raise ValueError(f"lengths must be an integer tensor of shape ({rows},), got "
                         f"{tuple(lengths.shape)} {lengths.dtype}")
    episodes_per_chunk = chunk_episodes(lengths, T)
    skipped = rows * T - members * packed_size(T, episodes_per_chunk)  # episode-rows never computed
    if obs.device.type == "cpu" and skipped >= RAGGED_MIN_SKIPPED_FRACTION * rows * T:
        return episodes_per_chunk
    return None


def packed_steps_and_ranks(T: int, episodes_per_chunk, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (time step, rank) pairs ``gru_packed`` computes, in its packed order: step-major, and
    within a step ranks ``0..n-1`` of the episodes still running at its chunk's start, when the
    episodes are sorted longest first (``episodes_per_chunk``: ``RNNAgent._chunk_episodes``)."""
    chunk = min(gru_kernel.GRU_CHUNK_STEPS, T)
    steps, ranks = [], []
    for t0, n in zip(range(0, T, chunk), episodes_per_chunk):
        t = torch.arange(t0, min(t0 + chunk, T), device=device)
        steps.append(t.repeat_interleave(n))
        ranks.append(torch.arange(n, device=device).repeat(len(t)))
    return torch.cat(steps), torch.cat(ranks)


def packed_rows(lengths: torch.Tensor, T: int, episodes_per_chunk):
    """lengths [B] -> (order [B]: the episodes longest first, steps [R], episodes [R]): the
    (time step, episode) pairs ``gru_packed`` computes, in its packed order."""
    order = torch.argsort(lengths.clamp(0, T), descending=True, stable=True)
    steps, ranks = packed_steps_and_ranks(T, episodes_per_chunk, lengths.device)
    return order, steps, order[ranks]


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
        episodes_per_chunk = ragged_chunks(lengths, obs, self._chunk_episodes)
        if episodes_per_chunk is not None:
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
        """Per chunk of ``GRU_CHUNK_STEPS`` steps (``qmixlab.modules.gru``), how many episodes are
        still running at its start (whatever their order)."""
        K = min(gru_kernel.GRU_CHUNK_STEPS, T)
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
        order, steps, episodes = packed_rows(lengths, T, episodes_per_chunk)
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
        check_agent_obs(obs, dims, layout, self.n_agents, self.obs_dim)

    def _time_major_actions(self, last_actions, obs, time_dim):
        """Validate last_actions against obs and return them as [T, B, N] (None if unused)."""
        if not self.use_last_action:
            return None
        check_last_actions(last_actions, obs, self.n_actions)
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
