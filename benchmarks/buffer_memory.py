"""Replay-buffer bytes per stored step: our compact layout vs PyMARL's float32-everything.

Runs with the storage configuration the runner uses on SMAC maps (default StorageOptions plus
``state_last_action=(start, stop)``, the columns of SMAC's state holding the previous joint
action, which are not stored but rebuilt from the actions), checks that an episode round-trips,
and prints one line ``buffer_bytes_ratio_27m=<x> buffer_bytes_ratio_3m=<x>``.

The reference is PyMARL's layout: every per-step field of the runner's scheme as float32, plus
the ``actions_onehot`` field PyMARL derives and stores.

    python benchmarks/buffer_memory.py
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qmixlab.components.episode_batch import EpisodeBatch
from qmixlab.components.replay_buffer import ReplayBuffer, StorageOptions


@dataclass(frozen=True)
class MapSize:
    name: str
    n_agents: int
    n_actions: int
    obs_dim: int
    state_dim: int  # includes the n_agents * n_actions last-action block
    episode_limit: int


MAPS = [
    MapSize("27m_vs_30m", n_agents=27, n_actions=36, obs_dim=285, state_dim=1170, episode_limit=180),
    MapSize("3m", n_agents=3, n_actions=9, obs_dim=30, state_dim=48, episode_limit=60),
]
def storage_options(size: MapSize) -> StorageOptions:
    """SMAC's state ends with the last-action block (no state_timestep_number)."""
    block = size.n_agents * size.n_actions
    return StorageOptions(state_last_action=(size.state_dim - block, size.state_dim))


def build(size: MapSize):
    scheme = {
        "state": {"vshape": (size.state_dim,)},
        "obs": {"vshape": (size.obs_dim,), "group": "agents"},
        "actions": {"vshape": (1,), "group": "agents", "dtype": torch.long},
        "avail_actions": {"vshape": (size.n_actions,), "group": "agents", "dtype": torch.bool},
        "reward": {"vshape": (1,)},
        "terminated": {"vshape": (1,), "dtype": torch.bool},
        "timeout": {"vshape": (1,), "dtype": torch.bool},
        "invalid": {"vshape": (1,), "dtype": torch.bool},
    }
    groups = {"agents": size.n_agents}
    return scheme, groups


def synthetic_episode(size: MapSize, scheme, groups, length: int, seed: int = 0) -> EpisodeBatch:
    """One episode written like the runner writes it (state ends with the previous joint action)."""
    gen = torch.Generator().manual_seed(seed)
    max_t = size.episode_limit + 1
    batch = EpisodeBatch(scheme, groups, 1, max_t)
    block = size.n_agents * size.n_actions
    last = torch.zeros(block)
    for t in range(length + 1):
        state = torch.cat([torch.rand(size.state_dim - block, generator=gen), last])
        avail = torch.rand(size.n_agents, size.n_actions, generator=gen) < 0.5
        avail[:, 1] = True
        batch.update({"state": state, "obs": torch.rand(size.n_agents, size.obs_dim, generator=gen),
                      "avail_actions": avail}, bs=0, ts=t)
        if t == length:
            break
        actions = torch.where(avail, torch.rand(avail.shape, generator=gen), torch.tensor(-1.0)).argmax(-1)
        batch.update({"actions": actions, "reward": [1.0], "terminated": [t == length - 1]}, bs=0, ts=t)
        last = torch.nn.functional.one_hot(actions, size.n_actions).float().flatten()
    return batch


def main() -> None:
    ratios = {}
    for size in MAPS:
        scheme, groups = build(size)
        options = storage_options(size)
        print(f"{size.name} storage: {options}")
        buffer = ReplayBuffer(scheme, groups, 2, size.episode_limit + 1, storage=options, seed=0)
        episode = synthetic_episode(size, scheme, groups, length=size.episode_limit // 3)
        buffer.insert_episode_batch(episode)
        sampled = buffer.sample(1)
        state_error = (sampled["state"] - episode["state"]).abs().max().item()
        assert torch.equal(sampled["actions"], episode["actions"])
        assert torch.equal(sampled["state"][..., -size.n_agents * size.n_actions:],
                           episode["state"][..., -size.n_agents * size.n_actions:])

        stored_bytes = sum(t.numel() * t.element_size() for t in buffer.state_dict()["storage"].values())
        one_hot_float32 = 4 * size.n_agents * size.n_actions  # PyMARL's stored actions_onehot
        ours, float32 = buffer.bytes_per_step(), buffer.float32_bytes_per_step() + one_hot_float32
        assert stored_bytes == ours * buffer.episodes_in_buffer * buffer.max_seq_length
        ratios[size.name] = ours / float32

        print(f"\n{size.name}: {size.n_agents} agents, obs {size.obs_dim}, state {size.state_dim}, "
              f"{size.n_actions} actions, max_seq_length {size.episode_limit + 1}")
        print(f"  {'stored field':<24}{'dtype':<16}{'bytes/step':>12}")
        for entry in buffer.storage_layout():
            print(f"  {entry['name']:<24}{str(entry['dtype']):<16}{entry['bytes']:>12}")
        print(f"  {'ours':<40}{ours:>12}")
        print(f"  {'float32 (PyMARL, actions_onehot included)':<40}{float32:>12}")
        print(f"  ratio {ratios[size.name]:.4f}; max |state error| after float16 round trip {state_error:.2e}")
        episode_bytes = ours * (size.episode_limit + 1)
        print(f"  per 5000-episode buffer: ours {5000 * episode_bytes / 2**30:.2f} GiB, "
              f"float32 {5000 * float32 * (size.episode_limit + 1) / 2**30:.2f} GiB")
    print()
    print(f"buffer_bytes_ratio_27m={ratios['27m_vs_30m']:.4f} buffer_bytes_ratio_3m={ratios['3m']:.4f}")


if __name__ == "__main__":
    main()
