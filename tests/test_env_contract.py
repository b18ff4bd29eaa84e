"""The environment contract v2: EnvSpec, BatchedStep, what the runner stores for every backend,
auto-reset, late time limits, borrowed arrays, env_args checks and the conformance checker.

Fixture environments live in ``tests/plugin_fixtures`` (see ``line_world.py``)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from qmixlab.envs import (
    BatchedStep,
    EnvSpec,
    ObsLayout,
    StateLayout,
    VectorisedEnvs,
    check_env_args,
    env_arg_defaults,
    make_batched_env,
    make_env,
)
from qmixlab.envs import conformance
from qmixlab.runners.batch_runner import BatchRunner, episode_scheme

TESTS = Path(__file__).resolve().parent
LINE = "plugin_fixtures.line_world"
BATCHED_LINE = "plugin_fixtures.batched_line_world:BatchedLineWorld"


@pytest.fixture(autouse=True)
def fixtures_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


class RandomController:
    """Uniform over available actions; records (t_env, test_mode) of every call."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.calls = []

    def init_hidden(self, n):
        pass

    def select_actions(self, obs, avail, t_env, test_mode=False, env_mask=None):
        self.calls.append((t_env, test_mode))
        avail = np.asarray(avail)
        return torch.as_tensor((self.rng.random(avail.shape) + avail).argmax(-1))


class AlwaysRight(RandomController):
    """Walk right whenever possible (LineWorld's RIGHT is 3, StopNoop's is 2)."""

    def __init__(self, right):
        super().__init__()
        self.right = right

    def select_actions(self, obs, avail, t_env, test_mode=False, env_mask=None):
        avail = np.asarray(avail)
        return torch.as_tensor(np.where(avail[..., self.right], self.right, avail.argmax(-1)))


def rollout(env_name, n_envs=3, seed=0, controller=None, **env_args):
    env = make_batched_env(env_name, n_envs, seed=seed, **env_args)
    runner = BatchRunner(env, controller or RandomController(seed))
    batch, stats = runner.run(test_mode=False, t_env=5)
    return env, runner, batch, stats


def episode_lengths(batch):
    return (batch["filled"][..., 0].sum(1) - 1).tolist()


# ----------------------------------------------------------------------------- EnvSpec
def test_plain_env_info_declares_nothing():
    spec = EnvSpec.from_env_info({"n_agents": 2, "n_actions": 4, "obs_shape": 3, "state_shape": 5,
                                  "episode_limit": 7})
    assert (spec.step_flags, spec.noop_action, spec.provides_alive, spec.auto_reset) == ((), None, False, False)
    assert not spec.can_tell_dead_agents
    assert spec.to_env_info() == {"n_agents": 2, "n_actions": 4, "obs_shape": 3, "state_shape": 5,
                                  "episode_limit": 7}
    legacy = EnvSpec.from_env_info({**spec.to_env_info(), "flags_invalid_steps": True, "noop_action": 0})
    assert legacy.step_flags == ("invalid",) and legacy.noop_action == 0 and legacy.can_tell_dead_agents


@pytest.mark.parametrize("changes, message", [
    (dict(noop_action=4), r"noop_action must be None or an action index in \[0, 4\), got 4"),
    (dict(step_flags=("timeout",)), r"step flag 'timeout' clashes with an episode field"),
    (dict(step_flags=("bad flag",)), r"step flag 'bad flag' must be an identifier"),
    (dict(step_flags=("a", "a")), r"duplicates"),
    (dict(n_agents=0), r"n_agents must be a positive int, got 0"),
    (dict(state_last_action=(0, 5)), r"block of n_agents\*n_actions = 8 features"),
    (dict(obs_layout=ObsLayout(1, (1, 1), (1, 1), 1)), r"obs_layout adds up to 4 features, obs_shape is 3"),
    (dict(provides_alive="yes"), r"provides_alive must be a bool"),
])
def test_spec_errors_name_the_bad_value(changes, message):
    base = dict(n_agents=2, n_actions=4, obs_shape=3, state_shape=20, episode_limit=7)
    with pytest.raises(ValueError, match=message):
        EnvSpec(**{**base, **changes})


