"""Mask rules and TD targets against hand-built cases and slow references."""

import math

import pytest
import torch

from qmixlab.components import masks
from qmixlab.components.masks import MaskOptions
from qmixlab.learners.targets import lambda_returns
from qmixlab.settings import ConfigError, parse_section


def column(values, dtype=torch.bool):
    """One episode's per-step flags as a [1, T, 1] tensor."""
    return torch.tensor(values, dtype=dtype).view(1, -1, 1)


def test_worked_example_from_masking_spec():
    filled = column([1, 1, 1, 1, 1, 0, 0])
    terminated = column([0, 0, 0, 1, 0, 0, 0])
    cuts, ends = masks.episode_end_flags(terminated, None, MaskOptions())
    mask = masks.build_step_mask(filled, ends, None, MaskOptions())
    assert mask.view(-1).tolist() == [True, True, True, True, False, False]


def test_filled_only_keeps_the_post_terminal_row():
    filled = column([1, 1, 1, 1, 1, 0, 0])
    terminated = column([0, 0, 0, 1, 0, 0, 0])
    options = MaskOptions(post_terminal_shift=False)
    _, ends = masks.episode_end_flags(terminated, None, options)
    mask = masks.build_step_mask(filled, ends, None, options)
    assert mask.view(-1).tolist() == [True, True, True, True, True, False]


def test_no_padding_mask_counts_padding_but_still_shifts():
    filled = column([1, 1, 1, 1, 1, 0, 0])
    terminated = column([0, 0, 0, 1, 0, 0, 0])
    options = MaskOptions(mask_padding=False)
    _, ends = masks.episode_end_flags(terminated, None, options)
    mask = masks.build_step_mask(filled, ends, None, options)
    assert mask.view(-1).tolist() == [True, True, True, True, False, True]


@pytest.mark.parametrize("mode", ["bootstrap", "terminal"])
def test_early_timeout_masks_the_row_after_it(mode):
    # Truncated after 3 actions in a buffer of 7 rows: row 3 holds the final state.
    filled = column([1, 1, 1, 1, 0, 0, 0])
    terminated = column([0, 0, 0, 0, 0, 0, 0])
    timeout = column([0, 0, 1, 0, 0, 0, 0])
    options = MaskOptions(timeout=mode)
    cuts, ends = masks.episode_end_flags(terminated, timeout, options)
    mask = masks.build_step_mask(filled, ends, None, options)
    assert mask.view(-1).tolist() == [True, True, True, False, False, False]
    assert cuts.view(-1).tolist()[2] is (mode == "terminal")
    assert ends.view(-1).tolist()[2] is True


def test_invalid_steps_are_masked_or_ignored():
    filled = column([1, 1, 1, 1, 1, 0])
    terminated = column([0, 0, 0, 1, 0, 0])
    invalid = column([0, 1, 0, 0, 0, 0])
    for mode, expected in [("mask", [1, 0, 1, 1, 0]), ("ignore", [1, 1, 1, 1, 0])]:
        options = MaskOptions(invalid_steps=mode)
        _, ends = masks.episode_end_flags(terminated, None, options)
        mask = masks.build_step_mask(filled, ends, invalid, options)
        assert mask.view(-1).int().tolist() == expected


