"""The one value-decomposition Q-learner: IQL, VDN and QMIX differ only in the mixer.

Read ``train`` top to bottom: the mask, the target and the loss fit on one screen, and every
masking decision is delegated to ``qmixlab.components.masks``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict

import torch

from qmixlab.components import masks as mask_rules
from qmixlab.components.masks import MaskOptions
from qmixlab.learners.targets import lambda_returns

OPTIMISERS = ("rmsprop", "adam")
TARGET_UPDATES = ("hard", "soft")


@dataclass(frozen=True)
class LearnerOptions:
    """Hyper-parameters of ``QLearner``; the defaults are PyMARL's QMIX."""

    gamma: float = 0.99
    td_lambda: float = 0.0
    double_q: bool = True
    target_update: str = "hard"
    target_update_interval_episodes: int = 200
    target_update_tau: float = 0.005
    optimiser: str = "rmsprop"
    lr: float = 0.0005
    optim_alpha: float = 0.99
    optim_eps: float = 1e-5
    grad_norm_clip: float = 10.0
    standardise_rewards: bool = False
    masks: MaskOptions = field(default_factory=MaskOptions)

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
        if self.grad_norm_clip <= 0:
            raise ValueError(f"grad_norm_clip={self.grad_norm_clip!r} must be positive")
        if not isinstance(self.masks, MaskOptions):
            raise TypeError(f"masks must be a MaskOptions, got {type(self.masks).__name__}")


def _mix_rows(mixer, agent_qs: torch.Tensor, states: torch.Tensor, rows) -> torch.Tensor:
    """``mixer(agent_qs [B, T, N], states [B, T, S])`` -> [B, T, 1], computed only on ``rows``
    (bool [B, T]; None: all) when that skips any; other rows hold zero."""
    if rows is None or bool(rows.all()):
        return mixer(agent_qs, states)
    index = rows.nonzero(as_tuple=True)
    mixed = mixer(agent_qs[index].unsqueeze(0), states[index].unsqueeze(0))[0]  # [R, 1]
    return mixed.new_zeros(*rows.shape, 1).index_put(index, mixed)


