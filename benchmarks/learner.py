"""Full training steps (sample, forward, loss, backward, optimiser step) of qmixlab's learner
against a PyMARL-style baseline written here, measured side by side in the same run.

Two kinds of batches, both 32 episodes padded to the episode limit + 1:
  * ``smacsim``: real episodes of smacsim's 3m and 27m_vs_30m (whose shapes are exactly the
    benchmark's: obs 30 / 285, state 48 / 1170, 9 / 36 actions) played by a uniformly random
    policy, so episode lengths are what the maps produce; the headline figures;
  * ``full``: every episode runs to the limit, so trimming to the longest episode saves nothing:
    the worst case for qmixlab.

The baseline does what PyMARL's QLearner does: float32 storage of every field (one-hot actions
included), a GRUCell looped over time in Python with inputs concatenated at every step, the
target network run step by step with autograd bookkeeping, no trimming to the longest episode,
and the mask multiplied into the TD error.

    python benchmarks/learner.py [--repeats 7]
    python benchmarks/learner.py --entity     # the entity-attention agent's step against the flat agent's


Last line: ``learner_speedup_3m=<x> learner_speedup_27m=<x>``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from qmixlab.components.episode_batch import EpisodeBatch
from qmixlab.components.replay_buffer import ReplayBuffer, StorageOptions
from qmixlab.controllers.agent_controller import AgentController
from qmixlab.components.mask_options import MaskOptions
from qmixlab.learners.q_learner import LearnerOptions, QLearner
from qmixlab.modules.agents import RNNAgent
from qmixlab.modules.mixers import build_mixer
from qmixlab.runners.batch_runner import episode_scheme

SIZES = {
    # name: (n_agents, obs, state, n_actions, episode_limit, smacsim map)
    "3m": (3, 30, 48, 9, 60, "3m"),
    "27m": (27, 285, 1170, 36, 180, "27m_vs_30m"),
}
BATCH, BUFFER_EPISODES = 32, 64


def smacsim_episodes(map_name, n_episodes, seed=0):
    """Real smacsim episodes played by a uniformly random policy over available actions."""
    from qmixlab.envs import make_batched_env
    from qmixlab.runners.batch_runner import BatchRunner

    class RandomPolicy:
        rng = np.random.default_rng(seed)

        def init_hidden(self, n):
            pass

        def select_actions(self, obs, avail, t_env, test_mode=False, env_mask=None):
            return torch.as_tensor((self.rng.random(avail.shape) + avail).argmax(-1))

    env = make_batched_env("smacsim", n_episodes, seed=seed, map_name=map_name)
    batch, stats = BatchRunner(env, RandomPolicy()).run()
    return batch, stats.lengths


def synthetic_episodes(n_agents, obs_dim, state_dim, n_actions, limit, n_episodes, seed=0):
    """Episodes shaped like SMAC's that all run to the episode limit."""
    rng = np.random.default_rng(seed)
    info = {"n_agents": n_agents, "obs_shape": obs_dim, "state_shape": state_dim,
            "n_actions": n_actions, "episode_limit": limit}
    scheme, groups, preprocess = episode_scheme(info)
    batch = EpisodeBatch(scheme, groups, n_episodes, limit + 1, preprocess=preprocess)
    block = n_agents * n_actions
    for b in range(n_episodes):
        length = limit
        rows = length + 1
        avail = rng.random((rows, n_agents, n_actions)) < 0.7
        avail[..., 0] = False
        avail[..., 1] = True
        actions = np.array([[rng.choice(np.flatnonzero(a)) for a in row] for row in avail])
        state = rng.normal(size=(rows, state_dim)).astype(np.float32)
        previous = np.zeros((rows, n_agents, n_actions), np.float32)
        previous[1:][np.arange(rows - 1)[:, None], np.arange(n_agents)[None], actions[:-1]] = 1.0
        state[:, -block:] = previous.reshape(rows, block)  # SMAC's last-action block
        batch.update({
            "obs": rng.normal(size=(rows, n_agents, obs_dim)).astype(np.float32),
            "state": state,
            "avail_actions": avail,
            "actions": actions[..., None],
        }, bs=b, ts=slice(0, rows))
        terminal = False
        flags = np.zeros((length, 1), bool)
        flags[-1] = True
        batch.update({
            "reward": rng.normal(size=(length, 1)).astype(np.float32),
            "terminated": flags if terminal else np.zeros_like(flags),
            "timeout": np.zeros_like(flags) if terminal else flags,
        }, bs=b, ts=slice(0, length))
    return batch


