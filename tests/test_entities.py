"""The entity view of SMAC-layout observations and states (issue 14, item 1): the split against
hand-laid vectors on two maps, visibility read from the zeros SMAC writes, and the error for an
environment without a layout."""

import numpy as np
import pytest
import torch

from qmixlab.envs.smacsim import BatchedSMACSim
from qmixlab.envs.spec import EnvSpec, ObsLayout, StateLayout
from qmixlab.errors import ConfigError
from qmixlab.modules.entities import require_obs_layout, require_state_layout, split_observation, split_state

# Hand-counted from docs/smac.md section 4: 3m (marines: 1 health feature, no type bits) and 2s3z
# (Protoss: health and shield, 2 type bits), with the default options.
LAYOUTS = {
    "3m": dict(move=4, n_enemies=3, enemy_feats=5, n_allies=2, ally_feats=5, own=1),
    "2s3z": dict(move=4, n_enemies=5, enemy_feats=8, n_allies=4, ally_feats=8, own=4),
}


def hand_laid_observation(sizes, unseen_allies, unseen_enemies, seen_but_unattackable):
    """An observation with distinct non-zero values, zero blocks for unseen entities, and one seen
    enemy whose first feature ("attackable") is 0."""
    obs = torch.arange(1, 1 + sizes["move"] + sizes["n_enemies"] * sizes["enemy_feats"]
                       + sizes["n_allies"] * sizes["ally_feats"] + sizes["own"], dtype=torch.float32)
    enemy_start = sizes["move"]
    ally_start = enemy_start + sizes["n_enemies"] * sizes["enemy_feats"]
    for j in unseen_enemies:
        obs[enemy_start + j * sizes["enemy_feats"]: enemy_start + (j + 1) * sizes["enemy_feats"]] = 0
    obs[enemy_start + seen_but_unattackable * sizes["enemy_feats"]] = 0
    for k in unseen_allies:
        obs[ally_start + k * sizes["ally_feats"]: ally_start + (k + 1) * sizes["ally_feats"]] = 0
    return obs, enemy_start, ally_start


@pytest.mark.parametrize("map_name", sorted(LAYOUTS))
def test_split_of_a_hand_laid_observation(map_name):
    sizes = LAYOUTS[map_name]
    layout = BatchedSMACSim(map_name, seed=0).get_spec().obs_layout
    assert layout == ObsLayout(move=sizes["move"], enemies=(sizes["n_enemies"], sizes["enemy_feats"]),
                               allies=(sizes["n_allies"], sizes["ally_feats"]), own=sizes["own"])
    obs, enemy_start, ally_start = hand_laid_observation(sizes, unseen_allies=[1], unseen_enemies=[0, 2],
                                                         seen_but_unattackable=1)
    batch = torch.stack([obs, torch.zeros_like(obs)]).view(2, 1, -1)  # a second, all-zero row: a dead agent
    view = split_observation(batch, layout)
    ef, af = sizes["enemy_feats"], sizes["ally_feats"]
    own_start = ally_start + sizes["n_allies"] * af
    assert torch.equal(view.move[0, 0], obs[:4])
    assert torch.equal(view.own[0, 0], obs[own_start:])
    for j in range(sizes["n_enemies"]):
        assert torch.equal(view.enemies[0, 0, j], obs[enemy_start + j * ef: enemy_start + (j + 1) * ef])
    for k in range(sizes["n_allies"]):
        assert torch.equal(view.allies[0, 0, k], obs[ally_start + k * af: ally_start + (k + 1) * af])
    expected_enemies = [j not in (0, 2) for j in range(sizes["n_enemies"])]
    expected_allies = [k != 1 for k in range(sizes["n_allies"])]
    assert view.enemy_visible[0, 0].tolist() == expected_enemies  # enemy 1 is seen though not attackable
    assert view.ally_visible[0, 0].tolist() == expected_allies
    assert not view.enemy_visible[1].any() and not view.ally_visible[1].any()
    assert view.allies.shape == (2, 1, sizes["n_allies"], af)