def test_state_last_action_accepts_a_slice_and_must_match_the_state_layout():
    base = dict(n_agents=2, n_actions=4, obs_shape=3, state_shape=20, episode_limit=7)
    assert EnvSpec(**base, state_last_action=slice(10, 18)).state_last_action == (10, 18)
    assert EnvSpec(**base, state_last_action=(10, 18)).state_last_action_slice == slice(10, 18)
    layout = StateLayout(allies=(2, 3), enemies=(1, 4), last_action=8, timestep=2)
    with pytest.raises(ValueError, match=r"disagrees with state_layout, whose last-action block is \(10, 18\)"):
        EnvSpec(**base, state_layout=layout, state_last_action=(11, 19))


def test_alive_from_avail_matches_the_rule_written_out():
    rng = np.random.default_rng(0)
    avail = rng.random((5, 3, 6)) < 0.3
    avail[0, 0] = [0, 0, 0, 0, 1, 0]  # only the no-op: dead
    avail[0, 1] = [0, 0, 0, 0, 1, 1]  # no-op and more: alive
    avail[0, 2] = [0, 1, 0, 0, 0, 0]  # one other action: alive
    spec = EnvSpec(n_agents=3, n_actions=6, obs_shape=1, state_shape=1, episode_limit=1, noop_action=4)
    expected = np.array([[not (a[4] and a.sum() == 1) for a in env] for env in avail])
    np.testing.assert_array_equal(spec.alive_from_avail(avail), expected)
    assert spec.alive_from_avail(avail)[0].tolist() == [False, True, True]
    assert spec.replace(noop_action=None).alive_from_avail(avail).all()


def test_smacsim_spec_layout_and_last_action_block_match_the_state():
    env = make_batched_env("smacsim", 2, seed=3, map_name="2s3z", state_timestep_number=True)
    spec = env.get_spec()
    assert spec.noop_action == 0 and spec.step_flags == () and spec.can_tell_dead_agents
    assert spec.obs_layout.size == spec.obs_shape and spec.state_layout.size == spec.state_shape
    assert spec.obs_layout.enemies[0] == 5 and spec.state_layout.allies[0] == 5
    env.reset()
    avail = env.get_avail_actions()
    actions = avail.argmax(-1)
    env.step(actions)
    block = env.get_state()[:, spec.state_last_action_slice].reshape(2, spec.n_agents, spec.n_actions)
    expected = np.eye(spec.n_actions)[actions]  # the one-hot of what each agent just did
    np.testing.assert_array_equal(block, expected)
    # The block is not at the end when the state carries the timestep.
    assert spec.state_last_action[1] == spec.state_shape - 1
    flagged = make_batched_env("smacsim", 1, map_name="3m", flag_invalid_steps=True).get_spec()
    assert flagged.step_flags == ("invalid",)
    assert make_batched_env("smacsim", 1, map_name="3m", obs_instead_of_state=True).get_spec().state_last_action is None


def test_wrapper_spec_declares_invalid_and_the_wrapped_env_declarations():
    spec = make_batched_env(f"{LINE}:WastedStepLineWorld", 2).get_spec()
    assert spec.step_flags == ("wasted", "invalid") and spec.noop_action == 0
    spec = make_batched_env(f"{LINE}:UndeclaredStopNoopLineWorld", 2).get_spec()
    assert spec.noop_action is None and not spec.can_tell_dead_agents
    spec = make_batched_env(f"{LINE}:AutoResetLineWorld", 2).get_spec()
    assert spec.auto_reset
    native = make_batched_env("smacsim", 2, map_name="3m")
    wrapped = VectorisedEnvs([make_env("smacsim", map_name="3m")])  # per-env SMACSim, wrapped
    assert wrapped.get_spec() == native.get_spec().replace(step_flags=("invalid",))


