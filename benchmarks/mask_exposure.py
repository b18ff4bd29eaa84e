"""What each masking axis acts on, per environment family: the share of a training batch that an
axis of ``docs/masking.md`` changes.

An ablation can only separate from ``standard`` where its axis touches the loss. This script plays
uniformly random available actions through qmixlab's runner (``BatchRunner``, the episodes exactly
as the buffer stores them) and measures, with the masks module's own standard masks:

* ``truncated``: episodes that end by the time limit (axis 4: ``timeout_as_terminal`` cuts their
  bootstrap);
* ``post_terminal``: episodes whose row after the last transition lies inside the buffer (axis 1:
  ``filled_only`` trains on it, bootstrapping from all-unavailable actions);
* ``padding``: transition rows of the batch that are padding (axis 2: ``no_padding_mask``,
  ``mean_over_all_rows``);
* ``length_cv``: coefficient of variation of episode lengths (axis 3: per-episode against
  per-step normalisation weigh episodes differently only when lengths differ);
* ``dead``: agent-steps in the loss whose agent is dead or has left (axis 6, and
  ``agent_step_normalisation``);
* ``restricted``: agent-steps in the loss whose target reads a next row with some action
  unavailable (axis 5: ``no_target_avail_mask`` changes the target max only there).

Random play is a fixed behaviour, not a learner's: a trained policy ends SMAC battles sooner and
LBF episodes by clearing the field. The numbers say where an axis can act, not how much it will.

    python benchmarks/mask_exposure.py [--tasks smacsim-3m,lbf-8x8-2p-3f,...] [--episodes 64]

The last line is ``<measure>_<task>=<x> ...`` for every task and measure.
"""

from __future__ import annotations

import argparse
from typing import Dict, List

import numpy as np
import torch

from qmixlab.components.mask_options import MaskOptions
from qmixlab.components.masks import build_transition_masks
from qmixlab.envs import make_batched_env
from qmixlab.envs.random_play import RandomAvailableController
from qmixlab.runners.batch_runner import BatchRunner

TASKS: Dict[str, tuple] = {
    "smacsim-3m": ("smacsim", {"map_name": "3m"}),
    "lbf-8x8-2p-3f": ("lbf", {"key": "Foraging-8x8-2p-3f-v3"}),
    "rware-tiny-2ag": ("rware", {"key": "rware-tiny-2ag-v2"}),
    "mpe-spread": ("mpe", {"task": "simple_spread_v3"}),
}
MEASURES = ("truncated", "post_terminal", "padding", "length_cv", "dead", "restricted")


def exposure(batch, options: MaskOptions) -> Dict[str, np.ndarray]:
    """Per-batch counts behind ``MEASURES`` (summed over batches by ``measure``)."""
    masks = build_transition_masks(batch, options)
    filled = batch["filled"][..., 0].bool()  # [B, T]
    ended = masks.ends_episode[..., 0]  # [B, T-1]
    lengths = (filled[:, :-1] & ~torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], 1)).sum(1)
    timeout = batch["timeout"][:, :-1, 0].bool()
    step = masks.step[..., 0]  # [B, T-1]
    alive = masks.alive[:, :-1]  # [B, T-1, n_agents]
    next_avail = batch["avail_actions"][:, 1:].bool()  # [B, T-1, n_agents, n_actions]
    reads_next = step & ~masks.cuts_bootstrap[..., 0]
    restricted = ~next_avail.all(-1) & next_avail.any(-1) & reads_next[..., None]
    T = step.shape[1]
    return {
        "episodes": np.array(batch.batch_size),
        "truncated": np.array(int((timeout & ended).sum())),
        "post_terminal": np.array(int((lengths < T).sum())),
        "rows": np.array(step.numel()),
        "padding": np.array(int((~filled[:, :-1]).sum())),
        "lengths": lengths.numpy(),
        "agent_steps": np.array(int(step.sum()) * alive.shape[2]),
        "dead": np.array(int((~alive & step[..., None]).sum())),
        "restricted": np.array(int(restricted.sum())),
    }


def measure(backend: str, env_args: dict, episodes: int, seed: int = 0, n_envs: int = 8) -> Dict[str, float]:
    env = make_batched_env(backend, n_envs, seed=seed, **env_args)
    runner = BatchRunner(env, RandomAvailableController(seed))
    options = MaskOptions()
    parts: List[Dict[str, np.ndarray]] = []
    while sum(int(p["episodes"]) for p in parts) < episodes:
        batch, _ = runner.run()
        parts.append(exposure(batch, options))
    env.close()
    total = {key: sum(p[key] for p in parts) for key in parts[0] if key != "lengths"}
    lengths = np.concatenate([p["lengths"] for p in parts]).astype(float)
    return {
        "truncated": float(total["truncated"] / total["episodes"]),
        "post_terminal": float(total["post_terminal"] / total["episodes"]),
        "padding": float(total["padding"] / total["rows"]),
        "length_cv": float(lengths.std() / lengths.mean()),
        "dead": float(total["dead"] / total["agent_steps"]),
        "restricted": float(total["restricted"] / total["agent_steps"]),
        "mean_length": float(lengths.mean()),
        "episode_limit": float(env.episode_limit),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = [name for name in args.tasks.split(",") if name]
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    print("| task | episode limit | mean length | " + " | ".join(MEASURES) + " |")
    print("|---|---|---|" + "---|" * len(MEASURES))
    summary = []
    for name in names:
        backend, env_args = TASKS[name]
        result = measure(backend, env_args, args.episodes, args.seed)
        print(f"| {name} | {result['episode_limit']:.0f} | {result['mean_length']:.1f} | "
              + " | ".join(f"{result[m]:.3f}" for m in MEASURES) + " |", flush=True)
        summary += [f"{m}_{name}={result[m]:.3f}" for m in MEASURES]
    print(" ".join(summary))


if __name__ == "__main__":
    main()
