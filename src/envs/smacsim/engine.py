"""The vectorised combat engine: unit state as arrays ``[n_envs, n_units]``, one step = sub-ticks.

Time base: one environment step is ``step_mul`` game loops at 22.4 loops per second (real SMAC:
8 loops = 0.357 s), simulated as ``n_subticks`` equal sub-ticks (default: one per 4 game loops,
so 2 sub-ticks of 0.179 s). Every duration below is in those "Faster" game seconds. Weapon
cooldowns carry over fractions of a sub-tick, so rates of fire are exact on average.

Unit slots: allies ``0..n_agents-1`` then enemies; per-slot constants (type, stats, damage
matrix) are shared by all environments; dynamic state has a leading ``n_envs`` axis. No Python
loop runs over units or environments: pairwise quantities are ``[n_envs, N, N]`` broadcasts,
hits are gathered as (env, attacker, target) events and summed with ``np.bincount``.

Rules, for all units of all active environments at once:
  1. (first sub-tick of a step) Overlapping ground units are pushed apart by their overlap,
     heavier units less (mass ~ radius^2); static units (speed 0) are never pushed; small units
     walk under colossi.
  2. (first sub-tick of a step) Enemy AI, an attack-move toward the allies' spawn (each enemy
     keeps its offset in the group): keep the current target while it is alive and within the
     leash (acquisition range + 2); else retaliate against the nearest unit that hit it during
     the previous step (within sight range, 9); else acquire the nearest attackable unit within
     the acquisition range (edge distance ``max(weapon range, 5)``), widened to the sight range
     when a teammate within 4 already has a target; else keep walking.
  3. A unit with a target fires when the edge-to-edge distance (centre distance minus both
     radii) is within its weapon range and its cooldown expires during the sub-tick; otherwise it
     walks toward the target (stopping once in range). Ally attack orders persist until the
     target dies (the ally then stands still) or another order is given. Move orders persist
     until the point is reached. Allies never act on their own.
  4. Damage: a hit's raw damage (base + bonus vs attribute) goes to shields first; the part that
     passes the shields is reduced by armour per hit, at least 0.5 per hit. Hits on the same
     target in the same sub-tick are pooled (exact for a single attacker). Banelings explode on
     their first attack (2.2 splash, edge distance, enemies only) and die. The banelings of a
     sub-tick (either team) detonate in slot order; one whose target the earlier blasts already
     kill keeps its charge, and an enemy baneling whose target dies moves on at once to the
     nearest unit within sight that no other baneling is after (else the nearest). Colossus
     lances also hit units on a 2.8-long line through the target, perpendicular to the shot.
     Medivacs heal 12.6 HP/s for 1 energy per 3 HP, within 4 (edge distance).
  5. Movement at unit speed toward the order's point / target. On maps with terrain, ground
     units follow a precomputed shortest-path flow field and slide along walls; colossi walk
     over cliffs. Shields regenerate 2.8/s after 7 s without damage; energy regenerates
     0.7875/s up to 200.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import units as U
from .maps import TERRAIN_GROUND, MapSpec, flow_field_for, spawn_layout

IDLE, MOVE, ATTACK, AMOVE = 0, 1, 2, 3
SPAWN_JITTER = 0.25  # uniform +- jitter of every spawn coordinate


class CombatEngine:
    """Arrays of all units of ``n_envs`` copies of one map, and the sub-tick update."""

    def __init__(self, spec: MapSpec, n_envs: int, step_mul: int = 8,
                 n_subticks: Optional[int] = None):
        if step_mul < 1:
            raise ValueError(f"step_mul must be a positive number of game loops, got {step_mul}")
        self.spec = spec
        self.n_envs = B = int(n_envs)
        self.na, self.ne = spec.n_agents, spec.n_enemies
        self.n_units = N = self.na + self.ne
        self.step_seconds = step_mul / U.GAME_LOOPS_PER_SECOND
        self.n_subticks = n_subticks or max(1, int(round(step_mul / 4)))
        self.dt = np.float32(self.step_seconds / self.n_subticks)
        self.width, self.height = spec.width, spec.height

        types = [U.UNIT_TYPES[t] for t in spec.ally_types + spec.enemy_types]
        self.types = types
        f32 = lambda xs: np.asarray(xs, dtype=np.float32)  # noqa: E731
        self.team = np.array([0] * self.na + [1] * self.ne)
        self.hp_max = f32([t.health for t in types])
        self.sh_max = f32([t.shield for t in types])
        self.armor = f32([t.armor for t in types])
        self.hits = f32([t.hits for t in types])
        self.cd_max = f32([t.cooldown_s for t in types])
        self.wrange = f32([t.range for t in types])
        self.speed = f32([t.speed for t in types])
        self.radius = f32([t.radius for t in types])
        self.max_cd_loops = f32([t.max_cooldown_loops for t in types])
        self.is_healer = np.array([t.healer for t in types])
        self.is_air = np.array([t.is_air for t in types])
        self.is_bane = np.array([t.suicide_splash for t in types])
        self.is_lance = np.array([t.line_splash for t in types])
        self.has_weapon = np.array([t.has_weapon and not t.healer for t in types])
        self.acquire_range = np.maximum(self.wrange + U.ACQUIRE_EXTRA_RANGE,
                                        U.MIN_ACQUIRE_RANGE).astype(np.float32)
        self.leash_range = self.acquire_range + np.float32(2.0)

        other_team = self.team[:, None] != self.team[None, :]
        self.dmg = f32([[U.per_hit_damage(a, b) for b in types] for a in types]) * other_team
        same_team = ~other_team & ~np.eye(N, dtype=bool)
        heal_ok = self.is_healer[:, None] & same_team & ~self.is_healer[None, :]
        self.can_target = (self.dmg > 0) | heal_ok  # [N, N]
        self.rsum = self.radius[:, None] + self.radius[None, :]
        ground = ~self.is_air
        # Small ground units walk under colossi (as in StarCraft II): a colossus only collides
        # with other colossi.
        tall = np.array([t.cliff_walker for t in types])
        self.collide = (ground[:, None] & ground[None, :] & ~np.eye(N, dtype=bool)
                        & (tall[:, None] == tall[None, :]))
        # Share of a pairwise overlap that unit i resolves: static units never move.
        # Heavier (larger) units are pushed less; static ones (speed 0) are never pushed.
        mass = np.where(self.speed == 0, 1e6, self.radius ** 2)
        share = (mass[None, :] / (mass[:, None] + mass[None, :])).astype(np.float32)
        self.push_share = share * np.float32(0.9)
        # Direction used to separate exactly coincident units.
        self.tie_sign = np.sign(np.arange(N)[None, :] - np.arange(N)[:, None]).astype(np.float32)
        self.can_shoot = self.dmg > 0
        self.enemy_can_target = self.can_target[self.na:]
        self.enemy_healer_rows = np.flatnonzero(self.is_healer[self.na:])
        self._enemy_cols = np.arange(self.ne)[None, :]
        # Flat offsets for fast gathers: a[b, i, t] == a.ravel()[flat + t].
        self._flat_b = (np.arange(B)[:, None] * N).astype(np.int64)  # [B, 1] into [B, N]
        self._flat_n = (np.arange(N)[None, :] * N).astype(np.int64)  # [1, N] into [N, N]
        self._flat_bn = ((np.arange(B)[:, None] * N + np.arange(N)[None, :]) * N)  # [B,N,N]
        self._flat_en = ((np.arange(B)[:, None] * self.ne + np.arange(self.ne)[None, :]) * N)
        self.is_enemy = self.team == 1
        self.mobile = self.speed > 0
        self.stride_max = (self.speed * self.dt).astype(np.float32)
        self.healer_rows = np.flatnonzero(self.is_healer)
        self.has_shields = bool((self.sh_max > 0).any())
        self._hit_any = False
        self._order_tables = None
        self.bane_idx = np.flatnonzero(self.is_bane)
        self.lance_idx = np.flatnonzero(self.is_lance)
        self.bane_enemy_mask = other_team[self.bane_idx]  # [n_bane, N]
        self.lance_enemy_mask = other_team[self.lance_idx] & ground[None, :]

        # Terrain: per-unit passability class and optional flow fields.
        self.terrain = spec.terrain()
        self.has_terrain = bool((self.terrain != TERRAIN_GROUND).any())
        cliff = np.array([t.cliff_walker for t in types])
        self.pass_ground = self.terrain == TERRAIN_GROUND
        self.pass_cliff = self.terrain >= TERRAIN_GROUND
        self.walk_any = self.pass_ground  # cells every ground unit may stand on
        self.unit_cliff = cliff
        self.unit_uses_terrain = ~self.is_air
        self.flow_ground = flow_field_for(spec, False) if self.has_terrain else None
        self.flow_cliff = flow_field_for(spec, True) if self.has_terrain else None

        self.spawn = np.concatenate([
            spawn_layout(spec.ally_groups, spec.type_order),
            spawn_layout(spec.enemy_groups, spec.type_order),
        ]).astype(np.float32)
        ally_blocks = np.array([spec.type_order.index(t) for t in spec.ally_types])
        self.ally_block = ally_blocks
        self.attack_point = np.asarray(spec.attack_point, dtype=np.float32)
        # Enemies attack-move as a group: each keeps its offset from the group's centre (as a
        # StarCraft II group order does), snapped to a cell it can walk on.
        enemy_spawn = self.spawn[self.na:]
        goals = self.attack_point + (enemy_spawn - enemy_spawn.mean(0))
        self.enemy_goals = self._snap_to_passable(goals, types[self.na:])

        # Dynamic state.
        self.pos = np.zeros((B, N, 2), np.float32)
        self.hp = np.zeros((B, N), np.float32)
        self.sh = np.zeros((B, N), np.float32)
        self.energy = np.zeros((B, N), np.float32)
        self.cd = np.zeros((B, N), np.float32)
        self.since_damage = np.zeros((B, N), np.float32)
        self.mode = np.zeros((B, N), np.int8)
        self.target = np.full((B, N), -1, np.int64)
        self.goal = np.zeros((B, N, 2), np.float32)
        self.hit_by = np.zeros((B, self.ne, N), bool)  # [b, e, j]: j hit enemy e last sub-tick
        self.damage_taken = np.zeros((B, N), np.float32)  # health+shield lost this step
        self._rows = np.arange(B)[:, None]
        self._cols = np.arange(N)[None, :]
        self._arange = np.arange(N)

    def _snap_to_passable(self, points: np.ndarray, types) -> np.ndarray:
        out = points.astype(np.float32).copy()
        np.clip(out[:, 0], 0.5, self.width - 0.5, out=out[:, 0])
        np.clip(out[:, 1], 0.5, self.height - 0.5, out=out[:, 1])
        for k, t in enumerate(types):
            grid = self.pass_cliff if t.cliff_walker else self.pass_ground
            if t.is_air or grid[int(out[k, 0]), int(out[k, 1])]:
                continue
            cx, cy = np.nonzero(grid)
            d = (cx + 0.5 - out[k, 0]) ** 2 + (cy + 0.5 - out[k, 1]) ** 2
            j = int(d.argmin())
            out[k] = (cx[j] + 0.5, cy[j] + 0.5)
        return out

    # ------------------------------------------------------------------ setup
    @property
    def alive(self) -> np.ndarray:
        return self.hp > 0

    def reset(self, env_ids: np.ndarray, rngs) -> None:
        """Fresh episode in the listed environments (``rngs[b]`` draws the spawn jitter)."""
        env_ids = np.asarray(env_ids, dtype=np.int64)
        if env_ids.size == 0:
            return
        jitter = np.stack([rngs[b].uniform(-SPAWN_JITTER, SPAWN_JITTER, size=(self.n_units, 2))
                           for b in env_ids]).astype(np.float32)
        pos = self.spawn[None] + jitter
        # SMAC orders allies by (unit type, x, y).
        ally = pos[:, :self.na]
        key = self.ally_block[None, :] * 1e4 + ally[..., 0].astype(np.float64) \
            + ally[..., 1].astype(np.float64) * 1e-4
        order = np.argsort(key, axis=1, kind="stable")
        pos[:, :self.na] = np.take_along_axis(ally, order[..., None], axis=1)
        self.set_units(env_ids, pos=pos)

    def set_units(self, env_ids, pos, hp=None, sh=None, energy=None, cd=None) -> None:
        """Put units in the listed environments at ``pos`` ([n, N, 2]) with full (or given) stats.

        Allies get no order; enemies attack-move to the map's attack point.
        """
        ids = np.asarray(env_ids, dtype=np.int64)
        full = lambda v, default: np.broadcast_to(  # noqa: E731
            default if v is None else np.asarray(v, np.float32), (ids.size, self.n_units))
        self.pos[ids] = np.asarray(pos, np.float32)
        self.hp[ids] = full(hp, self.hp_max)
        self.sh[ids] = full(sh, self.sh_max)
        self.energy[ids] = full(energy, np.where(self.is_healer, U.ENERGY_START, 0.0))
        self.cd[ids] = full(cd, np.zeros(self.n_units, np.float32))
        self.sh[ids] = np.where(self.hp[ids] > 0, self.sh[ids], 0.0)
        self.since_damage[ids] = 1e3
        self.mode[ids] = np.where(self.team == 1, AMOVE, IDLE)
        self.target[ids] = -1
        self.goal[ids, :self.na] = self.pos[ids, :self.na]
        self.goal[ids, self.na:] = self.enemy_goals
        self.hit_by[ids] = False
        self._hit_any = bool(self.hit_by.any())
        self.damage_taken[ids] = 0.0

    # ------------------------------------------------------------------ orders
    def issue_agent_orders(self, actions: np.ndarray, active: np.ndarray,
                           move_amount: float) -> None:
        """Turn SMAC actions ``[B, n_agents]`` into orders of the ally units (active envs).

        No-op (0) keeps the current order (only dead agents use it); stop (1) clears it; a move
        (2-5) walks ``move_amount`` north/south/east/west; 6+i attacks enemy i (a medivac heals
        ally i). Orders persist across steps until done or replaced.
        """
        na = self.na
        if self._order_tables is None or self._order_tables[0] != move_amount:
            n_act = 6 + self.ne
            mode_of = np.full(n_act, ATTACK, np.int8)
            mode_of[:2] = IDLE
            mode_of[2:6] = MOVE
            offset = np.zeros((n_act, 2), np.float32)
            offset[2:6] = np.array([[0, 1], [0, -1], [1, 0], [-1, 0]], np.float32) * move_amount
            target_of = np.full((na, n_act), -1, np.int64)
            idx = np.arange(n_act - 6)
            target_of[:, 6:] = np.where(self.is_healer[:na, None], idx, idx + na)
            self._order_tables = (move_amount, mode_of, offset, target_of)
        _, mode_of, offset, target_of = self._order_tables
        change = (actions >= 1) & active[:, None]
        self.mode[:, :na] = np.where(change, mode_of[actions], self.mode[:, :na])
        self.target[:, :na] = np.where(change, target_of[self._arange[:na], actions],
                                       self.target[:, :na])
        is_move = change & (actions >= 2) & (actions <= 5)
        self.goal[:, :na] = np.where(is_move[..., None], self.pos[:, :na] + offset[actions],
                                     self.goal[:, :na])

    # ------------------------------------------------------------------ simulation
    def advance(self, active: np.ndarray) -> None:
        """Advance the active environments by one step (all sub-ticks)."""
        self.damage_taken *= ~active[:, None]
        active_col = active[:, None]
        for k in range(self.n_subticks):
            self._subtick(active_col, first=k == 0)

    def _subtick(self, active_col: np.ndarray, first: bool) -> None:
        """One sub-tick; separation and enemy target choice run on the first of each step."""
        dt = self.dt
        pos, hp = self.pos, self.hp
        x, y = pos[..., 0], pos[..., 1]
        alive = hp > 0
        actor = alive & active_col
        rows = self._rows

        # 1. Pairwise geometry; overlapping ground units are pushed apart (the push is small,
        #    so this sub-tick keeps using the distances measured before it).
        dx = x[:, None, :] - x[:, :, None]  # [b, i, j] = x_j - x_i
        dy = y[:, None, :] - y[:, :, None]
        dist = np.sqrt(dx * dx + dy * dy)
        overlap = self.rsum - dist
        edge = -overlap
        if first:
            pushing = (overlap > 1e-3) & (actor[:, :, None] & alive[:, None, :]) & self.collide
            pb, pi, pj = np.nonzero(pushing)
        if first and pb.size:
            d = dist[pb, pi, pj]
            amount = overlap[pb, pi, pj] * self.push_share[pi, pj]
            tiny = d < 1e-6
            ux = np.where(tiny, self.tie_sign[pi, pj], dx[pb, pi, pj] / np.maximum(d, 1e-6))
            uy = np.where(tiny, 0.0, dy[pb, pi, pj] / np.maximum(d, 1e-6))
            flat = pb * self.n_units + pi
            size = self.n_envs * self.n_units
            push_x = np.bincount(flat, amount * ux, size).reshape(self.n_envs, self.n_units)
            push_y = np.bincount(flat, amount * uy, size).reshape(self.n_envs, self.n_units)
            self._move_units(-push_x.astype(np.float32), -push_y.astype(np.float32))

        # 2. Enemy AI: keep the target within the leash, else retaliate against a unit that hit
        #    it during the previous step, else acquire the nearest target.
        na = self.na
        tgt = self.target
        if first:
            cand = self.enemy_can_target & alive[:, None, :]  # [b, enemy, unit]
            if self.enemy_healer_rows.size:
                damaged = alive & (hp < self.hp_max)
                cand[:, self.enemy_healer_rows] &= damaged[:, None, :]
            masked = np.where(cand, edge[:, na:], np.inf)
            tgt_e = self.target[:, na:]
            has_e = tgt_e >= 0
            t_dist = masked.take(self._flat_en + np.where(has_e, tgt_e, 0))
            keep = has_e & (t_dist <= self.leash_range[na:])
            a_idx = masked.argmin(2)
            # Units near an engaged teammate join the fight: they acquire within sight range.
            near_fight = ((edge[:, na:, na:] <= U.HELP_RADIUS) & has_e[:, None, :]).any(2)
            reach = np.where(near_fight, U.SIGHT_RANGE, self.acquire_range[na:])
            a_ok = masked.take(self._flat_en + a_idx) <= reach
            pick = np.where(a_ok, a_idx, -1)
            if self._hit_any:
                retaliate = np.where(self.hit_by, masked, np.inf)
                r_idx = retaliate.argmin(2)
                r_ok = retaliate.take(self._flat_en + r_idx) <= U.SIGHT_RANGE
                pick = np.where(r_ok, r_idx, pick)
                self.hit_by = np.zeros_like(self.hit_by)
                self._hit_any = False
            tgt = self.target.copy()
            tgt[:, na:] = np.where(actor[:, na:] & ~keep, pick, tgt_e)

        # 3. Engagement.
        has = tgt >= 0
        tclip = np.where(has, tgt, 0)
        t_alive = has & alive.take(self._flat_b + tclip)
        mode = self.mode
        done = (mode == ATTACK) & ~t_alive & has
        if done.any():  # allies whose target died stand still
            mode = self.mode = np.where(done, IDLE, mode).astype(np.int8)
            tgt = np.where(done, -1, tgt)
        self.target = tgt
        engaged = actor & t_alive & (mode >= ATTACK)
        t_edge = edge.take(self._flat_bn + tclip)
        in_range = t_edge <= self.wrange
        fire = engaged & in_range & self.can_shoot.take(self._flat_n + tclip) & (self.cd < dt)
        if self.bane_idx.size:
            fire = self._bane_detonations(fire, tclip, alive, dist)

        # 4. Damage, healing, deaths. Every hit is an event (env, attacker, target, hits, damage).
        fb, fi = np.nonzero(fire)
        if fb.size:
            ft = tclip[fb, fi]
            n_hits = self.hits[fi]
            if self.bane_idx.size or self.lance_idx.size:
                fb, fi, ft, n_hits = self._splash_events(fire, tclip, alive, dist,
                                                         fb, fi, ft, n_hits)
            N, size = self.n_units, self.n_envs * self.n_units
            d = self.dmg[fi, ft]
            flat = fb * N + ft
            raw = np.bincount(flat, n_hits * d, size).reshape(self.n_envs, N).astype(np.float32)
            sh = self.sh
            absorbed = np.minimum(sh, raw)
            through = raw - absorbed
            frac = (through / np.maximum(raw, 1e-6)).ravel()[flat]
            per_hit = np.maximum(frac * d - self.armor[ft], 0.5) * n_hits * (frac > 0)
            hp_loss = np.bincount(flat, per_hit, size).reshape(self.n_envs, N).astype(np.float32)
            hp_loss = np.minimum(hp_loss, hp)
            self.damage_taken += absorbed + hp_loss
            self.sh = sh - absorbed
            self.hp = hp = hp - hp_loss
            self.since_damage = np.where(raw > 0, np.float32(0.0), self.since_damage + dt)
            on_enemy = ft >= na
            if on_enemy.any():
                self.hit_by[fb[on_enemy], ft[on_enemy] - na, fi[on_enemy]] = True
                self._hit_any = True
            if self.bane_idx.size:
                hp[fire & self.is_bane] = 0.0  # banelings die in their own blast
                self._retarget_enemy_banelings(hp > 0, edge)
        else:
            self.since_damage += dt
        if self.healer_rows.size:
            heal = engaged & in_range & self.is_healer
            if heal.any():
                room = np.maximum(self.hp_max - hp, 0.0)[rows, tclip]
                amount = np.minimum(np.minimum(U.HEAL_HP_PER_S * dt,
                                               self.energy * U.HEAL_HP_PER_ENERGY), room) * heal
                self.energy = self.energy - amount / U.HEAL_HP_PER_ENERGY
                gain = np.zeros_like(hp)
                np.add.at(gain, (np.broadcast_to(rows, tclip.shape), tclip), amount)
                self.hp = hp = np.minimum(hp + gain * (hp > 0), self.hp_max)
            regen_energy = np.minimum(self.energy + U.ENERGY_REGEN_PER_S * dt, U.ENERGY_MAX)
            self.energy = np.where(actor & self.is_healer, regen_energy,
                                   self.energy).astype(np.float32)
        alive_now = hp > 0
        self.cd = np.where(fire, self.cd + self.cd_max - dt, np.maximum(self.cd - dt, 0.0))
        if self.has_shields:
            sh = self.sh * alive_now
            regen = (self.since_damage >= U.SHIELD_REGEN_DELAY_S) & actor
            self.sh = np.where(regen, np.minimum(sh + U.SHIELD_REGEN_PER_S * dt, self.sh_max), sh)

        # 5. Movement.
        chase = engaged & ~in_range
        walk = (mode == MOVE) | (self.is_enemy & ~has)
        moving = (chase | (actor & walk)) & self.mobile & alive_now
        if not moving.any():
            return
        flat_t = self._flat_b + tclip
        gx = np.where(chase, x.take(flat_t), self.goal[..., 0])
        gy = np.where(chase, y.take(flat_t), self.goal[..., 1])
        vx = gx - x
        vy = gy - y
        length = np.sqrt(vx * vx + vy * vy)
        limit = np.where(chase, t_edge - self.wrange + 0.01, length)
        stride = np.minimum(self.stride_max, np.maximum(limit, 0.0)) * moving
        if self.has_terrain:
            vx, vy = self._waypoint_vectors(x, y, gx, gy, vx, vy, length)
            scale = stride / np.maximum(np.sqrt(vx * vx + vy * vy), 1e-6)
        else:
            scale = stride / np.maximum(length, 1e-6)
        arrived = moving & (mode == MOVE) & (length <= self.stride_max)
        self._move_units(vx * scale, vy * scale)
        if arrived.any():
            self.mode = np.where(arrived, IDLE, mode).astype(np.int8)

    def _bane_detonations(self, fire, tclip, alive, dist):
        """Banelings of a sub-tick detonate one after another (in slot order), as in SC2.

        A baneling ready to fire detonates only if its target is still alive after the blasts
        of the banelings before it (splash included, pooled by the damage rule of step 4);
        otherwise it keeps its charge and moves on to another target. Each earlier ready
        baneling is assumed to detonate, so a baneling is at worst held one sub-tick too long
        but a blast is never spent on a dead unit.
        """
        bi = self.bane_idx
        ready = fire[:, bi]  # [B, nb]
        if ready.sum() < 2:
            return fire
        in_blast = (dist[:, bi] - self.radius) <= U.BANELING_SPLASH_RADIUS
        blast = ready[:, :, None] & in_blast & alive[:, None, :] & self.bane_enemy_mask
        raw_k = blast * self.dmg[bi]  # [B, nb, N]: raw damage of baneling k's blast on j
        prior_raw = np.cumsum(raw_k, axis=1) - raw_k
        prior_n = np.cumsum(blast, axis=1, dtype=np.float32) - blast
        t = tclip[:, bi]  # [B, nb]
        raw = np.take_along_axis(prior_raw, t[..., None], 2)[..., 0]
        n = np.take_along_axis(prior_n, t[..., None], 2)[..., 0]
        rows = self._rows
        through = raw - np.minimum(self.sh[rows, t], raw)
        # The pooled loss of step 4 (exact when all blasts on the target deal equal damage).
        lost = np.where(through > 0, np.maximum(through - n * self.armor[t], 0.5 * n), 0.0)
        fire = fire.copy()
        fire[:, bi] = ready & (lost < self.hp[rows, t])
        return fire

    def _retarget_enemy_banelings(self, alive_now, edge):
        """Enemy banelings whose target died move on at once to the nearest living enemy unit
        within sight range, preferring one no other enemy baneling is after."""
        bi = self.bane_idx[self.is_enemy[self.bane_idx]]
        if not bi.size:
            return
        tgt = self.target[:, bi]
        lost = alive_now[:, bi] & (tgt >= 0) & ~np.take_along_axis(
            alive_now, np.maximum(tgt, 0), 1)
        if not lost.any():
            return
        cand = self.can_target[bi] & alive_now[:, None, :]  # [B, nb, N]
        d = np.where(cand, edge[:, bi], np.inf)
        claims = np.zeros_like(alive_now, dtype=np.int64)
        chasing = alive_now[:, bi] & (tgt >= 0) & ~lost
        np.add.at(claims, (np.broadcast_to(self._rows, tgt.shape)[chasing], tgt[chasing]), 1)
        free = np.where(claims[:, None, :] == 0, d, np.inf)
        pick = np.where(np.isfinite(free.min(2)), free.argmin(2), d.argmin(2))
        ok = np.take_along_axis(d, pick[..., None], 2)[..., 0] <= U.SIGHT_RANGE
        self.target[:, bi] = np.where(lost, np.where(ok, pick, -1), tgt)

    def _splash_events(self, fire, tclip, alive, dist, fb, fi, ft, n_hits):
        """Replace baneling hits by their blast and add colossus lance hits (as hit events)."""
        parts_b, parts_i, parts_t, parts_n = [], [], [], []
        if self.bane_idx.size:
            main = ~self.is_bane[fi]
            fb, fi, ft, n_hits = fb[main], fi[main], ft[main], n_hits[main]
            bi = self.bane_idx
            in_blast = (dist[:, bi] - self.radius) <= U.BANELING_SPLASH_RADIUS
            blast = fire[:, bi, None] & in_blast & alive[:, None, :] & self.bane_enemy_mask
            b, k, j = np.nonzero(blast)
            parts_b.append(b), parts_i.append(bi[k]), parts_t.append(j)
            parts_n.append(np.ones(b.size, np.float32))
        if self.lance_idx.size:
            li = self.lance_idx
            rows = self._rows
            p_c = self.pos[:, li]  # [B, C, 2]
            t = tclip[:, li]
            p_t = self.pos[rows, t]
            u = p_t - p_c
            u /= np.maximum(np.sqrt((u * u).sum(-1, keepdims=True)), 1e-6)
            rel = self.pos[:, None, :, :] - p_t[:, :, None, :]  # [B, C, N, 2]
            along = np.abs(rel[..., 0] * u[..., None, 0] + rel[..., 1] * u[..., None, 1])
            across = np.abs(rel[..., 0] * u[..., None, 1] - rel[..., 1] * u[..., None, 0])
            near = (along <= self.radius + U.LANCE_HALF_WIDTH) & (across <= U.LANCE_HALF_LENGTH)
            not_target = t[:, :, None] != self._arange
            hit = fire[:, li, None] & near & not_target & alive[:, None, :] \
                & self.lance_enemy_mask
            b, k, j = np.nonzero(hit)
            parts_b.append(b), parts_i.append(li[k]), parts_t.append(j)
            parts_n.append(self.hits[li[k]])
        return (np.concatenate([fb] + parts_b), np.concatenate([fi] + parts_i),
                np.concatenate([ft] + parts_t), np.concatenate([n_hits] + parts_n))

    def _waypoint_vectors(self, x, y, gx, gy, vx, vy, length):
        """Direction of travel on maps with terrain: toward the flow-field waypoint."""
        h = self.height
        cell = self._cell_index(x, y)
        gcell = self._cell_index(gx, gy)
        for flow, mask in ((self.flow_ground, ~self.unit_cliff & ~self.is_air),
                           (self.flow_cliff, self.unit_cliff)):
            if flow is None or not mask.any():
                continue
            wp = flow.next_cell[gcell, cell]
            use = mask & (wp != cell) & (wp != gcell) & (length >= 1.5)
            vx = np.where(use, wp // h + 0.5 - x, vx)
            vy = np.where(use, wp % h + 0.5 - y, vy)
        return vx, vy

    def _cell_index(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ix = np.clip(x.astype(np.int64), 0, self.width - 1)
        iy = np.clip(y.astype(np.int64), 0, self.height - 1)
        return ix * self.height + iy

    def passable_at(self, p: np.ndarray, cliff_walker: np.ndarray,
                    air: Optional[np.ndarray] = None) -> np.ndarray:
        """Whether points ``p`` ([..., 2]) are inside the map and walkable for each unit."""
        x, y = p[..., 0], p[..., 1]
        inside = (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)
        if not self.has_terrain:
            return inside
        ix = np.clip(x.astype(np.int64), 0, self.width - 1)
        iy = np.clip(y.astype(np.int64), 0, self.height - 1)
        ok = np.where(cliff_walker, self.pass_cliff[ix, iy], self.pass_ground[ix, iy])
        if air is not None:
            ok = ok | air
        return inside & ok

    def _move_units(self, step_x: np.ndarray, step_y: np.ndarray) -> None:
        """Apply displacements, sliding along walls on terrain maps and clamping to the map."""
        pos = self.pos
        x, y = pos[..., 0], pos[..., 1]
        nx = x + step_x
        ny = y + step_y
        if self.has_terrain:
            ok = self._walkable(nx, ny)
            if not ok.all():
                ok_x = self._walkable(nx, y)  # slide along x only
                ok_y = self._walkable(x, ny)  # slide along y only
                prefer_x = ok_x & (~ok_y | (np.abs(step_x) >= np.abs(step_y)))
                nx = np.where(ok | prefer_x, nx, x)
                ny = np.where(ok | (ok_y & ~prefer_x), ny, y)
        np.minimum(np.maximum(nx, 0.01, out=nx), self.width - 0.01, out=x)
        np.minimum(np.maximum(ny, 0.01, out=ny), self.height - 0.01, out=y)

    def _walkable(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ix = np.clip(x.astype(np.int64), 0, self.width - 1)
        iy = np.clip(y.astype(np.int64), 0, self.height - 1)
        inside = (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)
        return inside & (self.walk_any[ix, iy] | (self.unit_cliff & self.pass_cliff[ix, iy])
                         | self.is_air)