# -------------------------------------------------------------------------- BatchedStep
def test_batched_step_old_names_still_work():
    old = BatchedStep(reward=np.zeros(2, np.float32), terminated=np.array([True, False]),
                      timeout=np.array([False, True]), battle_won=np.zeros(2, bool),
                      dead_allies=np.zeros(2, int), dead_enemies=np.zeros(2, int),
                      extra={"invalid": np.array([True, False])})
    assert old.truncated.tolist() == [False, True] and old.timeout is old.truncated
    assert old.flags["invalid"].tolist() == [True, False] and old.extra is old.flags
    assert old.ended.tolist() == [True, True]
    with pytest.raises(AttributeError):
        old.timeout = np.zeros(2, bool)
    with pytest.raises(TypeError, match="not both"):
        BatchedStep(np.zeros(1), np.zeros(1, bool), np.zeros(1, bool), timeout=np.zeros(1, bool))
    minimal = BatchedStep(np.zeros(3, np.float32), np.zeros(3, bool), np.zeros(3, bool))
    assert minimal.battle_won.shape == (3,) and minimal.flags == {} and minimal.alive is None


# ------------------------------------------------------------------- what the runner stores
def test_episode_scheme_has_one_field_per_flag_and_alive_and_no_onehot():
    spec = EnvSpec(n_agents=2, n_actions=4, obs_shape=3, state_shape=5, episode_limit=7,
                   step_flags=("invalid", "wasted"))
    scheme, groups, preprocess = episode_scheme(spec)
    assert scheme["invalid"] == {"vshape": (1,), "dtype": torch.bool}
    assert scheme["wasted"] == {"vshape": (1,), "dtype": torch.bool}
    assert scheme["alive"] == {"vshape": (1,), "group": "agents", "dtype": torch.bool}
    assert preprocess == {} and "actions_onehot" not in scheme and groups == {"agents": 2}
    assert episode_scheme(spec.to_env_info())[0].keys() == scheme.keys() - {"invalid", "wasted"}


def test_user_env_invalid_steps_are_stored_issue_15():
    """A user env flagging invalid steps (info['invalid_step']) used to be trained on silently."""
    env, runner, batch, _ = rollout(f"{LINE}:InvalidStepLineWorld", n_envs=4, seed=1, size=4)
    assert "invalid" in runner.scheme
    lengths = episode_lengths(batch)
    stay = 1
    flagged = 0
    for b, length in enumerate(lengths):
        for t in range(length):
            actions = batch["actions"][b, t, :, 0]
            walking = ~(batch["avail_actions"][b, t, :, 0] & (batch["avail_actions"][b, t].sum(-1) == 1))
            expected = bool(all(int(a) == stay for a, w in zip(actions, walking) if w))
            assert bool(batch["invalid"][b, t, 0]) == expected, (b, t)
            flagged += expected
        assert not batch["invalid"][b, length:].any()
    assert flagged > 0, "the rollout must contain flagged steps for the test to mean anything"


def test_declared_custom_flag_is_stored_from_every_backend():
    _, _, batch, _ = rollout(f"{LINE}:WastedStepLineWorld", n_envs=3, seed=2, size=4)
    lengths = episode_lengths(batch)
    seen = 0
    for b, length in enumerate(lengths):
        for t in range(length):
            actions = batch["actions"][b, t, :, 0].tolist()
            expected = all(a in (0, 1) for a in actions)  # NOOP or STAY: nobody moved
            assert bool(batch["wasted"][b, t, 0]) == expected
            seen += expected
    assert seen > 0
    # Native batched env: its declared "invalid" flag.
    env, _, batch, _ = rollout(BATCHED_LINE, n_envs=3, seed=2, size=4)
    for b, length in enumerate(episode_lengths(batch)):
        for t in range(length):
            walking = batch["alive"][b, t, :, 0]
            stayed = batch["actions"][b, t, :, 0] == 1
            assert bool(batch["invalid"][b, t, 0]) == bool(walking.any() and stayed[walking].all())


