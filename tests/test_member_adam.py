"""MemberAdam against separate torch Adams, one per member: the same trajectory when all members
train, each member by its own step count when the counts differ (a group resumed from members'
checkpoints of different iterations), and inactive members left untouched."""

import pytest
import torch

from qmixlab.learners.member_adam import MemberAdam

K, SHAPE = 3, (4, 5)


def stacked_and_separate(seed=0):
    torch.manual_seed(seed)
    weights = torch.randn(K, *SHAPE)
    stacked = torch.nn.Parameter(weights.clone())
    separate = [torch.nn.Parameter(weights[k].clone()) for k in range(K)]
    return stacked, separate


def gradients(step):
    return torch.randn(K, *SHAPE, generator=torch.Generator().manual_seed(100 + step))


def step_both(stacked, member_adam, separate, adams, steps):
    """The same gradients into the stacked MemberAdam and each member's torch Adam; then every
    member's weights must agree with its own Adam's."""
    for step in steps:
        grad = gradients(step)
        stacked.grad = grad.clone()
        member_adam.step()
        for k, (p, adam) in enumerate(zip(separate, adams)):
            p.grad = grad[k].clone()
            adam.step()
    for k in range(K):
        torch.testing.assert_close(stacked.detach()[k], separate[k].detach(), rtol=1e-6, atol=1e-7)


def test_with_every_member_training_each_member_follows_its_own_torch_adam():
    stacked, separate = stacked_and_separate()
    member_adam = MemberAdam([stacked], K, lr=0.01, eps=1e-5)
    adams = [torch.optim.Adam([p], lr=0.01, eps=1e-5) for p in separate]
    step_both(stacked, member_adam, separate, adams, range(30))
    for k in range(K):
        assert member_adam.state[stacked]["step"][k] == adams[k].state[separate[k]]["step"] == 30


def test_members_with_different_step_counts_each_correct_by_their_own():
    """Member k starts from a torch Adam state after k+1 steps; a shared count would give the
    others the wrong bias correction."""
    stacked, separate = stacked_and_separate(1)
    adams = [torch.optim.Adam([p], lr=0.01) for p in separate]
    for k, (p, adam) in enumerate(zip(separate, adams)):
        for step in range(k + 1):
            p.grad = gradients(step)[k].clone()
            adam.step()
    with torch.no_grad():
        stacked.copy_(torch.stack([p.detach() for p in separate]))
    member_adam = MemberAdam([stacked], K, lr=0.01)
    member_adam.state[stacked] = {
        "step": torch.tensor([float(k + 1) for k in range(K)]),
        "exp_avg": torch.stack([adams[k].state[separate[k]]["exp_avg"] for k in range(K)]),
        "exp_avg_sq": torch.stack([adams[k].state[separate[k]]["exp_avg_sq"] for k in range(K)]),
    }
    step_both(stacked, member_adam, separate, adams, range(10, 15))


def test_an_inactive_member_keeps_its_weights_moments_and_count():
    stacked, _ = stacked_and_separate(2)
    member_adam = MemberAdam([stacked], K, lr=0.01)
    stacked.grad = gradients(0)
    member_adam.step()
    before = {name: value.clone() for name, value in member_adam.state[stacked].items()}
    weights = stacked.detach().clone()
    stacked.grad = gradients(1)
    member_adam.step(active=torch.tensor([True, False, True]))
    after = member_adam.state[stacked]
    assert after["step"].tolist() == [2.0, 1.0, 2.0]
    for name in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(after[name][1], before[name][1])
        assert not torch.equal(after[name][0], before[name][0])
    assert torch.equal(stacked.detach()[1], weights[1]) and not torch.equal(stacked.detach()[0], weights[0])


def test_parameters_without_the_member_dimension_are_refused():
    with pytest.raises(ValueError, match="leading member dimension of 3, got shape \\(4, 5\\)"):
        MemberAdam([torch.nn.Parameter(torch.zeros(4, 5))], 3)


def test_member_slices_of_the_state_are_one_member_adam_states_and_load_back_into_their_entry():
    from qmixlab.learners.q_learner import _load_member_optimiser_state, _member_optimiser_state

    stacked, separate = stacked_and_separate(3)
    member_adam = MemberAdam([stacked], K, lr=0.01)
    adams = [torch.optim.Adam([p], lr=0.01) for p in separate]
    for k, (p, adam) in enumerate(zip(separate, adams)):  # member k: 2k+1 steps
        for step in range(2 * k + 1):
            p.grad = gradients(step)[k].clone()
            adam.step()
    for k, adam in enumerate(adams):
        merged = _load_member_optimiser_state(member_adam.state_dict(), adam.state_dict(), k, K,
                                              per_member_steps=True)
        member_adam.load_state_dict(merged)
    assert member_adam.state[stacked]["step"].tolist() == [1.0, 3.0, 5.0]
    for k, adam in enumerate(adams):
        own = adam.state_dict()["state"][0]
        sliced = _member_optimiser_state(member_adam.state_dict(), k, K)["state"][0]
        assert sliced["step"].dim() == 0 and sliced["step"] == own["step"]
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(sliced[name], own[name])
