"""Fidelity of smacsim against SMAClite: the same scripted policies played in both simulators.

SMAClite (github.com/uoe-agents/smaclite, MIT) is an independent Python re-implementation of SMAC
whose authors compared it with the game. It is an optional dependency of this benchmark only;
install it from its source tree as ``results/fidelity/README.md`` describes.

On every map both implement, each policy (SMAC's heuristic, uniform random over available
actions, all-stop) plays ``--episodes`` episodes in each simulator. Per episode: won, length
(steps, SMAC's episode limit applied to both), damage dealt and taken (health+shield lost by
enemies / allies, summed over steps, drops only, so regeneration and healing do not cancel hits),
allies lost and enemies killed. The table gives each mean with a 95% interval (Wilson for the win
rate, percentile bootstrap for means) and flags the metrics whose difference between the two
simulators is beyond noise (Newcombe's interval for the win-rate difference, bootstrap for the
difference of means, excluding 0).

    python benchmarks/fidelity.py run --maps 2s3z,MMM --episodes 200 [--sims smacsim,smaclite]
    python benchmarks/fidelity.py table > results/fidelity/table.md

``run`` writes one JSON file per (map, policy, simulator) under ``--out`` and skips files that
already hold at least ``--episodes`` episodes, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from qmixlab.envs.smacsim import BatchedSMACSim
from qmixlab.envs.smacsim.heuristics import SMACHeuristic, smacsim_inputs
from qmixlab.envs.smacsim.maps import get_map

# smacsim map name -> SMAClite MapPreset member.
SMACLITE_MAPS = {
    "10m_vs_11m": "MAP_10M_VS_11M", "27m_vs_30m": "MAP_27M_VS_30M",
    "3s5z_vs_3s6z": "MAP_3S5Z_VS_3S6Z", "2s3z": "MAP_2S3Z", "3s5z": "MAP_3S5Z", "MMM": "MAP_MMM",
    "MMM2": "MAP_MMM2", "2c_vs_64zg": "MAP_2C_VS_64ZG", "bane_vs_bane": "MAP_BANE_VS_BANE",
    "corridor": "MAP_CORRIDOR", "2s_vs_1sc": "MAP_2S_VS_1SC", "3s_vs_5z": "MAP_3S_VS_5Z",
}
POLICIES = ("smac_heuristic", "random", "stop")
SIMULATORS = ("smacsim", "smaclite")
METRICS = ("won", "length", "damage_dealt", "damage_taken", "allies_lost", "enemies_killed")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results" / "fidelity" / "runs"
Z95 = 1.959963984540054


# ---------------------------------------------------------------------------- intervals
def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple:
    """Wilson score interval of a binomial proportion."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got successes={successes}, n={n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(s1: int, n1: int, s2: int, n2: int, z: float = Z95) -> tuple:
    """Interval of p1 - p2 from the two Wilson intervals (Newcombe 1998, method 10)."""
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1, z)
    l2, u2 = wilson_interval(s2, n2, z)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def bootstrap_mean_interval(values: Sequence[float], rng: np.random.Generator,
                            reps: int = 4000, level: float = 0.95) -> tuple:
    """Percentile bootstrap interval of the mean."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_mean_interval needs at least one value, got none")
    means = x[rng.integers(0, x.size, size=(reps, x.size))].mean(1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def bootstrap_difference_interval(a: Sequence[float], b: Sequence[float],
                                  rng: np.random.Generator, reps: int = 4000,
                                  level: float = 0.95) -> tuple:
    """Percentile bootstrap interval of mean(a) - mean(b), the two samples resampled apart."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"both samples need values, got sizes {a.size} and {b.size}")
    diff = (a[rng.integers(0, a.size, size=(reps, a.size))].mean(1)
            - b[rng.integers(0, b.size, size=(reps, b.size))].mean(1))
    tail = (1 - level) / 2
    return float(np.quantile(diff, tail)), float(np.quantile(diff, 1 - tail))


def compare(ours: Dict[str, list], theirs: Dict[str, list], seed: int = 0) -> dict:
    """Per metric: both means with 95% intervals, the difference's interval, and whether the
    difference is beyond noise (its interval excludes 0)."""
    rng = np.random.default_rng(seed)
    out = {}
    for m in METRICS:
        a, b = np.asarray(ours[m], np.float64), np.asarray(theirs[m], np.float64)
        if m == "won":
            sa, sb = int(a.sum()), int(b.sum())
            ci_a, ci_b = wilson_interval(sa, a.size), wilson_interval(sb, b.size)
            ci_d = newcombe_difference(sa, a.size, sb, b.size)
        else:
            ci_a, ci_b = bootstrap_mean_interval(a, rng), bootstrap_mean_interval(b, rng)
            ci_d = bootstrap_difference_interval(a, b, rng)
        out[m] = dict(ours=float(a.mean()), ours_ci=ci_a, theirs=float(b.mean()), theirs_ci=ci_b,
                      diff_ci=ci_d, differs=bool(ci_d[0] > 0 or ci_d[1] < 0))
    return out


