"""What a resumed run runs: the settings of the run it continues, plus what the user overrides.

``qmixlab with checkpoint_path=<run folder>`` continues that run: its algorithm, environment, seed,
``t_max`` and every other setting come from the checkpoint (each checkpoint records the run's
validated settings). A key given on the command line overrides the recorded value and is announced
("resuming with t_max: 400000 -> 800000"). Keys that would make the checkpoint unusable (network
shapes, the environment, the optimiser's kind, the replay layout, the random seed) are refused
before anything is built, naming the key, the checkpoint's value and the new one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from qmixlab.settings import ConfigError, deep_merge, flatten_dotted, nest_dotted

# Keys a resume cannot change: the checkpoint's networks, optimiser state, replay buffer and
# random states were made for them. A key listed as a section covers every key inside it.
FIXED_ON_RESUME = (
    "alg", "env", "env_args", "seed", "batch_size_run", "buffer_size", "agent", "mixer",
    "learner.optimiser", "buffer",
)
# When only evaluating, a checkpoint's networks can meet another environment setting (the
# checkpoint's compatibility record still checks shapes).
FIXED_ON_EVALUATE = ("alg", "agent", "mixer")
# Keys that say where to resume from; never announced as overrides.
RESUME_KEYS = ("checkpoint_path", "load_step", "evaluate")


def _is_fixed(key: str, fixed) -> bool:
    return any(key == f or key.startswith(f + ".") for f in fixed)


@dataclass(frozen=True)
class ResumePlan:
    checkpoint: Path
    recorded: Optional[dict]  # the run's validated settings as a nested dict (None: old checkpoint)

    @property
    def alg(self) -> Optional[str]:
        return self.recorded.get("alg") if self.recorded else None

    @property
    def env(self) -> Optional[str]:
        return self.recorded.get("env") if self.recorded else None

    def check_flags(self, **flags: Optional[str]) -> None:
        """PyMARL's ``--config=`` / ``--env-config=`` (``alg`` / ``env``) must agree with the
        checkpoint's, as ``alg=`` / ``env=`` must."""
        for key, value in flags.items():
            recorded = (self.recorded or {}).get(key)
            if value is not None and recorded is not None and value != recorded:
                raise ConfigError(
                    f"{key} is {recorded!r} in checkpoint {str(self.checkpoint)!r} but {value!r} here: "
                    f"{key} cannot change when resuming (leave it out to keep the checkpoint's value, "
                    "or start a new run)"
                )

    def overrides(self, config_updates: dict) -> dict:
        """``{dotted key: (recorded value, new value)}`` for every key the user changes."""
        recorded = flatten_dotted(self.recorded or {})
        changed = {}
        for key, value in flatten_dotted(config_updates).items():
            if key in RESUME_KEYS:
                continue
            old = recorded.get(key, _MISSING)
            if old is _MISSING and isinstance(value, dict) and not value:
                continue
            if old is _MISSING or old != value:
                changed[key] = (None if old is _MISSING else old, value)
        return changed

    def apply(self, config_updates: dict, log: Optional[logging.Logger] = None) -> dict:
        """The run's recorded settings overlaid with ``config_updates`` (sacred's nested updates)."""
        log = log or logging.getLogger("qmixlab")
        if self.recorded is None:
            log.warning("checkpoint %s records no settings (written by an older qmixlab): the run "
                        "continues with the command line's settings", self.checkpoint)
            return config_updates
        evaluating = bool(config_updates.get("evaluate", False))
        fixed = FIXED_ON_EVALUATE if evaluating else FIXED_ON_RESUME
        changed = self.overrides(config_updates)
        for key, (old, new) in changed.items():
            if _is_fixed(key, fixed):
                action = "evaluating" if evaluating else "resuming"
                raise ConfigError(
                    f"{key} is {old!r} in checkpoint {str(self.checkpoint)!r} but {new!r} here: "
                    f"{key} cannot change when {action} (leave it out to keep the checkpoint's value, "
                    f"or start a new run)"
                )
        if changed:
            log.info("%s %s with overrides: %s", "evaluating" if evaluating else "resuming", self.checkpoint,
                     ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items())))
        else:
            log.info("resuming %s with its recorded settings", self.checkpoint)
        # The run loads exactly the checkpoint chosen here (which may be an earlier one than the
        # latest, when the latest is unreadable), and records which one it was.
        where = {"load_step": int(self.checkpoint.parent.name)} if self.checkpoint.parent.name.isdigit() else {}
        return deep_merge(deep_merge(self.recorded, where), config_updates)


