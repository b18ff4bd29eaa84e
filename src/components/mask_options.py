"""The masking options of the TD loss, without torch: the config schema imports them.

Each axis of ``docs/masking.md`` is one field of ``MaskOptions``; ``qmixlab.components.masks``
applies them to tensors (and re-exports everything defined here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

PYMARL_UNAVAILABLE_FILL = -9999999.0

NORMALISATIONS = ("valid_steps", "valid_agent_steps", "episodes", "all_rows")
TIMEOUT_MODES = ("bootstrap", "terminal")
DEAD_AGENT_MODES = ("none", "zero_utilities", "agent_loss_mask")
INVALID_STEP_MODES = ("mask", "ignore")
MASKED_ROW_MODES = ("keep", "drop")
NAMED_FILL_VALUES = ("pymarl", "finfo_min", "-inf")
VISIBILITY_MODES = ("mask", "zeros")
NAMED_ATTENTION_FILL_VALUES = ("-inf", "finfo_min")


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"masks.{name}={value!r} is not one of {list(allowed)}")


@dataclass(frozen=True)
class MaskOptions:
    """One field per masking axis (numbers refer to the axes of ``docs/masking.md``).

    post_terminal_shift (1): mask the filled row right after an episode's last transition
        (PyMARL's ``mask[:, 1:] *= 1 - terminated[:, :-1]``); False trains on ``filled`` alone.
    mask_padding (2): mask rows that were never written; False treats every row as valid.
    normalisation (3): the loss denominator: ``valid_steps`` (PyMARL with a mixer),
        ``valid_agent_steps`` (PyMARL's IQL, which expands the mask over agents),
        ``episodes`` (each episode's mean over its valid steps, averaged over episodes), or
        ``all_rows`` (a plain mean over every element including masked ones: a known bias).
    timeout (4): ``bootstrap`` (a time limit is not a terminal state) or ``terminal``
        (what PyMARL-family runs on SMAC do). Either way the row after a time-out is masked.
    target_avail_mask (5): restrict the target max and the double-Q argmax to available
        actions. avail_fill_value: what unavailable actions are set to: ``pymarl``
        (-9999999), ``finfo_min``, ``-inf`` or a number.
    dead_agents (6): ``none`` (standard QMIX), ``zero_utilities`` (dead agents' chosen and
        target utilities are zero before mixing) or ``agent_loss_mask`` (per-agent losses only:
        dead agent-steps leave the loss). Which agents are alive is the episode's ``alive``
        field; batches without one fall back to SMAC's rule (no-op, action 0, is a dead
        agent's only available action).
    invalid_steps (7): ``mask``: environment-flagged invalid steps get zero reward and leave
        every loss term; ``ignore``: the flag is disregarded.
    masked_rows (8): ``keep`` masked rows and zero them at reduction, or ``drop`` them before
        the reduction; both give the same loss and gradients.
    trim_to_longest (9): cut the batch to its longest filled episode before any forward pass.
    skip_unread_rows (9): run the networks only on the rows of each episode that the loss reads
        (padding and post-terminal rows are skipped: by the agents in chunks of a few steps, by
        the mixers row by row). Neither option changes the loss or the gradients.
    visibility (11): how an entity agent (``agent.name=entity_attention``) treats entities it
        cannot see (dead or out of sight range; ``qmixlab.modules.entities`` derives this from
        SMAC's observation layout): ``mask``: they leave the attention as keys, so nothing about
        them (not even how many there are) reaches any output; ``zeros``: they are attended as
        zero feature vectors, as the flat agent sees them. Either way their stored features are
        replaced by zeros with ``where`` before any arithmetic, so NaN or inf stored there
        reaches neither outputs nor gradients. The flat ``rnn`` agent ignores this axis.
    attention_fill_value (11): the value masked attention logits take: ``-inf`` (exact: masked
        keys get weight 0), ``finfo_min`` (the dtype's most negative finite number) or a number
        (a PyMARL-style constant such as -1e9; a small one lets masked keys leak some weight).
        A query whose every key is masked would average nothing (NaN with ``-inf``, a uniform
        average of masked keys otherwise); the entity agent's own token is always a visible
        key, and a row with no visible key anyway gets a zero output.
    """

    post_terminal_shift: bool = True
    mask_padding: bool = True
    normalisation: str = "valid_steps"
    timeout: str = "bootstrap"
    target_avail_mask: bool = True
    avail_fill_value: Union[str, float] = "pymarl"
    dead_agents: str = "none"
    invalid_steps: str = "mask"
    masked_rows: str = "keep"
    trim_to_longest: bool = True
    skip_unread_rows: bool = True
    visibility: str = "mask"
    attention_fill_value: Union[str, float] = "-inf"

    def __post_init__(self):
        for name in ("post_terminal_shift", "mask_padding", "target_avail_mask", "trim_to_longest",
                     "skip_unread_rows"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"masks.{name} must be a bool, got {getattr(self, name)!r}")
        _check_choice("normalisation", self.normalisation, NORMALISATIONS)
        _check_choice("timeout", self.timeout, TIMEOUT_MODES)
        _check_choice("dead_agents", self.dead_agents, DEAD_AGENT_MODES)
        _check_choice("invalid_steps", self.invalid_steps, INVALID_STEP_MODES)
        _check_choice("masked_rows", self.masked_rows, MASKED_ROW_MODES)
        _check_choice("visibility", self.visibility, VISIBILITY_MODES)
        attention_fill = self.attention_fill_value
        if isinstance(attention_fill, str):
            _check_choice("attention_fill_value", attention_fill, NAMED_ATTENTION_FILL_VALUES)
        elif isinstance(attention_fill, bool) or not isinstance(attention_fill, (int, float)):
            raise TypeError(
                f"masks.attention_fill_value must be a number or one of "
                f"{list(NAMED_ATTENTION_FILL_VALUES)}, got {attention_fill!r}"
            )
        elif attention_fill != attention_fill or attention_fill == float("inf"):
            raise ValueError(f"masks.attention_fill_value={attention_fill!r} must be -inf or a finite number")
        fill = self.avail_fill_value
        if isinstance(fill, str):
            _check_choice("avail_fill_value", fill, NAMED_FILL_VALUES)
        elif isinstance(fill, bool) or not isinstance(fill, (int, float)):
            raise TypeError(
                f"masks.avail_fill_value must be a number or one of {list(NAMED_FILL_VALUES)}, "
                f"got {fill!r}"
            )

    def fill_value(self, dtype) -> float:
        """The value unavailable actions take in tensors of ``dtype`` (a torch dtype)."""
        fill = self.avail_fill_value
        if fill == "pymarl":
            return PYMARL_UNAVAILABLE_FILL
        if fill == "finfo_min":
            import torch  # only here: the options themselves stay importable without torch

            return torch.finfo(dtype).min
        if fill == "-inf":
            return float("-inf")
        return float(fill)

    def attention_fill(self, dtype) -> float:
        """The value masked attention logits take in tensors of ``dtype`` (a torch dtype)."""
        fill = self.attention_fill_value
        if fill == "finfo_min":
            import torch  # only here: the options themselves stay importable without torch

            return torch.finfo(dtype).min
        return float(fill)  # "-inf" or a number
