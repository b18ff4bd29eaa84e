"""TD targets: one-step and TD(lambda), with time-outs that bootstrap.

Index ``t`` is a transition: ``rewards[:, t]`` was received after acting in row ``t``, and
``next_values[:, t]`` is the target network's value of row ``t + 1``.
"""

from __future__ import annotations

import torch


def lambda_returns(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    cuts_bootstrap: torch.Tensor,
    ends_episode: torch.Tensor,
    gamma: float,
    td_lambda: float,
) -> torch.Tensor:
    """TD(lambda) targets ``[B, T, K]`` (``td_lambda=0`` is the one-step target).

    G_t = r_t + gamma * v_{t+1}                                      if t ends the episode
                                                                     by time-out (bootstrap),
    G_t = r_t                                                        if t cuts the bootstrap,
    G_t = r_t + gamma * ((1 - lambda) * v_{t+1} + lambda * G_{t+1})  otherwise.
    At the batch's last transition, G_{t+1} is unknown and v_{t+1} stands in for it.

    Selections use ``where`` so that values after an episode's end (NaN or the fill value of
    all-unavailable padding) never leak into an earlier return.
    """
    if not 0.0 <= td_lambda <= 1.0:
        raise ValueError(f"td_lambda={td_lambda!r} must lie in [0, 1]")
    cuts = cuts_bootstrap.bool().expand_as(rewards)
    ends = ends_episode.bool().expand_as(rewards)
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    bootstrap = torch.where(cuts, zero, next_values)
    if td_lambda == 0.0:
        return rewards + gamma * bootstrap

    returns = torch.empty_like(rewards)
    following = next_values[:, -1]  # stands in for G_T at the last transition
    for t in range(rewards.shape[1] - 1, -1, -1):
        blended = (1.0 - td_lambda) * next_values[:, t] + td_lambda * following
        continuation = torch.where(ends[:, t], bootstrap[:, t], torch.where(cuts[:, t], zero, blended))
        returns[:, t] = rewards[:, t] + gamma * continuation
        following = returns[:, t]
    return returns
