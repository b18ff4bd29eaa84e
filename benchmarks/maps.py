"""Win rates of scripted policies and of a random (available-actions) policy on every map.

A sanity check of smacsim's balance: random should almost never win, the heuristics should win
the easy symmetric maps often and lose the hard ones. Policies: ``heuristic`` is smacsim's
focus-fire script (``BatchedSMACSim.heuristic_actions()``: the whole team shoots the enemy nearest
its centre); ``smac_heuristic`` is SMAC's own (``SMACHeuristic``: each agent shoots its own nearest
enemy until it dies); ``random`` is uniform over available actions. All episodes of one
(map, policy) pair run as one batch of environments.

    python benchmarks/maps.py [--episodes 64] [--maps 3m,8m] [--seed 0]

The last line is ``maps_heuristic_3m_winrate=<x> maps_random_3m_winrate=<x>``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from qmixlab.envs.smacsim import MAPS, BatchedSMACSim
from qmixlab.envs.smacsim.heuristics import SMACHeuristic, smacsim_inputs


def evaluate(map_name: str, policy: str, episodes: int, seed: int) -> dict:
    """One episode per environment; returns win rate, mean return and mean length."""
    env = BatchedSMACSim(map_name, n_envs=episodes, seed=seed)
    rng = np.random.default_rng(seed)
    done = np.zeros(episodes, bool)
    won = np.zeros(episodes, bool)
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes)
    smac_heuristic = SMACHeuristic(episodes, env.n_agents)
    while not done.all():
        if policy == "heuristic":
            actions = env.heuristic_actions()
        elif policy == "smac_heuristic":
            actions = smac_heuristic(**smacsim_inputs(env))
        elif policy == "random":
            avail = env.get_avail_actions()
            actions = (rng.random(avail.shape) * avail).argmax(-1)
        else:
            raise ValueError(f"unknown policy {policy!r}; expected heuristic, smac_heuristic or "
                             "random")
        actions[done] = 0
        out = env.step(actions, active=~done)
        returns += out.reward
        lengths += ~done
        won |= out.battle_won
        done |= out.ended
    return {"win_rate": won.mean(), "return": returns.mean(), "length": lengths.mean()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--maps", default=",".join(MAPS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print("| map | heuristic win | heuristic return | SMAC heuristic win | SMAC heuristic return | "
          "random win | random return | ep. length (heur / SMAC heur / rand) |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    start = time.perf_counter()
    for m in args.maps.split(","):
        h = evaluate(m, "heuristic", args.episodes, args.seed)
        s = evaluate(m, "smac_heuristic", args.episodes, args.seed)
        r = evaluate(m, "random", args.episodes, args.seed)
        results[m] = (h, r)
        print(f"| {m} | {h['win_rate']:.2f} | {h['return']:.1f} | {s['win_rate']:.2f} | "
              f"{s['return']:.1f} | {r['win_rate']:.2f} | {r['return']:.1f} | "
              f"{h['length']:.0f} / {s['length']:.0f} / {r['length']:.0f} |", flush=True)
    print(f"\n{args.episodes} episodes per map and policy, {time.perf_counter() - start:.0f} s")
    h3, r3 = results["3m"] if "3m" in results else (
        evaluate("3m", "heuristic", args.episodes, args.seed),
        evaluate("3m", "random", args.episodes, args.seed))
    print(f"maps_heuristic_3m_winrate={h3['win_rate']:.3f} "
          f"maps_random_3m_winrate={r3['win_rate']:.3f}")


if __name__ == "__main__":
    main()
