"""A check shared by the adapter tests: VectorisedEnvs' fast path against its general path."""

import numpy as np


def assert_fast_path_plays_the_checked_path(make, steps=300):
    """Two copies of one batched environment, the same seed and actions: VectorisedEnvs' fast
    path (``step_checked``) against its general path (``step``, the arrays re-checked, the
    time-out rule applied): identical steps, arrays and counters, episode ends included."""
    fast, slow = make(), make()
    assert fast._checked_steps is not None
    slow._checked_steps = None  # the general path
    for env in (fast, slow):
        env.reset()
    rng = np.random.default_rng(0)
    ends = {"terminated": 0, "truncated": 0}
    for _ in range(steps):
        actions = (rng.random(fast.get_avail_actions().shape) + fast.get_avail_actions()).argmax(-1)
        a, b = fast.step(actions), slow.step(actions)
        for name in ("reward", "terminated", "truncated", "battle_won", "dead_allies", "dead_enemies"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert a.flags.keys() == b.flags.keys()
        for key in a.flags:
            np.testing.assert_array_equal(a.flags[key], b.flags[key], err_msg=key)
        for getter in ("get_obs", "get_state", "get_avail_actions", "get_alive_agents"):
            x, y = getattr(fast, getter)(), getattr(slow, getter)()
            assert x.dtype == y.dtype, getter
            np.testing.assert_array_equal(x, y, err_msg=getter)
        np.testing.assert_array_equal(fast.episode_steps, slow.episode_steps)
        ended = a.terminated | a.truncated
        ends["terminated"] += int(a.terminated.sum())
        ends["truncated"] += int(a.truncated.sum())
        if ended.any():
            for env in (fast, slow):
                env.reset(np.flatnonzero(ended))
    assert [e.get_stats() for e in fast.envs] == [e.get_stats() for e in slow.envs]
    return ends