# ---------------------------------------------------------------------------- smacsim
def run_smacsim(map_name: str, policy: str, episodes: int, seed: int) -> Dict[str, list]:
    """All episodes as one batch of environments."""
    env = BatchedSMACSim(map_name, n_envs=episodes, seed=seed)
    e, na = env.engine, env.n_agents
    rng = np.random.default_rng(seed)
    heuristic = SMACHeuristic(episodes, na)
    done = np.zeros(episodes, bool)
    rec = {m: np.zeros(episodes) for m in METRICS}
    while not done.all():
        if policy == "smac_heuristic":
            actions = heuristic(**smacsim_inputs(env))
        elif policy == "random":
            avail = env.get_avail_actions()
            actions = (rng.random(avail.shape) * avail).argmax(-1)
        elif policy == "stop":
            actions = np.where(e.hp[:, :na] > 0, 1, 0)
        else:
            raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
        actions[done] = 0
        before = e.hp + e.sh
        out = env.step(actions, active=~done)
        drop = np.maximum(before - (e.hp + e.sh), 0.0) * ~done[:, None]
        rec["damage_dealt"] += drop[:, na:].sum(1)
        rec["damage_taken"] += drop[:, :na].sum(1)
        rec["length"] += ~done
        rec["won"] += out.battle_won
        ended = out.terminated | out.truncated
        newly = ended & ~done
        rec["allies_lost"] = np.where(newly, (e.hp[:, :na] <= 0).sum(1), rec["allies_lost"])
        rec["enemies_killed"] = np.where(newly, (e.hp[:, na:] <= 0).sum(1), rec["enemies_killed"])
        done |= ended
    return {m: rec[m].tolist() for m in METRICS}


# ---------------------------------------------------------------------------- SMAClite
def smaclite_available() -> Optional[str]:
    """None when SMAClite imports, else why not."""
    try:
        import smaclite  # noqa: F401
        from smaclite.env import SMACliteEnv  # noqa: F401
    except Exception as err:  # ImportError, or OSError from a missing libspatialindex
        return f"{type(err).__name__}: {err}"
    return None


def run_smaclite(map_name: str, policy: str, episodes: int, seed: int,
                 progress: Optional[Callable[[int], None]] = None) -> Dict[str, list]:
    """Episodes one after another (SMAClite steps one environment)."""
    from smaclite.env import SMACliteEnv
    from smaclite.env.maps.map import MapPreset
    from smaclite.env.units.unit_type import CombatType

    if map_name not in SMACLITE_MAPS:
        raise ValueError(f"SMAClite has no map {map_name!r}; it has {sorted(SMACLITE_MAPS)}")
    limit = get_map(map_name).episode_limit
    rng = np.random.default_rng(seed)
    env = SMACliteEnv(map_info=MapPreset[SMACLITE_MAPS[map_name]].value, seed=seed)
    rec: Dict[str, list] = {m: [] for m in METRICS}
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        allies = [env.agents[i] for i in range(env.n_agents)]
        enemies = [env.enemies[i] for i in range(env.n_enemies)]
        units = allies + enemies
        na = len(allies)
        health_max = np.array([u.max_hp for u in units], np.float64)
        is_healer = np.array([u.combat_type == CombatType.HEALING for u in allies])
        can_attack = np.array([[e.plane in a.valid_targets for e in enemies] for a in allies])
        heuristic = SMACHeuristic(1, na)
        dealt = taken = 0.0
        steps, won = 0, False
        while True:
            # SMAClite's own roll (a unit healed after dying within one step stays removed).
            health = np.array([u.hp if env.agents.get(u.id_in_faction) is u else 0.0
                               for u in allies] +
                              [u.hp if env.enemies.get(u.id_in_faction) is u else 0.0
                               for u in enemies], np.float64)
            avail = np.array(env.get_avail_actions(), bool)
            if policy == "smac_heuristic":
                pos = np.array([u.pos for u in units], np.float64)
                actions = heuristic(pos[None], health[None], health_max, is_healer, can_attack,
                                    avail[None])[0]
            elif policy == "random":
                actions = (rng.random(avail.shape) * avail).argmax(-1)
            elif policy == "stop":
                actions = np.where(health[:na] > 0, 1, 0)
            else:
                raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
            before = np.array([u.hp + u.shield for u in units], np.float64)
            _, _, done, _, info = env.step([int(a) for a in actions])
            after = np.array([u.hp + u.shield for u in units], np.float64)
            drop = np.maximum(before - after, 0.0)
            dealt += drop[na:].sum()
            taken += drop[:na].sum()
            steps += 1
            won = bool(info["battle_won"])
            if done or steps >= limit:
                break
        rec["won"].append(float(won))
        rec["length"].append(steps)
        rec["damage_dealt"].append(dealt)
        rec["damage_taken"].append(taken)
        rec["allies_lost"].append(na - len(env.agents))
        rec["enemies_killed"].append(len(enemies) - len(env.enemies))
        if progress is not None:
            progress(ep + 1)
    return rec


