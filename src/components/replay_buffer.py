"""Ring buffer of whole padded episodes, each field kept through its own codec.

Two layouts exist:

* **compute layout** (what ``sample()`` returns, an ``EpisodeBatch`` of the scheme): floating
  fields float32, actions long, flags bool, preprocess outputs materialised, the full state;
* **storage layout** (what is kept in memory): one or more tensors per field, chosen by that
  field's codec.

The codecs (planned once, at construction, from the scheme and ``StorageOptions``):

* ``CastCodec`` keeps a field in another dtype: obs and state in float16 by default, other
  floats (reward, ...) in float32, ``actions`` in the narrowest integer dtype holding
  ``n_actions - 1``, and every bool field (``filled``, ``terminated``, ``alive``, any
  environment flag, whatever its name) as one byte per element;
* ``StateWithoutLastActionCodec`` keeps the state without its last-action block (the one-hot of
  every agent's previous action, as SMAC's ``state_last_action=True`` appends it, see
  ``docs/smac.md``) and rebuilds that block from the stored actions;
* ``PreprocessedCodec`` keeps only a "written" flag per row for a preprocess output such as
  ``actions_onehot`` and rebuilds the output from its source.

``EpisodeRing`` only knows slots: where the next episode goes and how many are held.
``insert_episode_batch`` checks the batch's scheme once, encodes each field once and copies the
encoded episodes into their slots; ``sample`` gathers the chosen slots and decodes each field
once, with no scheme validation.

Every value that cannot be represented exactly in the storage layout (an action index that
does not fit, a float16 overflow, a one-hot or last-action block that disagrees with the
stored actions) raises ``ValueError`` at insertion; float rounding to float16 is the only loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from qmixlab.components.episode_batch import (
    FILLED,
    EpisodeBatch,
    FieldSpec,
    OneHot,
    build_fields,
    convert_checked,
)

OBS_FIELD = "obs"
STATE_FIELD = "state"
ACTIONS_FIELD = "actions"
AVAIL_FIELD = "avail_actions"
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_WRITTEN_SUFFIX = ".written"
# Version of ``ReplayBuffer.state_dict()``. Version 1 (no "format" key) had no
# "state_last_action" in its signature; it is upgraded on load.
STATE_DICT_FORMAT = 2


@dataclass(frozen=True)
class StorageOptions:
    """How the replay buffer stores episodes.

    obs_dtype / state_dtype: dtype of the ``obs`` / ``state`` fields.
    other_float_dtype: dtype of every other floating field (reward, ...).
    compact_actions: store ``actions`` in the narrowest integer dtype holding ``n_actions - 1``.
    derive_preprocessed: do not store preprocess outputs (``actions_onehot``); rebuild them.
    state_last_action: ``(start, stop)``, the columns of the state holding the one-hot of every
        agent's previous action, agent-major (``n_agents * n_actions`` columns, zero at t=0);
        the state is stored without them and they are rebuilt from the stored actions.
        ``None``: the state is stored whole.
    derive_state_last_action: shorthand kept for older callers: ``True`` means the block is the
        state's last ``n_agents * n_actions`` columns (SMAC without ``state_timestep_number``).
        Give at most one of the two.
    """

    obs_dtype: torch.dtype = torch.float16
    state_dtype: torch.dtype = torch.float16
    other_float_dtype: torch.dtype = torch.float32
    compact_actions: bool = True
    derive_preprocessed: bool = True
    derive_state_last_action: bool = False
    state_last_action: Optional[Tuple[int, int]] = None

    def __post_init__(self) -> None:
        for name in ("obs_dtype", "state_dtype", "other_float_dtype"):
            value = getattr(self, name)
            if value not in _FLOAT_DTYPES:
                raise ValueError(f"StorageOptions.{name} must be one of {_FLOAT_DTYPES}, got {value!r}")
        for name in ("compact_actions", "derive_preprocessed", "derive_state_last_action"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"StorageOptions.{name} must be a bool, got {value!r}")
        block = self.state_last_action
        if block is not None:
            if not (isinstance(block, (tuple, list)) and len(block) == 2
                    and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in block)
                    and 0 <= block[0] < block[1]):
                raise ValueError(
                    f"StorageOptions.state_last_action must be None or a (start, stop) pair of ints "
                    f"with 0 <= start < stop, got {block!r}"
                )
            object.__setattr__(self, "state_last_action", (int(block[0]), int(block[1])))
            if self.derive_state_last_action:
                raise ValueError(
                    f"StorageOptions: give state_last_action={self.state_last_action} or "
                    f"derive_state_last_action=True, not both"
                )

    @classmethod
    def full_precision(cls, **overrides: Any) -> "StorageOptions":
        """Every floating field stored as float32."""
        base = dict(obs_dtype=torch.float32, state_dtype=torch.float32, other_float_dtype=torch.float32)
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class StoredTensor:
    """One tensor of the storage layout: ``[buffer_size, (T,) *shape]``."""

    name: str
    shape: Tuple[int, ...]
    dtype: torch.dtype
    episode_const: bool


def _int_dtype_for(max_value: int) -> torch.dtype:
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if max_value <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def _first_true(mask: torch.Tensor) -> Tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0])


# --------------------------------------------------------------------------------------------
# Codecs
# --------------------------------------------------------------------------------------------


class FieldCodec:
    """How one compute-layout field is kept in storage.

    ``field``: the compute-layout field; ``stored``: the storage tensors the codec owns;
    ``reads``: other compute fields that ``encode`` and ``decode`` need (decoded first).
    ``encode(data)`` maps the whole batch's compute tensors to this codec's storage tensors,
    raising ``ValueError`` where the value cannot be kept exactly; ``decode(stored, decoded)``
    maps gathered storage tensors (and the already decoded fields it reads) back.
    """

    field: FieldSpec
    stored: Tuple[StoredTensor, ...]
    reads: Tuple[str, ...] = ()

    def encode(self, data: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, stored: Mapping[str, torch.Tensor], decoded: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class CastCodec(FieldCodec):
    """The field as it is, in ``dtype`` (checked: only float rounding may lose information)."""

    def __init__(self, field: FieldSpec, dtype: torch.dtype):
        self.field = field
        self.stored = (StoredTensor(field.name, field.shape, dtype, field.episode_const),)
        self._dtype = dtype

    def encode(self, data):
        name = self.field.name
        return {name: convert_checked(data[name], self._dtype, name)}

    def decode(self, stored, decoded):
        return stored[self.field.name].to(self.field.dtype)


class StateWithoutLastActionCodec(FieldCodec):
    """The state without columns ``[start, stop)``, the one-hot of every agent's previous action.

    Row t of the block is ``one_hot(actions[t-1])`` (agent-major) on filled rows t >= 1 and zero
    elsewhere, exactly as the environment wrote it; insertion checks every row of it (one
    vectorised comparison per insert, so an environment whose block means something else is
    caught on its first episode, and a rare disagreement is never silently replaced).
    """

    def __init__(self, field: FieldSpec, dtype: torch.dtype, block: Tuple[int, int],
                 n_agents: int, n_actions: int):
        start, stop = block
        self.field = field
        self.stored = (StoredTensor(field.name, (field.shape[0] - (stop - start),), dtype, False),)
        self.reads = (ACTIONS_FIELD, FILLED)
        self._dtype = dtype
        self.block = (start, stop)
        self._n_agents, self._n_actions = n_agents, n_actions

    def _write_block(self, block: torch.Tensor, actions: torch.Tensor, filled: torch.Tensor) -> None:
        """block [B, T, n_agents, n_actions] := one-hot of actions[t-1] on filled rows t >= 1."""
        block.zero_()
        if block.shape[1] > 1:
            on = filled[:, 1:, :, None].to(block.dtype).expand(-1, -1, self._n_agents, 1)
            block[:, 1:].scatter_(-1, actions[:, :-1].long(), on)

    def encode(self, data):
        name, (start, stop) = self.field.name, self.block
        state, actions = data[name], data[ACTIONS_FIELD]
        if actions.numel():
            low, high = (int(v) for v in torch.aminmax(actions))
            if low < 0 or high >= self._n_actions:
                raise ValueError(
                    f"field {ACTIONS_FIELD!r}: action {low if low < 0 else high} is outside "
                    f"0..{self._n_actions - 1}, so the state's last-action block cannot be rebuilt from it"
                )
        given = state[..., start:stop].reshape(state.shape[:2] + (self._n_agents, self._n_actions))
        expected = torch.empty_like(given)
        self._write_block(expected, actions, data[FILLED])
        if not torch.equal(given, expected):
            i, t = _first_true((given != expected).flatten(2).any(-1))
            raise ValueError(
                f"the state's last-action block (columns {start}:{stop}) does not match the stored actions "
                f"at episode {i}, t={t}; to store the whole state, set StorageOptions.state_last_action=None "
                f"and derive_state_last_action=False"
            )
        if stop == state.shape[-1]:
            kept = state[..., :start]
        else:
            kept = torch.cat([state[..., :start], state[..., stop:]], -1)
        return {name: convert_checked(kept, self._dtype, name)}

    def decode(self, stored, decoded):
        (start, stop) = self.block
        # Converting first, then copying: a strided copy that also converts is several times slower.
        kept = stored[self.field.name].to(self.field.dtype)
        state = torch.empty(kept.shape[:2] + self.field.shape, dtype=self.field.dtype, device=kept.device)
        state[..., :start] = kept[..., :start]
        state[..., stop:] = kept[..., start:]
        block = state[..., start:stop].view(kept.shape[:2] + (self._n_agents, self._n_actions))
        self._write_block(block, decoded[ACTIONS_FIELD], decoded[FILLED])
        return state


class PreprocessedCodec(FieldCodec):
    """A preprocess output (``actions_onehot``): only whether each row was written is stored;
    the value is rebuilt from its source field's transforms."""

    def __init__(self, field: FieldSpec, transforms: Sequence[Any]):
        self.field = field
        self.stored = (StoredTensor(field.name + _WRITTEN_SUFFIX, (1,), torch.bool, False),)
        self.reads = (field.derived_from,)
        self._transforms = list(transforms)

    def _rebuild(self, source: torch.Tensor, written: torch.Tensor) -> torch.Tensor:
        out = source
        for transform in self._transforms:
            out = transform.transform(out)
        mask = written.reshape(written.shape[:2] + (1,) * (out.dim() - 2))
        return (out * mask.to(out.dtype)).to(self.field.dtype)

    def encode(self, data):
        name, source = self.field.name, self.field.derived_from
        given = data[name]
        written = given.reshape(given.shape[:2] + (-1,)).ne(0).any(-1, keepdim=True)
        mismatch = (self._rebuild(data[source], written) != given).reshape(given.shape[:2] + (-1,)).any(-1)
        if bool(mismatch.any()):
            i, t = _first_true(mismatch)
            raise ValueError(
                f"field {name!r} is not the preprocess of {source!r} at episode {i}, "
                f"t={t}; set StorageOptions(derive_preprocessed=False) to store it as given"
            )
        return {name + _WRITTEN_SUFFIX: written}

    def decode(self, stored, decoded):
        return self._rebuild(decoded[self.field.derived_from], stored[self.field.name + _WRITTEN_SUFFIX])


