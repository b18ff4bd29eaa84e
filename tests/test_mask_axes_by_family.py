"""Where the masking axes act, per environment family (README, "What each masking axis can act
on"; benchmarks/mask_exposure.py). On RWARE and MPE every episode runs to its time limit, every
action is available and no agent leaves, so on a real batch of those environments every
loss-changing preset except ``timeout_as_terminal`` must give standard's loss and gradients
(``agent_step_normalisation``: the loss scaled by 1/n_agents, the gradients in the same direction,
their size then set by gradient clipping). A cross-family sweep therefore needs only those
variants there; this test is what that rests on."""

import copy

import pytest
import torch

from qmixlab.ablations.sweep import load_preset
from qmixlab.components.action_selectors import EpsilonGreedyActionSelector
from qmixlab.components.mask_options import MaskOptions
from qmixlab.components.schedules import LinearSchedule
from qmixlab.controllers.agent_controller import AgentController
from qmixlab.envs import make_batched_env
from qmixlab.envs.random_play import RandomAvailableController
from qmixlab.learners.q_learner import LearnerOptions, QLearner
from qmixlab.modules.agents import RNNAgent
from qmixlab.modules.mixers import build_mixer
from qmixlab.runners.batch_runner import BatchRunner

PRESETS = ("timeout_as_terminal", "filled_only", "no_padding_mask", "mean_over_all_rows",
           "agent_step_normalisation", "episode_normalisation", "no_target_avail_mask",
           "inf_fill_value", "dead_agents_zeroed", "drop_masked_rows", "no_trimming")


def loss_and_gradients(spec, batch, masks, mixer_name):
    torch.manual_seed(0)
    agent = RNNAgent(spec.obs_shape, spec.n_actions, spec.n_agents, hidden_dim=16)
    mac = AgentController(agent, EpsilonGreedyActionSelector(LinearSchedule(0.0, 0.0, 1)))
    mixer = build_mixer(mixer_name, spec.n_agents, spec.state_shape, mixing_embed_dim=8, hypernet_embed=16)
    learner = QLearner(mac, mixer, spec.n_agents, LearnerOptions(td_lambda=0.6, double_q=True), masks)
    with torch.no_grad():  # a target network unlike the online one
        for p in learner.target_mac.parameters():
            p.add_(0.1 * torch.randn_like(p))
    learner.optimiser = torch.optim.SGD(learner.params, lr=0.0)  # keep the parameters
    stats = learner.train(copy.deepcopy(batch), t_env=0, episode_num=0)
    return stats["loss"], [p.grad.clone() for p in learner.params if p.grad is not None]


@pytest.mark.parametrize("backend, args", [
    ("rware", {"key": "rware-tiny-2ag-v2", "time_limit": 12}),
    ("mpe", {"task": "simple_spread_v3", "max_cycles": 10}),
])
@pytest.mark.parametrize("mixer_name", ["qmix", "vdn"])
def test_only_time_outs_change_the_loss_where_episodes_run_to_the_limit(backend, args, mixer_name):
    env = make_batched_env(backend, 4, seed=0, **args)
    spec = env.get_spec()
    batch, stats = BatchRunner(env, RandomAvailableController()).run()
    assert (stats.timeouts == 1).all() and batch["avail_actions"].all()
    standard_loss, standard_grads = loss_and_gradients(spec, batch, MaskOptions(), mixer_name)
    assert standard_loss > 0
    for name in PRESETS:
        masks = MaskOptions(**load_preset(name)[0]["masks"])
        loss, grads = loss_and_gradients(spec, batch, masks, mixer_name)
        if name == "timeout_as_terminal":
            assert loss != pytest.approx(standard_loss, rel=1e-3), name
            continue
        if name == "agent_step_normalisation":
            # The loss scaled by 1/n_agents; the gradients too, then clipped to the same norm
            # bound (grad_norm_clip), so they keep standard's direction but not its scale.
            assert loss == pytest.approx(standard_loss / spec.n_agents, rel=1e-5), name
            flat, flat_standard = torch.cat([g.ravel() for g in grads]), torch.cat([g.ravel() for g in standard_grads])
            assert torch.nn.functional.cosine_similarity(flat, flat_standard, dim=0) == pytest.approx(1.0, abs=1e-6)
            continue
        assert loss == pytest.approx(standard_loss, rel=1e-5), name
        for g, g_standard in zip(grads, standard_grads):
            torch.testing.assert_close(g, g_standard, rtol=1e-4, atol=1e-7, msg=name)
