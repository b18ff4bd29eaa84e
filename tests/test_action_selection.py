"""Epsilon schedule and action selection: availability is never violated."""

import math

import pytest
import torch

from qmixlab.components.action_selectors import (
    ACTION_SELECTORS,
    EpsilonGreedyActionSelector,
    GreedyActionSelector,
)
from qmixlab.components.schedules import LinearSchedule


def reference_greedy(qs, avail):
    """Slow reference: best available action; NaN last, ties to the lowest index."""
    batch, agents, n_actions = qs.shape
    out = torch.zeros(batch, agents, dtype=torch.long)
    for b in range(batch):
        for a in range(agents):
            best, best_key = None, None
            for act in range(n_actions):
                if not avail[b, a, act]:
                    continue
                q = float(qs[b, a, act])
                key = (0, 0.0) if math.isnan(q) else (1, q)
                if best_key is None or key > best_key:
                    best, best_key = act, key
            out[b, a] = best
    return out


def random_case(gen, batch=16, agents=5, n_actions=7, special=True):
    qs = torch.randn(batch, agents, n_actions, generator=gen)
    if special:
        kind = torch.randint(0, 6, (batch, agents, n_actions), generator=gen)
        qs = torch.where(kind == 0, torch.tensor(float("nan")), qs)
        qs = torch.where(kind == 1, torch.tensor(float("inf")), qs)
        qs = torch.where(kind == 2, torch.tensor(-float("inf")), qs)
        qs = torch.where(kind == 3, torch.tensor(0.25), qs)  # many exact ties
    avail = torch.rand(batch, agents, n_actions, generator=gen) < 0.4
    forced = torch.randint(0, n_actions, (batch, agents), generator=gen)
    avail.scatter_(-1, forced.unsqueeze(-1), True)
    return qs, avail


def test_linear_schedule_values_and_validation():
    schedule = LinearSchedule(1.0, 0.05, 50000)
    assert schedule(0) == 1.0
    assert schedule.value(25000) == pytest.approx(0.525)
    assert schedule(50000) == pytest.approx(0.05)
    assert schedule(10**7) == pytest.approx(0.05)
    increasing = LinearSchedule(0.0, 2.0, 10)
    assert [increasing(t) for t in (0, 5, 10, 20)] == [0.0, 1.0, 2.0, 2.0]
    for args in [(1.0, 0.05, 0), (1.0, 0.05, -5), (float("nan"), 0.0, 10), (1.0, 0.0, float("inf"))]:
        with pytest.raises(ValueError):
            LinearSchedule(*args)
    with pytest.raises(ValueError, match="t_env"):
        schedule(-1)


def test_never_picks_an_unavailable_action():
    gen = torch.Generator().manual_seed(0)
    selector = EpsilonGreedyActionSelector(LinearSchedule(1.0, 0.0, 1000))
    for trial in range(300):
        qs, avail = random_case(gen)
        t_env = [0, 500, 1000][trial % 3]  # epsilon 1, 0.5, 0
        chosen = selector.select_actions(qs, avail, t_env, test_mode=trial % 7 == 0, generator=gen)
        assert chosen.dtype == torch.long and chosen.shape == qs.shape[:2]
        assert avail.gather(-1, chosen.unsqueeze(-1)).all(), trial


def test_extreme_q_values():
    avail = torch.tensor([[[False, True, True, False]]])
    cases = {
        "all equal": ([5.0, 5.0, 5.0, 5.0], 1),
        "unavailable is best": ([100.0, 1.0, 2.0, float("inf")], 2),
        "all available NaN": ([1.0, float("nan"), float("nan"), 3.0], 1),
        "all available -inf": ([1.0, -float("inf"), -float("inf"), 3.0], 1),
        "NaN below -inf": ([0.0, float("nan"), -float("inf"), 0.0], 2),
        "+inf wins": ([0.0, 1e30, float("inf"), 0.0], 2),
    }
    for name, (q, expected) in cases.items():
        qs = torch.tensor([[q]])
        assert GreedyActionSelector().select_actions(qs, avail).item() == expected, name


def test_greedy_matches_reference():
    gen = torch.Generator().manual_seed(1)
    selector = EpsilonGreedyActionSelector(LinearSchedule(1.0, 0.05, 100))
    for special in (False, True):
        for _ in range(20):
            qs, avail = random_case(gen, special=special)
            expected = reference_greedy(qs, avail)
            assert torch.equal(selector.select_actions(qs, avail, t_env=0, test_mode=True), expected)
            assert selector.epsilon == 0.0
            assert torch.equal(GreedyActionSelector().select_actions(qs, avail), expected)


def test_exploration_is_uniform_over_available_actions():
    gen = torch.Generator().manual_seed(2)
    avail = torch.tensor([[[True, False, True, True, False, True]]]).expand(4000, 1, 6)
    qs = torch.zeros(4000, 1, 6)
    qs[..., 4] = 10.0  # unavailable best action
    selector = EpsilonGreedyActionSelector(LinearSchedule(1.0, 1.0, 1))
    chosen = selector.select_actions(qs, avail, t_env=0, generator=gen)
    assert selector.epsilon == 1.0
    counts = torch.bincount(chosen.flatten(), minlength=6).float() / 4000
    assert counts[1] == 0 and counts[4] == 0
    assert ((counts[[0, 2, 3, 5]] - 0.25).abs() < 0.03).all(), counts


def test_epsilon_mixture_rate_and_reproducibility():
    schedule = LinearSchedule(1.0, 0.0, 100)
    selector = EpsilonGreedyActionSelector(schedule)
    qs = torch.zeros(20000, 1, 2)
    qs[..., 0] = 1.0
    avail = torch.ones(20000, 1, 2, dtype=torch.bool)
    chosen = selector.select_actions(qs, avail, t_env=60, generator=torch.Generator().manual_seed(3))
    assert selector.epsilon == pytest.approx(0.4)
    # Non-greedy with probability epsilon / 2 (a random pick may be the greedy action).
    assert abs(chosen.float().mean().item() - 0.2) < 0.015
    again = selector.select_actions(qs, avail, t_env=60, generator=torch.Generator().manual_seed(3))
    assert torch.equal(chosen, again)


def test_no_available_action_raises_with_row_and_agent():
    qs = torch.zeros(3, 4, 5)
    avail = torch.ones(3, 4, 5, dtype=torch.bool)
    avail[2, 1] = False
    selector = EpsilonGreedyActionSelector(LinearSchedule(0.5, 0.5, 1))
    with pytest.raises(ValueError, match="batch row 2, agent 1"):
        selector.select_actions(qs, avail, t_env=0)
    with pytest.raises(ValueError, match="shape"):
        selector.select_actions(qs, avail[:, :, :4], t_env=0)


def test_registry():
    assert ACTION_SELECTORS["epsilon_greedy"] is EpsilonGreedyActionSelector
    assert ACTION_SELECTORS["greedy"] is GreedyActionSelector
