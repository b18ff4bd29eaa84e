"""Observation and state vectors against SMAC's layout (``docs/smac.md`` sections 4-5), value by value.

The reference below is written the slow, obvious way: loops over agents and units, reading the
engine's unit arrays and the spec's constants.
"""

import math

import numpy as np
import pytest

from qmixlab.envs.smacsim import BatchedSMACSim

SIGHT, SHOOT = 9.0, 6.0
MAX_COOLDOWN_LOOPS = {"marine": 15, "marauder": 25, "stalker": 35, "zealot": 22, "colossus": 24,
                      "hydralisk": 10, "zergling": 11, "baneling": 1}
# Spec: ally one-hot in the map's order; enemy one-hot reversed on stalker/zealot maps.
ALLY_TYPE_IDS = {"2s3z": {"stalker": 0, "zealot": 1},
                 "MMM": {"marauder": 0, "marine": 1, "medivac": 2}}
ENEMY_TYPE_IDS = {"2s3z": {"zealot": 0, "stalker": 1},
                  "MMM": {"marauder": 0, "marine": 1, "medivac": 2}}


def one_hot(i, n):
    v = [0.0] * n
    v[i] = 1.0
    return v


def reference_obs(env, b, i, opts):
    e = env.engine
    spec = env.spec
    na, ne, A = env.n_agents, env.n_enemies, env.n_actions
    bits = spec.unit_type_bits
    types = spec.ally_types + spec.enemy_types
    protoss_a = types[0] in ("stalker", "zealot", "colossus")
    protoss_e = types[na] in ("stalker", "zealot", "colossus")
    if e.hp[b, i] <= 0:
        return None
    x, y = float(e.pos[b, i, 0]), float(e.pos[b, i, 1])
    avail = env.get_avail_actions()[b, i]
    out = []
    # Move flags: the point 1 unit away must be inside the (open) map.
    for ddx, ddy in [(0, 1), (0, -1), (1, 0), (-1, 0)]:
        px, py = x + ddx, y + ddy
        out.append(1.0 if (0 <= px < spec.width and 0 <= py < spec.height) else 0.0)
    for j in range(ne):
        u = na + j
        dx, dy = float(e.pos[b, u, 0]) - x, float(e.pos[b, u, 1]) - y
        d = math.hypot(dx, dy)
        feats = [0.0] * (4 + (1 + protoss_e if opts.get("obs_all_health", True) else 0) + bits)
        if e.hp[b, u] > 0 and d < SIGHT:
            attackable = 1.0 if (d <= SHOOT and types[i] != "medivac") else 0.0
            feats = [attackable, d / SIGHT, dx / SIGHT, dy / SIGHT]
            if opts.get("obs_all_health", True):
                feats.append(e.hp[b, u] / e.hp_max[u])
                if protoss_e:
                    feats.append(e.sh[b, u] / e.sh_max[u])
            if bits:
                feats += one_hot(ENEMY_TYPE_IDS[spec.name][types[u]], bits)
        out += feats
    for k in range(na):
        if k == i:
            continue
        dx, dy = float(e.pos[b, k, 0]) - x, float(e.pos[b, k, 1]) - y
        d = math.hypot(dx, dy)
        n_feats = 4 + (1 + protoss_a if opts.get("obs_all_health", True) else 0) + bits \
            + (A if opts.get("obs_last_action") else 0)
        feats = [0.0] * n_feats
        if e.hp[b, k] > 0 and d < SIGHT:
            feats = [1.0, d / SIGHT, dx / SIGHT, dy / SIGHT]
            if opts.get("obs_all_health", True):
                feats.append(e.hp[b, k] / e.hp_max[k])
                if protoss_a:
                    feats.append(e.sh[b, k] / e.sh_max[k])
            if bits:
                feats += one_hot(ALLY_TYPE_IDS[spec.name][types[k]], bits)
            if opts.get("obs_last_action"):
                feats += list(env._last_action[b, k])
        out += feats
    if opts.get("obs_own_health", True):
        out.append(e.hp[b, i] / e.hp_max[i])
        if protoss_a:
            out.append(e.sh[b, i] / e.sh_max[i])
    if bits:
        out += one_hot(ALLY_TYPE_IDS[spec.name][types[i]], bits)
    if opts.get("obs_timestep_number"):
        out.append(env.episode_steps[b] / env.episode_limit)
    assert avail is not None
    return np.array(out, dtype=np.float64)