RUNNERS = {"smacsim": run_smacsim, "smaclite": run_smaclite}


# ---------------------------------------------------------------------------- files and table
def result_path(out: Path, map_name: str, policy: str, sim: str) -> Path:
    return Path(out) / f"{map_name}__{policy}__{sim}.json"


def run(maps: Sequence[str], policies: Sequence[str], sims: Sequence[str], episodes: int,
        seed: int, out: Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for map_name in maps:
        for policy in policies:
            for sim in sims:
                path = result_path(out, map_name, policy, sim)
                if path.exists() and len(json.loads(path.read_text())["won"]) >= episodes:
                    continue
                start = time.perf_counter()
                rec = RUNNERS[sim](map_name, policy, episodes, seed)
                seconds = time.perf_counter() - start
                path.write_text(json.dumps(dict(rec, map=map_name, policy=policy, simulator=sim,
                                                seed=seed, seconds=round(seconds, 1))))
                print(f"{map_name} {policy} {sim}: {episodes} episodes, {seconds:.0f} s, "
                      f"win {np.mean(rec['won']):.2f}", file=sys.stderr, flush=True)


def _cell(mean: float, ci: tuple, digits: int) -> str:
    return f"{mean:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def table(out: Path, seed: int = 0) -> str:
    """Markdown table over every (map, policy) with results from both simulators."""
    digits = {"won": 2, "length": 1, "damage_dealt": 0, "damage_taken": 0, "allies_lost": 2,
              "enemies_killed": 2}
    lines = ["| map | policy | n (ours / SMAClite) | metric | smacsim | SMAClite | "
             "difference [95%] | beyond noise |", "|---|---|---|---|---|---|---|---|"]
    for map_name in SMACLITE_MAPS:
        for policy in POLICIES:
            paths = [result_path(out, map_name, policy, s) for s in SIMULATORS]
            if not all(p.exists() for p in paths):
                continue
            ours, theirs = (json.loads(p.read_text()) for p in paths)
            n = f"{len(ours['won'])} / {len(theirs['won'])}"
            for m, r in compare(ours, theirs, seed).items():
                d = digits[m]
                lines.append(
                    f"| {map_name} | {policy} | {n} | {m} | {_cell(r['ours'], r['ours_ci'], d)} | "
                    f"{_cell(r['theirs'], r['theirs_ci'], d)} | "
                    f"{_cell(r['ours'] - r['theirs'], r['diff_ci'], d)} | "
                    f"{'**yes**' if r['differs'] else 'no'} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="play episodes and write one JSON per map/policy/sim")
    p_run.add_argument("--maps", default=",".join(SMACLITE_MAPS))
    p_run.add_argument("--policies", default=",".join(POLICIES))
    p_run.add_argument("--sims", default=",".join(SIMULATORS))
    p_run.add_argument("--episodes", type=int, default=200)
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p_table = sub.add_parser("table", help="print the comparison table of what has run")
    p_table.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p_table.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "table":
        print(table(args.out, args.seed))
        return

    def checked(text: str, allowed: Sequence[str], what: str) -> List[str]:
        items = [s for s in text.split(",") if s]
        bad = [s for s in items if s not in allowed]
        if bad:
            raise SystemExit(f"unknown {what} {bad}; expected some of {list(allowed)}")
        return items

    sims = checked(args.sims, SIMULATORS, "simulator(s)")
    if "smaclite" in sims and (why := smaclite_available()):
        raise SystemExit(f"SMAClite is not importable ({why}); see results/fidelity/README.md")
    run(checked(args.maps, list(SMACLITE_MAPS), "map(s)"),
        checked(args.policies, POLICIES, "polic(ies)"), sims, args.episodes, args.seed, args.out)


if __name__ == "__main__":
    main()