# --------------------------------------------------------------------------- PyMARL-style baseline
class BaselineAgent(nn.Module):
    def __init__(self, input_dim, hidden, n_actions):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden)
        self.rnn = nn.GRUCell(hidden, hidden)
        self.fc2 = nn.Linear(hidden, n_actions)

    def forward(self, inputs, hidden):
        x = F.relu(self.fc1(inputs))
        h = self.rnn(x, hidden)
        return self.fc2(h), h


class BaselineQMixer(nn.Module):
    def __init__(self, n_agents, state_dim, embed=32, hyper=64):
        super().__init__()
        self.n_agents, self.state_dim, self.embed = n_agents, state_dim, embed
        self.hyper_w_1 = nn.Sequential(nn.Linear(state_dim, hyper), nn.ReLU(), nn.Linear(hyper, embed * n_agents))
        self.hyper_w_final = nn.Sequential(nn.Linear(state_dim, hyper), nn.ReLU(), nn.Linear(hyper, embed))
        self.hyper_b_1 = nn.Linear(state_dim, embed)
        self.V = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(), nn.Linear(embed, 1))

    def forward(self, agent_qs, states):
        bs = agent_qs.size(0)
        states = states.reshape(-1, self.state_dim)
        agent_qs = agent_qs.view(-1, 1, self.n_agents)
        w1 = torch.abs(self.hyper_w_1(states)).view(-1, self.n_agents, self.embed)
        b1 = self.hyper_b_1(states).view(-1, 1, self.embed)
        hidden = F.elu(torch.bmm(agent_qs, w1) + b1)
        w_final = torch.abs(self.hyper_w_final(states)).view(-1, self.embed, 1)
        v = self.V(states).view(-1, 1, 1)
        return (torch.bmm(hidden, w_final) + v).view(bs, -1, 1)