def _n_actions(fields: Mapping[str, FieldSpec], preprocess: Mapping[str, Tuple[str, List[Any]]]) -> Optional[int]:
    """Number of actions, from the one-hot preprocess of ``actions`` or ``avail_actions``."""
    if ACTIONS_FIELD in preprocess:
        transforms = preprocess[ACTIONS_FIELD][1]
        if len(transforms) == 1 and isinstance(transforms[0], OneHot):
            return transforms[0].out_dim
    if AVAIL_FIELD in fields:
        return fields[AVAIL_FIELD].vshape[-1]
    return None


def _state_block(fields: Mapping[str, FieldSpec], n_actions: Optional[int],
                 options: StorageOptions) -> Optional[Tuple[int, int]]:
    """The validated ``(start, stop)`` of the state's last-action block, or None."""
    if options.state_last_action is None and not options.derive_state_last_action:
        return None
    label = (f"state_last_action={options.state_last_action}" if options.state_last_action is not None
             else "derive_state_last_action=True")
    problems = []
    state, actions = fields.get(STATE_FIELD), fields.get(ACTIONS_FIELD)
    if state is None or state.episode_const or state.group is not None or len(state.vshape) != 1 \
            or not state.dtype.is_floating_point:
        problems.append("a per-step floating 'state' field of vshape (state_dim,) without a group")
    if actions is None or actions.episode_const or actions.group is None or actions.vshape != (1,) \
            or actions.dtype.is_floating_point or actions.dtype == torch.bool:
        problems.append("a per-step grouped integer 'actions' field of vshape (1,)")
    if n_actions is None:
        problems.append("n_actions (a OneHot preprocess of 'actions' or an 'avail_actions' field)")
    if problems:
        raise ValueError(f"{label} needs " + "; ".join(problems))
    state_dim, n_agents = state.vshape[0], actions.shape[0]
    width = n_agents * n_actions
    if options.state_last_action is None:
        if state_dim < width:
            raise ValueError(
                f"{label}: state_dim {state_dim} is smaller than the last-action block "
                f"n_agents*n_actions = {n_agents}*{n_actions}"
            )
        return state_dim - width, state_dim
    start, stop = options.state_last_action
    if stop - start != width or stop > state_dim:
        raise ValueError(
            f"{label}: expected {width} columns (n_agents*n_actions = {n_agents}*{n_actions}) within "
            f"the state's {state_dim}, got {stop - start} columns {start}:{stop}"
        )
    return start, stop


