"""The SMAC maps (``docs/smac.md`` section 7): unit lists, ordering quirks, limits, layouts, terrain.

Layout facts (32 x 32 playable area, allies around (9, 16), enemies around (23, 16), enemies
attack-moving to the allies' spawn) follow the public SC2-free re-implementations; the terrain of
``corridor`` and ``2c_vs_64zg`` is our own simple grid that keeps each map's tactical point:

* ``corridor``: open ground with a dead-end corridor 2 cells wide behind the zealots' spawn;
  6 zealots that fight in the open are surrounded by 24 zerglings, zealots that fall back into
  the corridor face a few at a time.
* ``2c_vs_64zg``: a band of cliffs splits the map; colossi walk over cliffs, zerglings must run
  around through the ramps at both ends.

Terrain cells: 0 void (nobody), 1 ground (everyone), 2 cliff (only cliff walkers and air units).
Grids are indexed ``[ix, iy]`` with cell (ix, iy) covering ``[ix, ix+1) x [iy, iy+1)``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .units import UNIT_TYPES

TERRAIN_VOID, TERRAIN_GROUND, TERRAIN_CLIFF = 0, 1, 2


@dataclass(frozen=True)
class SpawnGroup:
    """Units of one team spawned in a compact grid around ``centre``."""

    centre: Tuple[float, float]
    units: Tuple[Tuple[str, int], ...]


@dataclass(frozen=True)
class MapSpec:
    name: str
    episode_limit: int
    # Unit types in the map's own type order (the ally type one-hot order and the sort order of
    # the ally slots). Enemy slots use the same block order.
    type_order: Tuple[str, ...]
    unit_type_bits: int
    ally_groups: Tuple[SpawnGroup, ...]
    enemy_groups: Tuple[SpawnGroup, ...]
    attack_point: Tuple[float, float]  # where the enemy attack-moves to
    map_type: str  # "marines", "MMM", "stalkers_and_zealots", "colossi_stalkers_zealots", ...
    width: int = 32
    height: int = 32
    terrain_name: Optional[str] = None

    @property
    def enemy_type_ids(self) -> Dict[str, int]:
        """Enemy one-hot index of each type; reversed (zealot first) on stalker/zealot maps."""
        if self.map_type == "stalkers_and_zealots":
            return {"zealot": 0, "stalker": 1}
        return {t: i for i, t in enumerate(self.type_order)}

    @property
    def ally_type_ids(self) -> Dict[str, int]:
        return {t: i for i, t in enumerate(self.type_order)}

    def _slots(self, groups: Sequence[SpawnGroup]) -> List[str]:
        counts: Dict[str, int] = {}
        for g in groups:
            for t, n in g.units:
                counts[t] = counts.get(t, 0) + n
        return [t for t in self.type_order for _ in range(counts.get(t, 0))]

    @property
    def ally_types(self) -> List[str]:
        """Unit type of every ally slot, grouped by type in the map's type order."""
        return self._slots(self.ally_groups)

    @property
    def enemy_types(self) -> List[str]:
        return self._slots(self.enemy_groups)

    @property
    def n_agents(self) -> int:
        return len(self.ally_types)

    @property
    def n_enemies(self) -> int:
        return len(self.enemy_types)

    def terrain(self) -> np.ndarray:
        """uint8 grid ``[width, height]`` (see module docstring)."""
        if self.terrain_name is None:
            return np.full((self.width, self.height), TERRAIN_GROUND, dtype=np.uint8)
        return _TERRAIN_BUILDERS[self.terrain_name](self.width, self.height)


def _corridor_terrain(w: int, h: int) -> np.ndarray:
    grid = np.zeros((w, h), dtype=np.uint8)
    grid[10:31, 2:30] = TERRAIN_GROUND  # open ground where the zerglings can surround
    grid[1:10, 15:17] = TERRAIN_GROUND  # dead-end corridor, 2 cells wide, behind the zealots
    return grid


def _ravine_terrain(w: int, h: int) -> np.ndarray:
    grid = np.full((w, h), TERRAIN_GROUND, dtype=np.uint8)
    grid[6:w - 6, 14:16] = TERRAIN_CLIFF  # cliff band; colossi cross it, zerglings go round

    return grid


_TERRAIN_BUILDERS = {"corridor": _corridor_terrain, "ravine": _ravine_terrain}

_A, _E = (9.0, 16.0), (23.0, 16.0)


def _std(name, limit, allies, enemies, type_order, bits, map_type) -> MapSpec:
    return MapSpec(
        name=name, episode_limit=limit, type_order=tuple(type_order), unit_type_bits=bits,
        ally_groups=(SpawnGroup(_A, tuple(allies)),),
        enemy_groups=(SpawnGroup(_E, tuple(enemies)),),
        attack_point=_A, map_type=map_type,
    )


def _marines(name, n_a, n_e, limit) -> MapSpec:
    return _std(name, limit, [("marine", n_a)], [("marine", n_e)], ["marine"], 0, "marines")


_SZ = ["stalker", "zealot"]

