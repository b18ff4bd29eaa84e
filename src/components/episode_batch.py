"""The episode container shared by the runner, the replay buffer and the learner.

An ``EpisodeBatch`` holds ``batch_size`` episodes padded to ``max_seq_length`` rows. Its fields
are declared by a *scheme*::

    scheme = {
        "obs": {"vshape": (30,), "group": "agents"},          # per-agent field
        "actions": {"vshape": (1,), "group": "agents", "dtype": torch.long},
        "map_id": {"vshape": (1,), "dtype": torch.long, "episode_const": True},
    }
    groups = {"agents": 3}

A transition field is stored as ``[B, T, *shape]`` and an episode constant as ``[B, *shape]``,
where ``shape = (groups[group],) + vshape`` for grouped fields and ``vshape`` otherwise. The
boolean field ``filled`` (``[B, T, 1]``) is added automatically: writing a transition field
marks the written rows as filled.

``preprocess = {"actions": ("actions_onehot", [OneHot(out_dim=9)])}`` derives a new field on
every write of ``actions``. Derived fields cannot be written directly.

Every write is shape-checked, converted to the field's dtype without silent loss (a float
given for an integer field must be integral, a value for a bool field must be 0 or 1) and
detached, so no stored tensor ever holds an autograd graph.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

FILLED = "filled"
_SCHEME_KEYS = frozenset({"vshape", "dtype", "group", "episode_const"})

Index = Union[int, slice, torch.Tensor]


# --------------------------------------------------------------------------------------------
# Preprocess transforms
# --------------------------------------------------------------------------------------------


class OneHot:
    """Integer indices ``[..., 1]`` -> float32 one-hot ``[..., out_dim]``.

    Indices outside ``[0, out_dim)`` raise ``ValueError`` instead of being clipped.
    """

    def __init__(self, out_dim: int):
        if isinstance(out_dim, bool) or not isinstance(out_dim, (int, np.integer)) or out_dim <= 0:
            raise ValueError(f"OneHot: out_dim must be a positive int, got {out_dim!r}")
        self.out_dim = int(out_dim)

    def infer_output_info(
        self, vshape: Tuple[int, ...], dtype: torch.dtype
    ) -> Tuple[Tuple[int, ...], torch.dtype]:
        if tuple(vshape) != (1,):
            raise ValueError(f"OneHot expects an input field of vshape (1,), got {tuple(vshape)}")
        if dtype.is_floating_point or dtype == torch.bool or dtype.is_complex:
            raise ValueError(f"OneHot expects an integer input field, got dtype {dtype}")
        return (self.out_dim,), torch.float32

    def transform(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.shape[-1:] != (1,):
            raise ValueError(f"OneHot expects a trailing dimension of 1, got shape {tuple(tensor.shape)}")
        index = tensor.long()
        if index.numel() > 0:
            low, high = int(index.min()), int(index.max())
            if low < 0 or high >= self.out_dim:
                bad = low if low < 0 else high
                raise ValueError(
                    f"OneHot(out_dim={self.out_dim}) got index {bad}, expected 0..{self.out_dim - 1}"
                )
        out = torch.zeros(*tensor.shape[:-1], self.out_dim, dtype=torch.float32, device=tensor.device)
        return out.scatter_(-1, index, 1.0)

    def __repr__(self) -> str:
        return f"OneHot(out_dim={self.out_dim})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OneHot) and other.out_dim == self.out_dim

    def __hash__(self) -> int:
        return hash(("OneHot", self.out_dim))


# --------------------------------------------------------------------------------------------
# Scheme normalisation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """One normalised field of a scheme.

    ``shape`` is the per-row shape (group dimension included); ``derived_from`` names the
    source field of a preprocess output.
    """

    name: str
    vshape: Tuple[int, ...]
    dtype: torch.dtype
    group: Optional[str]
    shape: Tuple[int, ...]
    episode_const: bool = False
    derived_from: Optional[str] = None

    def as_scheme_entry(self) -> Dict[str, Any]:
        entry: Dict[str, Any] = {"vshape": self.vshape, "dtype": self.dtype}
        if self.group is not None:
            entry["group"] = self.group
        if self.episode_const:
            entry["episode_const"] = True
        return entry


def _normalize_vshape(name: str, vshape: Any) -> Tuple[int, ...]:
    if isinstance(vshape, (int, np.integer)) and not isinstance(vshape, bool):
        vshape = (int(vshape),)
    if not isinstance(vshape, (tuple, list)) or len(vshape) == 0:
        raise ValueError(f"scheme field {name!r}: vshape must be a positive int or a non-empty tuple, got {vshape!r}")
    out = []
    for dim in vshape:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ValueError(f"scheme field {name!r}: vshape dimensions must be positive ints, got {vshape!r}")
        out.append(int(dim))
    return tuple(out)


def build_fields(
    scheme: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, int],
    preprocess: Optional[Mapping[str, Tuple[str, Sequence[Any]]]] = None,
) -> Dict[str, FieldSpec]:
    """Validate a scheme and return its fields, preprocess outputs and ``filled`` included."""
    for group, size in groups.items():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"group {group!r}: size must be a positive int, got {size!r}")
    fields: Dict[str, FieldSpec] = {}
    for name, entry in scheme.items():
        if name == FILLED:
            raise ValueError(f"scheme field name {FILLED!r} is reserved: it is added automatically")
        if not isinstance(entry, Mapping):
            raise ValueError(f"scheme field {name!r}: expected a dict, got {type(entry).__name__}")
        unknown = set(entry) - _SCHEME_KEYS
        if unknown:
            raise ValueError(
                f"scheme field {name!r}: unknown keys {sorted(unknown)}; allowed keys are {sorted(_SCHEME_KEYS)}"
            )
        if "vshape" not in entry:
            raise ValueError(f"scheme field {name!r}: missing 'vshape'")
        vshape = _normalize_vshape(name, entry["vshape"])
        dtype = entry.get("dtype", torch.float32)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"scheme field {name!r}: dtype must be a torch.dtype, got {dtype!r}")
        group = entry.get("group")
        if group is not None and group not in groups:
            raise ValueError(f"scheme field {name!r}: unknown group {group!r}; known groups {sorted(groups)}")
        episode_const = entry.get("episode_const", False)
        if not isinstance(episode_const, bool):
            raise ValueError(f"scheme field {name!r}: episode_const must be a bool, got {episode_const!r}")
        shape = ((int(groups[group]),) if group is not None else ()) + vshape
        fields[name] = FieldSpec(name, vshape, dtype, group, shape, episode_const)

    for source, spec in (preprocess or {}).items():
        if source not in fields:
            raise ValueError(f"preprocess source {source!r} is not a scheme field; known fields {sorted(fields)}")
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
            raise ValueError(f"preprocess of {source!r}: expected (new_name, [transforms]), got {spec!r}")
        out_name, transforms = spec
        if out_name in fields or out_name == FILLED:
            raise ValueError(f"preprocess of {source!r}: output name {out_name!r} already exists")
        transforms = list(transforms)
        if not transforms:
            raise ValueError(f"preprocess of {source!r}: the transform list is empty")
        src = fields[source]
        vshape, dtype = src.vshape, src.dtype
        for transform in transforms:
            if not (hasattr(transform, "transform") and hasattr(transform, "infer_output_info")):
                raise ValueError(
                    f"preprocess of {source!r}: {transform!r} lacks transform()/infer_output_info()"
                )
            vshape, dtype = transform.infer_output_info(vshape, dtype)
        vshape = tuple(vshape)
        shape = ((int(groups[src.group]),) if src.group is not None else ()) + vshape
        fields[out_name] = FieldSpec(out_name, vshape, dtype, src.group, shape, src.episode_const, source)

    fields[FILLED] = FieldSpec(FILLED, (1,), torch.bool, None, (1,), False)
    return fields


def _normalize_preprocess(
    preprocess: Optional[Mapping[str, Tuple[str, Sequence[Any]]]],
) -> Dict[str, Tuple[str, List[Any]]]:
    return {src: (spec[0], list(spec[1])) for src, spec in (preprocess or {}).items()}


# --------------------------------------------------------------------------------------------
# Value conversion
# --------------------------------------------------------------------------------------------


def as_tensor(value: Any, name: str) -> torch.Tensor:
    """Tensor view of a numpy array / list / tensor, detached from any autograd graph."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        if isinstance(value, (list, tuple)):
            value = np.asarray(value)
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"field {name!r}: cannot convert a {type(value).__name__} to a tensor ({err})") from err


