"""The multi-agent controller: the shared agent network plus the rollout state around it.

Two paths use the same agent:

* Learning: ``unroll(obs, actions)`` gives Q-values for whole stored episodes. The agent's last
  action at step t is ``actions[:, t - 1]``, and "none" (index ``n_actions``) at t = 0.
* Acting: ``init_hidden(n_envs)`` then ``select_actions(...)`` once per environment step. The
  controller keeps each environment's hidden state and last actions between calls.

It is an ``nn.Module`` whose only parameters are the agent's, so ``parameters()``,
``state_dict()``, ``load_state_dict()``, ``to(device)`` and ``copy.deepcopy`` (a target network)
behave as usual. The rollout state is not part of the state dict.

An agent stacked over several members (``qmixlab.modules.stacked``: seeds trained as one batch)
acts for all of them in one call: environments are member-major, ``t_env`` and ``generator``
are given per member, and each member's actions are drawn exactly as a one-member controller
would draw them for its own environments.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def last_actions_from_actions(actions: torch.Tensor, n_actions: int) -> torch.Tensor:
    """The last action at every step of stored episodes: actions [B, T, N, 1] -> [B, T, N],
    with ``n_actions`` ("no previous action") at t = 0 and ``actions[:, t - 1]`` after."""
    last = torch.empty(actions.shape[:3], dtype=torch.long, device=actions.device)
    last[:, 0] = n_actions
    last[:, 1:] = actions[:, :-1, :, 0]
    return last


class AgentController(nn.Module):
    """Wraps an ``RNNAgent``-like ``agent`` (``n_agents``, ``n_actions``, ``unroll``, ``step``,
    ``initial_hidden``) and an action selector: any object with
    ``select_actions(agent_qs [n, N, A], avail_actions [n, N, A] bool, t_env, test_mode=False,
    generator=None) -> long [n, N]``. The selector may be None for a learner-only controller."""

    def __init__(self, agent: nn.Module, action_selector=None):
        super().__init__()
        if action_selector is not None and not callable(getattr(action_selector, "select_actions", None)):
            raise TypeError(f"action_selector must have a select_actions method, got {type(action_selector).__name__}")
        self.agent = agent
        self.action_selector = action_selector
        self._hidden: Optional[torch.Tensor] = None  # [n_envs, N, H]
        self._last_actions: Optional[torch.Tensor] = None  # [n_envs, N] long; n_actions = none

    @property
    def n_agents(self) -> int:
        return self.agent.n_agents

    @property
    def members(self) -> int:
        """Runs whose agents this controller computes at once (1 unless the agent is stacked)."""
        return int(getattr(self.agent, "members", 1))

    @property
    def n_actions(self) -> int:
        return self.agent.n_actions

    # -- learning ----------------------------------------------------------------------------

    def unroll(self, obs: torch.Tensor, actions: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Q-values [B, T, N, A] of stored episodes: obs [B, T, N, D], actions [B, T, N, 1] long
        (the action taken at each step; only steps 0..T-2 are read, as last actions).
        ``lengths`` [B]: rows each episode needs; later rows may be skipped (see RNNAgent.unroll)."""
        if (not isinstance(actions, torch.Tensor) or actions.dim() != 4 or actions.shape[-1] != 1
                or actions.shape[:3] != obs.shape[:3]):
            got = tuple(actions.shape) if isinstance(actions, torch.Tensor) else type(actions).__name__
            raise ValueError(f"actions must be [B, T, N, 1] matching obs {tuple(obs.shape)} [B, T, N, D], got {got}")
        return self.agent.unroll(obs, last_actions_from_actions(actions, self.n_actions), lengths=lengths)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.unroll(obs, actions)

    # -- acting ------------------------------------------------------------------------------

    def init_hidden(self, n_envs: int) -> None:
        """Start ``n_envs`` new episodes: zero hidden states, no last actions."""
        if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be a positive int, got {n_envs!r}")
        self._hidden = self.agent.initial_hidden(n_envs)
        self._last_actions = torch.full((n_envs, self.n_agents), self.n_actions, dtype=torch.long,
                                        device=self._hidden.device)

    @property
    def hidden(self) -> Optional[torch.Tensor]:
        """The rollout hidden state [n_envs, N, H] (None before ``init_hidden``); read only."""
        return self._hidden

    @property
    def last_actions(self) -> Optional[torch.Tensor]:
        """The rollout's last actions [n_envs, N] (``n_actions`` = none yet); read only."""
        return self._last_actions

    @torch.no_grad()
    def select_actions(self, obs, avail_actions, t_env, test_mode: bool = False, env_mask=None,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One step for every environment whose ``env_mask`` entry is True (all if None).

        obs [n, N, D] float and avail_actions [n, N, A] bool (or 0/1), tensors or numpy arrays;
        env_mask [n] bool. Returns the chosen actions as a long tensor [n, N] on the CPU; rows
        of masked-out environments are 0 and are not actions: those environments' hidden state
        and last actions are left unchanged and the selector does not see them.
        ``generator`` is passed to the selector when given. With several members, ``t_env`` and
        ``generator`` are sequences with one entry per member (see the module docstring).
        """
        if self._hidden is None:
            raise RuntimeError("select_actions needs init_hidden(n_envs) first")
        if self.action_selector is None:
            raise RuntimeError("this AgentController has no action_selector")
        reference = next(self.agent.parameters(), self._hidden)
        device, dtype = reference.device, reference.dtype
        if self._hidden.device != device or self._hidden.dtype != dtype:  # moved or cast since init_hidden
            self._hidden = self._hidden.to(device=device, dtype=dtype)
            self._last_actions = self._last_actions.to(device)
        n_envs, N, A = self._hidden.shape[0], self.n_agents, self.n_actions
        obs = torch.as_tensor(obs, device=device).to(dtype)
        if obs.dim() != 3 or tuple(obs.shape[:2]) != (n_envs, N):
            raise ValueError(f"obs must be [n_envs={n_envs}, n_agents={N}, obs_dim], got {tuple(obs.shape)}")
        avail = torch.as_tensor(avail_actions, device=device)
        if tuple(avail.shape) != (n_envs, N, A):
            raise ValueError(f"avail_actions must be [n_envs={n_envs}, n_agents={N}, n_actions={A}], "
                             f"got {tuple(avail.shape)}")
        if avail.dtype != torch.bool:
            if bool(((avail != 0) & (avail != 1)).any()):
                raise ValueError("avail_actions must be bool or 0/1")
            avail = avail != 0
        if self.members > 1:
            return self._select_for_members(obs, avail, t_env, test_mode, env_mask, generator)
        rows = None  # all environments
        if env_mask is not None:
            env_mask = torch.as_tensor(env_mask, device=device)
            if env_mask.dtype != torch.bool or tuple(env_mask.shape) != (n_envs,):
                raise ValueError(f"env_mask must be bool [n_envs={n_envs}], "
                                 f"got {tuple(env_mask.shape)} {env_mask.dtype}")
            if not bool(env_mask.all()):
                rows = env_mask.nonzero().squeeze(1)
        if rows is None:
            q, h = self.agent.step(obs, self._last_actions, self._hidden)
            actions = self._select(q, avail, t_env, test_mode, generator)
            self._hidden, self._last_actions = h, actions
            return actions.to("cpu", copy=True)  # the caller may modify it; our copy stays intact
        chosen = torch.zeros(n_envs, N, dtype=torch.long)
        if rows.numel() == 0:
            return chosen
        q, h = self.agent.step(obs[rows], self._last_actions[rows], self._hidden[rows])
        actions = self._select(q, avail[rows], t_env, test_mode, generator)
        self._hidden = self._hidden.index_copy(0, rows, h)
        self._last_actions = self._last_actions.index_copy(0, rows, actions)
        chosen[rows.cpu()] = actions.cpu()
        return chosen

    def _select_for_members(self, obs, avail, t_env, test_mode, env_mask, generators):
        """``select_actions`` of a stacked agent: one network call for every environment (the
        members' blocks must stay whole), then each member's selector call on its acting rows."""
        K, n_envs = self.members, obs.shape[0]
        if n_envs % K:
            raise ValueError(f"{n_envs} environments cannot be split among {K} members")
        per_member = n_envs // K
        t_envs = list(t_env) if isinstance(t_env, (list, tuple)) else None
        generators = [None] * K if generators is None else list(generators)
        if t_envs is None or len(t_envs) != K or len(generators) != K:
            raise ValueError(f"with {K} members, t_env and generator must give one entry per member, got "
                             f"t_env={t_env!r} and {len(generators)} generator(s)")
        acting = torch.ones(n_envs, dtype=torch.bool, device=obs.device)
        if env_mask is not None:
            acting = torch.as_tensor(env_mask, device=obs.device)
            if acting.dtype != torch.bool or tuple(acting.shape) != (n_envs,):
                raise ValueError(f"env_mask must be bool [n_envs={n_envs}], got {tuple(acting.shape)} {acting.dtype}")
        q, h = self.agent.step(obs, self._last_actions, self._hidden)
        actions = torch.zeros(n_envs, self.n_agents, dtype=torch.long, device=obs.device)
        acting_cpu = acting.cpu()
        together = getattr(self.action_selector, "select_actions_for_members", None)
        if together is not None:  # one greedy pass for all rows, each member's own random draws
            rows = acting.nonzero().squeeze(1)
            member_of = torch.div(rows, per_member, rounding_mode="floor")
            member_rows = [(member_of == k).nonzero().squeeze(1) for k in range(K)]
            chosen = together(q[rows], avail[rows], t_envs, test_mode, generators, member_rows)
            actions[rows] = self._checked(chosen, rows.numel())
        else:  # any selector: one call per member on its acting rows
            for k in range(K):
                block = slice(k * per_member, (k + 1) * per_member)
                if bool(acting_cpu[block].all()):
                    actions[block] = self._select(q[block], avail[block], t_envs[k], test_mode, generators[k])
                elif bool(acting_cpu[block].any()):
                    rows = block.start + acting[block].nonzero().squeeze(1)
                    actions[rows] = self._select(q[rows], avail[rows], t_envs[k], test_mode, generators[k])
        keep = ~acting
        self._hidden = torch.where(keep.view(-1, 1, 1), self._hidden, h)
        self._last_actions = torch.where(keep.view(-1, 1), self._last_actions, actions)
        return actions.to("cpu", copy=True)

    def _select(self, q, avail, t_env, test_mode, generator):
        kwargs = {"generator": generator} if generator is not None else {}
        actions = self.action_selector.select_actions(q, avail, t_env, test_mode=test_mode, **kwargs)
        return self._checked(actions, q.shape[0], q.device)

    def _checked(self, actions, n_rows, device=None):
        actions = torch.as_tensor(actions, device=device)
        if tuple(actions.shape) != (n_rows, self.n_agents) or actions.is_floating_point():
            raise ValueError(f"the action selector returned {tuple(actions.shape)} {actions.dtype}, "
                             f"expected integer actions [{n_rows}, {self.n_agents}]")
        actions = actions.long()
        if bool(((actions < 0) | (actions >= self.n_actions)).any()):
            raise ValueError(f"the action selector returned actions outside [0, {self.n_actions})")
        return actions