MAPS: Dict[str, MapSpec] = {
    m.name: m
    for m in [
        _marines("3m", 3, 3, 60),
        _marines("8m", 8, 8, 120),
        _marines("25m", 25, 25, 150),
        _marines("5m_vs_6m", 5, 6, 70),
        _marines("8m_vs_9m", 8, 9, 120),
        _marines("10m_vs_11m", 10, 11, 150),
        _marines("27m_vs_30m", 27, 30, 180),
        _std("MMM", 150, [("marauder", 2), ("marine", 7), ("medivac", 1)],
             [("marauder", 2), ("marine", 7), ("medivac", 1)],
             ["marauder", "marine", "medivac"], 3, "MMM"),
        _std("MMM2", 180, [("marauder", 2), ("marine", 7), ("medivac", 1)],
             [("marauder", 3), ("marine", 8), ("medivac", 1)],
             ["marauder", "marine", "medivac"], 3, "MMM"),
        _std("2s3z", 120, [("stalker", 2), ("zealot", 3)], [("stalker", 2), ("zealot", 3)],
             _SZ, 2, "stalkers_and_zealots"),
        _std("3s5z", 150, [("stalker", 3), ("zealot", 5)], [("stalker", 3), ("zealot", 5)],
             _SZ, 2, "stalkers_and_zealots"),
        _std("3s5z_vs_3s6z", 170, [("stalker", 3), ("zealot", 5)],
             [("stalker", 3), ("zealot", 6)], _SZ, 2, "stalkers_and_zealots"),
        _std("1c3s5z", 180, [("colossus", 1), ("stalker", 3), ("zealot", 5)],
             [("colossus", 1), ("stalker", 3), ("zealot", 5)],
             ["colossus", "stalker", "zealot"], 3, "colossi_stalkers_zealots"),
        _std("3s_vs_3z", 150, [("stalker", 3)], [("zealot", 3)], _SZ, 0, "stalkers"),
        _std("3s_vs_4z", 200, [("stalker", 3)], [("zealot", 4)], _SZ, 0, "stalkers"),
        _std("3s_vs_5z", 250, [("stalker", 3)], [("zealot", 5)], _SZ, 0, "stalkers"),
        _std("2m_vs_1z", 150, [("marine", 2)], [("zealot", 1)], ["marine", "zealot"], 0,
             "marines"),
        MapSpec(
            name="2s_vs_1sc", episode_limit=300, type_order=("stalker", "spine_crawler"),
            unit_type_bits=0,
            ally_groups=(SpawnGroup((11.0, 10.0), (("stalker", 1),)),
                         SpawnGroup((21.0, 10.0), (("stalker", 1),))),
            enemy_groups=(SpawnGroup((16.0, 21.0), (("spine_crawler", 1),)),),
            attack_point=(16.0, 21.0), map_type="stalkers",
        ),
        _std("6h_vs_8z", 150, [("hydralisk", 6)], [("zealot", 8)], ["hydralisk", "zealot"], 0,
             "hydralisks"),
        MapSpec(
            name="corridor", episode_limit=400, type_order=("zealot", "zergling"),
            unit_type_bits=0,
            ally_groups=(SpawnGroup((13.5, 15.5), (("zealot", 6),)),),
            enemy_groups=(SpawnGroup((27.0, 16.0), (("zergling", 24),)),),
            attack_point=(13.5, 15.5), map_type="zealots", terrain_name="corridor",
        ),
        _std("so_many_baneling", 100, [("zealot", 7)], [("baneling", 32)],
             ["zealot", "baneling"], 0, "zealots"),
        MapSpec(
            name="bane_vs_bane", episode_limit=200, type_order=("baneling", "zergling"),
            unit_type_bits=2,
            ally_groups=(SpawnGroup((16.0, 11.0), (("zergling", 20),)),
                         SpawnGroup((16.0, 8.0), (("baneling", 4),))),
            enemy_groups=(SpawnGroup((16.0, 21.0), (("zergling", 20),)),
                          SpawnGroup((16.0, 24.0), (("baneling", 4),))),
            attack_point=(16.0, 8.0), map_type="bane",
        ),
        MapSpec(
            name="2c_vs_64zg", episode_limit=400, type_order=("colossus", "zergling"),
            unit_type_bits=0,
            ally_groups=(SpawnGroup((16.0, 23.0), (("colossus", 2),)),),
            enemy_groups=(SpawnGroup((16.0, 6.0), (("zergling", 64),)),),
            attack_point=(16.0, 23.0), map_type="colossus", terrain_name="ravine",
        ),
    ]
}


def get_map(name: str) -> MapSpec:
    """The map called ``name``; unknown names raise with the closest known names."""
    if name not in MAPS:
        close = difflib.get_close_matches(name, MAPS.keys(), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown SMAC map {name!r}.{hint} Known maps: {', '.join(sorted(MAPS))}."
        )
    return MAPS[name]