def reference_state(env, b, opts):
    e = env.engine
    spec = env.spec
    na, ne = env.n_agents, env.n_enemies
    bits = spec.unit_type_bits
    types = spec.ally_types + spec.enemy_types
    protoss_a = types[0] in ("stalker", "zealot", "colossus")
    protoss_e = types[na] in ("stalker", "zealot", "colossus")
    cx, cy = spec.width / 2, spec.height / 2
    out = []
    for i in range(na):
        n = 4 + protoss_a + bits
        if e.hp[b, i] <= 0:
            out += [0.0] * n
            continue
        if types[i] == "medivac":
            second = e.energy[b, i] / 200.0
        else:
            second = e.cd[b, i] * 22.4 / MAX_COOLDOWN_LOOPS[types[i]]
        feats = [e.hp[b, i] / e.hp_max[i], second, (e.pos[b, i, 0] - cx) / spec.width,
                 (e.pos[b, i, 1] - cy) / spec.height]
        if protoss_a:
            feats.append(e.sh[b, i] / e.sh_max[i])
        if bits:
            feats += one_hot(ALLY_TYPE_IDS[spec.name][types[i]], bits)
        out += feats
    for j in range(ne):
        u = na + j
        n = 3 + protoss_e + bits
        if e.hp[b, u] <= 0:
            out += [0.0] * n
            continue
        feats = [e.hp[b, u] / e.hp_max[u], (e.pos[b, u, 0] - cx) / spec.width,
                 (e.pos[b, u, 1] - cy) / spec.height]
        if protoss_e:
            feats.append(e.sh[b, u] / e.sh_max[u])
        if bits:
            feats += one_hot(ENEMY_TYPE_IDS[spec.name][types[u]], bits)
        out += feats
    if opts.get("state_last_action", True):
        out += list(env._last_action[b].ravel())
    if opts.get("state_timestep_number"):
        out.append(env.episode_steps[b] / env.episode_limit)
    return np.array(out, dtype=np.float64)


def check_against_reference(env, opts):
    obs, state = env.get_obs(), env.get_state()
    for b in range(env.n_envs):
        for i in range(env.n_agents):
            ref = reference_obs(env, b, i, opts)
            if ref is None:
                assert not obs[b, i].any()
            else:
                np.testing.assert_allclose(obs[b, i], ref, atol=1e-5)
        np.testing.assert_allclose(state[b], reference_state(env, b, opts), atol=1e-5)


def hand_placed_2s3z(env):
    # Allies: stalkers 0-1, zealots 2-4; ally 3 is dead; enemy 4 out of sight of everyone.
    ally = [[10.0, 16.0], [11.0, 18.0], [12.5, 15.0], [3.0, 3.0], [9.0, 13.0]]
    enemy = [[15.0, 16.0], [17.5, 17.0], [13.0, 22.0], [18.0, 12.0], [30.0, 30.0]]
    env.place_units(0, ally, enemy, ally_health=[80, 40, 100, 0, 100],
                    ally_shield=[80, 10, 25, 0, 50], enemy_health=[60, 80, 100, 100, 100],
                    enemy_shield=[0, 33, 50, 5, 50])


OPTION_SETS = [
    {},
    {"obs_last_action": True, "obs_timestep_number": True, "state_timestep_number": True},
    {"obs_all_health": False, "obs_own_health": False, "state_last_action": False},
]


@pytest.mark.parametrize("opts", OPTION_SETS)
def test_2s3z_observation_and_state_match_the_layout(opts):
    env = BatchedSMACSim("2s3z", n_envs=2, seed=0, **opts)
    hand_placed_2s3z(env)
    check_against_reference(env, opts)  # as placed
    rng = np.random.default_rng(0)
    for _ in range(6):  # and after some steps (cooldowns, last actions, moved units)
        avail = env.get_avail_actions()
        out = env.step((rng.random(avail.shape) * avail).argmax(-1))
        if out.ended.any():
            break
        check_against_reference(env, opts)


