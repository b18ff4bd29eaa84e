"""smacsim's combat rules on hand-placed scenarios, checked against hand arithmetic."""

import math

import numpy as np
import pytest

from qmixlab.envs.smacsim import BatchedSMACSim, SMACSim
from qmixlab.envs.smacsim.maps import TERRAIN_GROUND

STEP_S = 8 / 22.4  # one step (step_mul=8) in game seconds
SUBTICK_S = STEP_S / 2  # the engine's sub-tick


def far_points(n, start=(1.0, 1.0)):
    """Out-of-the-way positions for units that start dead."""
    return [[start[0] + 1.5 * k, start[1]] for k in range(n)]


def test_marine_duel_lasts_the_cooldowns_the_damage_arithmetic_says():
    env = BatchedSMACSim("3m", seed=0)
    ally = [[10.0, 16.0]] + far_points(2)
    enemy = [[15.0, 16.0]] + far_points(2, (1.0, 30.0))
    env.place_units(0, ally, enemy, ally_health=[45, 0, 0], enemy_health=[45, 0, 0])
    shots_to_kill = math.ceil(45 / 6)  # 8 shots of 6 damage, no armour
    # Shot n (0-based) leaves at n * cooldown; it lands in sub-tick floor(t / sub-tick).
    shot_subtick = [math.floor(n * 0.61 / SUBTICK_S) for n in range(shots_to_kill)]
    expected_steps = shot_subtick[-1] // 2 + 1
    total = 0.0
    for step in range(1, 100):
        out = env.step(np.array([[6, 0, 0]]))
        total += float(out.reward[0])
        shots_so_far = sum(k <= 2 * step - 1 for k in shot_subtick)
        assert env.engine.hp[0, 3] == pytest.approx(max(45 - 6 * shots_so_far, 0))
        if out.ended[0]:
            break
    assert step == expected_steps == 12
    # Both marines fire on the same schedule and die together: a draw.
    assert out.terminated[0] and not out.battle_won[0] and not out.timeout[0]
    assert env.get_stats()["battles_draw"] == 1
    max_reward = 3 * 10 + 200 + 3 * 45
    assert total == pytest.approx((45 + 10) / (max_reward / 20))


def test_shields_absorb_before_armour_applies():
    env = BatchedSMACSim("3s_vs_3z", seed=0)
    ally = [[10.0, 16.0]] + far_points(2)
    enemy = [[16.0, 16.0], [30.0, 2.0], [30.0, 4.0]]
    # A stalker hit (13, the zealot is not armored) on a zealot with 5 shield points left:
    # 5 absorbed by the shield, the remaining 8 reduced by the zealot's armour 1 -> 7 HP.
    env.place_units(0, ally, enemy, ally_health=[80, 0, 0], enemy_shield=[5, 50, 50])
    env.step(np.array([[6, 0, 0]]))
    e = env.engine
    assert e.sh[0, 3] == 0.0 and e.hp[0, 3] == pytest.approx(93.0)
    # On full shields armour does not apply: 13 comes off the shield, health untouched.
    env.place_units(0, ally, enemy, ally_health=[80, 0, 0])
    env.step(np.array([[6, 0, 0]]))
    assert e.sh[0, 3] == pytest.approx(50 - 13) and e.hp[0, 3] == 100.0


def test_armour_reduces_each_hit_with_bonus_damage():
    # Stalker (13 +5 armored) on a spine crawler (armored, armour 2): 18 - 2 = 16 per shot.
    env = BatchedSMACSim("2s_vs_1sc", seed=0)
    env.place_units(0, [[10.0, 16.0], [2.0, 2.0]], [[15.5, 16.0]], ally_health=[80, 0])
    env.step(np.array([[6, 0]]))
    assert env.engine.hp[0, 2] == pytest.approx(300 - 16)


