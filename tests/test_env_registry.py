"""make_env / make_batched_env, user environments by path, and the VectorisedEnvs wrapper."""

import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import qmixlab.envs as envs_pkg
from qmixlab.envs import (
    BatchedMultiAgentEnv,
    BatchedStep,
    MultiAgentEnv,
    VectorisedEnvs,
    derive_env_seeds,
    make_batched_env,
    make_env,
    register_env,
)
from qmixlab.envs import registry

# Action ids of TinyEnv.
NOOP, ADD1, ADD2, SURRENDER = 0, 1, 2, 3


class TinyEnv(MultiAgentEnv):
    """A deterministic 2-agent counting game with SMAC's API and SMAC's end-of-episode rules.

    Each step the team counter grows by the agents' choices (ADD1 = +1, ADD2 = +2; agent 1 may
    never choose ADD2). Reaching ``target`` wins; any SURRENDER loses with both agents "dead";
    reaching ``episode_limit`` first is a timeout, reported like real SMAC: ``terminated=True``,
    plus ``info["episode_limit"]=True`` only if ``continuing_episode``. With
    ``stats_counters`` its ``get_stats()`` counts timeouts and restarts like SMAC does.
    A step on which both agents choose NOOP is flagged ``info["invalid_step"]``.
    """

    n_actions = 4

    def __init__(self, episode_limit=4, target=6, continuing_episode=False, stats_counters=False, seed=None):
        self.n_agents = 2
        self.episode_limit = episode_limit
        self.target = target
        self.continuing_episode = continuing_episode
        self.stats_counters = stats_counters
        self.seed_value = seed
        self.counter = 0
        self.t = 0
        self.n_steps_taken = 0
        self.battles_won = self.battles_game = self.timeouts = self.restarts = 0

    def reset(self):
        self.counter = 0
        self.t = 0
        return self.get_obs(), self.get_state()

    def step(self, actions):
        assert all(isinstance(a, int) for a in actions), "the wrapper passes plain ints"
        assert all(self.get_avail_agent_actions(i)[a] for i, a in enumerate(actions))
        self.n_steps_taken += 1
        self.t += 1
        gain = sum({ADD1: 1, ADD2: 2}.get(a, 0) for a in actions)
        self.counter += gain
        info = {"battle_won": False, "dead_allies": 0, "dead_enemies": 0}
        if list(actions) == [NOOP, NOOP]:
            info["invalid_step"] = True
        terminated = False
        if SURRENDER in actions:
            terminated = True
            info["dead_allies"] = self.n_agents
            self.battles_game += 1
        elif self.counter >= self.target:
            terminated = True
            info["battle_won"] = True
            info["dead_enemies"] = 1
            self.battles_game += 1
            self.battles_won += 1
        elif self.t >= self.episode_limit:
            terminated = True
            if self.continuing_episode:
                info["episode_limit"] = True
            self.battles_game += 1
            self.timeouts += 1
        return float(gain), terminated, info

    def get_obs(self):
        return [self.get_obs_agent(i) for i in range(self.n_agents)]

    def get_obs_agent(self, agent_id):
        return np.array([self.counter, self.t, agent_id], dtype=np.float64)

    def get_obs_size(self):
        return 3

    def get_state(self):
        return [self.counter, self.t]

    def get_state_size(self):
        return 2

    def get_avail_actions(self):
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_avail_agent_actions(self, agent_id):
        return [1, 1, 1, 1] if agent_id == 0 else [1, 1, 0, 1]

    def get_total_actions(self):
        return self.n_actions

    def get_stats(self):
        stats = {
            "battles_won": self.battles_won,
            "battles_game": self.battles_game,
            "win_rate": self.battles_won / self.battles_game if self.battles_game else 0.0,
        }
        if self.stats_counters:
            stats.update(timeouts=self.timeouts, restarts=self.restarts)
        return stats


class NoSeedEnv(TinyEnv):
    """TinyEnv whose constructor takes no seed."""

    def __init__(self, episode_limit=4):
        super().__init__(episode_limit=episode_limit)