def test_mmm_observation_and_state_match_the_layout():
    env = BatchedSMACSim("MMM", n_envs=2, seed=4, obs_last_action=True)
    rng = np.random.default_rng(1)
    for _ in range(25):
        avail = env.get_avail_actions()
        out = env.step((rng.random(avail.shape) * avail).argmax(-1))
        if out.ended.any():
            env.reset(np.flatnonzero(out.ended))
        check_against_reference(env, {"obs_last_action": True})


def test_hand_computed_values_of_one_enemy_and_one_ally_block():
    env = BatchedSMACSim("2s3z", seed=0)
    hand_placed_2s3z(env)
    obs = env.get_obs()[0, 0]  # stalker at (10, 16)
    nf_en = 4 + 2 + 2
    enemy0 = obs[4:4 + nf_en]  # stalker at (15, 16), 60/80 health, no shield
    assert enemy0.tolist() == pytest.approx([1.0, 5 / 9, 5 / 9, 0.0, 0.75, 0.0, 0.0, 1.0])
    enemy1 = obs[4 + nf_en:4 + 2 * nf_en]  # stalker at (17.5, 17): 7.57 away, not attackable
    d = math.hypot(7.5, 1.0)
    assert enemy1.tolist() == pytest.approx(
        [0.0, d / 9, 7.5 / 9, 1 / 9, 80 / 80, 33 / 80, 0.0, 1.0])
    enemy2 = obs[4 + 2 * nf_en:4 + 3 * nf_en]  # zealot at (13, 22): one-hot zealot first
    assert enemy2.tolist() == pytest.approx(
        [0.0, math.hypot(3, 6) / 9, 3 / 9, 6 / 9, 1.0, 1.0, 1.0, 0.0])
    ally1 = obs[4 + 5 * nf_en:4 + 5 * nf_en + nf_en]  # stalker at (11, 18), 40/80, 10/80
    assert ally1.tolist() == pytest.approx(
        [1.0, math.hypot(1, 2) / 9, 1 / 9, 2 / 9, 0.5, 0.125, 1.0, 0.0])
    own = obs[-4:]
    assert own.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])
    state = env.get_state()[0]
    assert state[:7].tolist() == pytest.approx([1.0, 0.0, (10 - 16) / 32, 0.0, 1.0, 1.0, 0.0])


def test_obs_instead_of_state_concatenates_observations():
    env = BatchedSMACSim("2s3z", n_envs=2, seed=0, obs_instead_of_state=True)
    np.testing.assert_array_equal(env.get_state(), env.get_obs().reshape(2, -1))


def test_ally_slots_are_sorted_by_type_then_x():
    env = BatchedSMACSim("MMM", n_envs=8, seed=5)
    e = env.engine
    types = env.spec.ally_types
    assert types == ["marauder"] * 2 + ["marine"] * 7 + ["medivac"]
    for b in range(8):
        for t in set(types):
            xs = [e.pos[b, k, 0] for k in range(env.n_agents) if types[k] == t]
            assert xs == sorted(xs)


def test_pathing_and_terrain_height_extras():
    env = BatchedSMACSim("corridor", seed=0, obs_pathing_grid=True, obs_terrain_height=True)
    inside = [5.2, 16.4]  # in the corridor: cells (x, 15..16) walkable
    env.place_units(0, [inside] + [[12.5 + k, 3.5] for k in range(5)], env.engine.pos[0, 6:])
    obs = env.get_obs()[0, 0]
    pathing = obs[4:12]
    heights = obs[12:21]
    # Points around cell (5, 16), 2 * move_amount = 4 away orthogonally, 2 diagonally.
    walkable = env.spec.terrain() == 1
    points = [(5, 20), (5, 12), (9, 16), (1, 16), (7, 18), (3, 14), (7, 14), (3, 18)]
    assert pathing.tolist() == [float(walkable[p]) for p in points]
    assert heights[-1] == 0.5  # own cell: ground
    assert heights[0] == 0.0  # (5, 20): void