def test_melee_zealot_hits_only_when_touching():
    env = BatchedSMACSim("3s_vs_3z", seed=0)
    e = env.engine
    touching = 10.0 + 0.625 + 0.5 + 0.05  # edge distance 0.05 < melee range 0.1
    enemy = [[touching, 16.0], [30.0, 2.0], [30.0, 4.0]]
    env.place_units(0, [[10.0, 16.0]] + far_points(2), enemy, ally_health=[80, 0, 0],
                    enemy_health=[100, 0, 0])
    env.step(np.array([[1, 0, 0]]))
    assert e.sh[0, 0] == pytest.approx(80 - 2 * 8) and e.hp[0, 0] == 80.0  # one 2x8 attack

    # Three cells away the zealot must walk first (3.15 cells/s): nothing on the first step.
    enemy[0] = [10.0 + 1.125 + 3.0, 16.0]
    env.place_units(0, [[10.0, 16.0]] + far_points(2), enemy, ally_health=[80, 0, 0],
                    enemy_health=[100, 0, 0])
    env.step(np.array([[1, 0, 0]]))
    assert e.sh[0, 0] == 80.0
    for _ in range(3):
        env.step(np.array([[1, 0, 0]]))
    assert e.sh[0, 0] < 80.0


def test_ally_attack_order_walks_into_range_then_fires():
    env = BatchedSMACSim("3m", seed=0)
    e = env.engine
    # Centre distance 6: attack available, but the marine's reach is 5 + 2 * 0.375 = 5.75.
    env.place_units(0, [[10.0, 16.0]] + far_points(2), [[16.0, 16.0]] + far_points(2, (1, 30)),
                    ally_health=[45, 0, 0], enemy_health=[45, 0, 0])
    env.step(np.array([[6, 0, 0]]))
    assert e.pos[0, 0, 0] > 10.0  # it walked
    assert e.hp[0, 3] < 45.0  # and fired within the same step
    # The order persists: a no-op by a dead agent changes nothing, the live one keeps firing.
    hp = e.hp[0, 3]
    for _ in range(3):
        if env._ended[0]:
            break
        env.step(np.array([[6, 0, 0]]))
    assert e.hp[0, 3] < hp


def test_colossus_lance_hits_a_line_across_the_shot():
    env = BatchedSMACSim("1c3s5z", seed=0)
    e = env.engine
    ally = [[10.0, 16.0]] + far_points(8)
    # Enemy slots: colossus, 3 stalkers, 5 zealots (4..8). Shot goes east at zealot 5.
    enemy = far_points(4, (1.0, 30.0)) + [[15.0, 15.0], [15.0, 16.0], [15.0, 17.0],
                                          [15.0, 19.0], [17.0, 16.0]]
    env.place_units(0, ally, enemy, ally_health=[200] + [0] * 8,
                    enemy_health=[0] * 4 + [100] * 5)
    env.step(np.array([[6 + 5] + [0] * 8]))
    raw = 2 * (10 + 5)  # two hits, +5 vs light zealots, all on shields
    shields = e.sh[0, 9 + 4:9 + 9]
    assert shields.tolist() == pytest.approx([50 - raw] * 3 + [50, 50])


def test_baneling_explodes_on_contact_splashes_enemies_and_dies():
    env = BatchedSMACSim("so_many_baneling", seed=0)
    e = env.engine
    na, ne = env.n_agents, env.n_enemies
    ally = [[16.975, 16.0], [16.0, 17.5], [16.0, 19.5]] + far_points(4)
    enemy = [[16.0, 16.0], [30.0, 30.0]] + far_points(ne - 2, (1.0, 30.0))
    env.place_units(0, ally, enemy, enemy_health=[30, 30] + [0] * (ne - 2))
    out = env.step(np.array([[1] * na]))
    dmg = 16 + 19  # +19 vs light zealots; shields take it all
    assert e.sh[0, :3].tolist() == pytest.approx([50 - dmg, 50 - dmg, 50])
    assert e.hp[0, na] == 0.0 and out.dead_enemies[0] == ne - 1
    assert e.hp[0, na + 1] == 30.0


