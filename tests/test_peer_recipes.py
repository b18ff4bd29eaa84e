"""The peers' presets reproduce the peers' updates exactly.

``QLearner`` configured from ``config/algs/qmix_pymarl2.yaml`` (``qmix_pymarl.yaml``) is run side
by side with pymarl2's NQLearner update (PyMARL's QLearner update) written out here by hand, the
way those projects compute it: a Linear over the concatenated one-hot input, a GRUCell stepped
over time, hypernetworks applied with matrix products, their target recursion and loss, their
optimiser, clipping and target-update rule. Same batches, same initial weights (target networks
included): the losses and the parameters after every step must agree to float64 rounding.

Sources read (facts only):
* pymarl2, github.com/hijkzzz/pymarl2 at 8ccac7c5aa134422a2e3009be735d23cdf8ce2f8:
  src/learners/nq_learner.py, src/utils/rl_utils.py (build_td_lambda_targets),
  src/modules/mixers/nmix.py, src/modules/agents/n_rnn_agent.py, src/config/algs/qmix.yaml,
  src/config/default.yaml, src/run/run.py (batches cut to max_t_filled before training).
* PyMARL, github.com/oxwhirl/pymarl at c971afdceb34635d31b778021b0ef90d7af51e86:
  src/learners/q_learner.py, src/modules/mixers/qmix.py, src/config/algs/qmix.yaml,
  src/config/default.yaml.

Time-outs: both projects' runners store a time-out as terminated unless the environment reports
``episode_limit`` in its info, which SMAC does only with ``continuing_episode=True``. qmixlab keeps
the flags apart. The presets keep qmixlab's ``masks.timeout=bootstrap``, which is the peers'
update on a batch whose time-outs were reported (tested with time-outs at the episode limit, as
in SMAC); ``masks.timeout=terminal`` is the peers' update on SMAC's default flags (tested too).
"""

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qmixlab.components.episode_batch import EpisodeBatch
from qmixlab.components.mask_options import MaskOptions
from qmixlab.controllers.agent_controller import AgentController
from qmixlab.learners.options import LearnerOptions
from qmixlab.learners.q_learner import QLearner
from qmixlab.modules.agents import RNNAgent
from qmixlab.modules.mixers import QMixer
from qmixlab.settings import compose_config

N, A, D, S, H = 3, 5, 6, 7, 8  # agents, actions, obs, state, agent hidden units
EMBED, HYPER_EMBED = 4, 6  # small QMIX networks; hypernet_layers comes from the preset
LIMIT = 10  # episode limit: episodes have at most LIMIT actions, batches LIMIT + 1 rows


def preset(alg):
    """LearnerOptions, MaskOptions and mixer section of ``config/algs/<alg>.yaml`` over the
    defaults, read from the YAML files (the same files the command line reads)."""
    config = compose_config(alg, "smacsim")
    return LearnerOptions(**config["learner"]), MaskOptions(**config["masks"]), config["mixer"]


# --------------------------------------------------------------------------- batches
def build_batch(episodes, seed):
    """episodes: (number of actions, "terminal" | "timeout", {agent: first dead step}).
    Returns the float64 EpisodeBatch and the peers' ``terminated`` flags for both readings of a
    time-out: reported (not terminal) and SMAC's default (terminal)."""
    rng = np.random.default_rng(seed)
    scheme = {
        "state": {"vshape": (S,), "dtype": torch.float64},
        "obs": {"vshape": (D,), "group": "agents", "dtype": torch.float64},
        "actions": {"vshape": (1,), "group": "agents", "dtype": torch.long},
        "avail_actions": {"vshape": (A,), "group": "agents", "dtype": torch.bool},
        "reward": {"vshape": (1,), "dtype": torch.float64},
        "terminated": {"vshape": (1,), "dtype": torch.bool},
        "timeout": {"vshape": (1,), "dtype": torch.bool},
    }
    batch = EpisodeBatch(scheme, {"agents": N}, len(episodes), LIMIT + 1)
    for b, (length, end, dead) in enumerate(episodes):
        rows = length + 1  # the last row holds the final state
        avail = rng.random((rows, N, A)) < 0.6
        avail[..., 0] = False
        avail[:, np.arange(N), rng.integers(1, A, N)] = True
        for agent, first_dead in dead.items():
            avail[first_dead:, agent] = [True] + [False] * (A - 1)  # SMAC: no-op only
        actions = np.array([[rng.choice(np.flatnonzero(a)) for a in row] for row in avail])
        batch.update({"obs": rng.normal(size=(rows, N, D)), "state": rng.normal(size=(rows, S)),
                      "avail_actions": avail, "actions": actions[..., None]}, bs=b, ts=slice(0, rows))
        last, never = np.zeros((length, 1), bool), np.zeros((length, 1), bool)
        last[-1] = True
        batch.update({"reward": rng.normal(size=(length, 1)),
                      "terminated": last if end == "terminal" else never,
                      "timeout": last if end == "timeout" else never}, bs=b, ts=slice(0, length))
    return batch


