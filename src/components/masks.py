"""Every masking decision of the TD loss, in one module.

The learner asks this module four questions and nothing else decides them:

* which transitions enter the loss, which end an episode and which of those cut the bootstrap,
  and which agents are alive (``build_transition_masks``, from ``episode_end_flags``,
  ``build_step_mask`` and the episode's ``alive`` field; ``build_agent_mask`` for per-agent
  losses),
* which rows the networks must see at all (``transitions_read_by_targets``,
  ``rows_needed_by_networks``), so that padding and
  post-terminal rows can never leak NaN into the loss or the gradients,
* how masked values are reduced to one number (``masked_td_loss``, ``masked_mean``),
* what an entity agent may see of the entities of its observation (axis 11, feature-level
  visibility: ``hide_unseen_entities``, ``attention_key_mask``, ``masked_attention``).

Each axis of ``docs/masking.md`` is one field of ``MaskOptions`` (defined without torch in
``qmixlab.components.mask_options`` and re-exported here); the defaults reproduce PyMARL's QMIX
except that time-outs bootstrap. Tensors are laid out ``[batch, time, ...]``; the step mask
covers transitions ``t = 0 .. T-2`` of a batch of ``T`` rows (the last row only serves as a
bootstrap state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from qmixlab.components.mask_options import (  # noqa: F401  (re-exported)
    DEAD_AGENT_MODES,
    INVALID_STEP_MODES,
    MASKED_ROW_MODES,
    NAMED_ATTENTION_FILL_VALUES,
    NAMED_FILL_VALUES,
    NORMALISATIONS,
    PYMARL_UNAVAILABLE_FILL,
    TIMEOUT_MODES,
    VISIBILITY_MODES,
    MaskOptions,
)

ALIVE_FIELD = "alive"


def episode_end_flags(terminated: torch.Tensor, timeout: Optional[torch.Tensor], options: MaskOptions):
    """Return ``(cuts_bootstrap, ends_episode)`` as bool tensors shaped like ``terminated``.

    ``ends_episode`` drives the post-terminal shift: a time-out ends the stored episode even when
    it bootstraps, so the row after it is masked too (the standard mask alone would leave it
    unmasked whenever truncation happens before the buffer's last row).
    """
    terminated = terminated.bool()
    timeout = torch.zeros_like(terminated) if timeout is None else timeout.bool()
    ends_episode = terminated | timeout
    cuts_bootstrap = ends_episode if options.timeout == "terminal" else terminated
    return cuts_bootstrap, ends_episode


def build_step_mask(
    filled: torch.Tensor,
    ends_episode: torch.Tensor,
    invalid: Optional[torch.Tensor],
    options: MaskOptions,
) -> torch.Tensor:
    """Bool mask ``[B, T-1, 1]`` of the transitions that enter the loss.

    Standard: ``mask = filled[:, :-1]; mask[:, 1:] &= ~ends_episode[:, :-2]``.
    """
    filled = filled.bool()
    mask = filled[:, :-1].clone() if options.mask_padding else torch.ones_like(filled[:, :-1])
    if options.post_terminal_shift:
        mask[:, 1:] &= ~ends_episode[:, :-2].bool()
    if invalid is not None and options.invalid_steps == "mask":
        mask &= ~invalid[:, :-1].bool()
    return mask


def alive_from_noop_rule(avail_actions: torch.Tensor) -> torch.Tensor:
    """Bool ``[..., n_agents]`` from avail ``[..., n_agents, n_actions]`` by SMAC's rule: an agent
    is dead when no-op (action 0) is its only available action. The fallback for batches
    without an ``alive`` field; rows with no available action at all count as alive."""
    return ~(avail_actions[..., 0] & ~avail_actions[..., 1:].any(dim=-1))


def build_agent_mask(step_mask: torch.Tensor, alive: torch.Tensor, options: MaskOptions) -> torch.Tensor:
    """Element mask for a per-agent loss ``[B, T-1, n_agents]`` from the step mask ``[B, T-1, 1]``
    and ``alive`` ``[B, T-1, n_agents]`` (dead agent-steps removed when
    ``dead_agents='agent_loss_mask'``)."""
    if options.dead_agents == "agent_loss_mask":
        return step_mask & alive
    return step_mask.expand(-1, -1, alive.shape[2])


@dataclass(frozen=True)
class TransitionMasks:
    """The mask rules applied to one batch of ``T`` rows: bool tensors over its ``T - 1``
    transitions, and over its rows for ``alive``."""

    step: torch.Tensor  # [B, T-1, 1]: the transitions in the loss
    cuts_bootstrap: torch.Tensor  # [B, T-1, 1]: the target does not bootstrap
    ends_episode: torch.Tensor  # [B, T-1, 1]: the episode's last transition
    alive: torch.Tensor  # [B, T, n_agents]


def build_transition_masks(batch, options: MaskOptions) -> TransitionMasks:
    """The masks of an ``EpisodeBatch`` holding ``filled``, ``terminated``, ``avail_actions`` and
    optionally ``timeout``, ``invalid`` and ``alive`` (bool ``[B, T, n_agents, 1]``)."""
    timeout = batch["timeout"] if "timeout" in batch else None
    invalid = batch["invalid"] if "invalid" in batch else None
    cuts_bootstrap, ends_episode = episode_end_flags(batch["terminated"], timeout, options)
    step = build_step_mask(batch["filled"], ends_episode, invalid, options)
    if ALIVE_FIELD in batch:
        alive = batch[ALIVE_FIELD][..., 0]
    else:
        alive = alive_from_noop_rule(batch["avail_actions"])
    return TransitionMasks(step, cuts_bootstrap[:, :-1], ends_episode[:, :-1], alive)


def transitions_read_by_targets(
    step_mask: torch.Tensor, cuts_bootstrap: torch.Tensor, ends_episode: torch.Tensor, td_lambda: float
) -> torch.Tensor:
    """Bool ``[B, T, 1]`` over transitions: those whose TD target the loss depends on.

    A transition in the loss reads its own target. With ``td_lambda > 0`` that target also reads
    the next transition's (``lambda_returns``), and so on until a transition ends the episode or
    cuts the bootstrap; with a mask that keeps a transition past the episode's end (for example
    ``post_terminal_shift=False``) such a chain runs on into the padding. Flags are per
    transition (``cuts_bootstrap`` and ``ends_episode`` without their last row).
    """
    if td_lambda == 0.0:
        return step_mask.clone()
    stops = (cuts_bootstrap | ends_episode).long()
    # Segments of transitions between stops (a stop closes its segment); a transition is read
    # when a transition of the loss lies at or before it in the same segment.
    segment = stops.cumsum(dim=1) - stops
    latest_in_loss = torch.where(step_mask, segment, torch.full_like(segment, -1)).cummax(dim=1).values
    return latest_in_loss == segment


def rows_needed_by_networks(
    step_mask: torch.Tensor, read: torch.Tensor, cuts_bootstrap: torch.Tensor, total_rows: int
) -> torch.Tensor:
    """Bool ``[B, T, 1]``: rows whose inputs the networks must see.

    A row is needed when its transition is in the loss, when it is the bootstrap state of a
    transition whose target is read (``transitions_read_by_targets``) and does not cut the
    bootstrap (``cuts_bootstrap`` per transition, ``[B, T-1, 1]``), or when a later row of the
    same episode is needed (the recurrent state runs through it). Every other row's inputs are
    replaced by zeros, so a NaN stored in padding or after a terminal state reaches neither the
    loss nor the gradients (``0 * NaN`` in a backward pass would).
    """
    batch = step_mask.shape[0]
    direct = torch.zeros(batch, total_rows, 1, dtype=torch.bool, device=step_mask.device)
    direct[:, :-1] |= step_mask
    direct[:, 1:] |= read & ~cuts_bootstrap
    # Reverse cumulative "any": a row is needed if any row at or after it is.
    return direct.flip(1).cummax(dim=1).values.flip(1)


def _select(values: torch.Tensor, mask: torch.Tensor, masked_rows: str) -> torch.Tensor:
    """Masked entries selected away *before* any arithmetic, so NaN there has no gradient path."""
    mask = mask.expand_as(values)
    if masked_rows == "drop":
        return values[mask]
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))


def masked_td_loss(
    td_error: torch.Tensor,
    element_mask: torch.Tensor,
    step_mask: torch.Tensor,
    options: MaskOptions,
    n_agents: int,
    members: int = 1,
) -> torch.Tensor:
    """Mean squared TD error under ``options.normalisation``.

    td_error: ``[B, T, K]`` with K = 1 (mixed) or K = n_agents (per-agent loss).
    element_mask: bool, broadcastable to td_error. step_mask: bool ``[B, T, 1]``.
    ``sum(mask) == 0`` gives an exact, finite zero with a gradient graph.
    ``members`` > 1: the batch holds that many runs member-major (``per_member``); the result is
    one loss per member ``[members]``, each the loss of its own rows alone.
    """
    if members > 1:
        return per_member(members, lambda *parts: masked_td_loss(*parts, options, n_agents),
                          td_error, element_mask.expand_as(td_error), step_mask)
    squared = _select(td_error, element_mask, options.masked_rows) ** 2
    total = squared.sum()
    elements = element_mask.expand_as(td_error)
    if options.normalisation == "valid_steps":
        count = step_mask.sum()
    elif options.normalisation == "valid_agent_steps":
        # With a mixer the loss is per step: each valid step counts for its n_agents agent-steps.
        count = elements.sum() * (n_agents // td_error.shape[-1])
    elif options.normalisation == "all_rows":
        count = torch.tensor(td_error.numel(), device=td_error.device)
    else:  # episodes
        if options.masked_rows == "drop":
            episode_of = torch.arange(td_error.shape[0], device=td_error.device).view(-1, 1, 1)
            episode_of = episode_of.expand_as(td_error)[elements]
            per_episode = torch.zeros(td_error.shape[0], dtype=squared.dtype, device=squared.device)
            per_episode = per_episode.index_add(0, episode_of, squared)
        else:
            per_episode = squared.sum(dim=(1, 2))
        steps = step_mask.sum(dim=(1, 2))
        has_steps = steps > 0
        episode_means = per_episode / steps.clamp(min=1)
        return episode_means.sum() / has_steps.sum().clamp(min=1)
    return total / count.clamp(min=1)


def per_member(members: int, reduce, *tensors: torch.Tensor) -> torch.Tensor:
    """``reduce`` applied to each member's rows of ``tensors`` (leading dim ``members * B``,
    member-major: rows ``[k*B, (k+1)*B)`` are member k's), results stacked: ``[members, ...]``.
    Several seeds trained as one batch (``qmixlab.modules.stacked``) reduce this way, so each
    member's number is exactly the one its rows give alone."""
    rows = tensors[0].shape[0]
    if rows % members:
        raise ValueError(f"{rows} rows cannot be split into {members} members of equal size")
    size = rows // members
    return torch.stack([reduce(*(t[k * size:(k + 1) * size] for t in tensors)) for k in range(members)])


