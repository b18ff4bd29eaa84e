"""Sweep files, ablation presets, and their expansion into ordinary runs.

A sweep is ``variants x maps x seeds``; each combination is one ordinary training run of the
command line (``build_command``), identified by ``<variant>__<map>__seed<k>`` and kept in its own
folder ``<sweep folder>/runs/<run id>/``. Every run's configuration, composed exactly as its
command line composes it, is validated against the schema (``qmixlab.settings.validate_run``)
before any run starts, so a misspelled key or map fails at once, naming the run.

Runs that differ only in their seed share a code path; up to ``seeds_per_process`` of them train
together in one process (``group_runs``, ``build_group_command``), each writing the same files as
its own single run would.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from qmixlab.settings import ConfigError, available, deep_merge, load_yaml, validate_run

# ``descriptions`` is written into the resolved ``sweep.yaml``, which is itself a valid sweep file.
SWEEP_KEYS = ("name", "alg", "env", "base", "variants", "maps", "seeds", "per_map", "descriptions",
              "seeds_per_process")
REQUIRED_KEYS = ("name", "variants", "maps", "seeds")
# Keys the sweep sets itself for every run; an override of them would be silently overridden.
RESERVED_KEYS = ("alg", "env", "seed", "local_results_path", "progress_bar", "env_args.map_name", "seeds",
                 "member_results_paths")
# The env_args key a sweep's ``maps`` set, the first of these the backend takes: SMAC's map (smacsim,
# sc2), MPE's task, a gymnasium id (gymma, lbf, rware). A backend taking only ``**kwargs`` gets
# map_name.
TASK_ARGS = ("map_name", "task", "key")
# Runs of one code path (variant and map) trained in one process unless the sweep says otherwise.
DEFAULT_SEEDS_PER_PROCESS = 5
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
    # How the runs are executed, not what they are: merging sweep folders never conflicts on it.
    seeds_per_process: int = DEFAULT_SEEDS_PER_PROCESS

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
    # How this attempt runs, not what the run is: the models folder (``<run_dir>/models/<name>``)
    # of an interrupted attempt that this one continues, None for a fresh start.
    resume_from: Optional[str] = None

    def to_dict(self) -> dict:
        """What the run is (written as ``run_spec.json``): everything but ``resume_from``."""
        spec = dataclasses.asdict(self)
        del spec["resume_from"]
        return spec


def run_id(variant: str, map_name: str, seed: int) -> str:
    return f"{variant}__{map_name}__seed{seed}"


def _check_name(kind: str, name) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or "__" in name:
        raise ConfigError(
            f"{kind} name {name!r} must be a non-empty string of letters, digits, '_', '.', '+' or "
            "'-' without '__' (it becomes part of a folder name)"
        )
    return name


def check_seeds_per_process(value, where: str = "seeds_per_process") -> int:
    """``value`` if it is a positive integer (how many runs of one code path share a process)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}={value!r} must be a positive integer: how many seeds of one variant and map "
                          "train in one process (1 = one process per run)")
    return value


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