EPISODES = [(LIMIT, "timeout", {}), (4, "terminal", {}), (7, "terminal", {1: 3}),
            (LIMIT, "timeout", {0: 6}), (1, "terminal", {}), (LIMIT, "terminal", {2: 2})]
# With time-outs read as terminal they may come anywhere.
EPISODES_EARLY_TIMEOUTS = EPISODES[:2] + [(6, "timeout", {1: 2}), (3, "timeout", {})]


# --------------------------------------------------------------------------- the peers' networks
class PeerAgent(nn.Module):
    """PyMARL's RNN agent (pymarl2's n_rnn agent without layer norm): relu(fc1(input)),
    GRUCell, fc2, on the input [obs, one-hot last action, one-hot agent id]."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(D + A + N, H)
        self.rnn = nn.GRUCell(H, H)
        self.fc2 = nn.Linear(H, A)

    def forward(self, batch):
        """Q-values [B, T, N, A], stepping through time as the peers' controllers do."""
        obs, actions = batch["obs"], batch["actions"]
        B, T = obs.shape[:2]
        hidden = obs.new_zeros(B * N, H)
        agent_id = torch.eye(N, dtype=obs.dtype).expand(B, N, N)
        out = []
        for t in range(T):
            if t == 0:
                last_action = obs.new_zeros(B, N, A)
            else:
                last_action = F.one_hot(actions[:, t - 1, :, 0], A).to(obs.dtype)
            inputs = torch.cat([obs[:, t], last_action, agent_id], dim=-1).reshape(B * N, -1)
            hidden = self.rnn(F.relu(self.fc1(inputs)), hidden)
            out.append(self.fc2(hidden).view(B, N, A))
        return torch.stack(out, dim=1)


class PeerMixer(nn.Module):
    """QMIX as PyMARL's QMixer / pymarl2's nmix Mixer compute it: per row, elu(q @ |W1| + b1)
    @ |W2| + V with batched matrix products."""

    def __init__(self, ours: QMixer):
        super().__init__()
        self.hyper_w1 = copy.deepcopy(ours.hyper_w_1)
        self.hyper_b1 = copy.deepcopy(ours.hyper_b_1)
        self.hyper_w2 = copy.deepcopy(ours.hyper_w_final)
        self.hyper_b2 = copy.deepcopy(ours.V)

    def forward(self, qs, states):
        B, T, _ = qs.shape
        states = states.reshape(B * T, S)
        w1 = self.hyper_w1(states).abs().view(-1, N, EMBED)
        b1 = self.hyper_b1(states).view(-1, 1, EMBED)
        w2 = self.hyper_w2(states).abs().view(-1, EMBED, 1)
        b2 = self.hyper_b2(states).view(-1, 1, 1)
        hidden = F.elu(torch.bmm(qs.reshape(B * T, 1, N), w1) + b1)
        return (torch.bmm(hidden, w2) + b2).view(B, T, 1)


def peer_layout(agent: RNNAgent, mixer: QMixer):
    """Our parameters in the peers' layout (fc1 as one Linear over the concatenated input)."""
    fc1_weight, fc1_bias = agent.concatenated_input_layer()
    gru = agent.rnn
    return [fc1_weight, fc1_bias, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0,
            agent.fc2.weight, agent.fc2.bias] + [p for p in mixer.parameters()]


def peer_parameters(agent: PeerAgent, mixer: PeerMixer):
    return list(agent.parameters()) + [p for m in (mixer.hyper_w1, mixer.hyper_b1, mixer.hyper_w2, mixer.hyper_b2)
                                       for p in m.parameters()]


@torch.no_grad()
def copy_weights(agent: RNNAgent, mixer: QMixer, peer_agent: PeerAgent, peer_mixer: PeerMixer):
    for mine, theirs in zip(peer_layout(agent, mixer), peer_parameters(peer_agent, peer_mixer)):
        theirs.copy_(mine)


# --------------------------------------------------------------------------- the peers' updates
def peer_trim(batch, terminated):
    """The peers' run loop cuts a sample to its longest filled episode."""
    T = batch.max_t_filled()
    fields = {k: batch[k][:, :T] for k in ("obs", "state", "actions", "avail_actions", "reward", "filled")}
    fields["terminated"] = terminated[:, :T].to(torch.float64)
    return fields


def peer_mask(batch):
    """filled, minus the row after a terminated transition."""
    terminated = batch["terminated"][:, :-1]
    mask = batch["filled"][:, :-1].to(torch.float64)
    mask[:, 1:] = mask[:, 1:] * (1 - terminated[:, :-1])
    return mask