def test_second_baneling_on_a_dying_target_keeps_its_charge_and_moves_on():
    env = BatchedSMACSim("so_many_baneling", seed=0)
    e = env.engine
    na, ne = env.n_agents, env.n_enemies
    # Two enemy banelings touch zealot 0 (edge distance 0.1) in the same sub-tick; zealot 1 is
    # outside the blast (edge distance 4.125) but within sight.
    ally = [[16.0, 16.0], [16.0, 21.0]] + far_points(na - 2)
    enemy = [[16.975, 16.0], [15.025, 16.0]] + far_points(ne - 2, (1.0, 30.0))
    alive_enemies = [30, 30] + [0] * (ne - 2)
    # Zealot 0 without shield and with 10 HP: the first blast (35 - armour 1) kills it.
    env.place_units(0, ally, enemy, ally_health=[10, 100] + [0] * (na - 2),
                    ally_shield=[0, 50] + [0] * (na - 2), enemy_health=alive_enemies)
    stop = np.array([[1, 1] + [0] * (na - 2)])  # dead agents may only no-op
    env.step(stop)
    assert e.hp[0, 0] == 0.0 and e.hp[0, na] == 0.0  # slot order: the first one detonates
    assert e.hp[0, na + 1] == 30.0  # the second keeps its charge ...
    assert e.target[0, na + 1] == 1  # ... takes the other zealot at once ...
    # ... and runs at it for the second sub-tick (baneling speed 3.5).
    moved = e.pos[0, na + 1] - np.array([15.025, 16.0])
    heading = np.array([16.0 - 15.025, 21.0 - 16.0])
    assert np.hypot(*moved) == pytest.approx(3.5 * SUBTICK_S, abs=1e-3)
    assert moved @ heading / np.hypot(*heading) == pytest.approx(np.hypot(*moved), abs=1e-4)
    assert e.sh[0, 1] == 50.0 and e.hp[0, 1] == 100.0

    # A target that survives the first blast takes both (pooled: 70 raw, 50 on the shield,
    # 20 through = 2 hits of 35 * 20/70 - 1 = 9 HP).
    env.place_units(0, ally, enemy, ally_health=[100, 100] + [0] * (na - 2),
                    enemy_health=alive_enemies)
    env.step(stop)
    assert e.hp[0, na] == 0.0 and e.hp[0, na + 1] == 0.0
    assert e.sh[0, 0] == 0.0 and e.hp[0, 0] == pytest.approx(100 - 18)


def test_medivac_heals_for_energy_and_regains_energy():
    env = BatchedSMACSim("MMM", seed=0)
    e = env.engine
    # slots: marauder 0-1, marine 2-8, medivac 9
    ally = far_points(2) + [[10.0, 16.0]] + far_points(6, (1.0, 4.0)) + [[11.0, 16.0]]
    health = [0, 0, 20] + [0] * 6 + [150]
    enemy = [[30.0, 30.0]] + far_points(9, (1.0, 30.0))
    env.place_units(0, ally, enemy, ally_health=health, enemy_health=[125] + [0] * 9)
    avail = env.get_avail_actions()[0, 9]
    assert avail[6 + 2] and not avail[6 + 9] and not avail[6 + 0]  # only the live marine
    assert env.get_avail_actions()[0, 2, 6:].sum() == 0  # marines cannot "heal"
    env.step(np.array([[0, 0, 1] + [0] * 6 + [8]]))
    healed = 12.6 * STEP_S
    assert e.hp[0, 2] == pytest.approx(20 + healed, rel=1e-4)
    assert e.energy[0, 9] == pytest.approx(50 - healed / 3 + 0.7875 * STEP_S, rel=1e-4)
    # Out of energy: it heals what its energy (and the energy regained meanwhile) pays for.
    env.place_units(0, ally, enemy, ally_health=health, enemy_health=[125] + [0] * 9,
                    ally_energy=[0] * 9 + [0.6])
    env.step(np.array([[0, 0, 1] + [0] * 6 + [8]]))
    assert e.hp[0, 2] == pytest.approx(20 + 3 * (0.6 + 0.7875 * SUBTICK_S), rel=1e-4)
    state = env.get_state()[0]
    assert state[9 * 7 + 1] == pytest.approx(e.energy[0, 9] / 200)  # 7 state features per ally