@pytest.mark.parametrize("map_name", sorted(LAYOUTS))
def test_split_of_a_hand_laid_state(map_name):
    env = BatchedSMACSim(map_name, seed=0)
    layout = env.get_spec().state_layout
    (n_allies, ally_attrs), (n_enemies, enemy_attrs) = layout.allies, layout.enemies
    state = torch.arange(1.0, 1.0 + layout.size)
    enemy_start = n_allies * ally_attrs
    state[ally_attrs: 2 * ally_attrs] = 0  # ally 1 dead
    state[enemy_start: enemy_start + enemy_attrs] = 0  # enemy 0 dead
    view = split_state(state, layout)
    for i in range(n_allies):
        assert torch.equal(view.allies[i], state[i * ally_attrs: (i + 1) * ally_attrs])
    for j in range(n_enemies):
        assert torch.equal(view.enemies[j], state[enemy_start + j * enemy_attrs: enemy_start + (j + 1) * enemy_attrs])
    assert view.ally_alive.tolist() == [i != 1 for i in range(n_allies)]
    assert view.enemy_alive.tolist() == [j != 0 for j in range(n_enemies)]


def test_visibility_matches_the_simulator_scene():
    """3m with agent 0 at (10, 10): ally 1 close, ally 2 beyond sight 9; enemy 0 at distance 7
    (seen, not attackable), enemy 1 at distance 3 (attackable), enemy 2 dead."""
    env = BatchedSMACSim("3m", seed=0)
    env.reset()
    env.place_units(0, ally_pos=[[10, 10], [12, 10], [10, 25]], enemy_pos=[[17, 10], [13, 10], [11, 11]],
                    enemy_health=[45, 45, 0])
    obs = torch.as_tensor(env.get_obs())[0, 0]
    avail = env.get_avail_actions()[0, 0]
    view = split_observation(obs, env.get_spec().obs_layout)
    assert view.ally_visible.tolist() == [True, False]
    assert view.enemy_visible.tolist() == [True, True, False]
    assert avail[6:].tolist() == [False, True, False]  # "attackable" is not visibility
    state = split_state(torch.as_tensor(env.get_state())[0], env.get_spec().state_layout)
    assert state.ally_alive.tolist() == [True, True, True]
    assert state.enemy_alive.tolist() == [True, True, False]


def test_attack_availability_implies_visibility_over_random_play():
    env = BatchedSMACSim("2s3z", n_envs=4, seed=1)
    env.reset()
    layout = env.get_spec().obs_layout
    rng = np.random.default_rng(0)
    for _ in range(30):
        avail = env.get_avail_actions()
        view = split_observation(torch.as_tensor(env.get_obs()), layout)
        fighters = ~env.engine.is_healer[: env.n_agents]
        attackable = torch.as_tensor(avail[:, fighters, 6:])
        assert not (attackable & ~view.enemy_visible[:, fighters]).any()
        actions = np.array([[rng.choice(np.flatnonzero(a)) for a in row] for row in avail])
        env.step(actions)
        if env._ended.any():
            env.reset(np.flatnonzero(env._ended))


def test_layout_widths_are_checked():
    layout = ObsLayout(move=4, enemies=(3, 5), allies=(2, 5), own=1)
    with pytest.raises(ValueError, match=r"obs must be a tensor \[\.\.\., 30\]"):
        split_observation(torch.zeros(2, 29), layout)
    with pytest.raises(ValueError, match=r"state must be a tensor \[\.\.\., 48\]"):
        split_state(torch.zeros(47), StateLayout(allies=(3, 4), enemies=(3, 3), last_action=27))


def test_an_environment_without_a_layout_is_named():
    spec = EnvSpec(n_agents=2, n_actions=5, obs_shape=10, state_shape=20, episode_limit=25)
    with pytest.raises(ConfigError, match=r"agent.name=entity_attention .* environment 'mpe' declares none"):
        require_obs_layout(spec, "mpe")
    with pytest.raises(ConfigError, match=r"mixer.name=attention .* environment 'mpe' declares none.*StateLayout"):
        require_state_layout(spec, "mpe", "mixer.name=attention")
    smac_spec = BatchedSMACSim("3m", seed=0).get_spec()
    assert require_obs_layout(smac_spec, "smacsim") is smac_spec.obs_layout