def peer_double_q_values(peer, batch):
    """Online Q-values, and the target network's value of the online greedy available action
    at every row (avail-masked online values; target values as they are)."""
    agent_qs = peer.agent(batch)
    with torch.no_grad():
        target_qs = peer.target_agent(batch)
        online = agent_qs.detach().clone()
        online[~batch["avail_actions"]] = -9999999
        greedy = online.argmax(dim=3, keepdim=True)
        target_values = target_qs.gather(3, greedy).squeeze(3)
    return agent_qs, target_values


def pymarl2_td_lambda_targets(rewards, terminated, mask, target_values, gamma, td_lambda):
    """pymarl2's backward recursion over rows: the last row's return is its value unless the
    episode terminated; every earlier return is lambda * gamma * (next return) plus, on masked-in
    transitions, r + (1 - lambda) * gamma * (next value) * (1 - terminated)."""
    returns = torch.zeros_like(target_values)
    returns[:, -1] = target_values[:, -1] * (1 - terminated.sum(dim=1))
    for t in range(returns.shape[1] - 2, -1, -1):
        returns[:, t] = td_lambda * gamma * returns[:, t + 1] + mask[:, t] * (
            rewards[:, t] + (1 - td_lambda) * gamma * target_values[:, t + 1] * (1 - terminated[:, t]))
    return returns[:, :-1]


def pymarl2_loss(peer, batch, options):
    mask = peer_mask(batch)
    agent_qs, target_values = peer_double_q_values(peer, batch)
    chosen = agent_qs[:, :-1].gather(3, batch["actions"][:, :-1]).squeeze(3)
    with torch.no_grad():
        mixed_targets = peer.target_mixer(target_values, batch["state"])  # every row, row 0 included
        targets = pymarl2_td_lambda_targets(batch["reward"][:, :-1], batch["terminated"][:, :-1], mask,
                                            mixed_targets, options.gamma, options.td_lambda)
    td = peer.mixer(chosen, batch["state"][:, :-1]) - targets
    return (0.5 * td ** 2 * mask).sum() / mask.sum()


def pymarl_loss(peer, batch, options):
    """PyMARL's QLearner: one-step double-Q targets, avail-masked target values."""
    mask = peer_mask(batch)
    agent_qs = peer.agent(batch)
    chosen = agent_qs[:, :-1].gather(3, batch["actions"][:, :-1]).squeeze(3)
    with torch.no_grad():
        target_qs = peer.target_agent(batch)[:, 1:]
        target_qs[~batch["avail_actions"][:, 1:]] = -9999999
        online = agent_qs.detach().clone()
        online[~batch["avail_actions"]] = -9999999
        greedy = online[:, 1:].argmax(dim=3, keepdim=True)
        next_values = peer.target_mixer(target_qs.gather(3, greedy).squeeze(3), batch["state"][:, 1:])
        terminated = batch["terminated"][:, :-1]
        targets = batch["reward"][:, :-1] + options.gamma * (1 - terminated) * next_values
    td = (peer.mixer(chosen, batch["state"][:, :-1]) - targets) * mask
    return (td ** 2).sum() / mask.sum()


class PeerLearner:
    """The peers' learner state: networks, target copies, optimiser, last target update."""

    def __init__(self, learner: QLearner, optimiser, loss_fn, interval_episodes, grad_norm_clip):
        ours_agent, ours_mixer = learner.mac.agent, learner.mixer
        self.agent, self.mixer = PeerAgent().double(), PeerMixer(ours_mixer)
        self.target_agent, self.target_mixer = PeerAgent().double(), PeerMixer(ours_mixer)
        copy_weights(ours_agent, ours_mixer, self.agent, self.mixer)
        copy_weights(learner.target_mac.agent, learner.target_mixer, self.target_agent, self.target_mixer)
        self.params = peer_parameters(self.agent, self.mixer)
        self.optimiser = optimiser(self.params)
        self.loss_fn, self.interval, self.clip = loss_fn, interval_episodes, grad_norm_clip
        self.last_target_update_episode = 0

    def train(self, batch, options, episode_num):
        loss = self.loss_fn(self, batch, options)
        self.optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimiser.step()
        if (episode_num - self.last_target_update_episode) / self.interval >= 1.0:
            self.target_agent.load_state_dict(self.agent.state_dict())
            self.target_mixer.load_state_dict(self.mixer.state_dict())
            self.last_target_update_episode = episode_num
        return loss.item()