def convert_checked(tensor: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    """``tensor.to(dtype)``, raising ``ValueError`` where the conversion would lose information.

    Checked: floats or out-of-range ints for an integer dtype, values other than 0/1 for bool,
    finite values that overflow a narrower float dtype. Rounding to a narrower float is allowed.
    """
    src = tensor.dtype
    if src == dtype:
        return tensor
    if src.is_complex:
        raise ValueError(f"field {name!r}: complex values cannot be stored as {dtype}")
    if dtype == torch.bool:
        bad = (tensor != 0) & (tensor != 1)
        if bool(bad.any()):
            raise ValueError(f"field {name!r}: expected booleans (0 or 1), got {tensor[bad].flatten()[0].item()}")
        return tensor.to(dtype)
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        if src.is_floating_point:
            bad = ~torch.isfinite(tensor) | (tensor != torch.round(tensor))
            if bool(bad.any()):
                raise ValueError(
                    f"field {name!r}: expected integral values for {dtype}, got {tensor[bad].flatten()[0].item()}"
                )
        if src != torch.bool and tensor.numel() > 0:
            low, high = tensor.min().item(), tensor.max().item()
            if low < info.min or high > info.max:
                bad_value = low if low < info.min else high
                raise ValueError(
                    f"field {name!r}: value {bad_value} does not fit {dtype} (range {info.min}..{info.max})"
                )
        return tensor.to(dtype)
    out = tensor.to(dtype)
    if src.is_floating_point and torch.finfo(dtype).max < torch.finfo(src).max:
        # An overflow shows as an infinity in ``out``; only then is the input searched for it.
        if bool(torch.isinf(out).any()):
            bad = torch.isfinite(tensor) & torch.isinf(out)
            if bool(bad.any()):
                raise ValueError(
                    f"field {name!r}: value {tensor[bad].flatten()[0].item()} overflows {dtype} "
                    f"(max {torch.finfo(dtype).max}); store this field in a wider dtype"
                )
    return out


# --------------------------------------------------------------------------------------------
# Indexing helpers
# --------------------------------------------------------------------------------------------


def normalize_index(index: Any, size: int, axis: str) -> Index:
    """An int (made non-negative), a slice, or a 1-D long tensor of non-negative indices."""
    if isinstance(index, bool):
        raise TypeError(f"{axis} index must not be a bool")
    if isinstance(index, (int, np.integer)):
        i = int(index)
        if not -size <= i < size:
            raise IndexError(f"{axis} index {i} is out of range for size {size}")
        return i % size
    if isinstance(index, slice):
        if index.step is not None and index.step <= 0:
            raise IndexError(f"{axis} slice step must be positive, got {index.step}")
        return index
    if isinstance(index, (list, tuple, np.ndarray, torch.Tensor)):
        try:
            t = index.detach().cpu() if isinstance(index, torch.Tensor) else torch.as_tensor(np.asarray(index))
        except (TypeError, ValueError) as err:
            raise TypeError(f"unsupported {axis} index {index!r}") from err
        if t.numel() == 0 and t.dim() == 1:
            return t.long()  # np.asarray([]) is float64
        if t.dtype == torch.bool:
            if t.shape != (size,):
                raise IndexError(f"{axis} boolean mask has shape {tuple(t.shape)}, expected ({size},)")
            return t.nonzero().squeeze(1)
        if t.dtype.is_floating_point or t.dtype.is_complex:
            raise TypeError(f"{axis} index tensor must hold integers, got {t.dtype}")
        if t.dim() == 0:
            return normalize_index(int(t), size, axis)
        if t.dim() != 1:
            raise IndexError(f"{axis} index must be 1-D, got shape {tuple(t.shape)}")
        t = t.long()
        if t.numel() and (int(t.min()) < -size or int(t.max()) >= size):
            raise IndexError(f"{axis} indices {t.tolist()} are out of range for size {size}")
        return t % size
    raise TypeError(f"unsupported {axis} index of type {type(index).__name__}")


def _index_length(index: Index, size: int) -> int:
    if isinstance(index, int):
        return 1
    if isinstance(index, slice):
        return len(range(*index.indices(size)))
    return int(index.numel())


def _index_tuple(bs: Index, ts: Index, device: torch.device) -> tuple:
    if isinstance(bs, torch.Tensor):
        bs = bs.to(device)
    if isinstance(ts, torch.Tensor):
        ts = ts.to(device)
    if isinstance(bs, torch.Tensor) and isinstance(ts, torch.Tensor):
        return (bs[:, None], ts[None, :])  # outer product, not element-wise pairs
    return (bs, ts)


def _fit_shape(tensor: torch.Tensor, name: str, lead: List[Tuple[int, bool]], field_shape: Tuple[int, ...]) -> torch.Tensor:
    """Reshape ``tensor`` to the natural target shape or raise ``ValueError``.

    ``lead`` lists the (size, indexed_by_int) leading dimensions. Accepted given shapes: the
    target with any int-indexed dimension present as size 1 or missing, and with the field's
    trailing singleton dimension present or missing. All variants differ only by singleton
    dimensions, so the reshape is unambiguous.
    """
    natural = tuple(size for size, by_int in lead if not by_int) + field_shape
    given = tuple(tensor.shape)
    if given == natural:
        return tensor
    optional = [i for i, (_, by_int) in enumerate(lead) if by_int]
    full = tuple(size for size, _ in lead) + field_shape
    if field_shape and field_shape[-1] == 1:
        optional.append(len(full) - 1)
    for keep in itertools.product((True, False), repeat=len(optional)):
        dropped = {dim for dim, kept in zip(optional, keep) if not kept}
        if given == tuple(s for i, s in enumerate(full) if i not in dropped):
            return tensor.reshape(natural)
    raise ValueError(f"field {name!r}: got shape {given}, expected {natural}")


# --------------------------------------------------------------------------------------------
# EpisodeBatch
# --------------------------------------------------------------------------------------------


class EpisodeBatch:
    """``batch_size`` padded episodes of ``max_seq_length`` rows (see the module docstring)."""

    def __init__(
        self,
        scheme: Mapping[str, Mapping[str, Any]],
        groups: Mapping[str, int],
        batch_size: int,
        max_seq_length: int,
        preprocess: Optional[Mapping[str, Tuple[str, Sequence[Any]]]] = None,
        device: Union[str, torch.device] = "cpu",
    ):
        for label, value in (("batch_size", batch_size), ("max_seq_length", max_seq_length)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"EpisodeBatch: {label} must be a positive int, got {value!r}")
        fields = build_fields(scheme, groups, preprocess)
        device = torch.device(device)
        transition: Dict[str, torch.Tensor] = {}
        episode: Dict[str, torch.Tensor] = {}
        for field in fields.values():
            if field.episode_const:
                episode[field.name] = torch.zeros((batch_size,) + field.shape, dtype=field.dtype, device=device)
            else:
                transition[field.name] = torch.zeros(
                    (batch_size, max_seq_length) + field.shape, dtype=field.dtype, device=device
                )
        self._init(fields, dict(groups), _normalize_preprocess(preprocess), transition, episode,
                   int(batch_size), int(max_seq_length), device)

    def _init(self, fields, groups, preprocess, transition, episode, batch_size, max_seq_length, device):
        self._fields: Dict[str, FieldSpec] = fields
        self._groups: Dict[str, int] = groups
        self._preprocess: Dict[str, Tuple[str, List[Any]]] = preprocess
        self._transition: Dict[str, torch.Tensor] = transition
        self._episode: Dict[str, torch.Tensor] = episode
        self._batch_size = batch_size
        self._max_seq_length = max_seq_length
        self._device = device

    @classmethod
    def from_fields(
        cls,
        fields: Mapping[str, FieldSpec],
        groups: Mapping[str, int],
        transition_data: Dict[str, torch.Tensor],
        episode_data: Dict[str, torch.Tensor],
        preprocess: Optional[Mapping[str, Tuple[str, List[Any]]]] = None,
    ) -> "EpisodeBatch":
        """Wrap tensors already laid out as ``fields`` (from ``build_fields``), without checking
        anything: for a caller that validated its layout once, such as the replay buffer's
        ``sample``. Use ``from_tensors`` for tensors of unknown origin. The arguments are kept,
        not copied, and must not be changed afterwards."""
        any_tensor = next(iter(transition_data.values()))
        batch = cls.__new__(cls)
        batch._init(fields, groups, preprocess or {}, transition_data, episode_data,
                    int(any_tensor.shape[0]), int(any_tensor.shape[1]), any_tensor.device)
        return batch

    @classmethod
    def from_tensors(
        cls,
        scheme: Mapping[str, Mapping[str, Any]],
        groups: Mapping[str, int],
        transition_data: Mapping[str, torch.Tensor],
        episode_data: Mapping[str, torch.Tensor],
        preprocess: Optional[Mapping[str, Tuple[str, Sequence[Any]]]] = None,
    ) -> "EpisodeBatch":
        """Wrap existing tensors (no copy). Every field, ``filled`` and preprocess outputs
        included, must be present with its exact dtype and shape, all on one device."""
        fields = build_fields(scheme, groups, preprocess)
        expected_t = {n for n, f in fields.items() if not f.episode_const}
        expected_e = {n for n, f in fields.items() if f.episode_const}
        if set(transition_data) != expected_t or set(episode_data) != expected_e:
            raise ValueError(
                f"from_tensors: expected transition fields {sorted(expected_t)} and episode fields "
                f"{sorted(expected_e)}, got {sorted(transition_data)} and {sorted(episode_data)}"
            )
        first = next(iter(transition_data.values()))
        if first.dim() < 2 or first.shape[0] == 0 or first.shape[1] == 0:
            raise ValueError(f"from_tensors: transition tensors need non-empty [B, T, ...], got {tuple(first.shape)}")
        batch_size, max_t, device = first.shape[0], first.shape[1], first.device
        for name, tensor in list(transition_data.items()) + list(episode_data.items()):
            field = fields[name]
            lead = (batch_size,) if field.episode_const else (batch_size, max_t)
            if tuple(tensor.shape) != lead + field.shape or tensor.dtype != field.dtype or tensor.device != device:
                raise ValueError(
                    f"from_tensors: field {name!r} is {tuple(tensor.shape)} {tensor.dtype} on {tensor.device}, "
                    f"expected {lead + field.shape} {field.dtype} on {device}"
                )
        return cls.from_fields(fields, dict(groups),
                               {n: t.detach() for n, t in transition_data.items()},
                               {n: t.detach() for n, t in episode_data.items()},
                               _normalize_preprocess(preprocess))

    @classmethod
    def concatenate(cls, batches: Sequence["EpisodeBatch"]) -> "EpisodeBatch":
        """The episodes of ``batches`` one after another (same fields, length and device): the
        member-major batch of several runs trained as one (``qmixlab.learners.q_learner``)."""
        if not batches:
            raise ValueError("concatenate needs at least one EpisodeBatch")
        first = batches[0]
        for i, batch in enumerate(batches[1:], 1):
            if (batch._fields != first._fields or batch._max_seq_length != first._max_seq_length
                    or batch._device != first._device):
                raise ValueError(f"concatenate: batch {i} differs from batch 0 in its fields, length "
                                 f"({batch._max_seq_length} vs {first._max_seq_length}) or device")
        if len(batches) == 1:
            return first
        transition = {name: torch.cat([b._transition[name] for b in batches]) for name in first._transition}
        episode = {name: torch.cat([b._episode[name] for b in batches]) for name in first._episode}
        return cls.from_fields(first._fields, first._groups, transition, episode, first._preprocess)

    # ---------------------------------------------------------------- properties
    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def scheme(self) -> Dict[str, Dict[str, Any]]:
        """The full scheme: user fields, preprocess outputs and ``filled`` (a fresh copy)."""
        return {name: field.as_scheme_entry() for name, field in self._fields.items()}

    @property
    def groups(self) -> Dict[str, int]:
        return dict(self._groups)

    @property
    def preprocess(self) -> Dict[str, Tuple[str, List[Any]]]:
        return {src: (out, list(tfs)) for src, (out, tfs) in self._preprocess.items()}

    @property
    def fields(self) -> Mapping[str, FieldSpec]:
        return MappingProxyType(self._fields)

    @property
    def transition_data(self) -> Mapping[str, torch.Tensor]:
        """Read-only mapping of the ``[B, T, ...]`` tensors (the tensors themselves are live)."""
        return MappingProxyType(self._transition)

    @property
    def episode_data(self) -> Mapping[str, torch.Tensor]:
        """Read-only mapping of the ``[B, ...]`` episode-constant tensors."""
        return MappingProxyType(self._episode)

    def __contains__(self, name: object) -> bool:
        return name in self._fields

    def __repr__(self) -> str:
        return (
            f"EpisodeBatch(batch_size={self._batch_size}, max_seq_length={self._max_seq_length}, "
            f"fields={list(self._fields)}, groups={self._groups}, device={self._device})"
        )

    # ---------------------------------------------------------------- writing
    def _field(self, name: str) -> FieldSpec:
        if name not in self._fields:
            raise KeyError(f"unknown field {name!r}; known fields: {sorted(self._fields)}")
        return self._fields[name]

    def update(
        self,
        data: Mapping[str, Any],
        bs: Any = slice(None),
        ts: Any = slice(None),
        mark_filled: bool = True,
    ) -> None:
        """Write ``data`` at episodes ``bs`` and time steps ``ts``.

        Values may be tensors, numpy arrays or lists. Episode constants are written at ``bs``
        (``ts`` does not apply to them). With ``mark_filled``, writing any transition field
        marks ``filled`` at ``(bs, ts)`` unless ``filled`` itself is in ``data``. All values are
        checked before anything is written, so a failing call leaves the batch unchanged.
        """
        bs_i = normalize_index(bs, self._batch_size, "episode")
        ts_i = normalize_index(ts, self._max_seq_length, "time")
        bs_lead = (_index_length(bs_i, self._batch_size), isinstance(bs_i, int))
        ts_lead = (_index_length(ts_i, self._max_seq_length), isinstance(ts_i, int))
        transition_index = _index_tuple(bs_i, ts_i, self._device)
        episode_index = _index_tuple(bs_i, slice(None), self._device)[:1]

        writes: List[Tuple[str, tuple, torch.Tensor]] = []
        wrote_transition = False
        for name, value in data.items():
            field = self._field(name)
            if field.derived_from is not None:
                raise ValueError(
                    f"field {name!r} is produced by the preprocess of {field.derived_from!r}; "
                    f"write {field.derived_from!r} instead"
                )
            lead = [bs_lead] if field.episode_const else [bs_lead, ts_lead]
            index = episode_index if field.episode_const else transition_index
            tensor = _fit_shape(as_tensor(value, name), name, lead, field.shape)
            tensor = convert_checked(tensor.to(self._device), field.dtype, name)
            writes.append((name, index, tensor))
            if name in self._preprocess:
                out_name, transforms = self._preprocess[name]
                out = tensor
                for transform in transforms:
                    out = transform.transform(out)
                out_field = self._fields[out_name]
                expected = tensor.shape[: tensor.dim() - len(field.shape)] + out_field.shape
                if out.shape != expected or out.dtype != out_field.dtype:
                    raise ValueError(
                        f"preprocess of {name!r} produced {tuple(out.shape)} {out.dtype}, "
                        f"expected {tuple(expected)} {out_field.dtype}"
                    )
                writes.append((out_name, index, out))
            wrote_transition = wrote_transition or (not field.episode_const and name != FILLED)

        for name, index, tensor in writes:
            storage = self._episode if self._fields[name].episode_const else self._transition
            storage[name][index] = tensor
        if mark_filled and wrote_transition and FILLED not in data:
            self._transition[FILLED][transition_index] = True

    # ---------------------------------------------------------------- reading
    def __getitem__(self, item: Any) -> Union[torch.Tensor, "EpisodeBatch"]:
        """``batch["obs"]`` -> tensor; ``batch[bs]`` / ``batch[bs, ts]`` -> EpisodeBatch.

        Slices give views; lists, index tensors and boolean masks give copies. An int index
        keeps its dimension (``batch[3]`` has batch_size 1).
        """
        if isinstance(item, str):
            field = self._field(item)
            return self._episode[item] if field.episode_const else self._transition[item]
        if isinstance(item, tuple):
            if len(item) == 0 or len(item) > 2:
                raise IndexError(f"EpisodeBatch takes [episodes] or [episodes, time], got {len(item)} indices")
            bs, ts = item if len(item) == 2 else (item[0], slice(None))
        else:
            bs, ts = item, slice(None)
        bs_i = normalize_index(bs, self._batch_size, "episode")
        ts_i = normalize_index(ts, self._max_seq_length, "time")
        if isinstance(bs_i, int):
            bs_i = slice(bs_i, bs_i + 1)
        if isinstance(ts_i, int):
            ts_i = slice(ts_i, ts_i + 1)
        if _index_length(bs_i, self._batch_size) == 0 or _index_length(ts_i, self._max_seq_length) == 0:
            raise IndexError(f"EpisodeBatch selection {item!r} is empty")
        transition_index = _index_tuple(bs_i, ts_i, self._device)
        episode_index = _index_tuple(bs_i, slice(None), self._device)[:1]
        transition = {name: t[transition_index] for name, t in self._transition.items()}
        episode = {name: t[episode_index] for name, t in self._episode.items()}
        # Fields, groups and preprocess are never changed after construction, so they are shared.
        return EpisodeBatch.from_fields(self._fields, self._groups, transition, episode, self._preprocess)

    def max_t_filled(self) -> int:
        """Rows needed to cover every filled row: the last filled index + 1 over all episodes.

        With filled rows forming a prefix of each episode (as the runner writes them) this is
        the number of filled rows of the longest episode. 0 when nothing is filled.
        """
        filled = self._transition[FILLED][..., 0]
        if not bool(filled.any()):
            return 0
        steps = torch.arange(1, self._max_seq_length + 1, device=filled.device)
        return int(torch.where(filled, steps, torch.zeros_like(steps)).max())

    def to(self, device: Union[str, torch.device]) -> "EpisodeBatch":
        """Move every tensor to ``device`` in place; returns ``self``."""
        device = torch.device(device)
        self._transition = {name: t.to(device) for name, t in self._transition.items()}
        self._episode = {name: t.to(device) for name, t in self._episode.items()}
        self._device = device
        return self
