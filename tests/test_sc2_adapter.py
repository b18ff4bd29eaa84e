"""SC2Env: real SMAC behind qmixlab's interface, tested without SMAC or StarCraft II.

STAND-IN: ``FakeStarCraft2Env`` below is NOT SMAC. It is a small scripted class written for
these tests that follows the documented API of ``smac.env.StarCraft2Env`` (constructor
keywords, method names and return shapes, the ``info`` keys, ``continuing_episode`` /
``episode_limit`` and the ``timeouts`` / ``restarts`` counters, ``get_stats`` dividing by
``battles_game``). It is injected as fake ``smac`` / ``smac.env`` modules in ``sys.modules``.
Its "battle" is scripted: attack action 6+j kills enemy j at once; tests can also force a loss
or a game crash on the next step.
"""

import sys
import textwrap
import types

import numpy as np
import pytest

from qmixlab.envs import VectorisedEnvs, derive_env_seeds, make_batched_env, make_env
from qmixlab.envs.sc2 import SMAC_INSTALL, SC2Env, SC2SetupError

# Map facts from the SMAC map table (docs/smac.md section 7), enough for the stand-in.
FAKE_MAP_PARAMS = {
    "3m": {"n_agents": 3, "n_enemies": 3, "limit": 60, "obs": 30, "state": 48},
    "8m": {"n_agents": 8, "n_enemies": 8, "limit": 120, "obs": 80, "state": 168},
}
STOP = 1


class FakeStarCraft2Env:
    """Stand-in for ``smac.env.StarCraft2Env`` (see the module docstring). Not SMAC."""

    instances = []  # every constructed stand-in, so tests can check none was built

    def __init__(self, map_name="8m", seed=None, continuing_episode=False, **other_smac_kwargs):
        params = FAKE_MAP_PARAMS[map_name]  # SMAC's get_map_params raises KeyError likewise
        self.map_name = map_name
        self.kwargs = dict(seed=seed, continuing_episode=continuing_episode, **other_smac_kwargs)
        self._seed = seed
        self.continuing_episode = continuing_episode
        self.n_agents = params["n_agents"]
        self.n_enemies = params["n_enemies"]
        self.episode_limit = params["limit"]
        self.n_actions = 6 + self.n_enemies
        self._obs_size, self._state_size = params["obs"], params["state"]
        self.battles_won = self.battles_game = self.timeouts = self.force_restarts = 0
        self._episode_steps = 0
        self.ally_alive = np.ones(self.n_agents, dtype=bool)
        self.enemy_alive = np.ones(self.n_enemies, dtype=bool)
        self.lose_next_step = None  # None, or the number of allies left alive by a forced loss
        self.crash_next_step = False
        self.calls = []
        FakeStarCraft2Env.instances.append(self)

    def reset(self):
        self.calls.append("reset")
        self._episode_steps = 0
        self.ally_alive[:] = True
        self.enemy_alive[:] = True
        return self.get_obs(), self.get_state()

    def step(self, actions):
        self.calls.append(("step", list(actions)))
        actions_int = [int(a) for a in actions]
        for agent, action in enumerate(actions_int):
            assert self.get_avail_agent_actions(agent)[action] == 1, f"Agent {agent} cannot perform action {action}"
        if self.crash_next_step:  # SMAC: full_restart() then return 0, True, {}
            self.crash_next_step = False
            self.force_restarts += 1
            return 0, True, {}
        self._episode_steps += 1
        kills = 0
        for action in actions_int:
            if action >= 6 and self.enemy_alive[action - 6]:
                self.enemy_alive[action - 6] = False
                kills += 1
        if self.lose_next_step is not None:
            self.ally_alive[self.lose_next_step:] = False
            lost = True
        else:
            lost = False
        info = {
            "battle_won": False,
            "dead_allies": int((~self.ally_alive).sum()),
            "dead_enemies": int((~self.enemy_alive).sum()),
        }
        reward = 10.0 * kills
        terminated = False
        if lost:
            terminated = True
            self.battles_game += 1
        elif not self.enemy_alive.any():
            terminated = True
            self.battles_game += 1
            self.battles_won += 1
            info["battle_won"] = True
            reward += 200
        elif self._episode_steps >= self.episode_limit:
            terminated = True
            if self.continuing_episode:
                info["episode_limit"] = True
            self.battles_game += 1
            self.timeouts += 1
        return reward / 20.0, terminated, info

    def get_obs(self):
        return [self.get_obs_agent(i) for i in range(self.n_agents)]

    def get_obs_agent(self, agent_id):
        obs = np.zeros(self._obs_size, dtype=np.float32)
        if self.ally_alive[agent_id]:
            obs[0], obs[1] = agent_id + 1, self._episode_steps
        return obs

    def get_obs_size(self):
        return self._obs_size

    def get_state(self):
        state = np.zeros(self._state_size, dtype=np.float32)
        state[: self.n_enemies] = self.enemy_alive
        return state

    def get_state_size(self):
        return self._state_size

    def get_avail_agent_actions(self, agent_id):
        if not self.ally_alive[agent_id]:
            return [1] + [0] * (self.n_actions - 1)
        return [0, 1, 1, 1, 1, 1] + [int(a) for a in self.enemy_alive]

    def get_avail_actions(self):
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_total_actions(self):
        return self.n_actions

    def get_env_info(self):
        return {
            "state_shape": self._state_size,
            "obs_shape": self._obs_size,
            "n_actions": self.n_actions,
            "n_agents": self.n_agents,
            "episode_limit": self.episode_limit,
            "agent_features": ["health", "energy/cooldown", "rel_x", "rel_y"],
            "enemy_features": ["health", "rel_x", "rel_y"],
        }

    def get_stats(self):
        return {  # as SMAC: raises ZeroDivisionError before the first battle ends
            "battles_won": self.battles_won,
            "battles_game": self.battles_game,
            "battles_draw": self.timeouts,
            "win_rate": self.battles_won / self.battles_game,
            "timeouts": self.timeouts,
            "restarts": self.force_restarts,
        }

    def close(self):
        self.calls.append("close")

    def seed(self):
        return self._seed

    def save_replay(self):
        self.calls.append("save_replay")


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def no_smac_modules(monkeypatch):
    """Remove any smac* modules for the test and drop whatever the test imported afterwards."""
    before = {k: v for k, v in sys.modules.items() if k == "smac" or k.startswith("smac.")}
    for key in before:
        monkeypatch.delitem(sys.modules, key)
    yield
    for key in [k for k in sys.modules if k == "smac" or k.startswith("smac.")]:
        if key not in before:
            del sys.modules[key]


