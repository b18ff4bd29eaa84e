"""Action selection from per-agent Q-values, restricted to available actions.

Greedy choice ranks the available actions of an agent by: finite or +inf Q by value, then
-inf, then NaN last; ties go to the lowest action index. An unavailable action is never
chosen, whatever its Q-value. An agent with no available action is an error.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch


def _check_inputs(agent_qs: torch.Tensor, avail_actions: torch.Tensor) -> torch.Tensor:
    """Validate shapes and return ``avail_actions`` as bool."""
    if agent_qs.dim() != 3 or not agent_qs.is_floating_point():
        raise ValueError(f"agent_qs must be a float tensor [B, N, A], got {tuple(agent_qs.shape)} {agent_qs.dtype}")
    if tuple(avail_actions.shape) != tuple(agent_qs.shape):
        raise ValueError(
            f"avail_actions has shape {tuple(avail_actions.shape)}, expected {tuple(agent_qs.shape)} like agent_qs"
        )
    if avail_actions.dtype != torch.bool:
        bad = (avail_actions != 0) & (avail_actions != 1)
        if bool(bad.any()):
            raise ValueError(f"avail_actions must be 0/1, got {avail_actions[bad].flatten()[0].item()}")
        avail_actions = avail_actions.bool()
    none_available = ~avail_actions.any(-1)
    if bool(none_available.any()):
        row, agent = (int(i) for i in none_available.nonzero()[0])
        raise ValueError(f"no available action for batch row {row}, agent {agent}")
    return avail_actions


def greedy_actions(agent_qs: torch.Tensor, avail_actions: torch.Tensor) -> torch.Tensor:
    """Best available action per agent (long [B, N]); see the module docstring for the order."""
    avail = _check_inputs(agent_qs, avail_actions)
    qs = agent_qs.detach()
    is_nan = torch.isnan(qs)
    # Tier 0: unavailable, 1: available with NaN Q, 2: available with a non-NaN Q.
    tier = avail.long() * (1 + (~is_nan).long())
    candidates = tier == tier.max(-1, keepdim=True).values
    values = torch.where(candidates & ~is_nan, qs, torch.full_like(qs, -float("inf")))
    best = values.max(-1, keepdim=True).values
    # argmax of a bool-as-int picks the first True: the lowest-index best candidate.
    return (candidates & (values == best)).to(torch.uint8).argmax(-1)


def random_available_actions(avail_actions: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Uniform choice among each agent's available actions (long [B, N])."""
    scores = torch.rand(avail_actions.shape, generator=generator, device=avail_actions.device)
    scores = torch.where(avail_actions, scores, torch.full_like(scores, -1.0))
    return scores.argmax(-1)


class EpsilonGreedyActionSelector:
    """With probability epsilon(t_env) per agent a uniform available action, else greedy.

    ``test_mode=True`` is greedy (epsilon 0). ``self.epsilon`` is the epsilon of the last call.
    """

    def __init__(self, schedule: Callable[[float], float]):
        if not callable(schedule):
            raise ValueError(f"EpsilonGreedyActionSelector needs a callable schedule, got {schedule!r}")
        self.schedule = schedule
        self.epsilon: Optional[float] = None

    def select_actions(
        self,
        agent_qs: torch.Tensor,
        avail_actions: torch.Tensor,
        t_env: float,
        test_mode: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        epsilon = 0.0 if test_mode else float(self.schedule(t_env))
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], the schedule gave {epsilon} at t_env={t_env}")
        self.epsilon = epsilon
        chosen = greedy_actions(agent_qs, avail_actions)
        if epsilon > 0.0:
            avail = avail_actions.bool()
            explore = torch.rand(chosen.shape, generator=generator, device=chosen.device) < epsilon
            chosen = torch.where(explore, random_available_actions(avail, generator), chosen)
        return chosen


    def select_actions_for_members(self, agent_qs, avail_actions, t_envs, test_mode, generators, member_rows):
        """``select_actions`` of several runs at once: member k owns the rows ``member_rows[k]``
        (an index tensor, in order) and draws from ``generators[k]`` with its own ``t_envs[k]``,
        exactly what its own call would draw; the rest is computed once for all rows."""
        chosen = greedy_actions(agent_qs, avail_actions)
        if test_mode:
            self.epsilon = 0.0
            return chosen
        explore = torch.zeros(chosen.shape, dtype=torch.bool, device=chosen.device)
        scores = torch.full(agent_qs.shape, -1.0, device=chosen.device)
        for rows, t_env, generator in zip(member_rows, t_envs, generators):
            epsilon = float(self.schedule(t_env))
            if not 0.0 <= epsilon <= 1.0:
                raise ValueError(f"epsilon must be in [0, 1], the schedule gave {epsilon} at t_env={t_env}")
            self.epsilon = epsilon
            if epsilon > 0.0 and rows.numel():
                kwargs = {"generator": generator} if generator is not None else {}
                explore[rows] = torch.rand((rows.numel(), chosen.shape[1]), device=chosen.device, **kwargs) < epsilon
                scores[rows] = torch.rand((rows.numel(), *agent_qs.shape[1:]), device=chosen.device, **kwargs)
        random_choice = torch.where(avail_actions.bool(), scores, torch.full_like(scores, -1.0)).argmax(-1)
        return torch.where(explore, random_choice, chosen)


class GreedyActionSelector:
    """Always the best available action; ``t_env``, ``test_mode`` and ``generator`` are unused."""

    epsilon = 0.0

    def select_actions(
        self,
        agent_qs: torch.Tensor,
        avail_actions: torch.Tensor,
        t_env: float = 0,
        test_mode: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        return greedy_actions(agent_qs, avail_actions)


ACTION_SELECTORS = {
    "epsilon_greedy": EpsilonGreedyActionSelector,
    "greedy": GreedyActionSelector,
}
