"""smacsim's API: sizes per map, options, errors, determinism, batched vs per-env agreement."""

import numpy as np
import pytest

from qmixlab.envs.multiagentenv import BatchedMultiAgentEnv, BatchedStep, MultiAgentEnv
from qmixlab.envs.smacsim import MAPS, BatchedSMACSim, SMACSim
from qmixlab.envs.smacsim.env import SMAC_DEFAULTS

# docs/smac.md section 7: map -> (n_agents, n_actions, obs, state, episode_limit).
SPEC_TABLE = {
    "3m": (3, 9, 30, 48, 60),
    "8m": (8, 14, 80, 168, 120),
    "25m": (25, 31, 250, 950, 150),
    "5m_vs_6m": (5, 12, 55, 98, 70),
    "8m_vs_9m": (8, 15, 85, 179, 120),
    "10m_vs_11m": (10, 17, 105, 243, 150),
    "27m_vs_30m": (27, 36, 285, 1170, 180),
    "MMM": (10, 16, 160, 290, 150),
    "MMM2": (10, 18, 176, 322, 180),
    "2s3z": (5, 11, 80, 120, 120),
    "3s5z": (8, 14, 128, 216, 150),
    "3s5z_vs_3s6z": (8, 15, 136, 230, 170),
    "1c3s5z": (9, 15, 162, 270, 180),
    "3s_vs_3z": (3, 9, 36, 54, 150),
    "3s_vs_4z": (3, 10, 42, 61, 200),
    "3s_vs_5z": (3, 11, 48, 68, 250),
    "2m_vs_1z": (2, 7, 16, 26, 150),
    "2s_vs_1sc": (2, 7, 17, 27, 300),
    "6h_vs_8z": (6, 14, 78, 140, 150),
    "corridor": (6, 30, 156, 282, 400),
    "so_many_baneling": (7, 38, 202, 397, 100),
    "bane_vs_bane": (24, 30, 336, 984, 200),
    "2c_vs_64zg": (2, 70, 332, 342, 400),
}


def random_available(avail, rng):
    return (rng.random(avail.shape) * avail).argmax(-1)


def test_every_spec_map_is_known():
    assert set(MAPS) == set(SPEC_TABLE)


@pytest.mark.parametrize("map_name", sorted(SPEC_TABLE))
def test_env_info_matches_spec_table(map_name):
    n_agents, n_actions, obs, state, limit = SPEC_TABLE[map_name]
    env = SMACSim(map_name)
    assert env.get_env_info() == {"state_shape": state, "obs_shape": obs, "n_actions": n_actions,
                                  "n_agents": n_agents, "episode_limit": limit}
    obs_list, st = env.reset()
    assert len(obs_list) == n_agents and all(o.shape == (obs,) for o in obs_list)
    assert st.shape == (state,)
    assert np.array(env.get_avail_actions()).shape == (n_agents, n_actions)


@pytest.mark.parametrize("map_name", ["3m", "2s3z", "MMM", "6h_vs_8z"])
def test_optional_flags_change_sizes(map_name):
    base = BatchedSMACSim(map_name)
    na, A = base.n_agents, base.n_actions
    ne = base.n_enemies
    sh_a = int(base.features.shield_a)
    sh_e = int(base.features.shield_e)
    obs, state = base.obs_size, base.state_size
    size = lambda **kw: (BatchedSMACSim(map_name, **kw).obs_size,  # noqa: E731
                         BatchedSMACSim(map_name, **kw).state_size)
    assert size(obs_last_action=True) == (obs + (na - 1) * A, state)
    assert size(obs_own_health=False) == (obs - 1 - sh_a, state)
    assert size(obs_all_health=False) == (obs - ne * (1 + sh_e) - (na - 1) * (1 + sh_a), state)
    assert size(obs_timestep_number=True) == (obs + 1, state)
    assert size(obs_pathing_grid=True) == (obs + 8, state)
    assert size(obs_terrain_height=True) == (obs + 9, state)
    assert size(state_last_action=False) == (obs, state - na * A)
    assert size(state_timestep_number=True) == (obs, state + 1)
    assert size(obs_instead_of_state=True) == (obs, na * obs)
    env = BatchedSMACSim(map_name, n_envs=2, obs_last_action=True, obs_timestep_number=True,
                         obs_pathing_grid=True, obs_terrain_height=True,
                         state_timestep_number=True)
    assert env.get_obs().shape == (2, na, env.obs_size)
    assert env.get_state().shape == (2, env.state_size)


