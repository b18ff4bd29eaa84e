"""SMAC's heuristic (own nearest enemy, kept until it dies; medivacs heal the nearest damaged ally)."""

import math

import numpy as np
import pytest

from qmixlab.envs.smacsim import BatchedSMACSim
from qmixlab.envs.smacsim.heuristics import SMACHeuristic, smacsim_inputs


def test_each_agent_attacks_its_own_nearest_enemy_or_walks_toward_it():
    env = BatchedSMACSim("3m", n_envs=1, seed=0)
    # Agent 0 nearest to enemy 0 (4 away), agent 1 to enemy 1 (3 away), agent 2 to enemy 2 but
    # 8 away: beyond SMAC's shoot range 6, so it walks east toward it.
    env.place_units(0, ally_pos=[[10, 6], [10, 16], [10, 26]],
                    enemy_pos=[[14, 6], [13, 16], [18, 26]])
    policy = SMACHeuristic(1, 3)
    actions = policy(**smacsim_inputs(env))
    assert actions.tolist() == [[6, 7, 4]]
    # smacsim's focus-fire heuristic sends the whole team at enemy 1 (nearest the team's centre):
    # agent 1 shoots it, agents 0 and 2 walk north and south toward it.
    assert env.heuristic_actions().tolist() == [[2, 7, 3]]


def test_target_is_kept_until_it_dies_then_the_nearest_is_taken():
    policy = SMACHeuristic(1, 1)
    hmax = np.full(3, 45.0)
    args = dict(health_max=hmax, is_healer=np.array([False]), can_attack=np.ones((1, 2), bool),
                avail=np.ones((1, 1, 8), bool))
    pos = np.array([[[0, 0], [3, 0], [5, 0]]], float)
    assert policy(pos, np.array([[45.0, 45, 45]]), **args).tolist() == [[6]]
    # Enemy 1 walks closer than enemy 0: the agent keeps enemy 0.
    pos2 = np.array([[[0, 0], [3, 0], [1, 0]]], float)
    assert policy(pos2, np.array([[45.0, 45, 45]]), **args).tolist() == [[6]]
    # Enemy 0 dies: the nearest alive enemy (1) becomes the target.
    assert policy(pos2, np.array([[45.0, 0, 45]]), **args).tolist() == [[7]]
    policy.reset()
    assert policy.targets.tolist() == [[-1]]


def test_medivac_heals_nearest_damaged_fighter_and_marauders_skip_medivacs():
    policy = SMACHeuristic(1, 3)  # ally 0 medivac, ally 1 marine, ally 2 marauder
    pos = np.array([[[0, 0], [1, 0], [2, 0], [3, 0], [4, 0]]], float)  # enemies: medivac, marine
    hmax = np.array([150.0, 45, 125, 150, 45])
    can_attack = np.array([[False, False], [True, True], [False, True]])
    avail = np.ones((1, 3, 9), bool)  # SMAClite-sized: a heal action for every fighter ally
    health = np.array([[100.0, 45, 125, 150, 45]])
    # Nobody (but the medivac itself, which does not count) is damaged: the medivac stops.
    assert policy(pos, health, hmax, np.array([True, False, False]), can_attack,
                  avail).tolist() == [[1, 6, 7]]
    health = np.array([[100.0, 45, 60, 150, 45]])
    assert policy(pos, health, hmax, np.array([True, False, False]), can_attack,
                  avail).tolist() == [[8, 6, 7]]


def test_unavailable_move_falls_back_to_the_other_axis_then_stop():
    policy = SMACHeuristic(1, 1)
    pos = np.array([[[0, 0], [10, 3]]], float)
    avail = np.ones((1, 1, 7), bool)
    avail[0, 0, 6] = False  # out of shoot range
    args = (np.array([[45.0, 45]]), np.full(2, 45.0), np.array([False]), np.ones((1, 1), bool))
    assert policy(pos, *args, avail).tolist() == [[4]]  # east: the larger gap
    avail[0, 0, 4] = False
    assert policy(pos, *args, avail).tolist() == [[2]]  # north
    avail[0, 0, 2] = False
    assert policy(pos, *args, avail).tolist() == [[1]]


def reference_actions(targets, pos, health, hmax, healer, can_attack, avail):
    """SMAC's rule, one agent at a time."""
    na = len(healer)
    out = []
    for i in range(na):
        if health[i] <= 0:
            targets[i] = -1
            out.append(0)
            continue
        if healer[i]:
            ok = [j for j in range(na) if health[j] > 0 and health[j] < hmax[j] and not healer[j]]
            cols = {j: j for j in ok}
        else:
            ok = [j for j in range(len(pos) - na) if health[na + j] > 0 and can_attack[i][j]]
            cols = {j: na + j for j in ok}
        if targets[i] not in ok:
            best, best_d = -1, math.inf
            for j in ok:
                d = math.dist(pos[i], pos[cols[j]])
                if d < best_d:
                    best, best_d = j, d
            targets[i] = best
        t = targets[i]
        if t < 0:
            out.append(1)
            continue
        if 6 + t < len(avail[i]) and avail[i][6 + t]:
            out.append(6 + t)
            continue
        dx, dy = np.subtract(pos[cols[t]], pos[i])
        ew, ns = (4 if dx > 0 else 5), (2 if dy > 0 else 3)
        first, second = (ew, ns) if abs(dx) > abs(dy) else (ns, ew)
        out.append(first if avail[i][first] else second if avail[i][second] else 1)
    return out


@pytest.mark.parametrize("map_name", ["MMM", "2s3z", "3s_vs_5z"])  # fewer allies too
def test_matches_a_per_agent_reference_over_played_episodes(map_name):
    env = BatchedSMACSim(map_name, n_envs=4, seed=3)
    policy = SMACHeuristic(4, env.n_agents)
    ref_targets = [[-1] * env.n_agents for _ in range(4)]
    done = np.zeros(4, bool)
    for _ in range(60):
        inputs = smacsim_inputs(env)
        actions = policy(**inputs)
        for b in range(4):
            if done[b]:
                continue
            expected = reference_actions(ref_targets[b], inputs["pos"][b], inputs["health"][b],
                                         inputs["health_max"], inputs["is_healer"],
                                         inputs["can_attack"], inputs["avail"][b])
            assert actions[b].tolist() == expected
        actions[done] = 0
        out = env.step(actions, active=~done)
        done |= out.terminated | out.truncated
        if done.all():
            break


def test_bad_shapes_name_what_was_expected():
    policy = SMACHeuristic(1, 2)
    with pytest.raises(ValueError, match="can_attack must have shape"):
        policy(np.zeros((1, 3, 2)), np.ones((1, 3)), np.ones(3), np.zeros(2, bool),
               np.ones((1, 1), bool), np.ones((1, 2, 7), bool))