class RunawayEnv(TinyEnv):
    """Never ends by itself: the wrapper must cut it at episode_limit."""

    def step(self, actions):
        reward, _, info = super().step([NOOP if a == SURRENDER else a for a in actions])
        self.counter = 0
        return reward, False, {"battle_won": False, "dead_allies": 0, "dead_enemies": 0}


class CrashingEnv(TinyEnv):
    """Like real SMAC when the game crashes: relaunch, count a restart, return (0, True, {})."""

    def step(self, actions):
        if self.t == 1:
            self.t += 1
            self.restarts += 1
            return 0, True, {}
        return super().step(actions)


class IncompleteEnv(MultiAgentEnv):
    """Declares the contract but implements only reset and get_obs."""

    def reset(self):
        return None

    def get_obs(self):
        return []


class NotAnEnv:
    def reset(self):
        return None


def tiny_factory(**kwargs):
    return TinyEnv(**kwargs)


class TinyBatched(BatchedMultiAgentEnv):
    """A native batched user env: records how it was built."""

    def __init__(self, n_envs, seed=None, flavour="plain"):
        self.n_envs, self.seed, self.flavour = n_envs, seed, flavour

    def reset(self, env_ids=None):
        pass

    def step(self, actions, active=None):
        raise AssertionError("not used")

    def get_obs(self):
        return np.zeros((self.n_envs, 1, 1), np.float32)

    def get_state(self):
        return np.zeros((self.n_envs, 1), np.float32)

    def get_avail_actions(self):
        return np.ones((self.n_envs, 1, 1), bool)

    def get_env_info(self):
        return {"state_shape": 1, "obs_shape": 1, "n_actions": 1, "n_agents": 1, "episode_limit": 1}


TINY = f"{__name__}:TinyEnv"


def act(batched, *rows):
    return np.array(rows, dtype=np.int64).reshape(batched.n_envs, batched.n_agents)


# ------------------------------------------------------------------------------ make_env


def test_make_env_builds_user_class_by_path():
    env = make_env(TINY, episode_limit=7)
    assert type(env).__name__ == "TinyEnv"
    assert env.get_env_info() == {
        "state_shape": 2, "obs_shape": 3, "n_actions": 4, "n_agents": 2, "episode_limit": 7,
    }


def test_make_env_accepts_factory_function_and_checks_what_it_builds():
    env = make_env(f"{__name__}:tiny_factory", target=3)
    assert env.target == 3