class QLearner:
    """Recurrent off-policy Q-learning on whole episodes with an optional mixer.

    ``mac`` is an ``AgentController`` (``unroll(obs, actions) -> [B, T, N, A]``), ``mixer`` a
    module ``(agent_qs [B, T, N], states [B, T, S]) -> [B, T, 1]`` or None for independent
    Q-learning.
    """

    def __init__(self, mac, mixer, n_agents: int, options: LearnerOptions = LearnerOptions(), device="cpu"):
        if options.masks.dead_agents == "agent_loss_mask" and mixer is not None:
            raise ValueError(
                "masks.dead_agents='agent_loss_mask' masks per-agent losses and needs mixer=None "
                "(independent Q-learning); with a mixer use 'zero_utilities'"
            )
        self.options = options
        self.n_agents = n_agents
        self.device = torch.device(device)
        self.mac = mac.to(self.device)
        self.mixer = mixer.to(self.device) if mixer is not None else None
        self.target_mac = copy.deepcopy(self.mac)
        self.target_mixer = copy.deepcopy(self.mixer)
        for module in (self.target_mac, self.target_mixer):
            if module is not None:
                for parameter in module.parameters():
                    parameter.requires_grad_(False)

        self.params = list(self.mac.parameters())
        if self.mixer is not None:
            self.params += list(self.mixer.parameters())
        if options.optimiser == "rmsprop":
            self.optimiser = torch.optim.RMSprop(
                self.params, lr=options.lr, alpha=options.optim_alpha, eps=options.optim_eps, foreach=True
            )
        else:
            self.optimiser = torch.optim.Adam(self.params, lr=options.lr, eps=options.optim_eps, foreach=True)
        self.last_target_update_episode = 0
        self.train_steps = 0

    # ------------------------------------------------------------------ training step
    def train(self, batch, t_env: int = 0, episode_num: int = 0) -> Dict[str, float]:
        """One gradient step on ``batch`` (an ``EpisodeBatch`` in the compute layout, as
        ``ReplayBuffer.sample`` returns it; it is moved to the learner's device in place)."""
        opts, rules = self.options, self.options.masks
        if rules.trim_to_longest:
            batch = batch[:, : max(batch.max_t_filled(), 2)]
        batch = batch.to(self.device)

        obs, state, avail = batch["obs"], batch["state"], batch["avail_actions"].bool()
        actions = batch["actions"].long()
        rewards = batch["reward"][:, :-1].float()
        timeout = batch["timeout"] if "timeout" in batch.scheme else None
        invalid = batch["invalid"] if "invalid" in batch.scheme else None
        cuts_bootstrap, ends_episode = mask_rules.episode_end_flags(batch["terminated"], timeout, rules)
        step_mask = mask_rules.build_step_mask(batch["filled"], ends_episode, invalid, rules)

        zero = torch.zeros((), device=self.device)
        # Rows nothing reads form a suffix of each episode and cannot change the rows that are
        # read (the networks are causal): they may be skipped, and only non-finite values there
        # need replacing.
        read = mask_rules.transitions_read_by_targets(step_mask, cuts_bootstrap[:, :-1], ends_episode[:, :-1],
                                                      opts.td_lambda)
        needed = mask_rules.rows_needed_by_networks(step_mask, read, cuts_bootstrap, batch.max_seq_length)
        lengths = needed.sum(dim=(1, 2)) if rules.skip_unread_rows else None
        if not bool(torch.isfinite(obs.sum())):  # one reduction: NaN and inf propagate
            obs = torch.where(needed.unsqueeze(-1), obs, zero)
        if not bool(torch.isfinite(state.sum())):
            state = torch.where(needed, state, zero)
        rewards = torch.where(step_mask, rewards, zero)  # also zeroes flagged invalid steps
        if opts.standardise_rewards:
            rewards = mask_rules.standardise_over_valid(rewards, step_mask)

        agent_qs = self.mac.unroll(obs, actions, lengths=lengths)  # [B, T, N, A]
        chosen_qs = agent_qs[:, :-1].gather(3, actions[:, :-1]).squeeze(3)  # [B, T-1, N]

        with torch.no_grad():
            next_qs = self.target_mac.unroll(obs, actions, lengths=lengths)[:, 1:]
            next_avail = avail[:, 1:]
            if rules.target_avail_mask:
                fill = rules.fill_value(next_qs.dtype)
                next_qs = next_qs.masked_fill(~next_avail, fill)
            if opts.double_q:
                online_next = agent_qs[:, 1:].detach()
                if rules.target_avail_mask:
                    online_next = online_next.masked_fill(~next_avail, fill)
                greedy_next = online_next.argmax(dim=3, keepdim=True)
                next_max_qs = next_qs.gather(3, greedy_next).squeeze(3)
            else:
                next_max_qs = next_qs.max(dim=3).values

        if rules.dead_agents == "zero_utilities":
            alive = ~mask_rules.dead_agents(avail)
            chosen_qs = torch.where(alive[:, :-1], chosen_qs, zero)
            next_max_qs = torch.where(alive[:, 1:], next_max_qs, zero)

        if self.mixer is not None:
            # With skip_unread_rows the mixers see only the rows read later: the loss reads the
            # transitions in the step mask, the targets the bootstrap values of those in ``read``.
            online_rows = step_mask[..., 0] if rules.skip_unread_rows else None
            target_rows = read[..., 0] if rules.skip_unread_rows else None
            chosen_qs = _mix_rows(self.mixer, chosen_qs, state[:, :-1], online_rows)  # [B, T-1, 1]
            with torch.no_grad():
                next_max_qs = _mix_rows(self.target_mixer, next_max_qs, state[:, 1:], target_rows)
            element_mask = step_mask
        else:
            element_mask = mask_rules.build_agent_mask(step_mask, avail, rules)

        targets = lambda_returns(
            rewards.to(chosen_qs.dtype).expand_as(chosen_qs),
            next_max_qs,
            cuts_bootstrap[:, :-1],
            ends_episode[:, :-1],
            opts.gamma,
            opts.td_lambda,
        ).detach()
        td_error = chosen_qs - targets
        loss = mask_rules.masked_td_loss(td_error, element_mask, step_mask, rules, self.n_agents)

        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, opts.grad_norm_clip, foreach=True)
        self.optimiser.step()
        self.train_steps += 1
        self._update_targets(episode_num)

        with torch.no_grad():
            td_abs = torch.where(element_mask.expand_as(td_error), td_error, zero).abs()
            return {
                "loss": loss.item(),
                "td_error_abs": mask_rules.masked_mean(td_abs, element_mask).item(),
                "q_taken_mean": mask_rules.masked_mean(chosen_qs.detach(), element_mask).item(),
                "target_mean": mask_rules.masked_mean(targets, element_mask).item(),
                "grad_norm": float(grad_norm),
                "mask_fraction": step_mask.float().mean().item(),
            }

    # ------------------------------------------------------------------ target networks
    def _update_targets(self, episode_num: int) -> None:
        opts = self.options
        if opts.target_update == "soft":
            self._soft_update(opts.target_update_tau)
        elif episode_num - self.last_target_update_episode >= opts.target_update_interval_episodes:
            self.target_mac.load_state_dict(self.mac.state_dict())
            if self.mixer is not None:
                self.target_mixer.load_state_dict(self.mixer.state_dict())
            self.last_target_update_episode = episode_num

    @torch.no_grad()
    def _soft_update(self, tau: float) -> None:
        pairs = [(self.target_mac, self.mac)]
        if self.mixer is not None:
            pairs.append((self.target_mixer, self.mixer))
        for target, online in pairs:
            for target_param, param in zip(target.parameters(), online.parameters()):
                target_param.lerp_(param, tau)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "mac": self.mac.state_dict(),
            "target_mac": self.target_mac.state_dict(),
            "mixer": self.mixer.state_dict() if self.mixer is not None else None,
            "target_mixer": self.target_mixer.state_dict() if self.mixer is not None else None,
            "optimiser": self.optimiser.state_dict(),
            "last_target_update_episode": self.last_target_update_episode,
            "train_steps": self.train_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.mac.load_state_dict(state["mac"])
        self.target_mac.load_state_dict(state["target_mac"])
        if self.mixer is not None:
            self.mixer.load_state_dict(state["mixer"])
            self.target_mixer.load_state_dict(state["target_mixer"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.last_target_update_episode = int(state["last_target_update_episode"])
        self.train_steps = int(state["train_steps"])