def plan_codecs(fields: Mapping[str, FieldSpec], preprocess: Mapping[str, Tuple[str, List[Any]]],
                options: StorageOptions) -> Dict[str, FieldCodec]:
    """One codec per compute field, in the fields' order."""
    n_actions = _n_actions(fields, preprocess)
    block = _state_block(fields, n_actions, options)
    codecs: Dict[str, FieldCodec] = {}
    for name, field in fields.items():
        dtype = field.dtype
        if field.derived_from is not None and options.derive_preprocessed and not field.episode_const:
            codecs[name] = PreprocessedCodec(field, preprocess[field.derived_from][1])
            continue
        if dtype.is_floating_point:
            dtype = {OBS_FIELD: options.obs_dtype, STATE_FIELD: options.state_dtype}.get(
                name, options.other_float_dtype
            )
        elif name == ACTIONS_FIELD and options.compact_actions and n_actions is not None and dtype != torch.bool:
            dtype = _int_dtype_for(n_actions - 1)
        if name == STATE_FIELD and block is not None:
            codecs[name] = StateWithoutLastActionCodec(field, dtype, block, fields[ACTIONS_FIELD].shape[0], n_actions)
        else:
            codecs[name] = CastCodec(field, dtype)
    return codecs


def _decode_order(codecs: Mapping[str, FieldCodec]) -> List[FieldCodec]:
    """Codecs ordered so that every field a codec reads is decoded before it."""
    order: List[FieldCodec] = []
    done: set = set()
    while len(order) < len(codecs):
        ready = [c for name, c in codecs.items() if name not in done and set(c.reads) <= done]
        if not ready:
            pending = {name: c.reads for name, c in codecs.items() if name not in done}
            raise ValueError(f"ReplayBuffer: fields read each other in a cycle: {pending}")
        order += ready
        done.update(c.field.name for c in ready)
    return order