def test_make_env_from_a_module_on_sys_path(tmp_path, monkeypatch):
    """The researcher's case: a module outside qmixlab, made importable via sys.path."""
    (tmp_path / "qmixlab_user_env_mod.py").write_text(
        textwrap.dedent(
            f"""
            from {__name__} import TinyEnv

            class MyEnv(TinyEnv):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "qmixlab_user_env_mod", raising=False)
    env = make_env("qmixlab_user_env_mod:MyEnv", episode_limit=2)
    assert env.episode_limit == 2
    batched = make_batched_env("qmixlab_user_env_mod:MyEnv", n_envs=2, seed=0)
    assert isinstance(batched, VectorisedEnvs) and batched.n_envs == 2


def test_unknown_name_lists_known_names_and_close_matches():
    with pytest.raises(ValueError) as err:
        make_env("smacsm")
    msg = str(err.value)
    assert "'smacsm'" in msg and "Did you mean 'smacsim'" in msg
    assert "sc2" in msg and "smacsim" in msg and "package.module:ClassName" in msg
    with pytest.raises(ValueError, match="Known: " + ", ".join(envs_pkg.known_envs()) + r"\."):
        make_batched_env("qwerty", n_envs=2)


def test_bad_module_path_names_the_module():
    with pytest.raises(ImportError, match="'no_such_pkg_xyz.envs'.*No module named 'no_such_pkg_xyz'"):
        make_env("no_such_pkg_xyz.envs:Env")


def test_bad_attribute_names_the_attribute_and_close_matches():
    with pytest.raises(AttributeError, match=r"has no attribute 'TinyEnvv'.*did you mean 'TinyEnv'"):
        make_env(f"{__name__}:TinyEnvv")


def test_malformed_path():
    with pytest.raises(ValueError, match="package.module:ClassName"):
        make_env(":TinyEnv")


def test_class_missing_methods_is_listed():
    with pytest.raises(TypeError) as err:
        make_env(f"{__name__}:IncompleteEnv")
    msg = str(err.value)
    for name in ("step", "get_state", "get_avail_actions", "get_obs_size", "get_state_size", "get_total_actions"):
        assert name in msg
    assert "reset" not in msg.split("missing")[1] and "get_obs," not in msg
    with pytest.raises(TypeError, match="missing step, get_obs, get_state, get_avail_actions, get_env_info"):
        make_batched_env(f"{__name__}:NotAnEnv", n_envs=2)


def test_register_env(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_env("tiny", TinyEnv)
    assert "tiny" in envs_pkg.known_envs()
    assert make_env("tiny", episode_limit=3).episode_limit == 3
    assert isinstance(make_batched_env("tiny", n_envs=2), VectorisedEnvs)
    with pytest.raises(ValueError, match="already registered"):
        register_env("tiny", TinyEnv)
    register_env("tiny", NoSeedEnv, overwrite=True)
    with pytest.raises(ValueError, match="without ':'"):
        register_env("a:b", TinyEnv)


def test_registered_native_batched_factory_is_used(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    calls = []

    def batched_factory(n_envs, seed=None, **env_args):
        calls.append((n_envs, seed, env_args))
        return TinyBatched(n_envs, seed, **env_args)

    register_env("tinyb", TinyEnv, batched_factory)
    env = make_batched_env("tinyb", n_envs=5, seed=9, flavour="x")
    assert isinstance(env, TinyBatched) and calls == [(5, 9, {"flavour": "x"})]


def test_user_batched_class_by_path_is_built_natively():
    env = make_batched_env(f"{__name__}:TinyBatched", n_envs=4, seed=1, flavour="y")
    assert isinstance(env, TinyBatched) and (env.n_envs, env.seed, env.flavour) == (4, 1, "y")
    with pytest.raises(TypeError, match="make_batched_env"):
        make_env(f"{__name__}:TinyBatched")


def test_importing_envs_does_not_import_backends():
    import subprocess
    import sys

    code = (
        "import sys, qmixlab.envs; "
        "print('smac' in sys.modules, 'qmixlab.envs.smacsim.env' in sys.modules, 'qmixlab.envs.sc2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


# --------------------------------------------------------------------- make_batched_env


def test_batched_shapes_dtypes_and_values():
    env = make_batched_env(TINY, n_envs=3)
    assert isinstance(env, VectorisedEnvs) and isinstance(env, BatchedMultiAgentEnv)
    assert (env.n_envs, env.n_agents, env.n_actions, env.episode_limit) == (3, 2, 4, 4)
    assert env.get_env_info()["obs_shape"] == 3
    env.reset()
    obs, state, avail = env.get_obs(), env.get_state(), env.get_avail_actions()
    assert obs.shape == (3, 2, 3) and obs.dtype == np.float32
    assert state.shape == (3, 2) and state.dtype == np.float32
    assert avail.shape == (3, 2, 4) and avail.dtype == bool
    assert avail[:, 1, ADD2].sum() == 0 and avail[:, 0].all()

    out = env.step(act(env, [ADD1, ADD1], [ADD2, ADD1], [ADD1, NOOP]))
    assert isinstance(out, BatchedStep)
    np.testing.assert_array_equal(out.reward, [2, 3, 1])
    assert out.reward.dtype == np.float32
    for name in ("terminated", "timeout", "battle_won"):
        assert getattr(out, name).dtype == bool and getattr(out, name).shape == (3,)
    assert np.issubdtype(out.dead_allies.dtype, np.integer) and out.dead_allies.shape == (3,)
    assert np.issubdtype(out.dead_enemies.dtype, np.integer)
    assert out.extra["invalid"].dtype == bool and not out.extra["invalid"].any()
    np.testing.assert_array_equal(env.get_state(), [[2, 1], [3, 1], [1, 1]])
    np.testing.assert_array_equal(env.get_obs()[1], [[3, 1, 0], [3, 1, 1]])


def test_returned_arrays_are_borrowed_read_only_views_the_caller_cannot_corrupt():
    env = make_batched_env(TINY, n_envs=2)
    env.reset()
    for array in (env.get_obs(), env.get_state(), env.get_avail_actions()):
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 99
    assert env.get_avail_actions()[0, 0].all() and env.get_obs().max() < 99


def _run_to_end(env, actions_row):
    """Step env 0 of a 1-env batch until the episode ends; return the last BatchedStep."""
    env.reset()
    for _ in range(env.episode_limit):
        out = env.step(np.array([actions_row]))
        if out.ended[0]:
            return out
    raise AssertionError("episode did not end")


@pytest.mark.parametrize("stats_counters", [False, True])
@pytest.mark.parametrize("continuing_episode", [False, True])
def test_terminated_timeout_split(continuing_episode, stats_counters):
    """Every way to end, under every way the env may (or may not) report a timeout."""
    kwargs = dict(episode_limit=3, target=6, continuing_episode=continuing_episode, stats_counters=stats_counters)

    def one(**overrides):
        return make_batched_env(TINY, n_envs=1, **{**kwargs, **overrides})

    # Timeout: 3 steps of +1 never reach 6.
    out = _run_to_end(one(), [ADD1, NOOP])
    assert (out.timeout[0], out.terminated[0], out.battle_won[0]) == (True, False, False)
    # Win before the limit.
    out = _run_to_end(one(target=2), [ADD1, ADD1])
    assert (out.timeout[0], out.terminated[0], out.battle_won[0]) == (False, True, True)
    assert out.dead_enemies[0] == 1
    # Win on exactly the last step (1+1 then +2+1 ... reaches 6 at t=3 with 2 per step).
    out = _run_to_end(one(), [ADD1, ADD1])
    assert (out.timeout[0], out.terminated[0], out.battle_won[0]) == (False, True, True)
    # Loss (wipe-out) on exactly the last step.
    env = one()
    env.reset()
    env.step(act(env, [ADD1, NOOP]))
    env.step(act(env, [ADD1, NOOP]))
    out = env.step(act(env, [SURRENDER, NOOP]))
    assert (out.timeout[0], out.terminated[0], out.battle_won[0]) == (False, True, False)
    assert out.dead_allies[0] == 2


def test_counter_rule_is_exact_where_fallback_is_not():
    """A non-wipe loss on the last step: only the timeouts counter can tell it from a timeout."""

    class LastStepLoss(TinyEnv):
        def step(self, actions):
            if self.t == self.episode_limit - 1:  # lose with allies alive, like MMM's medivac
                self.t += 1
                self.battles_game += 1
                return 0.0, True, {"battle_won": False, "dead_allies": 1, "dead_enemies": 0}
            return super().step(actions)

    exact = VectorisedEnvs([LastStepLoss(episode_limit=2, stats_counters=True)])
    fallback = VectorisedEnvs([LastStepLoss(episode_limit=2, stats_counters=False)])
    for env, expect_timeout in ((exact, False), (fallback, True)):
        out = _run_to_end(env, [ADD1, NOOP])
        assert env.episode_steps[0] == 2
        assert (out.timeout[0], out.terminated[0]) == (expect_timeout, not expect_timeout)


def test_wrapper_cuts_runaway_episode_at_limit():
    env = make_batched_env(f"{__name__}:RunawayEnv", n_envs=1, episode_limit=3)
    with pytest.warns(UserWarning, match=r"environment 0 \(RunawayEnv\) did not end its episode within episode_limit=3"):
        out = _run_to_end(env, [ADD1, ADD1])
    assert env.episode_steps[0] == 3
    assert (out.timeout[0], out.terminated[0]) == (True, False)
    with pytest.raises(ValueError, match="ended its episode at step 3"):
        env.step(act(env, [ADD1, ADD1]))


def test_crash_restart_is_terminal_and_invalid():
    env = make_batched_env(f"{__name__}:CrashingEnv", n_envs=1, stats_counters=True, episode_limit=5)
    env.reset()
    first = env.step(act(env, [ADD1, NOOP]))
    assert not first.ended[0]
    out = env.step(act(env, [ADD1, NOOP]))
    assert (out.terminated[0], out.timeout[0], out.extra["invalid"][0]) == (True, False, True)


def test_invalid_step_flag_maps_to_extra_invalid():
    env = make_batched_env(TINY, n_envs=2)
    env.reset()
    out = env.step(act(env, [NOOP, NOOP], [ADD1, NOOP]))
    np.testing.assert_array_equal(out.extra["invalid"], [True, False])


def test_custom_info_flags():
    env = VectorisedEnvs([TinyEnv(), TinyEnv()], info_flags={"invalid_step": "idle"})
    env.reset()
    out = env.step(act(env, [NOOP, NOOP], [ADD1, NOOP]))
    np.testing.assert_array_equal(out.extra["idle"], [True, False])
    assert not out.extra["invalid"].any()  # always present


def test_active_mask_leaves_inactive_envs_untouched():
    env = make_batched_env(TINY, n_envs=3)
    env.reset()
    before_obs = env.get_obs()
    # Env 1 is inactive: its (unavailable!) action must be ignored and it must not advance.
    out = env.step(act(env, [ADD1, ADD1], [ADD1, ADD2], [ADD2, ADD1]), active=np.array([True, False, True]))
    assert [e.n_steps_taken for e in env.envs] == [1, 0, 1]
    np.testing.assert_array_equal(env.episode_steps, [1, 0, 1])
    assert out.reward[1] == 0 and not out.ended[1] and not out.extra["invalid"][1]
    np.testing.assert_array_equal(env.get_obs()[1], before_obs[1])
    np.testing.assert_array_equal(out.reward, [2, 0, 3])


def test_ended_env_must_be_reset_or_inactive_and_reset_selected_ids():
    env = make_batched_env(TINY, n_envs=3, target=3)
    env.reset()
    out = env.step(act(env, [ADD2, ADD1], [ADD1, NOOP], [ADD1, NOOP]))
    np.testing.assert_array_equal(out.terminated, [True, False, False])
    with pytest.raises(ValueError, match="environment 0 ended its episode at step 1"):
        env.step(act(env, [ADD1, ADD1], [ADD1, NOOP], [ADD1, NOOP]))
    # Stepping the others with env 0 inactive works.
    out = env.step(act(env, [NOOP, NOOP], [ADD2, NOOP], [NOOP, NOOP]), active=np.array([False, True, True]))
    np.testing.assert_array_equal(out.terminated, [False, True, False])
    state_env2 = env.get_state()[2].copy()
    env.reset(env_ids=np.array([0, 1]))
    np.testing.assert_array_equal(env.episode_steps, [0, 0, 2])
    np.testing.assert_array_equal(env.get_state()[:2], [[0, 0], [0, 0]])
    np.testing.assert_array_equal(env.get_state()[2], state_env2)
    out = env.step(act(env, [ADD1, NOOP], [ADD1, NOOP], [ADD1, NOOP]))
    assert not out.ended.any()


def test_step_before_reset_is_an_error():
    env = make_batched_env(TINY, n_envs=2)
    with pytest.raises(ValueError, match="environment 0 has not been reset"):
        env.step(act(env, [ADD1, ADD1], [ADD1, ADD1]))


def test_action_errors_and_no_partial_step():
    env = make_batched_env(TINY, n_envs=3)
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(n_envs, n_agents\) = \(3, 2\), got \(3,\)"):
        env.step(np.array([1, 1, 1]))
    with pytest.raises(ValueError, match=r"got \(2, 3\)"):
        env.step(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="integer array, got dtype float64"):
        env.step(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"action 7 of agent 0 in environment 2 is out of range \[0, 4\)"):
        env.step(act(env, [ADD1, ADD1], [ADD1, ADD1], [7, ADD1]))
    with pytest.raises(ValueError, match=r"action -1 of agent 1 in environment 1 is out of range \[0, 4\)"):
        env.step(act(env, [ADD1, ADD1], [ADD1, -1], [ADD1, ADD1]))
    with pytest.raises(ValueError, match=r"action 7 of agent 0 in environment 2 is out of range"):
        env.step(act(env, [ADD1, ADD1], [ADD1, ADD1], [7, ADD1]), active=np.array([False, False, True]))
    unavailable = r"action 2 is not available to agent 1 in environment 2; available: \[0, 1, 3\]"
    with pytest.raises(ValueError, match=unavailable):
        env.step(act(env, [ADD1, ADD1], [ADD1, ADD1], [ADD1, ADD2]))
    with pytest.raises(ValueError, match="active must be a bool array"):
        env.step(act(env, [ADD1, ADD1], [ADD1, ADD1], [ADD1, ADD1]), active=np.array([1, 0, 1]))
    assert [e.n_steps_taken for e in env.envs] == [0, 0, 0], "a rejected step must not advance any env"


def test_env_ids_errors():
    env = make_batched_env(TINY, n_envs=3)
    with pytest.raises(ValueError, match=r"out of range for n_envs=3"):
        env.reset(env_ids=np.array([0, 3]))
    with pytest.raises(ValueError, match="flatnonzero"):
        env.reset(env_ids=np.array([True, False, True]))
    with pytest.raises(ValueError, match="duplicates"):
        env.reset(env_ids=[1, 1])


def test_per_env_seeds_are_derived_and_distinct():
    env = make_batched_env(TINY, n_envs=3, seed=123)
    seeds = [e.seed_value for e in env.envs]
    assert seeds == derive_env_seeds(123, 3)
    assert len(set(seeds)) == 3 and all(0 <= s < 2**31 for s in seeds)
    assert [e.seed_value for e in make_batched_env(TINY, n_envs=3, seed=123).envs] == seeds
    assert [e.seed_value for e in make_batched_env(TINY, n_envs=3, seed=124).envs] != seeds
    assert [e.seed_value for e in make_batched_env(TINY, n_envs=2).envs] == [None, None]


def test_seed_with_a_seedless_class_warns_and_is_not_passed():
    with pytest.warns(UserWarning, match="takes no 'seed' keyword"):
        env = make_batched_env(f"{__name__}:NoSeedEnv", n_envs=2, seed=1)
    assert env.n_envs == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_batched_env(f"{__name__}:NoSeedEnv", n_envs=2)


def test_envs_must_agree_on_env_info():
    with pytest.raises(ValueError, match="disagree on episode_limit: environment 0 has 4, environment 1 has 5"):
        VectorisedEnvs([TinyEnv(episode_limit=4), TinyEnv(episode_limit=5)])


def test_bad_env_outputs_are_reported():
    class WrongObs(TinyEnv):
        def get_obs(self):
            return [[0.0, 0.0]] * 2

    class WrongAvail(TinyEnv):
        def get_avail_actions(self):
            return [[2, 1, 1, 1], [1, 1, 0, 1]]

    with pytest.raises(ValueError, match=r"get_obs\(\) has shape \(2, 2\), expected"):
        VectorisedEnvs([WrongObs()]).reset()
    with pytest.raises(ValueError, match="only 0/1"):
        VectorisedEnvs([WrongAvail()]).reset()


def test_stats_are_aggregated():
    env = make_batched_env(TINY, n_envs=3, target=2, episode_limit=2, stats_counters=True)
    assert env.get_stats()["win_rate"] == 0.0
    env.reset()
    env.step(act(env, [ADD1, ADD1], [ADD1, NOOP], [NOOP, ADD1]))  # env 0 wins
    env.step(act(env, [NOOP, NOOP], [NOOP, NOOP], [NOOP, NOOP]), active=np.array([False, True, True]))
    stats = env.get_stats()
    assert stats == {
        "battles_won": 1, "battles_game": 3, "win_rate": pytest.approx(1 / 3), "timeouts": 2, "restarts": 0,
    }


def test_n_envs_validation():
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n_envs must be a positive int"):
            make_batched_env(TINY, n_envs=bad)


def test_make_batched_env_closes_built_envs_when_a_later_one_fails(monkeypatch):
    closed = []

    class Closing(TinyEnv):
        built = 0

        def __init__(self, **kwargs):
            if Closing.built == 2:
                raise RuntimeError("third env fails")
            Closing.built += 1
            super().__init__(**kwargs)

        def close(self):
            closed.append(self)

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_env("closing", Closing)
    with pytest.raises(RuntimeError, match="third env fails"):
        make_batched_env("closing", n_envs=3)
    assert len(closed) == 2


# -------------------------------------------------------------------------- smacsim


SMACSIM_ENV = Path(envs_pkg.__file__).parent / "smacsim" / "env.py"


@pytest.mark.skipif(not SMACSIM_ENV.exists(), reason="simulator src/envs/smacsim/env.py has not landed yet")
def test_smacsim_backend():
    from qmixlab.envs.smacsim.env import BatchedSMACSim, SMACSim

    env = make_env("smacsim", map_name="3m")
    assert isinstance(env, SMACSim)
    info = env.get_env_info()
    assert info["n_agents"] == 3 and info["n_actions"] == 9
    env.close()
    batched = make_batched_env("smacsim", n_envs=2, map_name="3m")
    assert type(batched) is BatchedSMACSim and isinstance(batched, BatchedMultiAgentEnv)
    assert batched.n_envs == 2 and batched.get_env_info()["n_actions"] == 9
    batched.close()


@pytest.mark.skipif(not SMACSIM_ENV.exists(), reason="simulator src/envs/smacsim/env.py has not landed yet")
@pytest.mark.parametrize("continuing_episode", [False, True])
def test_vectorised_smacsim_matches_native_batched(continuing_episode):
    """The wrapper around per-env SMACSim must give what the native batched simulator gives,
    through both kinds of episode end (SMACSim reports timeouts as SMAC does)."""
    from qmixlab.envs.smacsim.env import BatchedSMACSim, SMACSim

    kwargs = dict(map_name="3m", continuing_episode=continuing_episode)
    native = BatchedSMACSim(n_envs=1, seed=5, **kwargs)
    wrapped = VectorisedEnvs([SMACSim(seed=5, **kwargs)])
    rng = np.random.default_rng(0)

    def policy(avail, episode):
        # Even episodes mostly walk north, away from the attackers (runs into the time limit);
        # odd episodes mostly stand still (the battle ends first).
        preferred, p_random = (2, 0.1) if episode % 2 == 0 else (1, 0.3)
        if rng.random() < p_random or not avail[preferred]:
            return int(rng.choice(np.flatnonzero(avail)))
        return preferred

    native.reset()
    wrapped.reset()
    ends = []
    for _ in range(4 * native.episode_limit):
        avail = native.get_avail_actions()
        np.testing.assert_array_equal(wrapped.get_avail_actions(), avail)
        np.testing.assert_allclose(wrapped.get_obs(), native.get_obs(), atol=1e-6)
        np.testing.assert_allclose(wrapped.get_state(), native.get_state(), atol=1e-6)
        actions = np.array([[policy(a, len(ends)) for a in avail[0]]], dtype=np.int64)
        a, b = native.step(actions), wrapped.step(actions)
        for name in ("terminated", "timeout", "battle_won", "dead_allies", "dead_enemies"):
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
        np.testing.assert_allclose(b.reward, a.reward, rtol=1e-5)
        if a.ended[0]:
            ends.append("timeout" if a.timeout[0] else "terminated")
            native.reset()
            wrapped.reset()
    assert {"timeout", "terminated"} <= set(ends), f"both kinds of end should occur, got {ends}"
    native.close()
    wrapped.close()


def test_registered_backend_declares_its_env_args(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_env("tiny_kwargs", tiny_factory)  # **kwargs only: anything goes, nothing listed
    assert registry.env_arg_defaults("tiny_kwargs") == {}
    registry.check_env_args("tiny_kwargs", {"whatever": 1})
    register_env("tiny_declared", tiny_factory, arg_defaults=lambda: {"episode_limit": 4, "target": 6})
    assert registry.env_arg_defaults("tiny_declared") == {"episode_limit": 4, "target": 6}
    with pytest.raises(ValueError, match=r"unknown env_args key 'targt' for environment 'tiny_declared'; "
                                         r"did you mean 'target'\?"):
        registry.check_env_args("tiny_declared", {"targt": 3})
    with pytest.raises(TypeError, match="arg_defaults for environment 'x' must be callable"):
        register_env("x", tiny_factory, arg_defaults={"a": 1})
    assert registry.env_arg_defaults(TINY) == {"episode_limit": 4, "target": 6, "continuing_episode": False,
                                               "stats_counters": False}