def parse_sweep(raw: dict, source: str = "sweep", validate: bool = True,
                lines: Optional[Dict[str, int]] = None) -> SweepSpec:
    """Check a sweep mapping (as read from YAML) and resolve its presets; ``validate`` also checks
    every run's configuration against the schema. ``lines`` (top-level key -> line number in
    ``source``) puts the line into the messages."""

    def at(key: str) -> str:
        return f"{source}:{lines[key]}" if lines and key in lines else source

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}:1: a sweep file holds a mapping of sweep keys {list(SWEEP_KEYS)}, "
                          f"not a {type(raw).__name__}")
    unknown = [key for key in raw if key not in SWEEP_KEYS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), SWEEP_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close and len(unknown) == 1 else ""
        raise ConfigError(f"{at(unknown[0])}: unknown sweep key(s) {unknown}{hint} (expected keys {list(SWEEP_KEYS)})")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise ConfigError(f"{source}: missing sweep key(s) {missing} (every sweep file needs {list(REQUIRED_KEYS)})")
    try:
        name = _check_name("sweep", raw["name"])
    except ConfigError as error:
        raise ConfigError(f"{at('name')}: {error}") from None
    maps = raw["maps"]
    if not isinstance(maps, list) or not maps:
        raise ConfigError(f"{at('maps')}: maps must be a non-empty list, got {maps!r}")
    for map_name in maps:
        try:
            _check_name("map", map_name)
        except ConfigError as error:
            raise ConfigError(f"{at('maps')}: {error}") from None
    if len(set(maps)) != len(maps):
        raise ConfigError(f"{at('maps')}: maps {maps} lists a map twice")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ConfigError(f"{at('seeds')}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{at('seeds')}: seeds {seeds} lists a seed twice")
    per_map = _mapping(raw.get("per_map"), f"{at('per_map')}: per_map")
    for map_name, overrides in per_map.items():
        if map_name not in maps:
            raise ConfigError(f"{at('per_map')}: per_map names map {map_name!r}, which is not in maps {maps}")
        per_map[map_name] = _mapping(overrides, f"{at('per_map')}: per_map.{map_name}")
    try:
        variants, descriptions = _resolve_variants(raw["variants"])
    except ConfigError as error:
        raise ConfigError(f"{at('variants')}: {error}") from None
    try:
        seeds_per_process = check_seeds_per_process(raw.get("seeds_per_process", DEFAULT_SEEDS_PER_PROCESS))
    except ConfigError as error:
        raise ConfigError(f"{at('seeds_per_process')}: {error}") from None
    stored = _mapping(raw.get("descriptions"), "descriptions")
    descriptions.update({k: str(v) for k, v in stored.items() if k in variants})
    spec = SweepSpec(
        name=name, alg=str(raw.get("alg", "qmix")), env=str(raw.get("env", "smacsim")),
        base=_mapping(raw.get("base"), f"{at('base')}: base"), variants=variants, maps=list(maps),
        seeds=list(seeds), per_map=per_map, descriptions=descriptions, seeds_per_process=seeds_per_process,
    )
    if validate:
        validate_sweep(spec)
    return spec


def read_sweep_yaml(path) -> Tuple[Any, Dict[str, int]]:
    """The YAML document in ``path`` and the line of each top-level key. A syntax error or a key
    given twice raises ConfigError naming the file and the line."""
    path = Path(path)
    try:
        loader = yaml.SafeLoader(path.read_text())
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text (UTF-8) file: {error.reason} at byte {error.start}") from None
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        context = ""
        if error.context and error.problem:
            started = error.context_mark
            began = f" that starts on line {started.line + 1}" if started and started.line != mark.line else ""
            context = f" ({error.context}{began})"
        raise ConfigError(f"{where}: YAML syntax error: {error.problem or error.context}{context}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: YAML syntax error: {str(error).splitlines()[0]}") from None
    finally:
        loader.dispose()
    lines: Dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in lines:
                raise ConfigError(f"{path}:{line}: sweep key {key!r} is given twice (first on line {lines[key]})")
            lines[key] = line
    return raw, lines


def load_sweep(path, validate: bool = True) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} does not exist")
    raw, lines = read_sweep_yaml(path)
    return parse_sweep({} if raw is None else raw, source=str(path), validate=validate, lines=lines)


def run_overrides(spec: SweepSpec, variant: str, map_name: str) -> dict:
    overrides = deep_merge(spec.base, spec.per_map.get(map_name, {}))
    return deep_merge(overrides, spec.variants[variant])


def task_arg(env: str) -> Optional[str]:
    """The env_args key that names the task of backend ``env`` (TASK_ARGS), which a sweep's
    ``maps`` set: ``map_name`` for smacsim, ``task`` for mpe, ``key`` for lbf; None for a backend
    that takes none of them (its task is in ``base.env_args``; the sweep's one map is a label)."""
    from qmixlab.envs import env_arg_defaults

    try:
        accepted = env_arg_defaults(env)
    except (ValueError, TypeError, ImportError):
        # An unknown or broken backend: each run's validation names the problem.
        return TASK_ARGS[0]
    if not accepted:
        return TASK_ARGS[0]
    return next((name for name in TASK_ARGS if name in accepted), None)


def task_overrides(env: str, map_name: str) -> Dict[str, Any]:
    """What one entry of a sweep's ``maps`` sets on the command line."""
    name = task_arg(env)
    return {} if name is None else {f"env_args.{name}": map_name}


def check_task_axis(spec: SweepSpec) -> None:
    """A backend without a task argument can be swept over one label only."""
    if task_arg(spec.env) is None and len(spec.maps) > 1:
        raise ConfigError(
            f"environment {spec.env!r} takes none of the task arguments {list(TASK_ARGS)}, so maps "
            f"{spec.maps} cannot set its task: list one label in maps and set the environment's "
            "arguments in base.env_args (or per_map)"
        )


