"""benchmarks/mask_exposure.py measures what each masking axis acts on: checked on a hand-built
batch of two episodes where every count is known, and on a real environment per family."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from qmixlab.components.mask_options import MaskOptions

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "mask_exposure.py"
_spec = importlib.util.spec_from_file_location("mask_exposure_benchmark", _PATH)
mask_exposure = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mask_exposure)


class Batch(dict):
    @property
    def batch_size(self):
        return self["filled"].shape[0]


def two_episodes():
    """A buffer of 6 rows (episode limit 5), 2 agents, 3 actions.
    Episode 0: 3 actions, terminated at t=2 (rows 0-3 filled); agent 1 dies on row 2 (no-op only
    from there); agent 0 cannot take action 2 on row 1.
    Episode 1: 5 actions, cut by the time limit at t=4 (rows 0-5 filled); agent 0 cannot take
    action 1 on row 3."""
    B, T, A, K = 2, 6, 2, 3
    filled = torch.zeros(B, T, 1, dtype=torch.bool)
    filled[0, :4] = True
    filled[1, :] = True
    terminated = torch.zeros(B, T, 1, dtype=torch.bool)
    terminated[0, 2] = True
    timeout = torch.zeros(B, T, 1, dtype=torch.bool)
    timeout[1, 4] = True
    avail = torch.ones(B, T, A, K, dtype=torch.bool)
    avail[0, 4:] = False  # padding
    avail[0, 1, 0, 2] = False
    avail[0, 2:4, 1] = torch.tensor([True, False, False])
    avail[1, 3, 0, 1] = False
    alive = torch.ones(B, T, A, 1, dtype=torch.bool)
    alive[0, 2:, 1] = False
    return Batch(filled=filled, terminated=terminated, timeout=timeout, avail_actions=avail, alive=alive)


def test_counts_on_a_hand_built_batch():
    counts = mask_exposure.exposure(two_episodes(), MaskOptions())
    assert counts["lengths"].tolist() == [3, 5]
    assert int(counts["episodes"]) == 2
    assert int(counts["truncated"]) == 1  # episode 1
    assert int(counts["post_terminal"]) == 1  # episode 0's row 3; episode 1 fills the buffer
    assert (int(counts["padding"]), int(counts["rows"])) == (1, 10)  # episode 0's transition row 4
    # Loss transitions: episode 0 rows 0-2, episode 1 rows 0-4: 8 steps, 16 agent-steps.
    assert int(counts["agent_steps"]) == 16
    assert int(counts["dead"]) == 1  # episode 0, agent 1, row 2
    # Targets read next rows: episode 0 rows 1 and 2 (row 2 is terminal: no bootstrap), episode 1
    # rows 1-5 (the time-out bootstraps). Restricted: ep 0 row 1 agent 0, ep 0 row 2 agent 1 (dead,
    # no-op only), ep 1 row 3 agent 0.
    assert int(counts["restricted"]) == 3


def test_a_time_out_treated_as_terminal_reads_no_next_row_after_it():
    counts = mask_exposure.exposure(two_episodes(), MaskOptions(timeout="terminal"))
    assert int(counts["restricted"]) == 3  # episode 1's last target (row 5) was unrestricted anyway
    batch = two_episodes()
    batch["avail_actions"][1, 5, 0, 0] = False  # now the row after the time-out is restricted
    assert int(mask_exposure.exposure(batch, MaskOptions())["restricted"]) == 4
    assert int(mask_exposure.exposure(batch, MaskOptions(timeout="terminal"))["restricted"]) == 3


@pytest.mark.parametrize("task, expect", [
    ("rware-tiny-2ag", {"truncated": 1.0, "padding": 0.0, "dead": 0.0, "restricted": 0.0}),
    ("mpe-spread", {"truncated": 1.0, "padding": 0.0, "dead": 0.0, "restricted": 0.0}),
])
def test_families_where_every_episode_runs_to_its_limit(task, expect):
    backend, env_args = mask_exposure.TASKS[task]
    if backend == "rware":
        env_args = dict(env_args, time_limit=20)
    result = mask_exposure.measure(backend, env_args, episodes=8, n_envs=4)
    for key, value in expect.items():
        assert result[key] == value, key


def test_smacsim_3m_has_dead_agents_restricted_targets_and_post_terminal_rows():
    result = mask_exposure.measure("smacsim", {"map_name": "3m"}, episodes=16, n_envs=8)
    assert result["truncated"] < 0.5 < result["post_terminal"]
    assert result["dead"] > 0 and result["restricted"] > 0.5 and result["padding"] > 0
