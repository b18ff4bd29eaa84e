"""The one value-decomposition Q-learner: IQL, VDN, QMIX, the attention mixer and QPLEX differ
only in the mixer (QPLEX also reads the joint action and each agent's best utility).

Read ``train`` top to bottom: the compute plan (``qmixlab.learners.compute_plan``) is prepared
first, then the mask, the target, the loss and the update fit on one screen; every masking
decision is delegated to ``qmixlab.components.masks``.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch

from qmixlab.components import masks as mask_rules
from qmixlab.components.mask_options import MaskOptions
from qmixlab.learners.compute_plan import plan_compute
from qmixlab.learners.member_adam import MemberAdam, inactive_rows_kept
from qmixlab.learners.options import LearnerOptions  # also re-exported: defined without torch
from qmixlab.learners.targets import lambda_returns
from qmixlab.modules.mixers import QPLEXMixer


def _mix_rows(mixer, rows, *inputs: torch.Tensor) -> torch.Tensor:
    """``mixer(*inputs)`` (``agent_qs [B, T, N]``, ``states [B, T, S]`` and, for QPLEX, the
    actions and best utilities ``[B, T, N]``) -> [B, T, 1], computed only on ``rows`` (bool
    [B, T]; None: all) when that skips any; other rows hold zero."""
    if rows is None or bool(rows.all()):
        return mixer(*inputs)
    index = rows.nonzero(as_tuple=True)
    mixed = mixer(*(part[index].unsqueeze(0) for part in inputs))[0]  # [R, 1]
    return mixed.new_zeros(*rows.shape, 1).index_put(index, mixed)


class QLearner:
    """Recurrent off-policy Q-learning on whole episodes with an optional mixer.

    ``mac`` is an ``AgentController`` (``unroll(obs, actions) -> [B, T, N, A]``), ``mixer`` a
    module ``(agent_qs [B, T, N], states [B, T, S]) -> [B, T, 1]`` or None for independent
    Q-learning; a ``QPLEXMixer`` is also given the actions and each agent's best utility
    ``(agent_qs, states, actions [B, T, N], max_qs [B, T, N])``. ``options`` are the
    hyper-parameters, ``masks`` the masking rules of the loss.

    Several seeds as one batch: when the agent (and mixer) are stacked over ``members`` runs
    (``qmixlab.modules.stacked``), batches hold the members' episodes member-major, every
    reduction is taken per member (``masks.per_member``), gradients are clipped per member, and
    ``train`` returns one statistics dict per member. Each member learns as it would alone.
    """

    def __init__(self, mac, mixer, n_agents: int, options: LearnerOptions, masks: MaskOptions, device="cpu"):
        if not isinstance(options, LearnerOptions):
            raise TypeError(f"options must be a LearnerOptions, got {type(options).__name__}")
        if not isinstance(masks, MaskOptions):
            raise TypeError(f"masks must be a MaskOptions, got {type(masks).__name__}")
        if masks.dead_agents == "agent_loss_mask" and mixer is not None:
            raise ValueError(
                "masks.dead_agents='agent_loss_mask' masks per-agent losses and needs mixer=None "
                "(independent Q-learning); with a mixer use 'zero_utilities'"
            )
        self.options = options
        self.masks = masks
        self.n_agents = n_agents
        self.device = torch.device(device)
        self.mac = mac.to(self.device)
        self.mixer = mixer.to(self.device) if mixer is not None else None
        self.members = int(getattr(getattr(mac, "agent", None), "members", 1))
        mixer_members = int(getattr(mixer, "members", self.members)) if mixer is not None else self.members
        if mixer_members != self.members:
            raise ValueError(f"the agent is stacked over {self.members} member(s) but the mixer over {mixer_members}")
        template = getattr(mixer, "template", mixer)  # a stacked mixer's single-member module
        self.mixer_reads_actions = isinstance(template, QPLEXMixer)
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
        elif self.members > 1:  # one step count per member (see member_adam)
            self.optimiser = MemberAdam(self.params, self.members, lr=options.lr, eps=options.optim_eps)
        else:
            self.optimiser = torch.optim.Adam(self.params, lr=options.lr, eps=options.optim_eps, foreach=True)
        # Per member when several train together: a resumed group's members may be at different
        # episode counts (each one's checkpoint was saved at its own iteration).
        self.last_target_update_episode = 0 if self.members == 1 else [0] * self.members
        self.train_steps = 0 if self.members == 1 else [0] * self.members

    # ------------------------------------------------------------------ training step
    def train(self, batch, t_env: int = 0, episode_num=0, active=None):
        """One gradient step on ``batch`` (an ``EpisodeBatch`` in the compute layout, as
        ``ReplayBuffer.sample`` returns it; it is moved to the learner's device in place).

        With several members: ``batch`` holds each member's sample member-major, ``active``
        (bool per member, default all) says who trains (an inactive member's weights, optimiser
        state, targets and counts stay as they were), ``episode_num`` is each member's episode
        count (or one count for all), and the result is a list of per-member statistics."""
        opts, rules = self.options, self.masks
        K = self.members
        plan = plan_compute(batch, rules, opts.td_lambda, self.device)
        batch, mask = plan.batch, plan.mask
        actions, avail = batch["actions"], batch["avail_actions"]
        zero = torch.zeros((), device=self.device)

        # Utilities: online for the actions taken, target (double-Q) for the bootstrap rows.
        agent_qs = self.mac.unroll(plan.obs, actions, lengths=plan.agent_lengths)  # [B, T, N, A]
        chosen_qs = agent_qs[:, :-1].gather(3, actions[:, :-1]).squeeze(3)  # [B, T-1, N]
        with torch.no_grad():
            next_qs = self.target_mac.unroll(plan.obs, actions, lengths=plan.agent_lengths)[:, 1:]
            unavailable = ~avail[:, 1:] if rules.target_avail_mask else None
            if unavailable is not None:
                next_qs = next_qs.masked_fill(unavailable, rules.fill_value(next_qs.dtype))
            if opts.double_q:  # the online network picks the action, the target network values it
                online_next = agent_qs[:, 1:].detach()
                if unavailable is not None:
                    online_next = online_next.masked_fill(unavailable, rules.fill_value(online_next.dtype))
                next_actions = online_next.argmax(dim=3, keepdim=True)
                next_max_qs = next_qs.gather(3, next_actions).squeeze(3)
            else:
                next_max_qs, next_actions = next_qs.max(dim=3, keepdim=True)
                next_max_qs = next_max_qs.squeeze(3)
            if self.mixer_reads_actions:
                # QPLEX's advantages: each utility against the agent's best available one. The
                # chosen utility bounds it from below, so a row without available actions
                # (padding) gets advantage zero rather than one against the fill value.
                fill = rules.fill_value(agent_qs.dtype)
                online_available = agent_qs[:, :-1].detach().masked_fill(~avail[:, :-1], fill)
                best_qs = torch.maximum(online_available.max(dim=3).values, chosen_qs.detach())
                next_best_qs = next_qs.max(dim=3).values  # the target's own best; differs under double-Q
        if rules.dead_agents == "zero_utilities":
            chosen_qs = torch.where(mask.alive[:, :-1], chosen_qs, zero)
            next_max_qs = torch.where(mask.alive[:, 1:], next_max_qs, zero)
            if self.mixer_reads_actions:
                best_qs = torch.where(mask.alive[:, :-1], best_qs, zero)
                next_best_qs = torch.where(mask.alive[:, 1:], next_best_qs, zero)
        if self.mixer is not None:
            online_inputs = [chosen_qs, plan.state[:, :-1]]
            target_inputs = [next_max_qs, plan.state[:, 1:]]
            if self.mixer_reads_actions:
                online_inputs += [actions[:, :-1, :, 0], best_qs]
                target_inputs += [next_actions[..., 0], next_best_qs]
            # Skipping rows would break the members' equal-sized blocks: stacked mixers mix all rows.
            online_rows, target_rows = (plan.online_mixer_rows, plan.target_mixer_rows) if K == 1 else (None, None)
            chosen_qs = _mix_rows(self.mixer, online_rows, *online_inputs)  # [B, T-1, 1]
            with torch.no_grad():
                next_max_qs = _mix_rows(self.target_mixer, target_rows, *target_inputs)
            element_mask = mask.step
        else:
            element_mask = mask_rules.build_agent_mask(mask.step, mask.alive[:, :-1], rules)

        # Target and loss.
        rewards = torch.where(mask.step, batch["reward"][:, :-1], zero)  # also zeroes flagged invalid steps
        if opts.standardise_rewards:
            rewards = mask_rules.standardise_over_valid(rewards, mask.step, members=K)
        targets = lambda_returns(rewards.to(chosen_qs.dtype).expand_as(chosen_qs), next_max_qs,
                                 mask.cuts_bootstrap, mask.ends_episode, opts.gamma, opts.td_lambda).detach()
        td_error = chosen_qs - targets
        loss = opts.td_loss_scale * mask_rules.masked_td_loss(td_error, element_mask, mask.step, rules,
                                                              self.n_agents, members=K)

        # Update.
        self.optimiser.zero_grad(set_to_none=True)
        if K == 1:
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, opts.grad_norm_clip, foreach=True)
        else:
            active = self._active_members(active)
            torch.where(active, loss, zero).sum().backward()  # d(sum)/d(member k) = member k's loss alone
            grad_norm = self._clip_member_grads(opts.grad_norm_clip, active)
        if K == 1:
            self.optimiser.step()
            self.train_steps += 1
            self._update_targets(episode_num)
        else:
            self._member_optimiser_step(active)
            trained = active.tolist()
            self.train_steps = [n + int(t) for n, t in zip(self.train_steps, trained)]
            episodes = list(episode_num) if isinstance(episode_num, (list, tuple)) else [episode_num] * K
            if len(episodes) != K:
                raise ValueError(f"episode_num must hold one count per member ({K}), got {len(episodes)}")
            self._update_member_targets(episodes, trained)

        with torch.no_grad():
            td_abs = torch.where(element_mask.expand_as(td_error), td_error, zero).abs()
            stats = {
                "loss": loss.detach(),
                "td_error_abs": mask_rules.masked_mean(td_abs, element_mask, members=K),
                "q_taken_mean": mask_rules.masked_mean(chosen_qs.detach(), element_mask, members=K),
                "target_mean": mask_rules.masked_mean(targets, element_mask, members=K),
                "grad_norm": grad_norm,
                "mask_fraction": self._mask_fraction(batch, mask.step),
            }
            if K == 1:
                return {key: float(value) for key, value in stats.items()}
            columns = {key: value.tolist() for key, value in stats.items()}
            return [{key: float(column[k]) for key, column in columns.items()} for k in range(K)]

    # ------------------------------------------------------------------ several members
    def _mask_fraction(self, batch, step_mask: torch.Tensor) -> torch.Tensor:
        """The fraction of the batch's transitions that are trained on. Members share one
        batch length (the longest member's); each one's fraction is over the length its own
        batch would have had alone."""
        K = self.members
        if K == 1:
            return step_mask.float().mean()
        filled = batch["filled"][..., 0].reshape(K, -1, step_mask.shape[1] + 1).any(dim=1)  # [K, T]
        steps = torch.arange(1, filled.shape[1] + 1, device=filled.device)
        lengths = torch.where(filled, steps, torch.zeros_like(steps)).amax(dim=1)
        lengths = lengths.clamp(min=2) if self.masks.trim_to_longest else torch.full_like(lengths, filled.shape[1])
        trained = step_mask.reshape(K, -1).sum(dim=1)
        return trained / ((lengths - 1) * (step_mask.shape[0] // K))

    def _active_members(self, active) -> torch.Tensor:
        if active is None:
            return torch.ones(self.members, dtype=torch.bool, device=self.device)
        active = torch.as_tensor(active, dtype=torch.bool, device=self.device)
        if tuple(active.shape) != (self.members,):
            raise ValueError(f"active must be bool [{self.members}] (one per member), got {tuple(active.shape)}")
        return active

    def _stacked_modules(self):
        return [m for m in (self.mac.agent, self.mixer) if m is not None and hasattr(m, "member_grad_sq_norms")]

    def _clip_member_grads(self, max_norm: float, active: torch.Tensor) -> torch.Tensor:
        """torch's ``clip_grad_norm_`` for each member's own gradients; inactive members' are
        zeroed. Returns the per-member norms before clipping."""
        modules = self._stacked_modules()
        norms = torch.stack([m.member_grad_sq_norms() for m in modules]).sum(0).sqrt()
        coefficients = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        coefficients = torch.where(active, coefficients, torch.zeros_like(coefficients))
        for module in modules:
            module.scale_member_grads(coefficients)
            if not bool(active.all()):  # 0 * NaN is NaN: a failed member's gradients are set, not scaled
                for parameter in module.parameters():
                    if parameter.grad is not None:
                        parameter.grad[~active] = 0
        return norms

    # ------------------------------------------------------------------ target networks
    def _member_optimiser_step(self, active: torch.Tensor) -> None:
        """Step only the active members (MemberAdam does so itself; for another optimiser the
        inactive members' rows are put back after its step)."""
        if isinstance(self.optimiser, MemberAdam):
            self.optimiser.step(active=active)
            return
        with inactive_rows_kept(self.optimiser, active):
            self.optimiser.step()

    def _update_member_targets(self, episodes, trained) -> None:
        """Each trained member's target update on its own schedule (hard: every
        ``target_update_interval_episodes`` of its episodes; soft: every step it trains)."""
        opts = self.options
        if opts.target_update == "soft":
            self._soft_update(opts.target_update_tau, torch.tensor(trained, device=self.device))
            return
        for k in range(self.members):
            if trained[k] and episodes[k] - self.last_target_update_episode[k] >= opts.target_update_interval_episodes:
                self.target_mac.agent.load_member_state_dict(k, self.mac.agent.member_state_dict(k))
                if self.mixer is not None:
                    self.target_mixer.load_member_state_dict(k, self.mixer.member_state_dict(k))
                self.last_target_update_episode[k] = episodes[k]

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
    def _soft_update(self, tau: float, members: Optional[torch.Tensor] = None) -> None:
        """target <- target + tau (online - target); with ``members`` (bool [K]) only theirs."""
        pairs = [(self.target_mac, self.mac)]
        if self.mixer is not None:
            pairs.append((self.target_mixer, self.mixer))
        for target, online in pairs:
            for target_param, param in zip(target.parameters(), online.parameters()):
                if members is None:
                    target_param.lerp_(param, tau)
                else:
                    keep = members.view((-1,) + (1,) * (param.dim() - 1))
                    target_param.copy_(torch.where(keep, target_param.lerp(param, tau), target_param))

    # ------------------------------------------------------------------ checkpoints
    def member_state_dict(self, k: int) -> dict:
        """Member k's part, laid out exactly as a one-member learner's ``state_dict``."""
        if self.members == 1:
            return self.state_dict()

        def controller(mac):
            return {"agent." + key: value for key, value in mac.agent.member_state_dict(k).items()}

        return {
            "mac": controller(self.mac),
            "target_mac": controller(self.target_mac),
            "mixer": self.mixer.member_state_dict(k) if self.mixer is not None else None,
            "target_mixer": self.target_mixer.member_state_dict(k) if self.mixer is not None else None,
            "optimiser": _member_optimiser_state(self.optimiser.state_dict(), k, self.members),
            "last_target_update_episode": self.last_target_update_episode[k],
            "train_steps": self.train_steps[k],
        }

    def load_agent_state_dict(self, k: int, mac_state: dict) -> None:
        """Load only a one-member learner's agent network (``state_dict()["mac"]``) into member k,
        online and target (evaluation: the mixer does not act, and may not fit another map)."""
        if self.members == 1:
            self.mac.load_state_dict(mac_state)
            self.target_mac.load_state_dict(mac_state)
            return
        prefix = "agent."
        agent_state = {key[len(prefix):]: value for key, value in mac_state.items() if key.startswith(prefix)}
        self.mac.agent.load_member_state_dict(k, agent_state)
        self.target_mac.agent.load_member_state_dict(k, agent_state)

    def load_member_state_dict(self, k: int, state: dict) -> None:
        """Load a one-member learner's ``state_dict`` into member k."""
        if self.members == 1:
            return self.load_state_dict(state)

        def controller(mac, values):
            prefix = "agent."
            unexpected = [key for key in values if not key.startswith(prefix)]
            if unexpected:
                raise KeyError(f"unexpected keys in the controller state: {unexpected}")
            mac.agent.load_member_state_dict(k, {key[len(prefix):]: v for key, v in values.items()})

        controller(self.mac, state["mac"])
        controller(self.target_mac, state["target_mac"])
        if self.mixer is not None:
            self.mixer.load_member_state_dict(k, state["mixer"])
            self.target_mixer.load_member_state_dict(k, state["target_mixer"])
        merged = _load_member_optimiser_state(self.optimiser.state_dict(), state["optimiser"], k, self.members,
                                              per_member_steps=isinstance(self.optimiser, MemberAdam))
        self.optimiser.load_state_dict(merged)
        self.last_target_update_episode[k] = int(state["last_target_update_episode"])
        self.train_steps[k] = int(state["train_steps"])

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


# --------------------------------------------------------------------------- optimiser slices
def _member_optimiser_state(stacked: dict, k: int, members: int) -> dict:
    """Member k's slice of an optimiser state over stacked parameters (every per-element buffer
    has the leading member dimension, and so has ``MemberAdam``'s ``step``; RMSprop's scalar
    ``step``, which its update does not read, is shared)."""
    state = {}
    for index, values in stacked["state"].items():
        state[index] = {name: (value[k].clone() if torch.is_tensor(value) and value.dim() > 0
                               and value.shape[0] == members else value.clone() if torch.is_tensor(value) else value)
                        for name, value in values.items()}
    return {"state": state, "param_groups": copy.deepcopy(stacked["param_groups"])}


def _load_member_optimiser_state(stacked: dict, member: dict, k: int, members: int,
                                 per_member_steps: bool = False) -> dict:
    """``stacked`` with member k's slices replaced by the one-member state ``member``; with
    ``per_member_steps`` (``MemberAdam``) the member's scalar ``step`` goes into its entry of the
    step vector."""
    if len(member["param_groups"]) != len(stacked["param_groups"]) or any(
            len(a["params"]) != len(b["params"]) for a, b in zip(member["param_groups"], stacked["param_groups"])):
        raise ValueError("the member's optimiser state holds a different set of parameters")
    merged = {"state": {}, "param_groups": stacked["param_groups"]}
    for index, values in member["state"].items():
        current = stacked["state"].get(index)
        entry = {}
        for name, value in values.items():
            per_member = per_member_steps and name == "step"
            if torch.is_tensor(value) and (value.dim() > 0 or per_member):
                if current is None:  # nothing stacked yet (no step taken): other members start at zero
                    full = value.new_zeros(members, *value.shape)
                else:
                    full = current[name].clone()
                if tuple(full.shape[1:]) != tuple(value.shape):
                    raise ValueError(f"optimiser state {name!r} of parameter {index}: member shape "
                                     f"{tuple(value.shape)}, stacked {tuple(full.shape)}")
                full[k] = value
                entry[name] = full
            else:
                entry[name] = value.clone() if torch.is_tensor(value) else value
        merged["state"][index] = entry
    for index, values in stacked["state"].items():
        merged["state"].setdefault(index, values)
    return merged
