"""Networks stacked over members: K independent training runs (seeds) computed in one call.

``stack_members(modules)`` takes K modules of one class with the same hyper-parameters (one per
run, each initialised with its own seed) and returns one module whose every parameter carries a
leading member dimension: the parameter ``name`` of shape ``s`` becomes ``[K, *s]`` under the
same name, and ``parameters()`` yields them in the single module's order (an optimiser's state
can be sliced per member by position). Member k's values start as ``modules[k]``'s.

Batches are member-major: every tensor given to a stacked module has leading dimension K*B, and
rows ``[k*B, (k+1)*B)`` belong to member k. Member k's rows of every output are what
``modules[k]`` computes on its rows (to float rounding: batched matrix products may sum in
another order), and its gradients reach only member k's slices of the parameters.

* ``StackedRNNAgent``: ``RNNAgent`` with every product batched over members (one bmm per step
  for all members; ``qmixlab.modules.gru.gru_members_packed`` for the recurrence).
* ``StackedQMixer``: QMIX's hypernetworks as linear layers batched over members.
* ``StackedVDNMixer``: the sum (no parameters).
* ``MemberLoop``: any other module, run member by member through ``torch.func.functional_call``
  with member k's slices of the stacked parameters: exact, and as slow as K separate calls.

Every stacked module also exposes each member as a single module would see it:
``member_state_dict(k)`` / ``load_member_state_dict(k, state)`` (the single module's keys and
shapes), ``member_grad_sq_norms()`` and ``scale_member_grads(coefficients)`` (per-member gradient
clipping), ``member_module(k)`` (a standalone copy), ``members`` (K) and ``template`` (a copy of
``modules[0]`` on the meta device: its class and hyper-parameters, no values).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from qmixlab.modules import gru as gru_kernel
from qmixlab.modules.agents import RNNAgent, check_agent_obs, check_last_actions, packed_steps_and_ranks, ragged_chunks
from qmixlab.modules.gru import gru_members_packed, gru_members_sequence
from qmixlab.modules.mixers import QMixer, VDNMixer, _check_states


# --------------------------------------------------------------------------- checks
def _plain_settings(module: nn.Module) -> Dict[str, object]:
    """The public non-tensor attributes of ``module`` and its submodules (sizes, flags, layouts,
    mask options): hyper-parameters that need not show in the parameters' shapes."""
    settings = {}
    for path, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if attr.startswith("_") or attr == "training":
                continue
            if _is_plain(value):
                settings[f"{path}.{attr}" if path else attr] = value
    return settings


def _is_plain(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, tuple):
        return all(_is_plain(v) for v in value)
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _check_members(modules) -> None:
    if not isinstance(modules, (list, tuple)) or len(modules) == 0:
        raise ValueError(f"stack_members needs a non-empty list of modules, got {modules!r}")
    for i, module in enumerate(modules):
        if not isinstance(module, nn.Module):
            raise TypeError(f"stack_members: member {i} is a {type(module).__name__}, expected an nn.Module")
    first = modules[0]
    tied = {name for name, _ in first.named_parameters(remove_duplicate=False)} - {
        name for name, _ in first.named_parameters()}
    if tied:
        raise ValueError(f"stack_members: {type(first).__name__} shares parameters between names {sorted(tied)}; "
                         "stacking tied parameters is not supported")
    state0, settings0 = first.state_dict(), _plain_settings(first)
    for i, module in enumerate(modules[1:], start=1):
        if type(module) is not type(first):
            raise ValueError(f"stack_members: member {i} is a {type(module).__name__}, member 0 a "
                             f"{type(first).__name__}; all members must be of one class")
        state = module.state_dict()
        missing, unexpected = sorted(set(state0) - set(state)), sorted(set(state) - set(state0))
        if missing or unexpected:
            raise ValueError(f"stack_members: member {i}'s state dict lacks {missing} and has {unexpected} "
                             "beyond member 0's; the members must have the same hyper-parameters")
        for key, value in state0.items():
            other = state[key]
            if other.shape != value.shape or other.dtype != value.dtype or other.device != value.device:
                raise ValueError(f"stack_members: {key} of member {i} is {tuple(other.shape)} {other.dtype} on "
                                 f"{other.device}, member 0's is {tuple(value.shape)} {value.dtype} on "
                                 f"{value.device}; the members must have the same hyper-parameters")
        settings = _plain_settings(module)
        for name in sorted(set(settings0) | set(settings)):
            if settings0.get(name, "<absent>") != settings.get(name, "<absent>"):
                raise ValueError(f"stack_members: {type(first).__name__}.{name} is "
                                 f"{settings.get(name, '<absent>')!r} in member {i} but "
                                 f"{settings0.get(name, '<absent>')!r} in member 0; the members must have the "
                                 "same hyper-parameters")