def test_shields_regenerate_only_after_seven_seconds_without_damage():
    env = BatchedSMACSim("3s_vs_3z", seed=0)
    e = env.engine
    enemy = [[30.0, 2.0], [30.0, 3.5], [30.0, 5.0]]
    env.place_units(0, [[2.0, 30.0]] + far_points(2), enemy, ally_health=[80, 0, 0],
                    ally_shield=[10, 0, 0])
    env.step(np.array([[1, 0, 0]]))
    assert e.sh[0, 0] == pytest.approx(10 + 2.8 * STEP_S, rel=1e-4)
    e.since_damage[0, 0] = 0.0  # as if it had just been hit
    shield = e.sh[0, 0]
    quiet_steps = math.floor(7.0 / STEP_S)  # 19 steps = 6.8 s
    for _ in range(quiet_steps):
        env.step(np.array([[1, 0, 0]]))
    assert e.sh[0, 0] == shield
    for _ in range(2):
        env.step(np.array([[1, 0, 0]]))
    assert e.sh[0, 0] > shield


def test_dead_agent_only_has_noop_and_zero_observation():
    env = BatchedSMACSim("3m", seed=0)
    e = env.engine
    env.place_units(0, [[10.0, 16.0], [10.0, 17.0], [10.0, 15.0]], e.pos[0, 3:],
                    ally_health=[45, 0, 45])
    avail = env.get_avail_actions()[0]
    assert avail[1].tolist() == [True] + [False] * 8
    assert not avail[0, 0] and avail[0, 1]  # live agents: no-op forbidden, stop allowed
    assert not env.get_obs()[0, 1].any()
    assert not env.get_state()[0, 4:8].any()  # its state block is zeros too
    with pytest.raises(ValueError, match="agent 1: action 1"):
        env.step(np.array([[1, 1, 1]]))


def test_attack_range_and_sight_are_centre_distances():
    env = BatchedSMACSim("3m", seed=0)
    ally = [[10.0, 16.0], [2.0, 2.0], [2.0, 4.0]]
    enemy = [[16.0, 16.0], [10.0, 24.9], [19.0, 16.0]]  # distances 6.0, 8.9, 9.0
    env.place_units(0, ally, enemy)
    avail = env.get_avail_actions()[0, 0]
    assert avail[6] and not avail[7] and not avail[8]
    obs = env.get_obs()[0, 0]
    nf = 5
    en = obs[4:4 + 3 * nf].reshape(3, nf)
    assert en[0].tolist() == pytest.approx([1.0, 6 / 9, 6 / 9, 0.0, 1.0])
    assert en[1].tolist() == pytest.approx([0.0, 8.9 / 9, 0.0, 8.9 / 9, 1.0], abs=1e-6)
    assert not en[2].any()  # at exactly 9 it is out of sight


def test_move_actions_respect_map_edges_and_corridor_walls():
    env = BatchedSMACSim("3m", seed=0)
    env.place_units(0, [[0.5, 16.0], [16.0, 31.5], [2.0, 2.0]], env.engine.pos[0, 3:])
    avail = env.get_avail_actions()[0]
    assert avail[0, 2:6].tolist() == [True, True, True, False]  # west edge
    assert avail[1, 2:6].tolist() == [False, True, True, True]  # north edge

    corridor = BatchedSMACSim("corridor", seed=0)
    terrain = corridor.spec.terrain()
    inside = [5.0, 16.5]  # corridor cells are y in [15, 17)
    assert terrain[5, 16] == TERRAIN_GROUND and terrain[5, 17] != TERRAIN_GROUND
    ally = [inside] + far_points(5, (12.0, 3.0))
    corridor.place_units(0, ally, corridor.engine.pos[0, 6:])
    assert corridor.get_avail_actions()[0, 0, 2:6].tolist() == [False, True, True, True]


@pytest.mark.parametrize("map_name", ["corridor", "2c_vs_64zg"])
def test_ground_units_never_stand_on_blocked_terrain(map_name):
    env = BatchedSMACSim(map_name, n_envs=4, seed=0)
    e = env.engine
    walkable_ground = env.spec.terrain() == TERRAIN_GROUND
    rng = np.random.default_rng(0)
    for _ in range(60):
        avail = env.get_avail_actions()
        out = env.step((rng.random(avail.shape) * avail).argmax(-1))
        ix = e.pos[..., 0].astype(int)
        iy = e.pos[..., 1].astype(int)
        ground = ~e.unit_cliff & ~e.is_air
        on_ground = walkable_ground[ix, iy]
        assert on_ground[:, ground].all()
        if out.ended.any():
            env.reset(np.flatnonzero(out.ended))