def test_alive_from_a_declared_non_zero_noop():
    env, runner, batch, _ = rollout(f"{LINE}:StopNoopLineWorld", n_envs=3, seed=0, size=3,
                                    controller=AlwaysRight(2))
    assert runner.spec.noop_action == 4
    filled = batch["filled"][..., 0]
    avail = batch["avail_actions"]
    expected = ~(avail[..., 4] & (avail.sum(-1) == 1))  # the no-op at index 4 alone: dead
    assert torch.equal(batch["alive"][..., 0][filled], expected[filled])
    assert (~batch["alive"][..., 0][filled]).any(), "some agents must have arrived"
    assert not batch["alive"][~filled].any()


def test_alive_is_all_true_when_nothing_is_declared():
    env, runner, batch, _ = rollout(f"{LINE}:UndeclaredStopNoopLineWorld", n_envs=2, size=3,
                                    controller=AlwaysRight(2))
    assert not runner.spec.can_tell_dead_agents
    filled = batch["filled"][..., 0]
    assert batch["alive"][..., 0][filled].all()


def test_alive_from_an_explicit_mask():
    env, runner, batch, _ = rollout(BATCHED_LINE, n_envs=3, seed=4, size=3, controller=AlwaysRight(3))
    assert runner.spec.provides_alive and runner.spec.noop_action is None
    filled = batch["filled"][..., 0]
    arrived = batch["obs"][..., 3] == 1  # obs feature `size` is the arrived flag
    assert torch.equal(batch["alive"][..., 0][filled], ~arrived[filled])
    assert arrived[filled].any()


@pytest.mark.parametrize("env_name, env_args", [
    (f"{LINE}:AutoResetLineWorld", {}),
    (BATCHED_LINE, {"auto_reset": True}),
])
def test_auto_reset_envs_hand_over_the_final_row(env_name, env_args):
    env, _, batch, stats = rollout(env_name, n_envs=3, seed=5, size=3, controller=AlwaysRight(3), **env_args)
    assert env.get_spec().auto_reset
    for b, length in enumerate(episode_lengths(batch)):
        final_obs = batch["obs"][b, length]
        assert stats.battle_won[b]
        # The finished episode's last row: every agent arrived and the clock shows its length.
        assert (final_obs[:, 3] == 1).all(), "the final row must not be the next episode's start"
        assert torch.allclose(final_obs[:, 4], torch.full((2,), length / 6.0))
        assert not batch["alive"][b, length, :, 0].any()


def test_late_time_limit_is_cut_at_episode_limit_with_one_warning():
    with pytest.warns(UserWarning, match=r"BatchedLineWorld: environment\(s\) \[.*\] did not end their episode "
                                         r"within episode_limit=4 steps; the runner cut them"):
        env, _, batch, stats = rollout(BATCHED_LINE, n_envs=3, size=3, episode_limit=4, late=1,
                                       controller=StayController())
    for b, length in enumerate(episode_lengths(batch)):
        assert length == 4 and stats.timeouts[b]
        assert batch["timeout"][b, 3, 0] and not batch["terminated"][b].any()
    with pytest.warns(UserWarning, match=r"LateLimitLineWorld\) did not end its episode within episode_limit=4"):
        _, _, batch, stats = rollout(f"{LINE}:LateLimitLineWorld", n_envs=2, size=3, episode_limit=4,
                                     controller=StayController())
    assert episode_lengths(batch) == [4, 4] and stats.timeouts.all()


class StayController(RandomController):
    def select_actions(self, obs, avail, t_env, test_mode=False, env_mask=None):
        avail = np.asarray(avail)
        return torch.as_tensor(np.where(avail[..., 1], 1, avail.argmax(-1)))


def test_undeclared_batched_flag_fails_at_the_first_step():
    from plugin_fixtures.batched_line_world import BatchedLineWorld

    class Undeclared(BatchedLineWorld):
        def step(self, actions, active=None):
            out = super().step(actions, active)
            out.flags["wasted"] = np.zeros(self.n_envs, bool)
            return out

    runner = BatchRunner(Undeclared(n_envs=2, size=3), RandomController())
    with pytest.raises(ValueError, match=r"emitted but not declared in step_flags: \['wasted'\]"):
        runner.run()