def make_learners(alg, masks_overrides, peer_optimiser, peer_loss, learner_overrides=None):
    """Our learner from the preset (with ``learner_overrides``, to show the test can fail) and
    the peer's, on the same initial weights."""
    options, masks, mixer_section = preset(alg)
    masks = dataclasses.replace(masks, **masks_overrides)
    torch.manual_seed(0)
    agent = RNNAgent(D, A, N, hidden_dim=H).double()
    mixer = QMixer(N, S, mixing_embed_dim=EMBED, hypernet_layers=mixer_section["hypernet_layers"],
                   hypernet_embed=HYPER_EMBED).double()
    ours = dataclasses.replace(options, **(learner_overrides or {}))
    learner = QLearner(AgentController(agent, None), mixer, N, ours, masks)
    with torch.no_grad():  # target networks that differ from the online ones
        for p in list(learner.target_mac.parameters()) + list(learner.target_mixer.parameters()):
            p.add_(0.3 * torch.randn_like(p))
    peer = PeerLearner(learner, peer_optimiser(options), peer_loss, options.target_update_interval_episodes,
                       options.grad_norm_clip)
    return options, learner, peer


def assert_same_parameters(learner, peer):
    ours = peer_layout(learner.mac.agent, learner.mixer) + peer_layout(learner.target_mac.agent,
                                                                       learner.target_mixer)
    theirs = peer_parameters(peer.agent, peer.mixer) + peer_parameters(peer.target_agent, peer.target_mixer)
    for mine, expected in zip(ours, theirs):
        torch.testing.assert_close(mine.detach(), expected.detach(), rtol=1e-9, atol=1e-12)


def run_side_by_side(alg, masks_overrides, episodes, timeout_is_terminal, peer_optimiser, peer_loss):
    options, learner, peer = make_learners(alg, masks_overrides, peer_optimiser, peer_loss)
    assert_same_parameters(learner, peer)
    # Episode counts as the run loop passes them: the target networks are copied once, at 256.
    for step, episode_num in enumerate([8, 136, 256, 384]):
        batch = build_batch(episodes, seed=step)
        terminated = batch["terminated"] | batch["timeout"] if timeout_is_terminal else batch["terminated"]
        expected_loss = peer.train(peer_trim(batch, terminated), options, episode_num)
        loss = learner.train(batch, episode_num=episode_num)["loss"]
        assert loss == pytest.approx(expected_loss, rel=1e-10), step
        assert_same_parameters(learner, peer)
    assert learner.last_target_update_episode == peer.last_target_update_episode == 256
    return learner


def pymarl2_adam(options):
    return lambda params: torch.optim.Adam(params, lr=options.lr)  # torch's default eps, 1e-8


def pymarl_rmsprop(options):
    return lambda params: torch.optim.RMSprop(params, lr=options.lr, alpha=options.optim_alpha,
                                              eps=options.optim_eps)


def test_pymarl2_preset_holds_pymarl2_hyper_parameters():
    options, masks, mixer = preset("qmix_pymarl2")
    assert (options.optimiser, options.lr, options.optim_eps) == ("adam", 0.001, 1e-8)
    assert (options.td_loss_scale, options.grad_norm_clip, options.td_lambda) == (0.5, 10.0, 0.6)
    assert options.double_q and options.gamma == 0.99 and options.target_update == "hard"
    assert options.target_update_interval_episodes == 200 and not options.standardise_rewards
    assert (mixer["name"], mixer["mixing_embed_dim"], mixer["hypernet_layers"], mixer["hypernet_embed"]) == (
        "qmix", 32, 2, 64)
    assert masks == MaskOptions()  # the standard mask: PyMARL's, with time-outs kept apart


@pytest.mark.parametrize("timeout", ["bootstrap", "terminal"])
def test_qmix_pymarl2_preset_reproduces_pymarl2_update(timeout):
    terminal = timeout == "terminal"
    run_side_by_side("qmix_pymarl2", {"timeout": timeout}, EPISODES_EARLY_TIMEOUTS if terminal else EPISODES,
                     terminal, pymarl2_adam, pymarl2_loss)


@pytest.mark.parametrize("timeout", ["bootstrap", "terminal"])
def test_qmix_pymarl_preset_reproduces_pymarl_update(timeout):
    terminal = timeout == "terminal"
    run_side_by_side("qmix_pymarl", {"timeout": timeout}, EPISODES_EARLY_TIMEOUTS if terminal else EPISODES,
                     terminal, pymarl_rmsprop, pymarl_loss)


def test_the_comparison_detects_pymarl2_differences():
    """One step with what the preset used to be (loss scale 1, Adam eps 1e-5) does not pass:
    the comparison is sensitive to each of them."""
    batch = build_batch(EPISODES, seed=0)
    for overrides in ({"td_loss_scale": 1.0}, {"optim_eps": 1e-5}):
        options, learner, peer = make_learners("qmix_pymarl2", {}, pymarl2_adam, pymarl2_loss, overrides)
        peer.train(peer_trim(batch, batch["terminated"]), options, 8)
        learner.train(copy.deepcopy(batch), episode_num=8)
        with pytest.raises(AssertionError):
            assert_same_parameters(learner, peer)