def _check_member_rows(owner: str, name: str, value, members: int, min_dims: int = 1) -> None:
    """A member-major input: its first dimension holds ``members`` equal blocks."""
    if not isinstance(value, torch.Tensor) or value.dim() < min_dims or value.shape[0] % members:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{owner}: {name} must be member-major with a first dimension K*B for K={members} "
                         f"members (rows [k*B, (k+1)*B) are member k's), got {got}")


# --------------------------------------------------------------------------- the common part
class _Members(nn.Module):
    """A container at a submodule's path of the single module, holding that submodule's
    stacked parameters under their own names."""

    def extra_repr(self) -> str:
        return ", ".join(f"{name}: {list(p.shape)}" for name, p in self._parameters.items())


class StackedModule(nn.Module):
    """K modules' parameters (and buffers) stacked along a new leading member dimension, at the
    single module's names and in its order; see the module docstring. Subclasses compute."""

    def __init__(self, modules: Sequence[nn.Module]):
        super().__init__()
        _check_members(modules)
        first = modules[0]
        self.members = len(modules)
        # Not registered as a submodule: its (meta) tensors are not the stacked module's.
        object.__setattr__(self, "template", copy.deepcopy(first).to("meta"))
        self._state_keys: List[str] = list(first.state_dict().keys())
        member_parameters = [dict(m.named_parameters()) for m in modules]
        for name, p in first.named_parameters():
            owner, leaf = self._owner(name)
            stacked = torch.stack([params[name].detach() for params in member_parameters])
            owner.register_parameter(leaf, nn.Parameter(stacked, requires_grad=p.requires_grad))
        member_buffers = [dict(m.named_buffers()) for m in modules]
        for name, _ in first.named_buffers():
            owner, leaf = self._owner(name)
            owner.register_buffer(leaf, torch.stack([buffers[name].detach().clone() for buffers in member_buffers]),
                                  persistent=name in self._state_keys)

    def _owner(self, name: str):
        """The container at ``name``'s path (made on first use) and the tensor's own name."""
        *path, leaf = name.split(".")
        owner = self
        for part in path:
            child = owner._modules.get(part)
            if child is None:
                child = _Members()
                owner.add_module(part, child)
            owner = child
        return owner, leaf

    @property
    def member_type(self) -> type:
        """The class of the stacked modules."""
        return type(self.template)

    def extra_repr(self) -> str:
        own = "".join(f", {name}: {list(p.shape)}" for name, p in self._parameters.items())
        return f"members={self.members}, member_type={self.member_type.__name__}{own}"

    def _member_index(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.members:
            raise ValueError(f"member index must be an int in [0, {self.members}), got {k!r}")
        return k

    # -- one member as a single module ----------------------------------------------------
    def member_state_dict(self, k: int) -> Dict[str, torch.Tensor]:
        """``modules[k].state_dict()`` as it is now: the single module's keys, member k's values
        (detached copies)."""
        k = self._member_index(k)
        stacked = self.state_dict(keep_vars=True)
        return {key: stacked[key][k].detach().clone() for key in self._state_keys}

    def load_member_state_dict(self, k: int, state_dict: Dict[str, torch.Tensor]) -> None:
        """Set member k's values from a single module's state dict (strict: the same keys and
        shapes); the other members are unchanged."""
        k = self._member_index(k)
        stacked = self.state_dict(keep_vars=True)
        missing = [key for key in self._state_keys if key not in state_dict]
        unexpected = [key for key in state_dict if key not in stacked]
        if missing or unexpected:
            raise ValueError(f"member state dict for {self.member_type.__name__}: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        for key in self._state_keys:
            value, expected = state_dict[key], tuple(stacked[key].shape[1:])
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"member state dict for {self.member_type.__name__}: {key} has shape {got}, "
                                 f"expected {expected}")
        with torch.no_grad():
            for key in self._state_keys:
                stacked[key][k].copy_(state_dict[key])

    def member_module(self, k: int) -> nn.Module:
        """A standalone single module (the member class) holding copies of member k's values."""
        k = self._member_index(k)
        reference = next(iter(self.parameters()), None)
        module = copy.deepcopy(self.template).to_empty(device=reference.device if reference is not None else "cpu")
        module.load_state_dict(self.member_state_dict(k), assign=True)
        for name, buffer in self.named_buffers():
            if name not in self._state_keys:  # non-persistent buffers are not in state dicts
                owner, leaf = _resolve(module, name)
                owner._buffers[leaf] = buffer[k].detach().clone()
        return module

    # -- per-member gradient clipping -----------------------------------------------------
    def member_grad_sq_norms(self) -> torch.Tensor:
        """[K]: each member's sum of squared gradients over its slices of every parameter
        (parameters without a gradient count zero)."""
        total = None
        for p in self.parameters():
            if p.grad is not None:
                squares = p.grad.detach().reshape(self.members, -1).square().sum(1)
                total = squares if total is None else total + squares
        if total is None:
            reference = next(iter(self.parameters()), None)
            return torch.zeros(self.members) if reference is None else reference.new_zeros(self.members)
        return total

    @torch.no_grad()
    def scale_member_grads(self, coefficients: torch.Tensor) -> None:
        """Multiply member k's gradient slices by ``coefficients[k]`` in place."""
        coefficients = torch.as_tensor(coefficients)
        if tuple(coefficients.shape) != (self.members,):
            raise ValueError(f"scale_member_grads needs one coefficient per member, shape ({self.members},), "
                             f"got {tuple(coefficients.shape)}")
        for p in self.parameters():
            if p.grad is not None:
                p.grad.mul_(coefficients.to(p.grad).view(self.members, *([1] * (p.grad.dim() - 1))))


def _resolve(module: nn.Module, name: str):
    *path, leaf = name.split(".")
    return (module.get_submodule(".".join(path)) if path else module), leaf


def _linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Linear stacked over members: x [K, R, in] -> [K, R, out] with ``layer.weight``
    [K, out, in] and ``layer.bias`` [K, out]."""
    return torch.baddbmm(layer.bias.unsqueeze(1), x, layer.weight.transpose(1, 2))


# --------------------------------------------------------------------------- RNNAgent
class StackedRNNAgent(StackedModule):
    """K ``RNNAgent``s computed together (see the module docstring); the same interface as
    ``RNNAgent`` with member-major batches: ``initial_hidden(K*n)``, ``step(obs [K*n, N, D],
    last_actions [K*n, N], hidden [K*n, N, H])``, ``unroll(obs [K*B, T, N, D], last_actions
    [K*B, T, N], hidden=None, lengths=None)``. Parameters: ``RNNAgent``'s, each [K, ...]."""

    def __init__(self, modules: Sequence[RNNAgent]):
        super().__init__(modules)
        if type(modules[0]) is not RNNAgent:
            raise TypeError(f"StackedRNNAgent stacks RNNAgents, got {type(modules[0]).__name__}")
        agent = modules[0]
        self.obs_dim, self.n_actions, self.n_agents = agent.obs_dim, agent.n_actions, agent.n_agents
        self.hidden_dim = agent.hidden_dim
        self.use_last_action, self.use_agent_id = agent.use_last_action, agent.use_agent_id

    @property
    def input_dim(self) -> int:
        """Width of PyMARL's concatenated input (as ``RNNAgent.input_dim``)."""
        return self.template.input_dim

    def initial_hidden(self, batch_size: int) -> torch.Tensor:
        """Zero hidden state [batch_size, N, H] (batch_size = K*n, member-major)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size % self.members:
            raise ValueError(f"initial_hidden needs a batch size K*n for K={self.members} members, got {batch_size!r}")
        return self.fc2.weight.new_zeros(batch_size, self.n_agents, self.hidden_dim)

    def step(self, obs: torch.Tensor, last_actions: Optional[torch.Tensor], hidden: torch.Tensor):
        """One time step: obs [K*n, N, D], last_actions [K*n, N] long, hidden [K*n, N, H] ->
        (q [K*n, N, A], new hidden [K*n, N, H])."""
        self._check_obs(obs, 3, "[K*B, N, obs_dim]")
        la = self._checked_actions(last_actions, obs)
        q, h = self._unroll_dense(obs.unsqueeze(1), None if la is None else la.unsqueeze(1), hidden)
        return q[:, 0], h

    def unroll(self, obs: torch.Tensor, last_actions: Optional[torch.Tensor], hidden: Optional[torch.Tensor] = None,
               lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A whole sequence: obs [K*B, T, N, D], last_actions [K*B, T, N] long, hidden
        [K*B, N, H] or None (zeros) -> q [K*B, T, N, A] (contiguous). ``lengths`` [K*B]: as in
        ``RNNAgent.unroll``; rows not needed may be skipped and then hold zeros."""
        self._check_obs(obs, 4, "[K*B, T, N, obs_dim]")
        if obs.shape[1] == 0:
            raise ValueError(f"obs has no time steps: shape {tuple(obs.shape)}, expected T >= 1")
        la = self._checked_actions(last_actions, obs)
        KB, T = obs.shape[:2]
        episodes_per_chunk = ragged_chunks(lengths, obs, self._chunk_episodes, members=self.members)
        if episodes_per_chunk is not None:
            return self._unroll_ragged(obs, la, hidden, lengths, episodes_per_chunk)
        return self._unroll_dense(obs, la, hidden)[0]

    # -- internals ---------------------------------------------------------------------------
    def _check_obs(self, obs, dims, layout):
        check_agent_obs(obs, dims, layout, self.n_agents, self.obs_dim)
        _check_member_rows("StackedRNNAgent", "obs", obs, self.members)

    def _checked_actions(self, last_actions, obs):
        if not self.use_last_action:
            return None
        check_last_actions(last_actions, obs, self.n_actions)
        return last_actions

    def _checked_hidden(self, hidden, KB):
        expected = (KB, self.n_agents, self.hidden_dim)
        if hidden is None:
            return self.initial_hidden(KB)
        if tuple(hidden.shape) != expected:
            raise ValueError(f"hidden has shape {tuple(hidden.shape)}, expected {expected} [K*B, N, hidden_dim]")
        return hidden

    def _input_layer(self, obs, last_actions):
        """relu(fc1([obs, one-hot last action, one-hot id])) as ``RNNAgent._input_layer``, per
        member: obs [K*X, ..., N, D] (member-major), last_actions [K*X, ..., N] or None ->
        [K, X*...*N, H]. Each member's table of (last action, agent) rows is gathered by index
        into the addend of its obs product."""
        P, N, H = self.members, self.n_agents, self.hidden_dim
        obs_rows = obs.reshape(P, -1, self.obs_dim)
        weight_t = self.fc1_obs.weight.transpose(1, 2)
        table = self.fc1_obs.bias.view(P, 1, 1, H)
        index = None
        if self.use_last_action:
            la_rows = torch.cat([self.fc1_last_action, self.fc1_last_action.new_zeros(P, 1, H)], 1)
            table = table + la_rows.unsqueeze(2)  # [K, A + 1, 1, H]
            index = last_actions.long() * (N if self.use_agent_id else 1)
        if self.use_agent_id:
            table = table + self.fc1_agent_id.unsqueeze(1)  # [K, A + 1 or 1, N, H]
            agents = torch.arange(N, device=obs.device)
            index = agents if index is None else index + agents
        if index is None:
            pre = torch.baddbmm(self.fc1_obs.bias.unsqueeze(1), obs_rows, weight_t)
        else:
            table_rows = table.shape[1] * table.shape[2]
            member_offsets = torch.arange(P, device=obs.device).unsqueeze(1) * table_rows
            index = index.expand(obs.shape[:-1]).reshape(P, -1) + member_offsets
            addend = F.embedding(index.reshape(-1), table.reshape(P * table_rows, H)).view(P, -1, H)
            pre = addend.baddbmm_(obs_rows, weight_t)
        return pre.relu_()

    def _recurrent_weights(self):
        rnn = self.rnn
        return rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0

    def _unroll_dense(self, obs, last_actions, hidden):
        """obs [K*B, T, N, D] -> (q [K*B, T, N, A] contiguous, last hidden [K*B, N, H])."""
        P, (KB, T, N, _) = self.members, obs.shape
        B, H, A = KB // P, self.hidden_dim, self.n_actions
        x = self._input_layer(obs, last_actions)  # [K, B*T*N, H]
        x = x.view(P, B, T, N * H).transpose(1, 2).reshape(P, T, B * N, H)
        h0 = self._checked_hidden(hidden, KB).reshape(P, B * N, H)
        Y = gru_members_sequence(x, h0, *self._recurrent_weights(), cache_owner=self.rnn)  # [K, T, B*N, H]
        q = _linear(self.fc2, Y.view(P, T * B * N, H))
        q = q.view(P, T, B, N, A).transpose(1, 2).reshape(KB, T, N, A)
        return q, Y[:, -1].reshape(KB, N, H)

    def _chunk_episodes(self, lengths, T) -> List[int]:
        """Per chunk of ``GRU_CHUNK_STEPS`` steps, the largest number of one member's episodes
        still running at its start: the rows every member computes in that chunk."""
        steps = min(gru_kernel.GRU_CHUNK_STEPS, T)
        starts = torch.arange(0, T, steps, device=lengths.device)
        running = lengths.clamp(0, T).view(self.members, -1, 1) > starts  # [K, B, chunks]
        return running.sum(1).amax(0).tolist()

    def _unroll_ragged(self, obs, last_actions, hidden, lengths, episodes_per_chunk):
        """``RNNAgent._unroll_ragged`` per member in one shared packed layout: each member's
        episodes are sorted by length, and chunk c computes each member's ``episodes_per_chunk[c]``
        longest (the most any member still runs; a few extra rows are harmless, the GRU is
        causal). Needed rows equal the full unroll's; rows never computed hold zeros."""
        P, (KB, T, N, _) = self.members, obs.shape
        B, H, A = KB // P, self.hidden_dim, self.n_actions
        device = obs.device
        lengths = lengths.to(device=device, dtype=torch.long).clamp(0, T).view(P, B)
        member_start = torch.arange(P, device=device).unsqueeze(1) * B
        order = torch.argsort(lengths, dim=1, descending=True, stable=True) + member_start  # [K, B] rows of obs
        steps, ranks = packed_steps_and_ranks(T, episodes_per_chunk, device)
        episodes = order[:, ranks]  # [K, R]
        R = steps.numel()
        flat_episodes, flat_steps = episodes.reshape(-1), steps.repeat(P)
        obs_rows = obs[flat_episodes, flat_steps]  # [K*R, N, D]
        actions_rows = None if last_actions is None else last_actions[flat_episodes, flat_steps]
        x_rows = self._input_layer(obs_rows, actions_rows)  # [K, R*N, H]: packed, as the GRU wants
        h0 = self._checked_hidden(hidden, KB).index_select(0, order.reshape(-1)).view(P, B * N, H)
        Y = gru_members_packed(x_rows, h0, *self._recurrent_weights(), T, [n * N for n in episodes_per_chunk],
                               cache_owner=self.rnn)
        q_rows = _linear(self.fc2, Y).view(P * R, N, A)
        target = (episodes * T + steps).reshape(-1)
        return q_rows.new_zeros(KB * T, N, A).index_copy(0, target, q_rows).view(KB, T, N, A)


# --------------------------------------------------------------------------- mixers
class StackedVDNMixer(StackedModule):
    """K ``VDNMixer``s: the sum of the utilities, member-major rows (no parameters)."""

    def __init__(self, modules: Sequence[VDNMixer]):
        super().__init__(modules)
        self.n_agents = modules[0].n_agents

    def forward(self, agent_qs: torch.Tensor, states: Optional[torch.Tensor] = None) -> torch.Tensor:
        """agent_qs [K*B, ..., N] -> [K*B, ..., 1]; ``states`` is not used."""
        _check_member_rows("StackedVDNMixer", "agent_qs", agent_qs, self.members, min_dims=2)
        if agent_qs.shape[-1] != self.n_agents:
            raise ValueError(f"StackedVDNMixer: agent_qs must be [K*B, ..., n_agents={self.n_agents}], "
                             f"got {tuple(agent_qs.shape)}")
        return agent_qs.sum(dim=-1, keepdim=True)


class StackedQMixer(StackedModule):
    """K ``QMixer``s: QMIX's formula with every hypernetwork layer batched over members.
    Parameters: ``QMixer``'s, each [K, ...]."""

    def __init__(self, modules: Sequence[QMixer]):
        super().__init__(modules)
        mixer = modules[0]
        self.n_agents, self.state_dim, self.embed_dim = mixer.n_agents, mixer.state_dim, mixer.embed_dim
        self.hypernet_layers = mixer.hypernet_layers

    @staticmethod
    def _network(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A stacked Linear, or a stacked Linear-ReLU-Linear (an ``nn.Sequential``'s "0" and "2")."""
        if "weight" in net._parameters:
            return _linear(net, x)
        return _linear(net.get_submodule("2"), torch.relu(_linear(net.get_submodule("0"), x)))

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """agent_qs [K*B, ..., N], states [K*B, ..., S] (same leading dims) -> q_tot [K*B, ..., 1]."""
        _check_member_rows("StackedQMixer", "agent_qs", agent_qs, self.members, min_dims=2)
        P, N, E, S = self.members, self.n_agents, self.embed_dim, self.state_dim
        if agent_qs.shape[-1] != N:
            raise ValueError(f"StackedQMixer: agent_qs must be [K*B, ..., n_agents={N}], got {tuple(agent_qs.shape)}")
        _check_states("StackedQMixer", states, S, agent_qs)
        lead = agent_qs.shape[:-1]
        qs = agent_qs.reshape(P, -1, N, 1)
        s = states.reshape(P, -1, S)
        w1 = self._network(self.hyper_w_1, s).abs().view(P, -1, N, E)
        hidden = F.elu(torch.sum(qs * w1, dim=2) + _linear(self.hyper_b_1, s))  # [K, R, E]
        w_final = self._network(self.hyper_w_final, s).abs()
        q_tot = torch.sum(hidden * w_final, dim=2, keepdim=True) + self._network(self.V, s)  # [K, R, 1]
        return q_tot.view(*lead, 1)


# --------------------------------------------------------------------------- any module
class _MethodCall(nn.Module):
    """``forward(method, *args, **kwargs)`` calls ``module.method``: lets ``functional_call``
    (which calls ``forward``) run any method with substituted parameters."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, method: str, *args, **kwargs):
        return getattr(self.module, method)(*args, **kwargs)


def _concat_members(outputs: list):
    """The members' outputs joined member-major: tensors along dim 0, tuples element-wise."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs, dim=0)
    if isinstance(first, (tuple, list)):
        return type(first)(_concat_members(list(parts)) for parts in zip(*outputs))
    if first is None:
        return None
    raise TypeError(f"MemberLoop cannot join members' outputs of type {type(first).__name__}")


class MemberLoop(StackedModule):
    """Any module stacked over members, computed member by member: member k's rows of every
    tensor argument go through the single module's method with member k's parameter slices
    (``torch.func.functional_call``), and the outputs are joined member-major. Exact, not fast.

    ``forward``, ``unroll``, ``step`` and ``initial_hidden`` (``batch_size = K*n``) run the
    single module's methods of those names; its public plain attributes (``n_agents``,
    ``n_actions``, ``hidden_dim``, ...) read through."""

    def __init__(self, modules: Sequence[nn.Module]):
        super().__init__(modules)
        object.__setattr__(self, "_call", _MethodCall(self.template))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            template = self.__dict__.get("template")
            if template is None or name.startswith("_") or not hasattr(template, name):
                raise
            value = getattr(template, name)
            if isinstance(value, (torch.Tensor, nn.Module)) or callable(value):
                raise AttributeError(f"MemberLoop does not give {type(template).__name__}.{name} per member; "
                                     "it runs forward, unroll, step and initial_hidden and reads plain "
                                     "attributes") from None
            return value

    def forward(self, *inputs, **kwargs):
        return self._each_member("forward", inputs, kwargs)

    def unroll(self, obs, last_actions, hidden=None, lengths=None):
        return self._each_member("unroll", (obs, last_actions), {"hidden": hidden, "lengths": lengths})

    def step(self, obs, last_actions, hidden):
        return self._each_member("step", (obs, last_actions, hidden), {})

    def initial_hidden(self, batch_size: int) -> torch.Tensor:
        """Each member's ``initial_hidden(batch_size // K)``, joined: [batch_size, ...]."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size % self.members:
            raise ValueError(f"initial_hidden needs a batch size K*n for K={self.members} members, got {batch_size!r}")
        n = batch_size // self.members
        return _concat_members([self._member_call(k, "initial_hidden", (n,), {}) for k in range(self.members)])

    def _each_member(self, method: str, args: tuple, kwargs: dict):
        owner = f"MemberLoop({self.member_type.__name__}).{method}"
        for name, value in [(f"argument {i}", a) for i, a in enumerate(args)] + list(kwargs.items()):
            if isinstance(value, torch.Tensor):
                _check_member_rows(owner, name, value, self.members)

        def rows(value, k):
            if not isinstance(value, torch.Tensor):
                return value
            n = value.shape[0] // self.members
            return value[k * n: (k + 1) * n]

        return _concat_members([
            self._member_call(k, method, tuple(rows(a, k) for a in args), {n: rows(v, k) for n, v in kwargs.items()})
            for k in range(self.members)])

    def _member_call(self, k: int, method: str, args: tuple, kwargs: dict):
        call = self._call
        if not callable(getattr(type(call.module), method, None)):
            raise AttributeError(f"{self.member_type.__name__} has no method {method!r}")
        if call.training != self.training:
            call.train(self.training)
        tensors = {"module." + name: value[k] for name, value in self.named_parameters()}
        tensors.update({"module." + name: value[k] for name, value in self.named_buffers()})
        return functional_call(call, tensors, (method,) + args, kwargs, strict=True)


# --------------------------------------------------------------------------- entry point
_SPECIALISED = {RNNAgent: StackedRNNAgent, QMixer: StackedQMixer, VDNMixer: StackedVDNMixer}


def stack_members(modules: Sequence[nn.Module]) -> StackedModule:
    """K >= 1 modules of one class with the same hyper-parameters -> one module stacked over
    them (member k starts with ``modules[k]``'s values): ``StackedRNNAgent``, ``StackedQMixer``
    or ``StackedVDNMixer`` for those exact classes, ``MemberLoop`` for any other."""
    _check_members(modules)
    return _SPECIALISED.get(type(modules[0]), MemberLoop)(modules)