def check_reserved_keys(spec: SweepSpec) -> None:
    """The keys every run's command line sets itself may not be overridden (silently lost)."""
    reserved = set(RESERVED_KEYS) | {f"env_args.{name}" for name in [task_arg(spec.env)] if name}
    for variant in spec.variants:
        for map_name in spec.maps:
            where = f"variant {variant!r} on map {map_name!r}"
            for key in flatten_overrides(run_overrides(spec, variant, map_name), where=where):
                if key in reserved:
                    raise ConfigError(f"{where}: {key!r} is set by the sweep itself (alg/env/maps/seeds); "
                                      "remove it from the overrides")


def validate_sweep(spec: SweepSpec) -> None:
    """Validate every (variant, map) configuration before any run starts; the first failure
    raises ConfigError naming the variant and map (``invalid_runs`` lists them all)."""
    check_task_axis(spec)
    check_reserved_keys(spec)
    for variant in spec.variants:
        for map_name in spec.maps:
            run = RunSpec(run_id(variant, map_name, spec.seeds[0]), variant, map_name, spec.seeds[0], spec.alg,
                          spec.env, run_overrides(spec, variant, map_name), "<sweep folder>")
            try:
                validate_run(run.alg, run.env, command_overrides(run))
            except ConfigError as error:
                raise ConfigError(f"variant {variant!r} on map {map_name!r}: {error}") from None


def invalid_runs(runs: List[RunSpec]) -> List[Tuple[RunSpec, str]]:
    """``(run, message)`` of every run whose full configuration (composed as its command line
    composes it) does not validate."""
    failures = []
    for run in runs:
        try:
            validate_run(run.alg, run.env, command_overrides(run))
        except ConfigError as error:
            failures.append((run, str(error)))
    return failures


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


# --------------------------------------------------------------------------- kept results
SWEEP_FILE = "sweep.yaml"
CURATED_FILE = "README.md"  # the sweep machinery never writes one: people do