@pytest.mark.parametrize("env_name, env_args", [
    (f"{LINE}:LineWorld", {"size": 4, "n_agents": 3}),
    (f"{LINE}:StopNoopLineWorld", {}),
    (f"{LINE}:UndeclaredStopNoopLineWorld", {}),
    (f"{LINE}:AutoResetLineWorld", {}),
    (f"{LINE}:ReadOnlyLineWorld", {}),
    (f"{LINE}:InvalidStepLineWorld", {}),
    (f"{LINE}:WastedStepLineWorld", {}),
    (BATCHED_LINE, {}),
    (BATCHED_LINE, {"auto_reset": True}),
])
def test_fixtures_run_end_to_end(env_name, env_args):
    env, runner, batch, stats = rollout(env_name, n_envs=3, seed=7, **env_args)
    spec = env.get_spec()
    lengths = episode_lengths(batch)
    assert lengths == stats.lengths.tolist() and all(1 <= n <= spec.episode_limit for n in lengths)
    for b, length in enumerate(lengths):
        ended = batch["terminated"][b, :, 0] | batch["timeout"][b, :, 0]
        assert ended.nonzero().view(-1).tolist() == [length - 1]
        chosen = batch["avail_actions"][b, : length + 1].gather(2, batch["actions"][b, : length + 1])
        assert chosen.all(), "every stored action was available"
    assert set(spec.step_flags) <= set(batch.scheme)


def test_read_only_arrays_never_reach_torch():
    """torch warns once per process about non-writable arrays, so this runs in a fresh one."""
    code = textwrap.dedent(f"""
        import sys, warnings
        import numpy as np, torch
        sys.path.insert(0, {str(TESTS)!r})
        from qmixlab.envs import make_batched_env
        from qmixlab.runners.batch_runner import BatchRunner
        from qmixlab.components.replay_buffer import ReplayBuffer

        class Random:
            rng = np.random.default_rng(0)
            def init_hidden(self, n): pass
            def select_actions(self, obs, avail, t_env, test_mode=False, env_mask=None):
                torch.as_tensor(obs), torch.as_tensor(avail)  # what a controller does with them
                return torch.as_tensor((self.rng.random(np.shape(avail)) + np.asarray(avail)).argmax(-1))

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for name in ("plugin_fixtures.line_world:ReadOnlyLineWorld",
                         "plugin_fixtures.batched_line_world:BatchedLineWorld"):
                env = make_batched_env(name, 2, seed=0, size=3)
                runner = BatchRunner(env, Random())
                batch, _ = runner.run()
                buffer = ReplayBuffer(runner.scheme, runner.groups, 4, runner.max_seq_length,
                                      preprocess=runner.preprocess)
                buffer.insert_episode_batch(batch)
        print("WARNINGS:", [str(w.message)[:80] for w in caught])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "WARNINGS: []" in out.stdout, out.stdout + out.stderr
    assert "not writable" not in out.stderr


# ------------------------------------------------------------------------------ env_args
def test_env_arg_defaults():
    assert env_arg_defaults(f"{LINE}:LineWorld") == {"size": 5, "n_agents": 2, "episode_limit": None}
    assert env_arg_defaults(BATCHED_LINE) == {"size": 5, "n_agents": 2, "episode_limit": None,
                                              "auto_reset": False, "declare_auto_reset": True, "late": 0}
    smacsim = env_arg_defaults("smacsim")
    assert smacsim["map_name"] == "8m" and smacsim["state_last_action"] is True and "seed" not in smacsim
    assert smacsim["flag_invalid_steps"] is False
    assert env_arg_defaults(f"{LINE}:ReadOnlyLineWorld") == {}  # **kwargs only


def test_check_env_args_names_the_bad_key_the_env_and_the_close_match():
    with pytest.raises(ValueError, match=r"unknown env_args key 'sise' for environment "
                                         r"'plugin_fixtures.line_world:LineWorld'; did you mean 'size'\? "
                                         r"Accepted keys: episode_limit, n_agents, size"):
        check_env_args(f"{LINE}:LineWorld", {"sise": 3})
    with pytest.raises(ValueError, match=r"unknown map '3mm' for smacsim; did you mean '3m'\? Known maps: .*2s3z"):
        check_env_args("smacsim", {"map_name": "3mm"})
    with pytest.raises(ValueError, match=r"unknown env_args key 'state_last_actoin'.*'state_last_action'"):
        check_env_args("smacsim", {"state_last_actoin": False})
    with pytest.raises(ValueError, match=r"env_args.seed is not an environment argument"):
        check_env_args(f"{LINE}:LineWorld", {"seed": 1})
    check_env_args(f"{LINE}:LineWorld", {"size": 3})
    check_env_args(f"{LINE}:ReadOnlyLineWorld", {"anything": 1})  # **kwargs accepts all
    check_env_args("smacsim", {"map_name": "3m", "step_mul": 4})


def test_check_env_args_reports_a_missing_required_argument(tmp_path, monkeypatch):
    (tmp_path / "required_arg_env.py").write_text(textwrap.dedent("""
        from plugin_fixtures.line_world import LineWorld

        class NeedsSize(LineWorld):
            def __init__(self, size, seed=None):
                super().__init__(size=size, seed=seed)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"needs env_args 'size'"):
        check_env_args("required_arg_env:NeedsSize", {})
    assert env_arg_defaults("required_arg_env:NeedsSize") == {}


