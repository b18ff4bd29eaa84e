"""How much of each agent's scene is hidden, per map: what `masks.visibility` acts on.

The entity-attention agent either drops unseen entities from its attention (`mask`) or attends
them as zero vectors (`zeros`); SMAC writes zeros both for a dead unit and for a living one out of
sight range. This script plays scripted policies on smacsim and counts, over the steps of living
agents, the entity tokens of their observations (each other ally and each enemy):

* `hidden_alive`: tokens of living units the agent cannot see (out of sight range): the case where
  the two options differ in what the agent could have known;
* `dead`: tokens of dead units (zeros in both views of the data; excluded from the attention with
  `mask`);
* `blind`: the share of agent-steps that see no enemy while some enemy is alive.

Visibility is read from the observation exactly as the agent reads it
(`qmixlab.modules.entities.split_observation`); whether a unit lives, from the state
(`split_state`). Policies: `smac_heuristic` (SMAC's: each agent attacks its own nearest enemy) and
`random` (uniform over available actions). Trained policies spread and kite differently, so these
are the scene's geometry under two fixed behaviours, not what a learner sees.

    python benchmarks/visibility.py [--maps 3m,2s3z,5m_vs_6m] [--episodes 128] [--seed 0]

The last line is ``hidden_alive_<map>=<x> ...`` for the SMAC heuristic.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from qmixlab.envs.smacsim import BatchedSMACSim
from qmixlab.envs.smacsim.heuristics import SMACHeuristic, smacsim_inputs
from qmixlab.modules.entities import split_observation, split_state

POLICIES = ("smac_heuristic", "random")


def other_allies(n_agents: int) -> np.ndarray:
    """``[n_agents, n_agents - 1]``: the agent index of each ally token in agent a's observation
    (SMAC lists the other allies in agent order, skipping a)."""
    return np.array([[k for k in range(n_agents) if k != a] for a in range(n_agents)], dtype=np.int64)


def count_hidden(env: BatchedSMACSim, live_envs: np.ndarray, allies_of: torch.Tensor) -> dict:
    """Counts over the living agents of the ``live_envs`` now: entity tokens, tokens of living
    units out of sight, tokens of dead units, agent-steps with a living enemy, and those of them
    that see no enemy."""
    spec = env.get_spec()
    obs = split_observation(torch.as_tensor(np.array(env.get_obs())), spec.obs_layout)
    state = split_state(torch.as_tensor(np.array(env.get_state())), spec.state_layout)
    agent_alive = state.ally_alive & torch.as_tensor(live_envs)[:, None]  # [B, na]
    enemy_alive = state.enemy_alive[:, None, :].expand_as(obs.enemy_visible)  # [B, na, ne]
    ally_alive = state.ally_alive[:, allies_of]  # [B, na, na-1]
    seen = torch.cat([obs.enemy_visible, obs.ally_visible], -1)
    alive = torch.cat([enemy_alive, ally_alive], -1)
    rows = agent_alive[..., None].expand_as(seen)
    any_enemy = enemy_alive.any(-1) & agent_alive
    return {
        "tokens": int(rows.sum()),
        "hidden_alive": int((rows & alive & ~seen).sum()),
        "dead": int((rows & ~alive).sum()),
        "agent_steps": int(any_enemy.sum()),
        "blind": int((any_enemy & ~obs.enemy_visible.any(-1)).sum()),
    }


def measure(map_name: str, policy: str, episodes: int, seed: int) -> dict:
    env = BatchedSMACSim(map_name, n_envs=episodes, seed=seed)
    allies_of = torch.as_tensor(other_allies(env.n_agents))
    rng = np.random.default_rng(seed)
    heuristic = SMACHeuristic(episodes, env.n_agents)
    done = np.zeros(episodes, bool)
    counts = dict.fromkeys(("tokens", "hidden_alive", "dead", "agent_steps", "blind"), 0)
    while not done.all():
        for key, value in count_hidden(env, ~done, allies_of).items():
            counts[key] += value
        if policy == "smac_heuristic":
            actions = heuristic(**smacsim_inputs(env))
        else:
            avail = env.get_avail_actions()
            actions = (rng.random(avail.shape) * avail).argmax(-1)
        actions[done] = 0
        done |= env.step(actions, active=~done).ended
    return {
        "hidden_alive": counts["hidden_alive"] / max(counts["tokens"], 1),
        "dead": counts["dead"] / max(counts["tokens"], 1),
        "blind": counts["blind"] / max(counts["agent_steps"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", default="3m,2s3z,5m_vs_6m")
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| map | policy | tokens of living units out of sight | tokens of dead units | "
          "agent-steps seeing no living enemy |")
    print("|---|---|---|---|---|")
    headline = []
    for map_name in args.maps.split(","):
        for policy in POLICIES:
            r = measure(map_name, policy, args.episodes, args.seed)
            print(f"| {map_name} | {policy} | {r['hidden_alive']:.3f} | {r['dead']:.3f} | "
                  f"{r['blind']:.3f} |", flush=True)
            if policy == "smac_heuristic":
                headline.append(f"hidden_alive_{map_name}={r['hidden_alive']:.3f}")
    print(f"\n{args.episodes} episodes per map and policy, smacsim seed {args.seed}")
    print(" ".join(headline))


if __name__ == "__main__":
    main()