def sweep_folders(folder) -> List[Path]:
    """The sweep folders directly inside ``folder`` (each holds a sweep.yaml), by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / SWEEP_FILE).is_file())


def _git_tracked_files(folder: Path) -> int:
    """How many files under ``folder`` git tracks (0 without git or outside a repository)."""
    try:
        listed = subprocess.run(["git", "-C", str(folder), "ls-files", "--", "."], capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return len(listed.stdout.splitlines()) if listed.returncode == 0 else 0


def kept_results_reason(folder) -> Optional[str]:
    """Why ``folder`` holds results kept on purpose (a committed reproduction), or None.

    Kept: files under it are tracked by git, or it holds a README.md (written by people; the sweep
    machinery writes none). Such a folder only gains runs when the user says so (``--append``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    reasons = []
    tracked = _git_tracked_files(folder)
    if tracked:
        reasons.append(f"{tracked} file(s) in it are tracked by git")
    if (folder / CURATED_FILE).is_file():
        reasons.append(f"it holds a {CURATED_FILE}")
    return f"holds kept results ({'; '.join(reasons)})" if reasons else None


# --------------------------------------------------------------------------- the sweep folder
def _union(first: list, second: list) -> list:
    return list(first) + [item for item in second if item not in first]


def merge_with_existing(spec: SweepSpec, sweep_dir) -> SweepSpec:
    """Combine ``spec`` with the ``sweep.yaml`` already in ``sweep_dir`` (another machine's share
    of the same sweep): maps, seeds and variants are united; anything both define must agree,
    otherwise the two sweeps' results would be mixed under one name. ``seeds_per_process`` is
    ``spec``'s: it changes how runs are executed, not what they compute."""
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


def command_overrides(run: RunSpec) -> Dict[str, Any]:
    """The dotted keys and values one run's command line sets, in order (after ``with``)."""
    fixed = {"alg": run.alg, "env": run.env, **task_overrides(run.env, run.map_name), "seed": run.seed,
             "local_results_path": str(run.run_dir), "progress_bar": False}
    return {**fixed, **flatten_overrides(run.overrides, where=run.run_id)}


def build_command(run: RunSpec, python: Optional[str] = None) -> List[str]:
    """The training command of one run (the plain CLI, in a fresh interpreter); with
    ``run.resume_from``, the same command continuing that checkpoint folder."""
    overrides = command_overrides(run)
    if run.resume_from:
        overrides["checkpoint_path"] = run.resume_from
    tokens = [f"{key}={format_value(value, key)}" for key, value in overrides.items()]
    return [python or sys.executable, "-m", "qmixlab", "-F", os.path.join(str(run.run_dir), "sacred"), "with", *tokens]



# --------------------------------------------------------------------------- several seeds in one process
# What a group's command sets per member: everything else is the members' shared code path.
_MEMBER_KEYS = ("seed", "local_results_path")


def shared_command_tokens(run: RunSpec) -> Tuple[str, ...]:
    """The command-line tokens of ``run`` other than its seed and results folder: runs with the same
    tokens share a code path and may train in one process."""
    return tuple(f"{key}={format_value(value, key)}" for key, value in command_overrides(run).items()
                 if key not in _MEMBER_KEYS)


def group_runs(runs: List[RunSpec], seeds_per_process: int) -> List[List[RunSpec]]:
    """Groups of at most ``seeds_per_process`` runs sharing a code path, members in the order of
    ``runs`` (the sweep's seed order). Seed-major like ``expand``: every code path's first group
    comes before any code path's second group, so a sweep stopped part-way still compares every
    variant."""
    check_seeds_per_process(seeds_per_process)
    by_path: Dict[Tuple[str, ...], List[RunSpec]] = {}
    for run in runs:
        by_path.setdefault(shared_command_tokens(run), []).append(run)
    chunks = [[members[i:i + seeds_per_process] for i in range(0, len(members), seeds_per_process)]
              for members in by_path.values()]
    return [path_chunks[index] for index in range(max(map(len, chunks), default=0))
            for path_chunks in chunks if index < len(path_chunks)]


def group_command_overrides(runs: List[RunSpec]) -> Dict[str, Any]:
    """The dotted keys and values a group's command line sets, in order (after ``with``): the
    members' seeds and results folders, then the code path they share. Raises ValueError for runs
    that do not share a code path or repeat a seed."""
    if not runs:
        raise ValueError("a group needs at least one run")
    shared = {key: value for key, value in command_overrides(runs[0]).items() if key not in _MEMBER_KEYS}
    tokens = shared_command_tokens(runs[0])
    strays = [run.run_id for run in runs[1:] if shared_command_tokens(run) != tokens]
    if strays:
        raise ValueError(f"runs {strays} do not share {runs[0].run_id}'s code path (only their seeds may differ), "
                         "so they cannot train in one process")
    seeds = [run.seed for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a group's seeds must differ, got {seeds} for {[run.run_id for run in runs]}")
    resumed = [bool(run.resume_from) for run in runs]
    if any(resumed) and not all(resumed):
        raise ValueError(f"runs {[run.run_id for run in runs]} mix continued and fresh attempts "
                         f"(resume_from {[run.resume_from for run in runs]}): a group resumes all its members or none")
    if all(resumed):  # each member's seed comes from its checkpoint
        return {"member_results_paths": [str(run.run_dir) for run in runs],
                "checkpoint_path": [str(run.resume_from) for run in runs], **shared}
    return {"seeds": seeds, "member_results_paths": [str(run.run_dir) for run in runs], **shared}


def build_group_command(runs: List[RunSpec], python: Optional[str] = None) -> List[str]:
    """The training command of a group of runs sharing a code path: one process in which member k
    writes exactly what ``build_command(runs[k])`` would (its sacred run under
    ``<run_dir>/sacred/``, its models under ``<run_dir>/models/``). Members with ``resume_from``
    continue together (``checkpoint_path=[...]``, one folder per member, in member order)."""
    tokens = [f"{key}={format_value(value, key)}" for key, value in group_command_overrides(runs).items()]
    return [python or sys.executable, "-m", "qmixlab", "with", *tokens]


def invalid_groups(runs: List[RunSpec], seeds_per_process: int) -> List[Tuple[List[RunSpec], str]]:
    """``(group, message)`` for each code path whose group command's configuration does not
    validate (what only a group sets, e.g. several seeds with ``evaluate=True``); checked on each
    code path's first group. None when every run is its own process."""
    if check_seeds_per_process(seeds_per_process) == 1:
        return []
    failures, checked = [], set()
    for group in group_runs(runs, seeds_per_process):
        path = shared_command_tokens(group[0])
        if path in checked:
            continue
        checked.add(path)
        try:
            validate_run(group[0].alg, group[0].env, group_command_overrides(group))
        except ConfigError as error:
            failures.append((group, str(error)))
    return failures