def test_contract_types_and_shapes():
    env = BatchedSMACSim("2s3z", n_envs=3, seed=0)
    assert isinstance(env, BatchedMultiAgentEnv)
    assert isinstance(SMACSim("3m"), MultiAgentEnv)
    obs, state, avail = env.get_obs(), env.get_state(), env.get_avail_actions()
    assert obs.dtype == np.float32 and obs.shape == (3, 5, 80)
    assert state.dtype == np.float32 and state.shape == (3, 120)
    assert avail.dtype == bool and avail.shape == (3, 5, 11)
    out = env.step(random_available(avail, np.random.default_rng(0)))
    assert isinstance(out, BatchedStep)
    assert out.reward.dtype == np.float32 and out.reward.shape == (3,)
    for arr in (out.terminated, out.timeout, out.battle_won):
        assert arr.dtype == bool and arr.shape == (3,)
    assert out.dead_allies.shape == (3,) and out.dead_enemies.shape == (3,)


def test_unknown_map_and_kwargs_raise_with_names():
    with pytest.raises(ValueError, match=r"'3mm'.*'3m'"):
        BatchedSMACSim("3mm")
    with pytest.raises(TypeError, match="obs_last_actoin"):
        SMACSim("3m", obs_last_actoin=True)
    with pytest.raises(ValueError, match="difficulty"):
        SMACSim("3m", difficulty="5")
    with pytest.raises(ValueError, match="game_version"):
        SMACSim("3m", game_version="4.10")
    with pytest.raises(ValueError, match="heuristic_rest"):
        SMACSim("3m", heuristic_rest=True)
    with pytest.raises(TypeError, match="continuing_episode"):
        SMACSim("3m", continuing_episode="yes")


def test_smac_defaults_are_accepted_explicitly():
    env = SMACSim(map_name="8m", step_mul=8, move_amount=2, difficulty="7", game_version=None,
                  seed=None, continuing_episode=False, obs_all_health=True, obs_own_health=True,
                  obs_last_action=False, obs_pathing_grid=False, obs_terrain_height=False,
                  obs_instead_of_state=False, obs_timestep_number=False,
                  state_last_action=True, state_timestep_number=False, reward_sparse=False,
                  reward_only_positive=True, reward_death_value=10, reward_win=200,
                  reward_defeat=0, reward_negative_scale=0.5, reward_scale=True,
                  reward_scale_rate=20, replay_dir="", replay_prefix="", heuristic_ai=False,
                  heuristic_rest=False, debug=False)
    assert env.get_env_info()["n_agents"] == 8
    env.save_replay()  # no-op


def test_unavailable_action_raises_naming_env_agent_action():
    env = BatchedSMACSim("3m", n_envs=2, seed=0)
    actions = np.ones((2, 3), np.int64)
    actions[1, 2] = 6  # enemies start far away: attack is unavailable
    with pytest.raises(ValueError, match=r"Environment 1, agent 2: action 6 .*\[1, 2, 3, 4, 5\]"):
        env.step(actions)
    actions[1, 2] = 0  # no-op is forbidden to a live agent
    with pytest.raises(ValueError, match="agent 2: action 0"):
        env.step(actions)
    actions[1, 2] = 99
    with pytest.raises(ValueError, match="action 99"):
        env.step(actions)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.ones((2, 2), np.int64))
    per_env = SMACSim("3m", seed=0)
    with pytest.raises(ValueError, match="agent 0: action 7"):
        per_env.step([7, 1, 1])