def test_check_env_args_does_not_build_the_environment(monkeypatch):
    from qmixlab.envs.smacsim import env as smacsim_env

    def fail(*args, **kwargs):
        raise AssertionError("the simulator was built")

    monkeypatch.setattr(smacsim_env.BatchedSMACSim, "__init__", fail)
    check_env_args("smacsim", {"map_name": "3m"})
    env_arg_defaults("smacsim")


# ------------------------------------------------------------------------ conformance
def codes(violations, level=None):
    return {v.code for v in violations if level is None or v.level == level}


@pytest.mark.parametrize("env_name, env_args", [
    (f"{LINE}:LineWorld", {"size": 4}),
    (f"{LINE}:StopNoopLineWorld", {}),
    (f"{LINE}:AutoResetLineWorld", {}),
    (BATCHED_LINE, {"auto_reset": True}),
    ("smacsim", {"map_name": "3m", "flag_invalid_steps": True}),
])
def test_conforming_envs_pass_the_checker(env_name, env_args):
    violations = conformance.check_env(env_name, env_args, episodes=2)
    assert codes(violations, "error") == set() and codes(violations, "warning") == set(), violations


@pytest.mark.parametrize("fixture, env_args, level, code", [
    # The six problems of issue 18, each on a fixture that has it.
    ("LineWorld", {"sise": 4}, "error", "env-args"),                           # 1: own arguments
    ("UndeclaredAutoResetLineWorld", {}, "error", "undeclared-auto-reset"),    # 2: auto-reset
    ("LateLimitLineWorld", {}, "warning", "late-end"),                         # 3: late time limit
    ("UndeclaredStopNoopLineWorld", {}, "warning", "dead-agents-undeclared"),  # 4: non-zero no-op
    ("NoRngHooksLineWorld", {}, "warning", "rng-hooks"),                       # 5: hooks
    ("NumpyRngStateLineWorld", {}, "error", "rng-state-not-plain"),            # 5: plain values
    ("UndeclaredFlagLineWorld", {}, "warning", "undeclared-flag"),             # 5: flags
    ("ReadOnlyLineWorld", {}, "info", "read-only-arrays"),                     # 6: ownership
    ("ReadOnlyLineWorld", {}, "info", "reused-arrays"),                        # 6: ownership
    ("NonScalarRewardLineWorld", {}, "error", "reward-not-scalar"),
    ("WrongObsShapeLineWorld", {}, "error", "shape"),
])
def test_checker_catches_each_problem(fixture, env_args, level, code):
    violations = conformance.check_env(f"{LINE}:{fixture}", env_args, episodes=2)
    assert code in codes(violations, level), violations
    found = next(v for v in violations if v.code == code)
    assert found.fix and found.message


