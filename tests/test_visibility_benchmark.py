"""benchmarks/visibility.py counts hidden and dead entity tokens: checked on hand-placed scenes
where every token's status is known."""

import importlib.util
from pathlib import Path

import numpy as np
import torch

from qmixlab.envs.smacsim import BatchedSMACSim

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "visibility.py"
_spec = importlib.util.spec_from_file_location("visibility_benchmark", _PATH)
visibility = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(visibility)


def test_other_allies_lists_each_agents_allies_in_agent_order_skipping_itself():
    assert visibility.other_allies(3).tolist() == [[1, 2], [0, 2], [0, 1]]


def test_counts_on_a_hand_placed_scene():
    env = BatchedSMACSim("3m", n_envs=2, seed=0)
    allies_of = torch.as_tensor(visibility.other_allies(3))
    # Agents 0 and 1 alive side by side, agent 2 dead. Enemy 0 within sight (4 away), enemy 1
    # alive but 20 away (sight range 9), enemy 2 dead.
    env.place_units(0, [[10, 16], [10, 17], [12, 18]], [[14, 16], [30, 16], [14, 18]],
                    ally_health=[45, 45, 0], enemy_health=[45, 45, 0])
    # Env 1: the same, but enemy 0 also far away: both living agents see no living enemy.
    env.place_units(1, [[10, 16], [10, 17], [12, 18]], [[28, 20], [30, 16], [14, 18]],
                    ally_health=[45, 45, 0], enemy_health=[45, 45, 0])
    only_env0 = visibility.count_hidden(env, np.array([True, False]), allies_of)
    # Per living agent: 3 enemy + 2 ally tokens; hidden and alive: enemy 1; dead: enemy 2, agent 2.
    assert only_env0 == {"tokens": 10, "hidden_alive": 2, "dead": 4, "agent_steps": 2, "blind": 0}
    both = visibility.count_hidden(env, np.array([True, True]), allies_of)
    assert both == {"tokens": 20, "hidden_alive": 2 + 4, "dead": 8, "agent_steps": 4, "blind": 2}


def test_measure_returns_fractions():
    result = visibility.measure("3m", "random", episodes=4, seed=0)
    assert set(result) == {"hidden_alive", "dead", "blind"}
    assert all(0.0 <= value <= 1.0 for value in result.values())
    assert result["hidden_alive"] + result["dead"] <= 1.0