class BaselineLearner:
    """Float32 storage, per-step GRUCell loop, no trimming, mask multiplied in."""

    def __init__(self, episodes: EpisodeBatch, n_agents, n_actions, state_dim, obs_dim, hidden=64, seed=0):
        torch.manual_seed(seed)
        self.n_agents, self.n_actions = n_agents, n_actions
        # every field, one-hot actions (PyMARL stores them) and filled included, as float32
        self.storage = {k: episodes[k].float().clone() for k in episodes.scheme}
        self.storage["actions_onehot"] = F.one_hot(episodes["actions"][..., 0].long(), n_actions).float()
        self.agent = BaselineAgent(obs_dim + n_actions + n_agents, hidden, n_actions)
        self.mixer = BaselineQMixer(n_agents, state_dim)
        self.target_agent, self.target_mixer = copy.deepcopy(self.agent), copy.deepcopy(self.mixer)
        self.params = list(self.agent.parameters()) + list(self.mixer.parameters())
        self.optimiser = torch.optim.RMSprop(self.params, lr=5e-4, alpha=0.99, eps=1e-5)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, n):
        idx = torch.randperm(next(iter(self.storage.values())).shape[0], generator=self.generator)[:n]
        return {k: v[idx] for k, v in self.storage.items()}

    def _inputs(self, batch, t):
        bs = batch["obs"].shape[0]
        parts = [batch["obs"][:, t]]
        parts.append(torch.zeros_like(batch["actions_onehot"][:, t]) if t == 0 else batch["actions_onehot"][:, t - 1])
        parts.append(torch.eye(self.n_agents).unsqueeze(0).expand(bs, -1, -1))
        return torch.cat([p.reshape(bs * self.n_agents, -1) for p in parts], dim=1)

    def _unroll(self, agent, batch):
        bs, T = batch["obs"].shape[:2]
        hidden = torch.zeros(bs * self.n_agents, self.agent.rnn.hidden_size)
        outs = []
        for t in range(T):
            q, hidden = agent(self._inputs(batch, t), hidden)
            outs.append(q.view(bs, self.n_agents, -1))
        return torch.stack(outs, dim=1)

    def train_step(self, batch_size):
        batch = self.sample(batch_size)
        rewards = batch["reward"][:, :-1]
        actions = batch["actions"][:, :-1].long()
        terminated = torch.maximum(batch["terminated"], batch["timeout"])[:, :-1]
        mask = batch["filled"][:, :-1].clone()
        mask[:, 1:] = mask[:, 1:] * (1 - terminated[:, :-1])
        avail = batch["avail_actions"]
        mac_out = self._unroll(self.agent, batch)
        chosen = torch.gather(mac_out[:, :-1], dim=3, index=actions).squeeze(3)
        target_out = self._unroll(self.target_agent, batch)[:, 1:]
        target_out[avail[:, 1:] == 0] = -9999999
        mac_detach = mac_out.clone().detach()
        mac_detach[avail == 0] = -9999999
        greedy = mac_detach[:, 1:].max(dim=3, keepdim=True)[1]
        target_max = torch.gather(target_out, 3, greedy).squeeze(3)
        chosen = self.mixer(chosen, batch["state"][:, :-1])
        target_max = self.target_mixer(target_max, batch["state"][:, 1:])
        targets = rewards + 0.99 * (1 - terminated) * target_max
        td = (chosen - targets.detach()) * mask
        loss = (td ** 2).sum() / mask.sum()
        self.optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 10.0)
        self.optimiser.step()
        return loss.item()


# --------------------------------------------------------------------------- qmixlab
class QmixlabStep:
    def __init__(self, episodes: EpisodeBatch, n_agents, n_actions, state_dim, obs_dim, seed=0):
        torch.manual_seed(seed)
        info = {"n_agents": n_agents, "obs_shape": obs_dim, "state_shape": state_dim,
                "n_actions": n_actions, "episode_limit": episodes.max_seq_length - 1}
        scheme, groups, preprocess = episode_scheme(info)
        self.buffer = ReplayBuffer(scheme, groups, BUFFER_EPISODES, episodes.max_seq_length,
                                   preprocess=preprocess,
                                   storage=StorageOptions(derive_state_last_action=True), seed=seed)
        self.buffer.insert_episode_batch(episodes)
        agent = RNNAgent(obs_dim, n_actions, n_agents, hidden_dim=64)
        mixer = build_mixer("qmix", n_agents, state_dim, mixing_embed_dim=32, hypernet_layers=2, hypernet_embed=64)
        # PyMARL's hyper-parameters, as the baseline's (RMSprop, one-step targets).
        options = LearnerOptions(optimiser="rmsprop", lr=5e-4, optim_alpha=0.99, optim_eps=1e-5, td_lambda=0.0)
        self.learner = QLearner(AgentController(agent, None), mixer, n_agents, options, MaskOptions())

    def train_step(self, batch_size):
        return self.learner.train(self.buffer.sample(batch_size))["loss"]