# --------------------------------------------------------------------------------------------
# Ring
# --------------------------------------------------------------------------------------------


class EpisodeRing:
    """Slot bookkeeping of a ring of ``capacity`` episodes: the next slot to write and how many
    slots hold an episode. The oldest episode is overwritten first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.next_slot = 0
        self.size = 0

    def claim(self, n: int) -> List[Tuple[int, int, int]]:
        """Advance past ``n`` new episodes; returns ``(slot, first_episode, count)`` runs of
        contiguous slots to write. Episodes that a later one of the same call would overwrite
        are skipped (only the last ``capacity`` of them are kept)."""
        kept = min(n, self.capacity)
        slot, episode = (self.next_slot + n - kept) % self.capacity, n - kept
        runs = []
        while kept:
            count = min(kept, self.capacity - slot)
            runs.append((slot, episode, count))
            slot, episode, kept = (slot + count) % self.capacity, episode + count, kept - count
        self.next_slot = (self.next_slot + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        return runs


# --------------------------------------------------------------------------------------------
# ReplayBuffer
# --------------------------------------------------------------------------------------------


class ReplayBuffer:
    """Ring buffer of ``buffer_size`` episodes of ``max_seq_length`` rows.

    ``sample(n)`` draws ``n`` distinct episodes uniformly with the buffer's own seeded
    generator and returns them as an ``EpisodeBatch`` in the compute layout.
    """

    def __init__(
        self,
        scheme: Mapping[str, Mapping[str, Any]],
        groups: Mapping[str, int],
        buffer_size: int,
        max_seq_length: int,
        preprocess: Optional[Mapping[str, Tuple[str, Sequence[Any]]]] = None,
        storage: Optional[StorageOptions] = None,
        device: Union[str, torch.device] = "cpu",
        seed: Optional[int] = None,
    ):
        for label, value in (("buffer_size", buffer_size), ("max_seq_length", max_seq_length)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"ReplayBuffer: {label} must be a positive int, got {value!r}")
        storage = StorageOptions() if storage is None else storage
        if not isinstance(storage, StorageOptions):
            raise ValueError(f"ReplayBuffer: storage must be a StorageOptions, got {type(storage).__name__}")
        self._groups = dict(groups)
        self._preprocess = {src: (out, list(tfs)) for src, (out, tfs) in (preprocess or {}).items()}
        self._fields: Dict[str, FieldSpec] = build_fields(scheme, groups, preprocess)  # the one validation
        self._options = storage
        self._max_seq_length = int(max_seq_length)
        self._device = torch.device(device)

        self._codecs = plan_codecs(self._fields, self._preprocess, storage)
        self._decode_order = _decode_order(self._codecs)
        self._layout: Dict[str, StoredTensor] = {s.name: s for c in self._codecs.values() for s in c.stored}
        self._ring = EpisodeRing(int(buffer_size))
        self._storage: Dict[str, torch.Tensor] = {
            s.name: torch.zeros(self._lead(s) + s.shape, dtype=s.dtype, device=self._device)
            for s in self._layout.values()
        }
        self._rng = torch.Generator(device="cpu")
        if seed is None:
            self._rng.seed()
        else:
            self._rng.manual_seed(int(seed))

    def _lead(self, stored: StoredTensor) -> Tuple[int, ...]:
        size = self._ring.capacity
        return (size,) if stored.episode_const else (size, self._max_seq_length)

    # ---------------------------------------------------------------- properties
    @property
    def episodes_in_buffer(self) -> int:
        return self._ring.size

    @property
    def buffer_size(self) -> int:
        return self._ring.capacity

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def scheme(self) -> Dict[str, Dict[str, Any]]:
        """The compute scheme of sampled batches (preprocess outputs and ``filled`` included)."""
        return {name: field.as_scheme_entry() for name, field in self._fields.items()}

    @property
    def storage_options(self) -> StorageOptions:
        return self._options

    @property
    def codecs(self) -> Mapping[str, FieldCodec]:
        """The codec of every compute field."""
        return dict(self._codecs)

    def __len__(self) -> int:
        return self._ring.size

    def can_sample(self, batch_size: int) -> bool:
        return self._ring.size >= batch_size

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer({self._ring.size}/{self._ring.capacity} episodes, "
            f"max_seq_length={self._max_seq_length}, {self._options}, device={self._device})"
        )

    # ---------------------------------------------------------------- memory accounting
    def storage_layout(self) -> List[Dict[str, Any]]:
        """Per stored tensor: name, per-row shape, dtype, episode_const, bytes per row."""
        return [
            {
                "name": s.name,
                "shape": s.shape,
                "dtype": s.dtype,
                "episode_const": s.episode_const,
                "bytes": int(np.prod(s.shape)) * torch.empty((), dtype=s.dtype).element_size(),
            }
            for s in self._layout.values()
        ]

    def bytes_per_step(self) -> int:
        """Bytes stored per (episode, time step) row; episode constants are not counted."""
        return sum(entry["bytes"] for entry in self.storage_layout() if not entry["episode_const"])

    def float32_bytes_per_step(self) -> int:
        """Bytes per row if every per-step field of the compute scheme (preprocess outputs,
        actions, ``filled`` and flags included) were stored as float32, as PyMARL does."""
        return sum(4 * int(np.prod(f.shape)) for f in self._fields.values() if not f.episode_const)

    # ---------------------------------------------------------------- insert / sample
    def _check_compatible(self, batch: EpisodeBatch) -> None:
        if not isinstance(batch, EpisodeBatch):
            raise TypeError(f"insert_episode_batch expects an EpisodeBatch, got {type(batch).__name__}")
        if batch.max_seq_length != self._max_seq_length:
            raise ValueError(
                f"insert_episode_batch: max_seq_length {batch.max_seq_length} != buffer's {self._max_seq_length}"
            )
        if dict(batch.fields) != self._fields:
            names = sorted(set(batch.fields) | set(self._fields))
            diff = [n for n in names if batch.fields.get(n) != self._fields.get(n)]
            raise ValueError(f"insert_episode_batch: the batch's scheme differs from the buffer's in fields {diff}")

    def insert_episode_batch(self, batch: EpisodeBatch) -> None:
        """Copy whole episodes into the ring (oldest overwritten first). All episodes are
        encoded, and so validated, before any is written."""
        self._check_compatible(batch)
        with torch.no_grad():
            data = {**batch.transition_data, **batch.episode_data}
            data = {name: t.detach().to(self._device) for name, t in data.items()}
            encoded: Dict[str, torch.Tensor] = {}
            for codec in self._codecs.values():
                encoded.update(codec.encode(data))
            for slot, first, count in self._ring.claim(batch.batch_size):
                for name, value in encoded.items():
                    self._storage[name][slot:slot + count].copy_(value[first:first + count])

    def sample(self, batch_size: int) -> EpisodeBatch:
        """``batch_size`` distinct episodes, uniformly at random, in the compute layout."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"sample: batch_size must be a positive int, got {batch_size!r}")
        if batch_size > self._ring.size:
            raise ValueError(
                f"sample: asked for {batch_size} episodes but the buffer holds {self._ring.size}; "
                f"check can_sample() first"
            )
        chosen = torch.randperm(self._ring.size, generator=self._rng)[:batch_size].to(self._device)
        with torch.no_grad():
            gathered = {name: t.index_select(0, chosen) for name, t in self._storage.items()}
            decoded: Dict[str, torch.Tensor] = {}
            for codec in self._decode_order:
                decoded[codec.field.name] = codec.decode(gathered, decoded)
        transition = {n: decoded[n] for n, f in self._fields.items() if not f.episode_const}
        episode = {n: decoded[n] for n, f in self._fields.items() if f.episode_const}
        return EpisodeBatch.from_fields(self._fields, self._groups, transition, episode, self._preprocess)

    # ---------------------------------------------------------------- checkpoints
    def _signature(self) -> Dict[str, Any]:
        state = self._codecs.get(STATE_FIELD)
        block = state.block if isinstance(state, StateWithoutLastActionCodec) else None
        return {
            "buffer_size": self._ring.capacity,
            "max_seq_length": self._max_seq_length,
            "storage": {s.name: (s.shape, str(s.dtype), s.episode_const) for s in self._layout.values()},
            "state_last_action": block,
        }

    def state_dict(self) -> Dict[str, Any]:
        """A snapshot (copied) of the filled slots, the ring position and the RNG state."""
        n = self._ring.size
        return {
            "format": STATE_DICT_FORMAT,
            "signature": self._signature(),
            "index": self._ring.next_slot,
            "episodes_in_buffer": n,
            "storage": {name: t[:n].clone() for name, t in self._storage.items()},
            "rng_state": self._rng.get_state(),
        }

    def _upgrade_format_1(self, state: Mapping[str, Any]) -> Dict[str, Any]:
        """Format 1 (before the codecs) had the same tensors; its signature did not name the
        state's last-action block, which then was always the trailing one, and it kept the
        written-flags of preprocess outputs this buffer may no longer have (they are redundant)."""
        signature = dict(state.get("signature") or {})
        saved_layout = dict(signature.get("storage") or {})
        storage = dict(state.get("storage") or {})
        for name in list(saved_layout):
            if name.endswith(_WRITTEN_SUFFIX) and name not in self._layout:
                saved_layout.pop(name)
                storage.pop(name, None)
        block = None
        state_field, saved_state = self._fields.get(STATE_FIELD), saved_layout.get(STATE_FIELD)
        if state_field is not None and saved_state is not None and not state_field.episode_const:
            stored_width, full_width = saved_state[0][-1], state_field.shape[-1]
            if stored_width < full_width:
                block = (stored_width, full_width)
        signature.update(storage=saved_layout, state_last_action=block)
        return dict(state, format=STATE_DICT_FORMAT, signature=signature, storage=storage)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        version = state.get("format", 1)
        if version == 1:
            state = self._upgrade_format_1(state)
        elif version != STATE_DICT_FORMAT:
            raise ValueError(f"load_state_dict: buffer format {version!r}, expected 1 or {STATE_DICT_FORMAT}")
        signature = self._signature()
        if state.get("signature") != signature:
            theirs = state.get("signature") or {}
            diff = [k for k in signature if theirs.get(k) != signature[k]]
            raise ValueError(f"load_state_dict: the saved buffer's layout differs in {diff}: {theirs} vs {signature}")
        n, index = int(state["episodes_in_buffer"]), int(state["index"])
        capacity = self._ring.capacity
        if not 0 <= n <= capacity or not 0 <= index < capacity or (n < capacity and index != n):
            raise ValueError(f"load_state_dict: inconsistent episodes_in_buffer={n}, index={index}")
        saved = state["storage"]
        for name, tensor in self._storage.items():
            value = saved[name]
            if tuple(value.shape) != (n,) + tuple(tensor.shape[1:]) or value.dtype != tensor.dtype:
                raise ValueError(f"load_state_dict: stored {name!r} is {tuple(value.shape)} {value.dtype}")
        with torch.no_grad():
            for name, tensor in self._storage.items():
                tensor.zero_()
                tensor[:n].copy_(saved[name])
        self._ring.size, self._ring.next_slot = n, index
        self._rng.set_state(state["rng_state"])
