"""Ring buffer of whole padded episodes with a compact storage layout.

Two layouts exist:

* **compute layout** (what ``sample()`` returns, an ``EpisodeBatch`` of the scheme): floating
  fields float32, actions long, flags bool, ``actions_onehot`` materialised, the full state;
* **storage layout** (what is kept in memory): obs and state in ``StorageOptions`` dtypes
  (float16 by default), flags bool, actions uint8 (int16 when ``n_actions > 256``), preprocess
  outputs such as ``actions_onehot`` not stored but rebuilt from their source, and optionally
  the state's trailing last-action block not stored but rebuilt from the actions.

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


@dataclass(frozen=True)
class StorageOptions:
    """How the replay buffer stores episodes.

    obs_dtype / state_dtype: dtype of the ``obs`` / ``state`` fields.
    other_float_dtype: dtype of every other floating field (reward, ...).
    compact_actions: store ``actions`` in the narrowest integer dtype holding ``n_actions - 1``.
    derive_preprocessed: do not store preprocess outputs (``actions_onehot``); rebuild them.
    derive_state_last_action: the state ends with the one-hot of all agents' previous actions
        (SMAC's ``state_last_action=True``); store the state without it and rebuild it.
    """

    obs_dtype: torch.dtype = torch.float16
    state_dtype: torch.dtype = torch.float16
    other_float_dtype: torch.dtype = torch.float32
    compact_actions: bool = True
    derive_preprocessed: bool = True
    derive_state_last_action: bool = False

    def __post_init__(self) -> None:
        for name in ("obs_dtype", "state_dtype", "other_float_dtype"):
            value = getattr(self, name)
            if value not in _FLOAT_DTYPES:
                raise ValueError(f"StorageOptions.{name} must be one of {_FLOAT_DTYPES}, got {value!r}")
        for name in ("compact_actions", "derive_preprocessed", "derive_state_last_action"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"StorageOptions.{name} must be a bool, got {value!r}")

    @classmethod
    def full_precision(cls, **overrides: Any) -> "StorageOptions":
        """Every floating field stored as float32."""
        base = dict(obs_dtype=torch.float32, state_dtype=torch.float32, other_float_dtype=torch.float32)
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class _Stored:
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
        self._scheme = {name: dict(entry) for name, entry in scheme.items()}
        self._groups = dict(groups)
        self._preprocess = {src: (out, list(tfs)) for src, (out, tfs) in (preprocess or {}).items()}
        self._fields: Dict[str, FieldSpec] = build_fields(scheme, groups, preprocess)
        self._options = storage
        self._buffer_size = int(buffer_size)
        self._max_seq_length = int(max_seq_length)
        self._device = torch.device(device)

        self._state_block = self._plan_state_block()  # (n_agents, n_actions) or None
        self._layout: Dict[str, _Stored] = self._plan_layout()
        self._storage: Dict[str, torch.Tensor] = {
            s.name: torch.zeros(self._lead(s) + s.shape, dtype=s.dtype, device=self._device)
            for s in self._layout.values()
        }
        self._index = 0  # next slot to write
        self._episodes_in_buffer = 0
        self._rng = torch.Generator(device="cpu")
        if seed is None:
            self._rng.seed()
        else:
            self._rng.manual_seed(int(seed))

    # ---------------------------------------------------------------- layout planning
    def _lead(self, stored: _Stored) -> Tuple[int, ...]:
        return (self._buffer_size,) if stored.episode_const else (self._buffer_size, self._max_seq_length)

    def _n_actions(self) -> Optional[int]:
        """Number of actions, from the one-hot preprocess of ``actions`` or ``avail_actions``."""
        if ACTIONS_FIELD in self._preprocess:
            transforms = self._preprocess[ACTIONS_FIELD][1]
            if len(transforms) == 1 and isinstance(transforms[0], OneHot):
                return transforms[0].out_dim
        if AVAIL_FIELD in self._fields:
            return self._fields[AVAIL_FIELD].vshape[-1]
        return None

    def _derived(self, field: FieldSpec) -> bool:
        """Preprocess outputs rebuilt at sampling instead of stored."""
        return (
            field.derived_from is not None
            and self._options.derive_preprocessed
            and not field.episode_const
        )

    def _plan_state_block(self) -> Optional[Tuple[int, int]]:
        if not self._options.derive_state_last_action:
            return None
        problems = []
        state = self._fields.get(STATE_FIELD)
        actions = self._fields.get(ACTIONS_FIELD)
        n_actions = self._n_actions()
        if state is None or state.episode_const or state.group is not None or len(state.vshape) != 1 \
                or not state.dtype.is_floating_point:
            problems.append("a per-step floating 'state' field of vshape (state_dim,) without a group")
        if actions is None or actions.episode_const or actions.group is None or actions.vshape != (1,):
            problems.append("a per-step grouped 'actions' field of vshape (1,)")
        if n_actions is None:
            problems.append("n_actions (a OneHot preprocess of 'actions' or an 'avail_actions' field)")
        if problems:
            raise ValueError("derive_state_last_action=True needs " + "; ".join(problems))
        n_agents = actions.shape[0]
        if state.vshape[0] < n_agents * n_actions:
            raise ValueError(
                f"derive_state_last_action=True: state_dim {state.vshape[0]} is smaller than the "
                f"last-action block n_agents*n_actions = {n_agents}*{n_actions}"
            )
        return n_agents, n_actions

    def _plan_layout(self) -> Dict[str, _Stored]:
        options = self._options
        layout: Dict[str, _Stored] = {}
        n_actions = self._n_actions()
        for field in self._fields.values():
            if self._derived(field):
                layout[field.name + _WRITTEN_SUFFIX] = _Stored(
                    field.name + _WRITTEN_SUFFIX, (1,), torch.bool, False
                )
                continue
            shape, dtype = field.shape, field.dtype
            if dtype.is_floating_point:
                dtype = {OBS_FIELD: options.obs_dtype, STATE_FIELD: options.state_dtype}.get(
                    field.name, options.other_float_dtype
                )
            if field.name == ACTIONS_FIELD and options.compact_actions and n_actions is not None \
                    and not dtype.is_floating_point and dtype != torch.bool:
                dtype = _int_dtype_for(n_actions - 1)
            if field.name == STATE_FIELD and self._state_block is not None:
                n_agents, n_act = self._state_block
                shape = (shape[0] - n_agents * n_act,)
            layout[field.name] = _Stored(field.name, shape, dtype, field.episode_const)
        return layout

    # ---------------------------------------------------------------- properties
    @property
    def episodes_in_buffer(self) -> int:
        return self._episodes_in_buffer

    @property
    def buffer_size(self) -> int:
        return self._buffer_size

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

    def __len__(self) -> int:
        return self._episodes_in_buffer

    def can_sample(self, batch_size: int) -> bool:
        return self._episodes_in_buffer >= batch_size

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer({self._episodes_in_buffer}/{self._buffer_size} episodes, "
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
        """Bytes per row if every per-step field of the compute scheme (one-hot actions,
        actions, ``filled`` and flags included) were stored as float32, as PyMARL does."""
        return sum(4 * int(np.prod(f.shape)) for f in self._fields.values() if not f.episode_const)

    # ---------------------------------------------------------------- encode / decode
    def _last_action_block(self, actions: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
        """Row t: one-hot of every agent's action at t-1, flattened; zero at t=0 and unfilled rows.

        actions: long [B, T, n_agents, 1]; filled: bool [B, T, 1] -> float32 [B, T, n_agents*n_actions].
        """
        n_agents, n_actions = self._state_block
        batch, max_t = actions.shape[:2]
        block = torch.zeros(batch, max_t, n_agents * n_actions, dtype=torch.float32, device=actions.device)
        if max_t > 1:
            previous = OneHot(n_actions).transform(actions[:, :-1]).reshape(batch, max_t - 1, -1)
            block[:, 1:] = previous * filled[:, 1:].to(torch.float32)
        return block

    def _rebuild_preprocessed(self, field: FieldSpec, source: torch.Tensor, written: torch.Tensor) -> torch.Tensor:
        out = source
        for transform in self._preprocess[field.derived_from][1]:
            out = transform.transform(out)
        mask = written.reshape(written.shape[:2] + (1,) * (out.dim() - 2))
        return (out * mask.to(out.dtype)).to(field.dtype)

    def _encode(self, batch: EpisodeBatch) -> Dict[str, torch.Tensor]:
        """Storage-layout tensors of ``batch`` (validated; nothing is written yet)."""
        data = {**batch.transition_data, **batch.episode_data}
        data = {name: t.detach().to(self._device) for name, t in data.items()}
        encoded: Dict[str, torch.Tensor] = {}
        for field in self._fields.values():
            if self._derived(field):
                given = data[field.name]
                written = given.reshape(given.shape[:2] + (-1,)).ne(0).any(-1, keepdim=True)
                rebuilt = self._rebuild_preprocessed(field, data[field.derived_from], written)
                mismatch = (rebuilt != given).reshape(given.shape[:2] + (-1,)).any(-1)
                if bool(mismatch.any()):
                    i, t = _first_true(mismatch)
                    raise ValueError(
                        f"field {field.name!r} is not the preprocess of {field.derived_from!r} at episode {i}, "
                        f"t={t}; set StorageOptions(derive_preprocessed=False) to store it as given"
                    )
                encoded[field.name + _WRITTEN_SUFFIX] = written
                continue
            value = data[field.name]
            if field.name == STATE_FIELD and self._state_block is not None:
                n_agents, n_actions = self._state_block
                width = n_agents * n_actions
                expected = self._last_action_block(data[ACTIONS_FIELD].long(), data[FILLED])
                mismatch = (value[..., -width:] != expected).any(-1)
                if bool(mismatch.any()):
                    i, t = _first_true(mismatch)
                    raise ValueError(
                        f"state's last-action block does not match the stored actions at episode {i}, t={t}; "
                        f"set derive_state_last_action=False"
                    )
                value = value[..., :-width]
            encoded[field.name] = convert_checked(value, self._layout[field.name].dtype, field.name)
        return encoded

    def _decode(self, stored: Dict[str, torch.Tensor]) -> EpisodeBatch:
        """Compute-layout EpisodeBatch from gathered storage-layout tensors."""
        transition: Dict[str, torch.Tensor] = {}
        episode: Dict[str, torch.Tensor] = {}
        plain = {name: stored[name].to(f.dtype) for name, f in self._fields.items() if name in stored}
        for name, field in self._fields.items():
            if self._derived(field):
                value = self._rebuild_preprocessed(field, plain[field.derived_from], stored[name + _WRITTEN_SUFFIX])
            elif name == STATE_FIELD and self._state_block is not None:
                block = self._last_action_block(plain[ACTIONS_FIELD].long(), plain[FILLED])
                value = torch.cat([plain[name], block.to(field.dtype)], dim=-1)
            else:
                value = plain[name]
            (episode if field.episode_const else transition)[name] = value
        return EpisodeBatch.from_tensors(self._scheme, self._groups, transition, episode, self._preprocess)

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
        validated before any is written."""
        self._check_compatible(batch)
        with torch.no_grad():
            encoded = self._encode(batch)
            n_total = batch.batch_size
            start = 0
            while start < n_total:
                n = min(n_total - start, self._buffer_size - self._index)
                for name, value in encoded.items():
                    self._storage[name][self._index:self._index + n].copy_(value[start:start + n])
                self._index = (self._index + n) % self._buffer_size
                self._episodes_in_buffer = min(self._episodes_in_buffer + n, self._buffer_size)
                start += n

    def sample(self, batch_size: int) -> EpisodeBatch:
        """``batch_size`` distinct episodes, uniformly at random, in the compute layout."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"sample: batch_size must be a positive int, got {batch_size!r}")
        if batch_size > self._episodes_in_buffer:
            raise ValueError(
                f"sample: asked for {batch_size} episodes but the buffer holds {self._episodes_in_buffer}; "
                f"check can_sample() first"
            )
        chosen = torch.randperm(self._episodes_in_buffer, generator=self._rng)[:batch_size].to(self._device)
        with torch.no_grad():
            gathered = {name: t.index_select(0, chosen) for name, t in self._storage.items()}
            return self._decode(gathered)

    # ---------------------------------------------------------------- checkpoints
    def _signature(self) -> Dict[str, Any]:
        return {
            "buffer_size": self._buffer_size,
            "max_seq_length": self._max_seq_length,
            "storage": {s.name: (s.shape, str(s.dtype), s.episode_const) for s in self._layout.values()},
        }

    def state_dict(self) -> Dict[str, Any]:
        """A snapshot (copied) of the filled slots, the ring position and the RNG state."""
        n = self._episodes_in_buffer
        return {
            "signature": self._signature(),
            "index": self._index,
            "episodes_in_buffer": n,
            "storage": {name: t[:n].clone() for name, t in self._storage.items()},
            "rng_state": self._rng.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        signature = self._signature()
        if state.get("signature") != signature:
            theirs = state.get("signature") or {}
            diff = [k for k in signature if theirs.get(k) != signature[k]]
            raise ValueError(f"load_state_dict: the saved buffer's layout differs in {diff}: {theirs} vs {signature}")
        n, index = int(state["episodes_in_buffer"]), int(state["index"])
        if not 0 <= n <= self._buffer_size or not 0 <= index < self._buffer_size \
                or (n < self._buffer_size and index != n):
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
        self._episodes_in_buffer, self._index = n, index
        self._rng.set_state(state["rng_state"])