class EntityStep(QmixlabStep):
    """The same learner and batches with the entity-attention agent instead of the flat GRU agent
    (issue 14's target: its step at most 3x the flat agent's on 3m)."""

    def __init__(self, episodes: EpisodeBatch, n_agents, n_actions, state_dim, obs_dim, map_name, seed=0):
        super().__init__(episodes, n_agents, n_actions, state_dim, obs_dim, seed)
        from qmixlab.envs import make_batched_env
        from qmixlab.modules.entity_agent import EntityAttentionAgent

        layout = make_batched_env("smacsim", 1, seed=seed, map_name=map_name).get_spec().obs_layout
        agent = EntityAttentionAgent(layout, n_actions, n_agents, hidden_dim=64, masks=MaskOptions())
        mixer = build_mixer("qmix", n_agents, state_dim, mixing_embed_dim=32, hypernet_layers=2, hypernet_embed=64)
        options = LearnerOptions(optimiser="rmsprop", lr=5e-4, optim_alpha=0.99, optim_eps=1e-5, td_lambda=0.0)
        self.learner = QLearner(AgentController(agent, None), mixer, n_agents, options, MaskOptions())


def time_steps(learner, repeats):
    learner.train_step(BATCH)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        learner.train_step(BATCH)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--entity", action="store_true",
                        help="only time the entity-attention agent beside the flat agent on 3m")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.entity:
        return entity_ratio(args)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {BATCH} episodes")
    print(f"{'scheme':8s} {'episodes':9s} {'mean len':>8s} {'baseline ms':>12s} {'qmixlab ms':>11s} {'speedup':>8s}")
    speedups = {}
    for name, (n_agents, obs, state, n_actions, limit, map_name) in SIZES.items():
        for kind in ("smacsim", "full"):
            if kind == "smacsim":
                episodes, lengths = smacsim_episodes(map_name, BUFFER_EPISODES)
            else:
                episodes = synthetic_episodes(n_agents, obs, state, n_actions, limit, BUFFER_EPISODES)
                lengths = np.full(BUFFER_EPISODES, limit)
            baseline = BaselineLearner(episodes, n_agents, n_actions, state, obs)
            ours = QmixlabStep(episodes, n_agents, n_actions, state, obs)
            # Interleave the two measurements so that machine noise hits both alike.
            # Each round times a few steps of each; small batches get more steps (their times
            # vary with the sampled episodes' lengths, and the machine's noise is relatively larger).
            steps = 2 if name == "27m" else 6
            base_times, our_times = [], []
            for _ in range(max(1, args.repeats // 2)):
                base_times.append(time_steps(baseline, steps))
                our_times.append(time_steps(ours, steps))
            base, mine = statistics.median(base_times), statistics.median(our_times)
            speedups[name, kind] = base / mine
            print(f"{name:8s} {kind:9s} {lengths.mean():8.1f} {base * 1e3:12.1f} {mine * 1e3:11.1f} "
                  f"{speedups[name, kind]:7.2f}x", flush=True)
    print(f"learner_speedup_3m_full={speedups['3m', 'full']:.2f} "
          f"learner_speedup_27m_full={speedups['27m', 'full']:.2f}")
    print(f"learner_speedup_3m={speedups['3m', 'smacsim']:.2f} learner_speedup_27m={speedups['27m', 'smacsim']:.2f}")


def entity_ratio(args) -> None:
    """Training steps of the entity-attention agent against the flat GRU agent, same batches."""
    n_agents, obs, state, n_actions, limit, map_name = SIZES["3m"]
    episodes, lengths = smacsim_episodes(map_name, BUFFER_EPISODES)
    flat = QmixlabStep(episodes, n_agents, n_actions, state, obs)
    entity = EntityStep(episodes, n_agents, n_actions, state, obs, map_name)
    flat_times, entity_times = [], []
    for _ in range(max(1, args.repeats // 2)):
        flat_times.append(time_steps(flat, 6))
        entity_times.append(time_steps(entity, 6))
    flat_ms, entity_ms = 1e3 * statistics.median(flat_times), 1e3 * statistics.median(entity_times)
    print(f"3m, smacsim episodes (mean length {lengths.mean():.1f}): flat GRU agent {flat_ms:.1f} ms, "
          f"entity-attention agent {entity_ms:.1f} ms")
    print(f"entity_step_ratio_3m={entity_ms / flat_ms:.2f}")


if __name__ == "__main__":
    main()
