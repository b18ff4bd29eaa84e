"""Sweep files, ablation presets, and their expansion into ordinary runs.

A sweep is ``variants x maps x seeds``; each combination is one ordinary training run of the
command line (``build_command``), identified by ``<variant>__<map>__seed<k>`` and kept in its own
folder ``<sweep folder>/runs/<run id>/``. Every run's merged configuration is validated against
the schema (``qmixlab.settings``) when the sweep is loaded, so a misspelled key fails before the
first run starts, naming the variant and map.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from qmixlab.settings import ConfigError, available, compose_config, deep_merge, load_yaml, validate_config

# ``descriptions`` is written into the resolved ``sweep.yaml``, which is itself a valid sweep file.
SWEEP_KEYS = ("name", "alg", "env", "base", "variants", "maps", "seeds", "per_map", "descriptions")
REQUIRED_KEYS = ("name", "variants", "maps", "seeds")
# Keys the sweep sets itself for every run; an override of them would be silently overridden.
RESERVED_KEYS = ("alg", "env", "seed", "local_results_path", "progress_bar", "env_args.map_name")
REFERENCE_VARIANT = "standard"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- presets
def available_presets() -> List[str]:
    return available("ablations")


def load_preset(name: str) -> Tuple[dict, str]:
    """``(overrides, description)`` of ``config/ablations/<name>.yaml``."""
    values = dict(load_yaml("ablations", name))
    description = values.pop("description", "")
    return values, str(description).strip()


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class SweepSpec:
    name: str
    alg: str
    env: str
    base: Dict[str, Any]
    variants: Dict[str, Dict[str, Any]]  # variant name -> its overrides (presets resolved)
    maps: List[str]
    seeds: List[int]
    per_map: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    descriptions: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The resolved spec (written as ``sweep.yaml``): inline variants only, no preset names."""
        spec = dataclasses.asdict(self)
        spec["variants"] = [{name: overrides} for name, overrides in self.variants.items()]
        return spec


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: everything an executor needs, picklable."""

    run_id: str
    variant: str
    map_name: str
    seed: int
    alg: str
    env: str
    overrides: Dict[str, Any]  # base <- per_map[map] <- variant, nested
    run_dir: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_id(variant: str, map_name: str, seed: int) -> str:
    return f"{variant}__{map_name}__seed{seed}"


def _check_name(kind: str, name) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or "__" in name:
        raise ConfigError(
            f"{kind} name {name!r} must be a non-empty string of letters, digits, '_', '.', '+' or "
            "'-' without '__' (it becomes part of a folder name)"
        )
    return name


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of config overrides, got {value!r}")
    return dict(value)


def _resolve_variants(entries) -> Tuple[Dict[str, dict], Dict[str, str]]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"variants must be a non-empty list of preset names or {{name: overrides}}, got {entries!r}")
    variants, descriptions = {}, {}
    for entry in entries:
        if isinstance(entry, str):
            items = [(entry, None)]
        elif isinstance(entry, dict) and entry:
            items = list(entry.items())
        else:
            raise ConfigError(f"variant {entry!r} must be a preset name ({available_presets()}) or {{name: overrides}}")
        for name, overrides in items:
            _check_name("variant", name)
            if name in variants:
                raise ConfigError(f"variant {name!r} is listed twice")
            if overrides is None:
                overrides, description = load_preset(name)
            else:
                overrides = _mapping(overrides, f"variant {name!r}")
                description = str(overrides.pop("description", "inline variant")).strip()
            variants[name], descriptions[name] = overrides, description
    return variants, descriptions


def parse_sweep(raw: dict, source: str = "sweep", validate: bool = True) -> SweepSpec:
    """Check a sweep mapping (as read from YAML) and resolve its presets; ``validate`` also checks
    every run's merged configuration against the schema."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping, got {type(raw).__name__}")
    unknown = [key for key in raw if key not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(f"{source}: unknown sweep key(s) {unknown}; expected keys {list(SWEEP_KEYS)}")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise ConfigError(f"{source}: missing sweep key(s) {missing}")
    name = _check_name("sweep", raw["name"])
    maps = raw["maps"]
    if not isinstance(maps, list) or not maps:
        raise ConfigError(f"{source}: maps must be a non-empty list, got {maps!r}")
    for map_name in maps:
        _check_name("map", map_name)
    if len(set(maps)) != len(maps):
        raise ConfigError(f"{source}: maps {maps} lists a map twice")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ConfigError(f"{source}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: seeds {seeds} lists a seed twice")
    per_map = _mapping(raw.get("per_map"), "per_map")
    for map_name, overrides in per_map.items():
        if map_name not in maps:
            raise ConfigError(f"{source}: per_map names map {map_name!r}, which is not in maps {maps}")
        per_map[map_name] = _mapping(overrides, f"per_map.{map_name}")
    variants, descriptions = _resolve_variants(raw["variants"])
    stored = _mapping(raw.get("descriptions"), "descriptions")
    descriptions.update({k: str(v) for k, v in stored.items() if k in variants})
    spec = SweepSpec(
        name=name, alg=str(raw.get("alg", "qmix")), env=str(raw.get("env", "smacsim")),
        base=_mapping(raw.get("base"), "base"), variants=variants, maps=list(maps),
        seeds=list(seeds), per_map=per_map, descriptions=descriptions,
    )
    if validate:
        validate_sweep(spec)
    return spec


def load_sweep(path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} does not exist")
    return parse_sweep(yaml.safe_load(path.read_text()) or {}, source=str(path))


def run_overrides(spec: SweepSpec, variant: str, map_name: str) -> dict:
    overrides = deep_merge(spec.base, spec.per_map.get(map_name, {}))
    return deep_merge(overrides, spec.variants[variant])


def validate_sweep(spec: SweepSpec) -> None:
    """Validate every (variant, map) configuration against the schema before any run starts."""
    for variant in spec.variants:
        for map_name in spec.maps:
            overrides = run_overrides(spec, variant, map_name)
            where = f"variant {variant!r} on map {map_name!r}"
            for key in flatten_overrides(overrides, where=where):
                if key in RESERVED_KEYS:
                    raise ConfigError(f"{where}: {key!r} is set by the sweep itself (alg/env/maps/seeds); remove it from the overrides")
            config = compose_config(spec.alg, spec.env)
            config = deep_merge(config, overrides)
            config = deep_merge(config, {"seed": spec.seeds[0], "env_args": {"map_name": map_name}})
            try:
                validate_config(config)
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from error


def expand(spec: SweepSpec, sweep_dir) -> List[RunSpec]:
    """All runs of the sweep, seed-major: every variant's run of a map and seed comes before any
    variant's next seed, so a sweep stopped part-way still compares every variant (on fewer seeds)."""
    runs_dir = Path(sweep_dir).resolve() / "runs"
    runs = []
    for seed in spec.seeds:
        for map_name in spec.maps:
            for variant in spec.variants:
                rid = run_id(variant, map_name, seed)
                overrides = run_overrides(spec, variant, map_name)
                runs.append(RunSpec(rid, variant, map_name, seed, spec.alg, spec.env, overrides, str(runs_dir / rid)))
    return runs


def default_sweep_dir(spec: SweepSpec) -> Path:
    return Path("results") / "ablations" / spec.name


# --------------------------------------------------------------------------- the sweep folder
def _union(first: list, second: list) -> list:
    return list(first) + [item for item in second if item not in first]


def merge_with_existing(spec: SweepSpec, sweep_dir) -> SweepSpec:
    """Combine ``spec`` with the ``sweep.yaml`` already in ``sweep_dir`` (another machine's share
    of the same sweep): maps, seeds and variants are united; anything both define must agree,
    otherwise the two sweeps' results would be mixed under one name."""
    path = Path(sweep_dir) / "sweep.yaml"
    if not path.is_file():
        return spec
    old = yaml.safe_load(path.read_text())
    old_variants = {name: overrides for entry in old["variants"] for name, overrides in entry.items()}
    conflicts = [key for key in ("name", "alg", "env", "base") if old.get(key) != getattr(spec, key)]
    conflicts += [f"variants.{v}" for v in spec.variants if v in old_variants and old_variants[v] != spec.variants[v]]
    old_per_map = old.get("per_map") or {}
    conflicts += [f"per_map.{m}" for m in spec.maps if m in old.get("maps", [])
                  and old_per_map.get(m, {}) != spec.per_map.get(m, {})]
    if conflicts:
        raise ConfigError(
            f"{path} defines {conflicts} differently from this sweep; use another --out folder "
            "(or delete the old one) rather than mixing two experiments"
        )
    variants = dict(old_variants)
    variants.update(spec.variants)
    descriptions = dict(old.get("descriptions") or {})
    descriptions.update(spec.descriptions)
    per_map = dict(old_per_map)
    per_map.update(spec.per_map)
    return dataclasses.replace(
        spec, variants=variants, descriptions=descriptions, per_map=per_map,
        maps=_union(old["maps"], spec.maps), seeds=_union(old["seeds"], spec.seeds),
    )


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` so that readers see the old or the new file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_sweep_file(spec: SweepSpec, sweep_dir) -> None:
    atomic_write_text(Path(sweep_dir) / "sweep.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))


def read_sweep_file(sweep_dir) -> SweepSpec:
    path = Path(sweep_dir) / "sweep.yaml"
    if not path.is_file():
        raise ConfigError(f"{str(sweep_dir)!r} is not a sweep folder: it has no sweep.yaml")
    # Not validated against today's schema: a past sweep stays reportable.
    return parse_sweep(yaml.safe_load(path.read_text()), source=str(path), validate=False)


# --------------------------------------------------------------------------- the command line
def format_value(value, key: str = "value") -> str:
    """A literal that sacred's command-line parser (``ast.literal_eval``) reads back as ``value``
    with its type: strings are quoted, so ``'3m'``, ``'True'`` or ``'1e5'`` stay strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value!r}: a non-finite float cannot be passed on sacred's command line")
        return repr(value)
    if isinstance(value, (list, tuple)):
        items = ", ".join(format_value(item, key) for item in value)
        return f"[{items}]" if isinstance(value, list) else f"({items}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        items = ", ".join(f"{format_value(k, key)}: {format_value(v, key)}" for k, v in value.items())
        return "{" + items + "}"
    raise ConfigError(f"{key}={value!r}: type {type(value).__name__} cannot be passed on the command line")


def flatten_overrides(overrides: dict, prefix: str = "", where: str = "overrides") -> Dict[str, Any]:
    """``{"masks": {"timeout": "terminal"}}`` -> ``{"masks.timeout": "terminal"}``.

    An empty mapping changes nothing when deep-merged, so it produces no key."""
    flat = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ConfigError(f"{where}: config key {prefix + str(key)!r} is not a valid identifier")
        if isinstance(value, dict):
            flat.update(flatten_overrides(value, prefix + key + ".", where))
        else:
            flat[prefix + key] = value
    return flat


def build_command(run: RunSpec, python: Optional[str] = None) -> List[str]:
    """The training command of one run (the plain CLI, in a fresh interpreter)."""
    run_dir = str(run.run_dir)
    fixed = [
        f"alg={format_value(run.alg)}",
        f"env={format_value(run.env)}",
        f"env_args.map_name={format_value(run.map_name)}",
        f"seed={format_value(run.seed)}",
        f"local_results_path={format_value(run_dir)}",
        "progress_bar=False",
    ]
    overrides = [f"{key}={format_value(value, key)}"
                 for key, value in flatten_overrides(run.overrides, where=run.run_id).items()]
    return [python or sys.executable, "-m", "qmixlab", "-F", os.path.join(run_dir, "sacred"), "with", *fixed, *overrides]