def test_zerglings_go_around_the_cliff_and_colossi_cross_it():
    env = BatchedSMACSim("2c_vs_64zg", seed=0)
    e = env.engine
    enemy = [[16.0, 8.0]] + far_points(63, (1.0, 1.0))
    env.place_units(0, [[16.0, 20.0], [31.0, 31.0]], enemy, ally_health=[200, 0],
                    enemy_health=[35] + [0] * 63)
    path = []
    for _ in range(12):
        env.step(np.array([[1, 0]]))
        path.append(e.pos[0, 2].copy())
    path = np.array(path)
    crossed = path[:, 1] > 16.5
    assert crossed.any(), "the zergling should reach the colossus' side"
    # It went round the cliff band (x in [6, 26)) rather than through it.
    band = (path[:, 1] >= 14) & (path[:, 1] < 16)
    assert ((path[band, 0] < 6) | (path[band, 0] >= 26)).all()
    # The colossus walks straight over the band.
    env.place_units(0, [[16.0, 17.5], [31.0, 31.0]], enemy, ally_health=[200, 0],
                    enemy_health=[35] + [0] * 63)
    assert env.get_avail_actions()[0, 0, 3]  # south, onto the cliff
    for _ in range(3):
        env.step(np.array([[3, 0]]))
    assert e.pos[0, 0, 1] < 16.0


def test_reward_is_damage_plus_kills_scaled_to_twenty():
    def one_shot(**kw):
        env = SMACSim("3m", seed=0, **kw)
        env.place_units([[10.0, 16.0]] + far_points(2), [[15.0, 16.0], [30.0, 30.0], [30.0, 28.0]],
                        ally_health=[45, 0, 0], enemy_health=kw.pop("_enemy_hp", [45, 45, 45]))
        return env.step([6, 0, 0])[0]

    scale = (3 * 10 + 200 + 3 * 45) / 20
    # Both marines fire once: the ally deals 6 and takes 6.
    assert one_shot() == pytest.approx(6 / scale)
    assert one_shot(reward_scale=False) == pytest.approx(6.0)
    assert one_shot(reward_scale=False, reward_only_positive=False) == pytest.approx(6 - 0.5 * 6)
    assert one_shot(reward_scale=False, reward_scale_rate=10) == pytest.approx(6.0)
    assert one_shot(reward_scale_rate=10) == pytest.approx(6 / (scale * 2))
    assert one_shot(reward_sparse=True) == 0.0

    env = SMACSim("3m", seed=0, reward_scale=False, reward_death_value=7)
    env.place_units([[10.0, 16.0]] + far_points(2), [[15.0, 16.0], [30.0, 30.0], [30.0, 28.0]],
                    ally_health=[45, 0, 0], enemy_health=[4, 45, 45])
    assert env.step([6, 0, 0])[0] == pytest.approx(4 + 7)  # damage is capped at what was left


def test_perfect_episode_returns_about_twenty():
    env = BatchedSMACSim("3m", n_envs=16, seed=0)
    returns = np.zeros(16)
    won = np.zeros(16, bool)
    done = np.zeros(16, bool)
    while not done.all():
        actions = np.where(done[:, None], 0, env.heuristic_actions())
        out = env.step(actions, active=~done)
        returns += out.reward
        won |= out.battle_won
        done |= out.ended
    assert won.any()
    assert returns[won] == pytest.approx(20.0, abs=1e-3)
    assert (returns[~won] < 20.0).all()


def test_flag_invalid_steps_marks_passive_steps_under_fire():
    env = SMACSim("3m", seed=0, flag_invalid_steps=True)
    ally = [[10.0, 16.0], [10.0, 17.0], [10.0, 15.0]]
    enemy = [[14.0, 16.0], [14.0, 17.0], [14.0, 15.0]]
    env.place_units(ally, enemy)
    _, _, info = env.step([1, 1, 1])
    assert info["invalid_step"] is True
    _, _, info = env.step([6, 1, 1])
    assert info["invalid_step"] is False
    assert "invalid_step" not in SMACSim("3m", seed=0).step([1, 1, 1])[2]
