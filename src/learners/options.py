"""The learner's hyper-parameters, without torch: the config schema imports them.

The defaults are ``config/default.yaml``'s ``learner:`` section (a test keeps the two equal);
the presets in ``config/algs/`` document where their values come from.
"""

from __future__ import annotations

from dataclasses import dataclass

OPTIMISERS = ("rmsprop", "adam")
TARGET_UPDATES = ("hard", "soft")


@dataclass(frozen=True)
class LearnerOptions:
    """Hyper-parameters of ``QLearner`` (its mask options are a separate ``MaskOptions``).

    gamma, td_lambda: discount and TD(lambda) (0: one-step targets).
    double_q: the target network evaluates the online network's greedy action.
    target_update: ``hard`` (copy every ``target_update_interval_episodes`` episodes) or
        ``soft`` (move ``target_update_tau`` of the way after every step).
    optimiser: ``rmsprop`` (uses optim_alpha, optim_eps) or ``adam`` (uses optim_eps; torch's
        own default eps is 1e-8).
    grad_norm_clip: the gradients' global L2 norm is clipped to this value.
    td_loss_scale: the loss is ``td_loss_scale`` times the masked mean of the squared TD
        errors: 1 is PyMARL's loss, 0.5 pymarl2's (``0.5 * td ** 2``). It scales the gradients
        and therefore what ``grad_norm_clip`` clips.
    standardise_rewards: standardise rewards over a batch's valid transitions.
    """

    gamma: float = 0.99
    td_lambda: float = 0.6
    double_q: bool = True
    target_update: str = "hard"
    target_update_interval_episodes: int = 200
    target_update_tau: float = 0.005
    optimiser: str = "adam"
    lr: float = 0.001
    optim_alpha: float = 0.99
    optim_eps: float = 1e-5
    grad_norm_clip: float = 10.0
    td_loss_scale: float = 1.0
    standardise_rewards: bool = False

    def __post_init__(self):
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma={self.gamma!r} must lie in [0, 1]")
        if not 0.0 <= self.td_lambda <= 1.0:
            raise ValueError(f"td_lambda={self.td_lambda!r} must lie in [0, 1]")
        if self.optimiser not in OPTIMISERS:
            raise ValueError(f"optimiser={self.optimiser!r} is not one of {list(OPTIMISERS)}")
        if self.target_update not in TARGET_UPDATES:
            raise ValueError(f"target_update={self.target_update!r} is not one of {list(TARGET_UPDATES)}")
        if self.target_update_interval_episodes < 1:
            raise ValueError(
                f"target_update_interval_episodes={self.target_update_interval_episodes!r} must be >= 1"
            )
        if not 0.0 < self.target_update_tau <= 1.0:
            raise ValueError(f"target_update_tau={self.target_update_tau!r} must lie in (0, 1]")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr!r} must be positive")
        if not 0.0 <= self.optim_alpha < 1.0:
            raise ValueError(f"optim_alpha={self.optim_alpha!r} must lie in [0, 1)")
        if self.optim_eps <= 0:
            raise ValueError(f"optim_eps={self.optim_eps!r} must be positive")
        if self.grad_norm_clip <= 0:
            raise ValueError(f"grad_norm_clip={self.grad_norm_clip!r} must be positive")
        if self.td_loss_scale <= 0:
            raise ValueError(f"td_loss_scale={self.td_loss_scale!r} must be positive (1: PyMARL, 0.5: pymarl2)")