def masked_mean(values: torch.Tensor, mask: torch.Tensor, members: int = 1) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``mask`` (broadcastable) is True; 0 if none
    (``members`` > 1: one mean per member, see ``per_member``)."""
    if members > 1:
        return per_member(members, masked_mean, values, mask.expand_as(values))
    mask = mask.expand_as(values)
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    return total / mask.sum().clamp(min=1)


def standardise_over_valid(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8,
                           members: int = 1) -> torch.Tensor:
    """Standardise with mean and std taken over valid rows only; invalid rows become 0
    (``members`` > 1: each member's rows with their own mean and std, see ``per_member``)."""
    if members > 1:
        return per_member(members, lambda v, m: standardise_over_valid(v, m, eps), values,
                          mask.expand_as(values)).flatten(0, 1)
    mask = mask.expand_as(values)
    count = mask.sum().clamp(min=1)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    mean = torch.where(mask, values, zero).sum() / count
    var = torch.where(mask, (values - mean) ** 2, zero).sum() / count
    return torch.where(mask, (values - mean) / (var.sqrt() + eps), zero)


# --------------------------------------------------------------------------- axis 11: entities
def hide_unseen_entities(features: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """features [..., L, F] with the rows of unseen entities (``visible`` [..., L] False) set to
    zero by selection, so NaN or inf stored there reaches neither outputs nor gradients (a
    product ``0 * NaN`` would be NaN)."""
    if visible.dtype != torch.bool or tuple(visible.shape) != tuple(features.shape[:-1]):
        raise ValueError(f"visible must be bool {tuple(features.shape[:-1])} (features without their last "
                         f"dim), got {tuple(visible.shape)} {visible.dtype}")
    zero = torch.zeros((), dtype=features.dtype, device=features.device)
    return torch.where(visible.unsqueeze(-1), features, zero)


def attention_key_mask(visible: torch.Tensor, options: MaskOptions) -> torch.Tensor:
    """Which entities others may attend to, bool like ``visible``: the visible ones with
    ``visibility=mask``, all of them (the unseen as zero vectors) with ``visibility=zeros``."""
    if options.visibility == "mask":
        return visible
    return torch.ones_like(visible)


def masked_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor,
                     options: MaskOptions) -> torch.Tensor:
    """Multi-head attention in which masked keys get the logit fill ``options.attention_fill``.

    query/key/value [M, heads, L, d], key_mask [M, L] bool (True: may be attended) -> [M, heads,
    L, d], by ``scaled_dot_product_attention``: with ``-inf`` its boolean mask, else an additive
    mask holding the fill. A row whose every key is masked would be NaN (``-inf``) or a uniform
    average of masked values (finite fill); such rows attend to every key instead, which keeps
    the forward and backward finite, and their output is then replaced by zeros with ``where``,
    so masked values reach neither that output nor the gradients through it.
    """
    M, L = query.shape[0], key.shape[-2]
    if key_mask.dtype != torch.bool or tuple(key_mask.shape) != (M, L):
        raise ValueError(f"key_mask must be bool [M={M}, L={L}], got {tuple(key_mask.shape)} {key_mask.dtype}")
    has_key = key_mask.any(-1)  # [M]
    safe_mask = key_mask | ~has_key.unsqueeze(-1)
    fill = options.attention_fill(query.dtype)
    if fill == float("-inf"):
        attn_mask = safe_mask[:, None, None, :]
    else:
        attn_mask = torch.zeros(M, L, dtype=query.dtype, device=query.device).masked_fill_(
            ~safe_mask, fill)[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
    zero = torch.zeros((), dtype=out.dtype, device=out.device)
    return torch.where(has_key[:, None, None, None], out, zero)