def formation_offsets(n: int, spacing: float) -> np.ndarray:
    """Offsets ``[n, 2]`` of a compact grid of ``n`` units centred on (0, 0), columns along y."""
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    idx = np.arange(n)
    gx = (idx // cols) - (rows - 1) / 2.0
    gy = (idx % cols) - (min(n, cols) - 1) / 2.0
    return np.stack([gx, gy], axis=1) * spacing


def spawn_layout(groups: Sequence[SpawnGroup], type_order: Sequence[str]) -> np.ndarray:
    """Nominal spawn positions ``[n, 2]`` of a team, slots grouped by type in ``type_order``."""
    per_type: Dict[str, List[np.ndarray]] = {t: [] for t in type_order}
    for g in groups:
        n = sum(c for _, c in g.units)
        spacing = 2.0 * max(UNIT_TYPES[t].radius for t, _ in g.units) + 0.2
        pos = formation_offsets(n, spacing) + np.asarray(g.centre)
        k = 0
        for t, c in g.units:
            per_type[t].extend(pos[k:k + c])
            k += c
    return np.asarray([p for t in type_order for p in per_type[t]], dtype=np.float64)


@dataclass
class FlowField:
    """Shortest-path waypoints on a passability grid, for every (goal cell, current cell).

    ``next_cell[goal, cell]`` is the cell two steps along a shortest 8-connected path from
    ``cell`` to ``goal`` (``cell`` itself when unreachable or already there). Cell index is
    ``ix * height + iy``.
    """

    width: int
    height: int
    next_cell: np.ndarray = field(repr=False)  # int32 [n_cells, n_cells]


def _shift(a: np.ndarray, dx: int, dy: int, fill) -> np.ndarray:
    """out[..., x, y] = a[..., x + dx, y + dy] (``fill`` outside)."""
    out = np.full_like(a, fill)
    w, h = a.shape[-2:]
    xs_dst = slice(max(0, -dx), w - max(0, dx))
    ys_dst = slice(max(0, -dy), h - max(0, dy))
    xs_src = slice(max(0, dx), w - max(0, -dx))
    ys_src = slice(max(0, dy), h - max(0, -dy))
    out[..., xs_dst, ys_dst] = a[..., xs_src, ys_src]
    return out


_NEIGHBOURS = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]


def build_flow_field(passable: np.ndarray) -> FlowField:
    """All-pairs shortest paths by vectorised relaxation (about a second for 32 x 32)."""
    w, h = passable.shape
    n = w * h
    # A move from c to c + (dx, dy) is allowed if both cells are passable and, for diagonal
    # moves, both orthogonal neighbours too (no cutting wall corners).
    allowed = []
    for dx, dy in _NEIGHBOURS:
        ok = passable & _shift(passable, dx, dy, False)
        if dx and dy:
            ok &= _shift(passable, dx, 0, False) & _shift(passable, 0, dy, False)
        allowed.append(ok)
    costs = [np.hypot(dx, dy) for dx, dy in _NEIGHBOURS]
    dist = np.full((n, w, h), np.inf, dtype=np.float32)
    goals = np.arange(n)
    gx, gy = goals // h, goals % h
    ok_goal = passable[gx, gy]
    dist[goals[ok_goal], gx[ok_goal], gy[ok_goal]] = 0.0
    for _ in range(4 * (w + h)):
        new = dist
        for (dx, dy), ok, c in zip(_NEIGHBOURS, allowed, costs):
            cand = np.where(ok, _shift(dist, dx, dy, np.inf) + c, np.inf)
            new = np.minimum(new, cand)
        if np.array_equal(new, dist):
            break
        dist = new
    best = np.full((n, w, h), np.inf, dtype=np.float32)
    nxt = np.broadcast_to(np.arange(n, dtype=np.int32).reshape(1, w, h), (n, w, h)).copy()
    cell_idx = np.arange(n, dtype=np.int32).reshape(w, h)
    for (dx, dy), ok, c in zip(_NEIGHBOURS, allowed, costs):
        cand = np.where(ok, _shift(dist, dx, dy, np.inf) + c, np.inf)
        better = cand < best
        best = np.where(better, cand, best)
        nxt = np.where(better, _shift(cell_idx, dx, dy, 0)[None], nxt)
    reachable = np.isfinite(dist) & (dist > 0)
    cells = np.broadcast_to(cell_idx[None], (n, w, h))
    nxt = np.where(reachable, nxt, cells).reshape(n, n)
    two_ahead = np.take_along_axis(nxt, nxt, axis=1)
    return FlowField(w, h, two_ahead.astype(np.int32))


_FLOW_CACHE: Dict[Tuple[str, str], Optional[FlowField]] = {}


def flow_field_for(spec: MapSpec, cliff_walker: bool) -> Optional[FlowField]:
    """Cached flow field for ground units (or cliff walkers); None where the map is open."""
    key = (spec.name, "cliff" if cliff_walker else "ground")
    if key not in _FLOW_CACHE:
        terrain = spec.terrain()
        passable = terrain >= TERRAIN_GROUND if cliff_walker else terrain == TERRAIN_GROUND
        _FLOW_CACHE[key] = None if passable.all() else build_flow_field(passable)
    return _FLOW_CACHE[key]