@pytest.mark.parametrize("env_args, level, code", [
    ({"auto_reset": True, "declare_auto_reset": False}, "error", "undeclared-auto-reset"),
    ({"late": 1}, "warning", "late-end"),
    ({}, "info", "read-only-arrays"),
])
def test_checker_on_a_batched_env(env_args, level, code):
    violations = conformance.check_env(BATCHED_LINE, env_args, episodes=2)
    assert code in codes(violations, level), violations


def test_checker_cli_exit_codes_and_output(capsys):
    assert conformance.main([f"{LINE}:LineWorld", "size=4", "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "OK: 0 error(s), 0 warning(s), 0 note(s)" in out
    assert conformance.main([f"{LINE}:UndeclaredAutoResetLineWorld", "env_args.size=3", "--n-envs", "1"]) == 1
    out = capsys.readouterr().out
    assert "ERROR   [undeclared-auto-reset]" in out and "Fix: " in out and "FAILED: 1 error(s)" in out
    assert conformance.main([f"{LINE}:LineWorld", "size"]) == 2  # not key=value
    assert "expected key=value, got 'size'" in capsys.readouterr().out
    assert conformance.main([]) == 2
    assert conformance.main([f"{LINE}:LineWorld", "--episodes", "0"]) == 2


def test_checker_cli_parses_values_as_yaml(monkeypatch):
    seen = {}

    def fake_check(env, env_args, **kwargs):
        seen.update(env_args)
        return []

    monkeypatch.setattr(conformance, "check_env", fake_check)
    assert conformance.main([f"{LINE}:LineWorld", "size=4", "episode_limit=null", "name=abc", "flag=true"]) == 0
    assert seen == {"size": 4, "episode_limit": None, "name": "abc", "flag": True}


def test_check_env_entry_point():
    from qmixlab.experiment import main

    assert main(["qmixlab", "check-env", f"{LINE}:LineWorld", "size=3", "--episodes", "1"]) == 0
    with pytest.raises(SystemExit) as exit_:
        main(["qmixlab", "check-env", f"{LINE}:UndeclaredAutoResetLineWorld", "--episodes", "1"])
    assert exit_.value.code == 1


def test_example_plugin_passes_the_checker():
    root = TESTS.parent / "examples"
    sys.path.insert(0, str(root))
    try:
        violations = conformance.check_env("plugin_env:CoinGame", {}, episodes=2)
        assert codes(violations, "error") == set() and codes(violations, "warning") == set(), violations
        _, _, batch, _ = rollout("plugin_env:CoinGame", n_envs=2)
        assert batch["filled"].any()
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("plugin_env", None)


def test_wrapper_rng_hooks_restore_every_wrapped_env():
    env = make_batched_env(f"{LINE}:LineWorld", 3, seed=9, size=6)
    state = env.get_rng_state()
    assert isinstance(state, list) and len(state) == 3 and conformance._is_plain(state)
    env.reset()
    first = env.get_obs().copy()
    env.reset()
    assert not np.array_equal(env.get_obs(), first)  # the random starts move on
    env.set_rng_state(state)
    env.reset()
    np.testing.assert_array_equal(env.get_obs(), first)
    assert make_batched_env(f"{LINE}:NoRngHooksLineWorld", 2).get_rng_state() is None
    with pytest.raises(ValueError, match="got random states for 2 environments, expected 3"):
        env.set_rng_state(state[:2])


def test_random_play_draws_every_available_action_and_no_other():
    from qmixlab.envs.random_play import RandomAvailableController

    avail = np.array([[[True, False, True, True], [False, False, False, True]]] * 2000)  # [2000, 2, 4]
    actions = RandomAvailableController(seed=0).select_actions(None, avail, 0).numpy()
    assert actions.shape == (2000, 2) and actions.dtype == np.int64
    counts = np.bincount(actions[:, 0], minlength=4)
    assert counts[1] == 0 and counts[3] + counts[0] + counts[2] == 2000 and counts.min(initial=2000, where=avail[0, 0]) > 600
    assert (actions[:, 1] == 3).all()
