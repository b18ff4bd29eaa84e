"""What the networks compute for one training batch, decided before any forward pass.

``plan_compute`` trims the batch, moves it to the learner's device, applies the mask rules
(``qmixlab.components.masks``) and derives from them which rows the agents and the mixers must
run and which inputs must be guarded against NaN. None of it changes the loss or the gradients
(masking axis 9 of ``docs/masking.md``); it only decides how much work they cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from qmixlab.components import masks as mask_rules
from qmixlab.components.episode_batch import EpisodeBatch
from qmixlab.components.mask_options import MaskOptions


@dataclass(frozen=True)
class ComputePlan:
    """One batch of ``T`` rows made ready for the learner.

    batch: the (trimmed) ``EpisodeBatch`` on the learner's device.
    mask: the mask rules applied to it.
    obs [B, T, N, D], state [B, T, S]: the networks' inputs; when the batch holds a non-finite
        value, the rows nothing reads are zeros (the networks are causal: those rows cannot
        change the rows that are read, and ``0 * NaN`` would poison the gradients).
    agent_lengths [B]: the rows each episode's agents must run (None: every row).
    online_mixer_rows, target_mixer_rows: bool ``[B, T-1]``: the transitions whose chosen
        utilities, and whose bootstrap utilities, the mixers must mix (None: every row).
    """

    batch: EpisodeBatch
    mask: mask_rules.TransitionMasks
    obs: torch.Tensor
    state: torch.Tensor
    agent_lengths: Optional[torch.Tensor]
    online_mixer_rows: Optional[torch.Tensor]
    target_mixer_rows: Optional[torch.Tensor]


def plan_compute(batch: EpisodeBatch, masks: MaskOptions, td_lambda: float, device: torch.device) -> ComputePlan:
    """The plan for ``batch`` (an ``EpisodeBatch`` in the compute layout, as
    ``ReplayBuffer.sample`` returns it; it is moved to ``device`` in place)."""
    if masks.trim_to_longest:
        batch = batch[:, : max(batch.max_t_filled(), 2)]
    batch = batch.to(device)
    mask = mask_rules.build_transition_masks(batch, masks)

    # Rows nothing reads form a suffix of each episode: they may be skipped, and only
    # non-finite values there need replacing.
    read = mask_rules.transitions_read_by_targets(mask.step, mask.cuts_bootstrap, mask.ends_episode, td_lambda)
    needed = mask_rules.rows_needed_by_networks(mask.step, read, mask.cuts_bootstrap, batch.max_seq_length)
    obs, state = batch["obs"], batch["state"]
    zero = torch.zeros((), device=device)
    if not bool(torch.isfinite(obs.sum())):  # one reduction: NaN and inf propagate
        obs = torch.where(needed.unsqueeze(-1), obs, zero)
    if not bool(torch.isfinite(state.sum())):
        state = torch.where(needed, state, zero)

    if not masks.skip_unread_rows:
        return ComputePlan(batch, mask, obs, state, None, None, None)
    # The loss reads the chosen utilities of the transitions in the step mask, the targets the
    # bootstrap utilities of the transitions in ``read``.
    return ComputePlan(batch, mask, obs, state, agent_lengths=needed.sum(dim=(1, 2)),
                       online_mixer_rows=mask.step[..., 0], target_mixer_rows=read[..., 0])