def test_dead_agent_fallback_uses_noop_only():
    avail = torch.tensor(
        [[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=torch.bool
    )  # dead, alive (noop + stop is never SMAC, still "not noop only"), alive, nothing available
    assert masks.alive_from_noop_rule(avail).tolist() == [False, True, True, True]


def episode_batch(avail, alive=None):
    """Two filled rows of one episode with 2 agents and 3 actions; ``alive`` [T, 2] or None."""
    from qmixlab.components.episode_batch import EpisodeBatch

    scheme = {"avail_actions": {"vshape": (3,), "group": "agents", "dtype": torch.bool},
              "terminated": {"vshape": (1,), "dtype": torch.bool}}
    if alive is not None:
        scheme["alive"] = {"vshape": (1,), "group": "agents", "dtype": torch.bool}
    batch = EpisodeBatch(scheme, {"agents": 2}, 1, avail.shape[0])
    data = {"avail_actions": avail, "terminated": torch.zeros(avail.shape[0], 1, dtype=torch.bool)}
    if alive is not None:
        data["alive"] = alive.unsqueeze(-1)
    batch.update(data, bs=0)
    return batch


def test_alive_field_wins_over_the_noop_rule():
    noop_only, free = [True, False, False], [False, True, True]
    avail = torch.tensor([[noop_only, free], [free, noop_only]])  # rule: agent 0 dead, then agent 1
    rule = masks.build_transition_masks(episode_batch(avail), MaskOptions()).alive
    assert rule.tolist() == [[[False, True], [True, False]]]
    declared = torch.tensor([[True, True], [False, True]])  # the environment says otherwise
    field = masks.build_transition_masks(episode_batch(avail, declared), MaskOptions()).alive
    assert field.tolist() == [declared.tolist()]
    step = torch.ones(1, 1, 1, dtype=torch.bool)
    agent_mask = masks.build_agent_mask(step, field[:, :-1], MaskOptions(dead_agents="agent_loss_mask"))
    assert agent_mask.tolist() == [[[True, True]]]
    assert masks.build_agent_mask(step, rule[:, :-1], MaskOptions(dead_agents="agent_loss_mask")).tolist() == [
        [[False, True]]]
    assert masks.build_agent_mask(step, rule[:, :-1], MaskOptions()).tolist() == [[[True, True]]]


def test_option_modules_import_without_torch():
    import subprocess
    import sys

    code = ("import sys, qmixlab.components.mask_options, qmixlab.learners.options; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_rows_needed_excludes_post_terminal_but_keeps_timeout_bootstrap_row():
    filled = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool).unsqueeze(-1)
    terminated = torch.tensor([[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool).unsqueeze(-1)
    timeout = torch.tensor([[0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]], dtype=torch.bool).unsqueeze(-1)
    options = MaskOptions()
    cuts, ends = masks.episode_end_flags(terminated, timeout, options)
    mask = masks.build_step_mask(filled, ends, None, options)
    read = masks.transitions_read_by_targets(mask, cuts[:, :-1], ends[:, :-1], 0.0)
    needed = masks.rows_needed_by_networks(mask, read, cuts[:, :-1], 6).squeeze(-1).int().tolist()
    assert needed[0] == [1, 1, 1, 0, 0, 0]  # terminal: the final-state row is never read
    assert needed[1] == [1, 1, 1, 1, 0, 0]  # time-out bootstraps from the final-state row


@pytest.mark.parametrize("td_lambda", [0.0, 0.6])
@pytest.mark.parametrize("post_terminal_shift", [True, False])
def test_transitions_read_by_targets_follow_the_lambda_recursion(td_lambda, post_terminal_shift):
    """Against the recursion written out: transition t's target reads t + 1's unless t ends the
    episode or cuts the bootstrap (lambda > 0 only)."""
    g = torch.Generator().manual_seed(3)
    B, T = 6, 9
    filled = torch.zeros(B, T + 1, 1, dtype=torch.bool)
    terminated = torch.zeros(B, T + 1, 1, dtype=torch.bool)
    timeout = torch.zeros(B, T + 1, 1, dtype=torch.bool)
    for b in range(B):
        length = int(torch.randint(1, T, (1,), generator=g))
        filled[b, : length + 1] = True
        (terminated if b % 2 else timeout)[b, length - 1] = True
    options = MaskOptions(post_terminal_shift=post_terminal_shift)
    cuts, ends = masks.episode_end_flags(terminated, timeout, options)
    mask = masks.build_step_mask(filled, ends, None, options)
    read = masks.transitions_read_by_targets(mask, cuts[:, :-1], ends[:, :-1], td_lambda)
    for b in range(B):
        expected, reading = [], False
        for t in range(T):
            reading = bool(mask[b, t]) or reading
            expected.append(reading)
            if td_lambda == 0.0 or cuts[b, t] or ends[b, t]:
                reading = False
        assert read[b, :, 0].tolist() == expected, (b, td_lambda, post_terminal_shift)
    if not post_terminal_shift and td_lambda > 0:  # the post-terminal transition chains into padding
        assert bool(read[:, -1].any())


def test_options_reject_bad_values_with_names():
    with pytest.raises(ValueError, match="normalisation='per_row'"):
        MaskOptions(normalisation="per_row")
    with pytest.raises(ConfigError, match="did you mean 'masks.post_terminal_shift'"):
        parse_section(MaskOptions, {"post_termnal_shift": False}, "masks.")
    with pytest.raises(TypeError, match="avail_fill_value"):
        MaskOptions(avail_fill_value=[1])
    assert MaskOptions(avail_fill_value="-inf").fill_value(torch.float32) == -math.inf
    assert MaskOptions(avail_fill_value="finfo_min").fill_value(torch.float32) == torch.finfo(torch.float32).min


def test_masked_mean_and_standardisation_ignore_masked_rows():
    values = torch.tensor([[1.0, 3.0, float("nan"), 1000.0]]).view(1, 4, 1)
    mask = column([1, 1, 0, 0])
    assert masks.masked_mean(values, mask).item() == pytest.approx(2.0)
    standard = masks.standardise_over_valid(values, mask).view(-1)
    assert standard[:2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-6)
    assert standard[2:].tolist() == [0.0, 0.0]
    assert masks.masked_mean(values, column([0, 0, 0, 0])).item() == 0.0


# --------------------------------------------------------------------------- loss reduction
def slow_reduction(td, element_mask, step_mask, normalisation, n_agents):
    B, T, K = td.shape
    total, elements, steps = 0.0, 0, 0
    per_episode = []
    for b in range(B):
        ep_total, ep_steps = 0.0, 0
        for t in range(T):
            if step_mask[b, t, 0]:
                steps += 1
                ep_steps += 1
            for k in range(K):
                if element_mask[b, t, k]:
                    total += float(td[b, t, k]) ** 2
                    ep_total += float(td[b, t, k]) ** 2
                    elements += 1
        if ep_steps:
            per_episode.append(ep_total / ep_steps)
    if normalisation == "valid_steps":
        return total / max(steps, 1)
    if normalisation == "valid_agent_steps":
        return total / max(elements * (n_agents // K), 1)
    if normalisation == "all_rows":
        return total / (B * T * K)
    return sum(per_episode) / max(len(per_episode), 1)


@pytest.mark.parametrize("normalisation", masks.NORMALISATIONS)
@pytest.mark.parametrize("per_agent", [False, True])
def test_reduction_matches_slow_reference_and_keep_equals_drop(normalisation, per_agent):
    torch.manual_seed(0)
    n_agents = 3
    K = n_agents if per_agent else 1
    step_mask = torch.rand(4, 6, 1) > 0.4
    step_mask[3] = False  # an episode with no valid step
    element_mask = step_mask & (torch.rand(4, 6, K) > 0.3) if per_agent else step_mask
    base = torch.randn(4, 6, K, dtype=torch.float64)
    losses, grads = [], []
    for mode in ("keep", "drop"):
        td = base.clone().requires_grad_(True)
        options = MaskOptions(normalisation=normalisation, masked_rows=mode)
        loss = masks.masked_td_loss(td, element_mask, step_mask, options, n_agents)
        loss.backward()
        losses.append(loss.item())
        grads.append(td.grad.clone())
    expected = slow_reduction(base, element_mask, step_mask, normalisation, n_agents)
    assert losses[0] == pytest.approx(expected, rel=1e-10)
    assert losses[1] == pytest.approx(expected, rel=1e-10)
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("mode", ["keep", "drop"])
def test_all_masked_loss_is_finite_zero_and_nan_never_leaks(mode):
    td = torch.full((2, 5, 1), float("nan"), requires_grad=True)
    step_mask = torch.zeros(2, 5, 1, dtype=torch.bool)
    loss = masks.masked_td_loss(td, step_mask, step_mask, MaskOptions(masked_rows=mode), 3)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(td.grad, torch.zeros_like(td))


# --------------------------------------------------------------------------- TD(lambda)
def recursive_lambda_return(rewards, next_values, cuts, ends, gamma, lam, t):
    """Plain per-episode recursion, written the obvious way."""
    last = len(rewards) - 1
    if cuts[t]:
        return rewards[t]
    if ends[t] or t == last:
        return rewards[t] + gamma * next_values[t]
    later = recursive_lambda_return(rewards, next_values, cuts, ends, gamma, lam, t + 1)
    return rewards[t] + gamma * ((1 - lam) * next_values[t] + lam * later)


@pytest.mark.parametrize("lam", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("timeout_mode", ["bootstrap", "terminal"])
def test_lambda_returns_match_recursive_reference(lam, timeout_mode):
    torch.manual_seed(1)
    T, gamma = 8, 0.9
    # episode 0 terminates at t=4, episode 1 times out at t=5, episode 2 runs to the buffer end,
    # episode 3 terminates at t=0.
    terminated = torch.zeros(4, T, 1, dtype=torch.bool)
    timeout = torch.zeros(4, T, 1, dtype=torch.bool)
    terminated[0, 4] = True
    timeout[1, 5] = True
    terminated[3, 0] = True
    cuts, ends = masks.episode_end_flags(terminated, timeout, MaskOptions(timeout=timeout_mode))
    rewards = torch.randn(4, T, 1, dtype=torch.float64)
    next_values = torch.randn(4, T, 1, dtype=torch.float64)
    # Values after an episode's end must not matter, even when they are NaN.
    next_values[0, 5:] = float("nan")
    rewards[0, 5:] = float("nan")
    next_values[1, 6:] = float("nan")
    returns = lambda_returns(rewards, next_values, cuts, ends, gamma, lam)
    for b, end in [(0, 4), (1, 5), (2, T - 1), (3, 0)]:
        r = rewards[b, :, 0].tolist()
        v = next_values[b, :, 0].tolist()
        c = cuts[b, :, 0].tolist()
        e = ends[b, :, 0].tolist()
        for t in range(end + 1):
            expected = recursive_lambda_return(r, v, c, e, gamma, lam, t)
            assert returns[b, t, 0].item() == pytest.approx(expected, rel=1e-12), (b, t)


def test_timeout_bootstraps_and_terminal_does_not():
    rewards = torch.tensor([[1.0, 2.0]]).view(1, 2, 1)
    next_values = torch.tensor([[10.0, 100.0]]).view(1, 2, 1)
    flags = torch.tensor([[0, 1]], dtype=torch.bool).view(1, 2, 1)
    none = torch.zeros_like(flags)
    for timeout_mode, expected_last in [("bootstrap", 2.0 + 0.5 * 100.0), ("terminal", 2.0)]:
        cuts, ends = masks.episode_end_flags(none, flags, MaskOptions(timeout=timeout_mode))
        returns = lambda_returns(rewards, next_values, cuts, ends, 0.5, 0.0)
        assert returns[0, 1, 0].item() == pytest.approx(expected_last)
        assert returns[0, 0, 0].item() == pytest.approx(1.0 + 0.5 * 10.0)