@pytest.fixture
def fake_smac(no_smac_modules, monkeypatch):
    smac = types.ModuleType("smac")
    smac.__path__ = []
    smac_env = types.ModuleType("smac.env")
    smac_env.StarCraft2Env = FakeStarCraft2Env
    smac.env = smac_env
    monkeypatch.setitem(sys.modules, "smac", smac)
    monkeypatch.setitem(sys.modules, "smac.env", smac_env)
    monkeypatch.setattr(FakeStarCraft2Env, "instances", [])
    return smac_env


@pytest.fixture
def sc2_install(tmp_path, monkeypatch):
    """A directory that looks like StarCraft II with the 3m SMAC map, as SC2PATH."""
    root = tmp_path / "StarCraftII"
    (root / "Versions").mkdir(parents=True)
    maps = root / "Maps" / "SMAC_Maps"
    maps.mkdir(parents=True)
    (maps / "3m.SC2Map").write_bytes(b"")
    monkeypatch.setenv("SC2PATH", str(root))
    return root


def _write_package(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


# ------------------------------------------------------------------------- error paths


def test_smac_not_installed(no_smac_modules, monkeypatch, sc2_install):
    monkeypatch.setitem(sys.modules, "smac", None)  # makes `import smac` fail
    with pytest.raises(SC2SetupError) as err:
        make_env("sc2", map_name="3m")
    assert SMAC_INSTALL in str(err.value) and "pip install git+https://github.com/oxwhirl/smac.git" in str(err.value)
    assert "not on PyPI" in str(err.value)


def test_smac3_v2_is_detected(no_smac_modules, monkeypatch, sc2_install):
    smac3 = types.ModuleType("smac")
    smac3.__path__ = []
    smac3.__version__ = "2.3.1"
    smac3.HyperparameterOptimizationFacade = type("HyperparameterOptimizationFacade", (), {})
    monkeypatch.setitem(sys.modules, "smac", smac3)
    with pytest.raises(SC2SetupError) as err:
        SC2Env(map_name="3m")
    msg = str(err.value)
    assert "SMAC3" in msg and "hyper-parameter optimiser" in msg and "2.3.1" in msg
    assert "pip uninstall smac" in msg and SMAC_INSTALL in msg


def test_smac3_v1_is_detected_from_its_facade_subpackage(no_smac_modules, tmp_path, monkeypatch, sc2_install):
    _write_package(
        tmp_path / "site",
        {"smac/__init__.py": "__version__ = '1.0.1'\n", "smac/facade/__init__.py": ""},
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(SC2SetupError, match=r"SMAC3.*1\.0\.1"):
        SC2Env(map_name="3m")


def test_other_smac_without_env(no_smac_modules, monkeypatch, sc2_install):
    other = types.ModuleType("smac")
    other.__path__ = []
    monkeypatch.setitem(sys.modules, "smac", other)
    with pytest.raises(SC2SetupError, match=r"(?s)has no 'smac.env'.*pip uninstall smac"):
        SC2Env(map_name="3m")


def test_smac_env_dependency_missing(no_smac_modules, tmp_path, monkeypatch, sc2_install):
    _write_package(
        tmp_path / "site",
        {"smac/__init__.py": "", "smac/env/__init__.py": "import pysc2_not_installed_xyz\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(SC2SetupError, match=r"'smac.env' failed to import.*pysc2_not_installed_xyz"):
        SC2Env(map_name="3m")


def test_sc2_missing_without_sc2path(fake_smac, tmp_path, monkeypatch):
    monkeypatch.delenv("SC2PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/StarCraftII there
    with pytest.raises(SC2SetupError) as err:
        make_env("sc2", map_name="3m")
    msg = str(err.value)
    assert "SC2PATH is unset" in msg and str(tmp_path / "home" / "StarCraftII") in msg
    assert "github.com/Blizzard/s2client-proto" in msg
    assert "SMAC_Maps.zip" in msg and "$SC2PATH/Maps/SMAC_Maps" in msg
    assert FakeStarCraft2Env.instances == [], "the game check must come before StarCraft2Env is built"


def test_sc2path_pointing_nowhere(fake_smac, tmp_path, monkeypatch):
    monkeypatch.setenv("SC2PATH", str(tmp_path / "nope"))
    with pytest.raises(SC2SetupError, match=rf"SC2PATH={tmp_path / 'nope'} does not exist"):
        SC2Env(map_name="3m")
    (tmp_path / "nope").mkdir()
    with pytest.raises(SC2SetupError, match="no Versions/ directory"):
        SC2Env(map_name="3m")
    assert FakeStarCraft2Env.instances == []


def test_default_sc2_path_is_used_when_sc2path_unset(fake_smac, tmp_path, monkeypatch):
    monkeypatch.delenv("SC2PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "StarCraftII" / "Versions").mkdir(parents=True)
    (tmp_path / "StarCraftII" / "Maps" / "SMAC_Maps").mkdir(parents=True)
    (tmp_path / "StarCraftII" / "Maps" / "SMAC_Maps" / "3m.SC2Map").write_bytes(b"")
    assert isinstance(SC2Env(map_name="3m").env, FakeStarCraft2Env)


def test_smac_map_missing(fake_smac, sc2_install):
    with pytest.raises(SC2SetupError) as err:
        SC2Env(map_name="8m")
    msg = str(err.value)
    assert "SMAC map '8m' not found" in msg and str(sc2_install / "Maps" / "SMAC_Maps" / "8m.SC2Map") in msg
    assert "SMAC_Maps.zip" in msg
    assert FakeStarCraft2Env.instances == []


# -------------------------------------------------------------------------- forwarding


def test_adapter_forwards_the_smac_api(fake_smac, sc2_install):
    env = make_env("sc2", map_name="3m", seed=7, continuing_episode=True, obs_last_action=True)
    assert isinstance(env, SC2Env)
    raw = env.env
    assert isinstance(raw, FakeStarCraft2Env) and raw.map_name == "3m"
    assert raw.kwargs == {"seed": 7, "continuing_episode": True, "obs_last_action": True}
    assert (env.n_agents, env.n_enemies, env.episode_limit) == (3, 3, 60)

    obs, state = env.reset()
    assert len(obs) == 3 and obs[0].shape == (30,) and state.shape == (48,)
    assert env.get_env_info() == raw.get_env_info()
    assert env.get_obs_size() == 30 and env.get_state_size() == 48 and env.get_total_actions() == 9

    reward, terminated, info = env.step([6, STOP, STOP])
    assert raw.calls[-1] == ("step", [6, STOP, STOP])
    assert reward == pytest.approx(0.5) and terminated is False
    assert info == {"battle_won": False, "dead_allies": 0, "dead_enemies": 1}
    np.testing.assert_array_equal(env.get_obs_agent(2), raw.get_obs_agent(2))
    assert [list(o) for o in env.get_obs()] == [list(o) for o in raw.get_obs()]
    np.testing.assert_array_equal(env.get_state(), raw.get_state())
    assert env.get_avail_agent_actions(0) == [0, 1, 1, 1, 1, 1, 0, 1, 1]
    assert env.get_avail_actions() == raw.get_avail_actions()
    assert env.seed() == 7
    env.save_replay()
    env.close()
    assert raw.calls[-2:] == ["save_replay", "close"]


def test_get_stats_before_first_battle_does_not_raise(fake_smac, sc2_install):
    env = SC2Env(map_name="3m")
    with pytest.raises(ZeroDivisionError):
        env.env.get_stats()  # what real SMAC does
    assert env.get_stats() == {
        "battles_won": 0, "battles_game": 0, "battles_draw": 0, "win_rate": 0.0, "timeouts": 0, "restarts": 0,
    }


def _stop_until(env, steps):
    for _ in range(steps):
        reward, terminated, info = env.step([STOP] * env.n_agents)
    return reward, terminated, info


@pytest.mark.parametrize("continuing_episode", [True, False])
def test_adapter_forwards_info_episode_limit_as_smac_reports_it(fake_smac, sc2_install, continuing_episode):
    env = SC2Env(map_name="3m", continuing_episode=continuing_episode)
    env.reset()
    _, terminated, info = _stop_until(env, 59)
    assert not terminated
    _, terminated, info = _stop_until(env, 1)
    assert terminated is True
    assert info.get("episode_limit", False) is continuing_episode


# ----------------------------------------------------- through make_batched_env / VectorisedEnvs


def test_make_batched_env_sc2_uses_the_vectorised_wrapper(fake_smac, sc2_install):
    env = make_batched_env("sc2", n_envs=2, seed=3, map_name="3m")
    assert isinstance(env, VectorisedEnvs)
    assert [e.env.kwargs["seed"] for e in env.envs] == derive_env_seeds(3, 2)
    assert (env.n_envs, env.n_agents, env.n_actions, env.episode_limit) == (2, 3, 9, 60)
    assert env.get_env_info()["enemy_features"] == ["health", "rel_x", "rel_y"]
    env.reset()
    obs, state, avail = env.get_obs(), env.get_state(), env.get_avail_actions()
    assert obs.shape == (2, 3, 30) and obs.dtype == np.float32
    assert state.shape == (2, 48) and state.dtype == np.float32
    assert avail.shape == (2, 3, 9) and avail.dtype == bool
    np.testing.assert_array_equal(avail[0, 0], [0, 1, 1, 1, 1, 1, 1, 1, 1])

    out = env.step(np.array([[6, 7, 8], [6, STOP, STOP]]))
    np.testing.assert_array_equal(out.terminated, [True, False])
    np.testing.assert_array_equal(out.battle_won, [True, False])
    np.testing.assert_array_equal(out.dead_enemies, [3, 1])
    np.testing.assert_allclose(out.reward, [(30 + 200) / 20, 10 / 20])
    np.testing.assert_array_equal(env.get_avail_actions()[1, 0], [0, 1, 1, 1, 1, 1, 0, 1, 1])
    with pytest.raises(ValueError, match="action 6 is not available to agent 0 in environment 1"):
        env.step(np.array([[STOP] * 3, [6, STOP, STOP]]), active=np.array([False, True]))
    stats = env.get_stats()
    assert stats["battles_won"] == 1 and stats["battles_game"] == 1 and stats["win_rate"] == 1.0
    env.close()
    assert all(e.env.calls[-1] == "close" for e in env.envs)


@pytest.mark.parametrize("continuing_episode", [True, False])
def test_sc2_timeouts_split_exactly(fake_smac, sc2_install, continuing_episode):
    """Timeout vs terminal on the last step, whether or not SMAC reports episode_limit."""
    env = make_batched_env("sc2", n_envs=4, map_name="3m", continuing_episode=continuing_episode)
    env.reset()
    stop = np.full((4, 3), STOP)
    for _ in range(59):
        assert not env.step(stop).ended.any()
    # Last step: env 0 times out; env 1 wins; env 2 loses outright; env 3 loses with an ally
    # alive (like MMM's "only medivacs left"), which only the timeouts counter tells apart.
    env.envs[2].env.lose_next_step = 0
    env.envs[3].env.lose_next_step = 1
    out = env.step(np.array([[STOP] * 3, [6, 7, 8], [STOP] * 3, [STOP] * 3]))
    np.testing.assert_array_equal(out.timeout, [True, False, False, False])
    np.testing.assert_array_equal(out.terminated, [False, True, True, True])
    np.testing.assert_array_equal(out.battle_won, [False, True, False, False])
    np.testing.assert_array_equal(out.dead_allies, [0, 0, 3, 2])
    assert env.get_stats()["timeouts"] == 1


def test_sc2_crash_is_terminal_and_invalid(fake_smac, sc2_install):
    env = make_batched_env("sc2", n_envs=2, map_name="3m")
    env.reset()
    env.envs[1].env.crash_next_step = True
    out = env.step(np.full((2, 3), STOP))
    np.testing.assert_array_equal(out.terminated, [False, True])
    np.testing.assert_array_equal(out.timeout, [False, False])
    np.testing.assert_array_equal(out.extra["invalid"], [False, True])
    assert env.get_stats()["restarts"] == 1


def test_raw_starcraft2env_by_path_before_its_first_battle(fake_smac):
    """'smac.env:StarCraft2Env' without the adapter: SMAC's get_stats raises until a battle ends,
    so the wrapper falls back to the step-count rule for that first episode, and still works."""
    env = make_batched_env("smac.env:StarCraft2Env", n_envs=2, map_name="3m")
    assert env.get_stats() == {}  # no env has finished a battle: nothing to aggregate
    env.reset()
    for _ in range(59):
        env.step(np.full((2, 3), STOP))
    out = env.step(np.array([[STOP] * 3, [6, 7, 8]]))
    np.testing.assert_array_equal(out.timeout, [True, False])
    np.testing.assert_array_equal(out.terminated, [False, True])
    assert env.get_stats()["battles_game"] == 2


# ------------------------------------------------------------------- contract v2: the spec


def test_sc2_spec_declares_invalid_noop_and_the_last_action_block(fake_smac, sc2_install):
    env = make_batched_env("sc2", n_envs=2, map_name="3m")
    spec = env.get_spec()
    assert spec.step_flags == ("invalid",) and spec.noop_action == 0 and not spec.auto_reset
    # SMAC's state: allies, enemies, then n_agents * n_actions last actions (3 * 9 = 27 of 48).
    assert spec.state_last_action == (21, 48)
    assert spec.obs_layout is None  # the stand-in has no feature-size methods
    adapter = env.envs[0]
    assert adapter.get_spec() == spec
    no_block = make_env("sc2", map_name="3m", state_last_action=False).get_spec()
    assert no_block.state_last_action is None
    timestep = make_env("sc2", map_name="3m", state_timestep_number=True).get_spec()
    assert timestep.state_last_action == (20, 47)


def test_sc2_spec_reads_smac_feature_sizes_when_present(fake_smac, sc2_install, monkeypatch):
    # SMAC's 3m: move 4, enemies 3 x 5, allies 2 x 5, own 1 (= 30); state 3 x 4 + 3 x 3 + 27.
    sizes = dict(get_obs_move_feats_size=lambda self: 4, get_obs_enemy_feats_size=lambda self: (3, 5),
                 get_obs_ally_feats_size=lambda self: (2, 5), get_obs_own_feats_size=lambda self: 1,
                 get_ally_num_attributes=lambda self: 4, get_enemy_num_attributes=lambda self: 3)
    for name, method in sizes.items():
        monkeypatch.setattr(FakeStarCraft2Env, name, method, raising=False)
    spec = make_env("sc2", map_name="3m").get_spec()
    assert spec.obs_layout.slices()["allies"] == slice(19, 29)
    assert spec.state_layout.slices()["last_action"] == slice(21, 48) and spec.state_last_action == (21, 48)


def test_sc2_step_after_the_end_raises(fake_smac, sc2_install):
    env = make_env("sc2", map_name="3m")
    env.reset()
    assert env.step([6, 7, 8])[1] is True
    with pytest.raises(ValueError, match="the episode has ended; call reset"):
        env.step([STOP] * 3)
    env.reset()
    assert env.step([STOP] * 3)[1] is False


def test_runner_stores_sc2_crashes_as_invalid_steps(fake_smac, sc2_install):
    import torch

    from qmixlab.runners.batch_runner import BatchRunner

    class StopThenCrash:
        def init_hidden(self, n):
            self.t = 0

        def select_actions(self, obs, avail, t_env, test_mode=False, env_mask=None):
            return torch.full((2, 3), STOP)

    env = make_batched_env("sc2", n_envs=2, map_name="3m")
    runner = BatchRunner(env, StopThenCrash())
    assert "invalid" in runner.scheme
    original_reset = env.reset

    def reset_then_arm(env_ids=None):
        original_reset(env_ids)
        env.envs[1].env.crash_next_step = True  # env 1's game crashes on its first step

    env.reset = reset_then_arm
    batch, stats = runner.run()
    assert batch["invalid"][1, 0, 0] and batch["terminated"][1, 0, 0]
    assert not batch["invalid"][0].any() and stats.lengths.tolist() == [60, 1]