_MISSING = object()


def plan_resume(checkpoint_path: Optional[str], load_step: Optional[str] = None) -> Optional[ResumePlan]:
    """The plan for ``checkpoint_path`` (None when the command line names no checkpoint)."""
    if not checkpoint_path:
        return None
    from qmixlab.checkpoints import find_readable_checkpoint, read_checkpoint_config

    try:
        step = int(float(load_step)) if load_step else 0
    except ValueError:
        raise ConfigError(f"load_step={load_step!r} must be an integer (0: the latest checkpoint)")
    path = find_readable_checkpoint(checkpoint_path, step)  # an unreadable latest one gives way, with a warning
    recorded = read_checkpoint_config(path)
    return ResumePlan(checkpoint=path, recorded=nest_dotted(flatten_dotted(recorded)) if recorded else None)


# Keys in which the members of one group differ; everything else they share.
MEMBER_KEYS = ("seed", "local_results_path", "checkpoint_path", "load_step", "seeds", "member_results_paths",
               "member_checkpoint_paths")


@dataclass(frozen=True)
class GroupResumePlan:
    """``checkpoint_path=[<run>, ...]``: the members of a ``seeds=[...]`` process (or any runs
    that differ only in seed and results folder) continue together in one process."""

    plans: tuple
    run_folders: tuple  # as given on the command line

    @property
    def alg(self) -> Optional[str]:
        return self.plans[0].alg

    @property
    def env(self) -> Optional[str]:
        return self.plans[0].env

    def check_flags(self, **flags: Optional[str]) -> None:
        for plan in self.plans:
            plan.check_flags(**flags)

    def apply(self, config_updates: dict, log: Optional[logging.Logger] = None) -> dict:
        """The group's configuration: the members' shared recorded settings overlaid with
        ``config_updates``, with one seed, results folder and checkpoint per member."""
        if any(plan.recorded is None for plan in self.plans):
            raise ConfigError("a checkpoint of this group records no settings (written by an older qmixlab): "
                              "resume its runs one at a time")
        shared = [{k: v for k, v in flatten_dotted(plan.recorded).items() if k.split(".")[0] not in MEMBER_KEYS}
                  for plan in self.plans]
        for plan, values in zip(self.plans[1:], shared[1:]):
            differing = sorted(k for k in set(values) | set(shared[0]) if values.get(k) != shared[0].get(k))
            if differing:
                raise ConfigError(
                    f"checkpoint {str(plan.checkpoint)!r} was trained with other settings than "
                    f"{str(self.plans[0].checkpoint)!r} (first difference: {differing[0]}="
                    f"{values.get(differing[0])!r} vs {shared[0].get(differing[0])!r}): only runs that differ "
                    "in seed can resume together")
        # Results folders given on the command line (a sweep folder moved since) replace the
        # recorded ones, one per member in the order of the checkpoints.
        given = list(config_updates.get("member_results_paths") or [])
        if given and len(given) != len(self.plans):
            raise ConfigError(f"member_results_paths lists {len(given)} folders for {len(self.plans)} checkpoints: "
                              "give one per checkpoint, in the same order, or leave it out to use the recorded ones")
        updates = {k: v for k, v in config_updates.items() if k not in ("checkpoint_path", "member_results_paths")}
        merged = [plan.apply(updates, log) for plan in self.plans]  # refuses fixed keys, announces overrides
        seeds = [int(plan.recorded["seed"]) for plan in self.plans]
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"the checkpoints hold runs of the same seed ({seeds}): each member needs its own")
        group = {k: v for k, v in merged[0].items() if k not in MEMBER_KEYS}
        recorded_paths = [str(plan.recorded.get("local_results_path", "results")) for plan in self.plans]
        group.update(seeds=seeds, checkpoint_path="", load_step=0,
                     member_results_paths=[str(path) for path in given] or recorded_paths,
                     member_checkpoint_paths=[str(folder) for folder in self.run_folders])
        return group


def plan_group_resume(checkpoint_paths, load_step: Optional[str] = None) -> GroupResumePlan:
    if load_step and str(load_step).strip() not in ("0", ""):
        raise ConfigError(f"load_step={load_step!r} with several checkpoints: a group resumes each member from "
                          "its latest readable checkpoint")
    folders = tuple(str(path) for path in checkpoint_paths)
    if len(set(folders)) != len(folders):
        raise ConfigError(f"checkpoint_path lists a run twice: {list(folders)}")
    return GroupResumePlan(tuple(plan_resume(folder) for folder in folders), folders)