def test_same_seed_same_episodes_and_different_seed_differs():
    def rollout(seed):
        env = BatchedSMACSim("2s3z", n_envs=2, seed=seed)
        rng = np.random.default_rng(123)
        trace = [env.get_obs().copy()]
        for _ in range(30):
            out = env.step(random_available(env.get_avail_actions(), rng))
            if out.ended.any():
                env.reset(np.flatnonzero(out.ended))
            trace.append(env.get_obs().copy())
            trace.append(out.reward.copy())
        return trace

    a, b, c = rollout(7), rollout(7), rollout(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_batched_env_zero_matches_per_env_view_step_by_step():
    seed = 11
    batched = BatchedSMACSim("MMM", n_envs=3, seed=seed)
    single = SMACSim("MMM", seed=seed)
    rng = np.random.default_rng(0)
    for _ in range(60):
        avail = batched.get_avail_actions()
        assert np.array_equal(avail[0].astype(int), np.array(single.get_avail_actions()))
        assert np.array_equal(batched.get_obs()[0], np.stack(single.get_obs()))
        assert np.array_equal(batched.get_state()[0], single.get_state())
        actions = random_available(avail, rng)
        out = batched.step(actions)
        reward, terminated, info = single.step(actions[0].tolist())
        assert reward == pytest.approx(float(out.reward[0]))
        assert terminated == bool(out.ended[0])
        assert info["battle_won"] == bool(out.battle_won[0])
        assert info["dead_allies"] == out.dead_allies[0]
        assert info["dead_enemies"] == out.dead_enemies[0]
        if out.ended.any():
            batched.reset(np.flatnonzero(out.ended))
        if terminated:
            single.reset()


def test_inactive_envs_do_not_advance_and_ended_envs_must_be_reset():
    env = BatchedSMACSim("3m", n_envs=2, seed=0)
    pos_before = env.engine.pos[1].copy()
    obs_before = env.get_obs()[1].copy()
    actions = np.full((2, 3), 4)
    out = env.step(actions, active=np.array([True, False]))
    assert np.array_equal(env.engine.pos[1], pos_before)
    assert np.array_equal(env.get_obs()[1], obs_before)
    assert out.reward[1] == 0 and not out.ended[1]
    assert env.episode_steps.tolist() == [1, 0]
    # End env 0 by hand: all of its enemies dead -> won on the next step.
    e = env.engine
    env.place_units(0, e.pos[0, :3], e.pos[0, 3:], enemy_health=[0, 0, 0])
    out = env.step(np.ones((2, 3), np.int64))
    assert out.terminated[0] and out.battle_won[0]
    with pytest.raises(ValueError, match=r"Environment\(s\) \[0\] ended"):
        env.step(np.ones((2, 3), np.int64))
    env.step(np.ones((2, 3), np.int64), active=np.array([False, True]))
    env.reset(np.array([0]))
    assert env.episode_steps[0] == 0
    env.step(np.ones((2, 3), np.int64))


def stand_still_until_timeout(env):
    """2s_vs_1sc with the stalkers parked out of the spine crawler's reach: nothing happens."""
    env.place_units([[2.0, 2.0], [4.0, 2.0]], [[16.0, 28.0]])
    steps = 0
    while True:
        steps += 1
        result = env.step([1, 1])
        if result[1]:
            return steps, result


def test_timeout_is_terminated_for_smac_and_separate_in_batched_form():
    env = SMACSim("2s_vs_1sc", seed=0)
    steps, (reward, terminated, info) = stand_still_until_timeout(env)
    assert steps == 300 and terminated and "episode_limit" not in info
    assert not info["battle_won"]
    stats = env.get_stats()
    assert stats["timeouts"] == 1 and stats["battles_game"] == 1 and stats["battles_won"] == 0

    env = SMACSim("2s_vs_1sc", seed=0, continuing_episode=True)
    steps, (reward, terminated, info) = stand_still_until_timeout(env)
    assert terminated and info["episode_limit"] is True

    batched = BatchedSMACSim("2s_vs_1sc", seed=0)
    batched.place_units(0, [[2.0, 2.0], [4.0, 2.0]], [[16.0, 28.0]])
    for _ in range(299):
        out = batched.step(np.ones((1, 2), np.int64))
        assert not out.ended[0]
    out = batched.step(np.ones((1, 2), np.int64))
    assert out.timeout[0] and not out.terminated[0]


def test_stats_count_wins_draws_and_games():
    env = BatchedSMACSim("3m", n_envs=1, seed=0)
    assert env.get_stats() == {"battles_won": 0, "battles_game": 0, "battles_draw": 0,
                               "win_rate": 0.0, "timeouts": 0, "restarts": 0}
    e = env.engine
    env.place_units(0, e.pos[0, :3], e.pos[0, 3:], enemy_health=[0, 0, 0])
    env.step(np.ones((1, 3), np.int64))
    env.reset()
    stats = env.get_stats()
    assert stats["battles_won"] == 1 and stats["battles_game"] == 1 and stats["win_rate"] == 1.0


def test_heuristic_policy_only_uses_available_actions_and_heuristic_ai_flag():
    env = BatchedSMACSim("MMM", n_envs=4, seed=3)
    for _ in range(80):
        actions = env.heuristic_actions()
        avail = env.get_avail_actions()
        assert np.take_along_axis(avail, actions[..., None], 2).all()
        out = env.step(actions)
        if out.ended.any():
            env.reset(np.flatnonzero(out.ended))
    auto = SMACSim("3m", seed=1, heuristic_ai=True)
    manual = SMACSim("3m", seed=1)
    for _ in range(10):
        expected = manual.heuristic_actions()
        assert auto.step([1, 1, 1])[0] == pytest.approx(manual.step(expected)[0])


@pytest.mark.parametrize("map_name, options", [
    ("3m", {}),
    ("2s3z", {"obs_last_action": True, "obs_timestep_number": True, "state_timestep_number": True}),
    ("MMM", {"obs_pathing_grid": True, "obs_terrain_height": True, "obs_all_health": False}),
])
def test_smac_feature_sizes_and_spec_layout(map_name, options):
    """SMAC's size methods, from SMAC's formulas written out, and the spec's layout read back
    from actual observations."""
    env = BatchedSMACSim(map_name, n_envs=2, seed=1, **options)
    opts = {**SMAC_DEFAULTS, **options}
    bits = env.features.bits
    na, ne, A = env.n_agents, env.n_enemies, env.n_actions
    sh_a, sh_e = env.features.shield_a, env.features.shield_e
    assert env.get_obs_move_feats_size() == 4 + 8 * opts["obs_pathing_grid"] + 9 * opts["obs_terrain_height"]
    assert env.get_obs_enemy_feats_size() == (ne, 4 + bits + (1 + sh_e) * opts["obs_all_health"])
    assert env.get_obs_ally_feats_size() == (na - 1, 4 + bits + (1 + sh_a) * opts["obs_all_health"]
                                             + A * opts["obs_last_action"])
    assert env.get_obs_own_feats_size() == bits + (1 + sh_a) * opts["obs_own_health"] + opts["obs_timestep_number"]
    assert (env.get_ally_num_attributes(), env.get_enemy_num_attributes()) == (4 + sh_a + bits, 3 + sh_e + bits)

    spec = env.get_spec()
    assert spec.noop_action == 0 and spec.obs_layout.size == env.obs_size
    blocks = spec.obs_layout.slices()
    env.reset()
    for _ in range(8):  # close in, so that some enemies can be attacked
        avail = env.get_avail_actions()
        env.step(np.where(avail[..., 4], 4, avail.argmax(-1)))
    obs, avail = env.get_obs(), env.get_avail_actions()
    enemies = obs[..., blocks["enemies"]].reshape(2, na, ne, -1)
    healer = env.engine.is_healer[:na]
    for b in range(2):
        for i in range(na):
            for j in range(ne):  # SMAC's first enemy feature: "can attack it now"
                assert enemies[b, i, j, 0] == float(avail[b, i, 6 + j] and not healer[i])
    assert avail[..., 6:].any(), "the check needs some attackable enemies"
    state_blocks = spec.state_layout.slices()
    assert (state_blocks["last_action"].start, state_blocks["last_action"].stop) == spec.state_last_action
