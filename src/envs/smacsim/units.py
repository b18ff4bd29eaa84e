"""Unit data for the embedded simulator (``docs/smac.md`` sections 5 and 8).

All times are in "Faster" game seconds (22.4 game loops per second), the time base of real SMAC.
Distances are in map cells. Weapon ranges are edge-to-edge (centre distance minus both radii),
as in StarCraft II; SMAC's 6-unit "shoot range" for action availability is a centre distance and
lives in ``features.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet

GAME_LOOPS_PER_SECOND = 22.4  # "Faster" speed
SIGHT_RANGE = 9.0  # SMAC's unit sight range (observation radius, centre distance, strict)
SHOOT_RANGE = 6.0  # SMAC's attack/heal availability radius (centre distance, inclusive)

SHIELD_REGEN_DELAY_S = 7.0  # seconds without damage before Protoss shields regenerate
SHIELD_REGEN_PER_S = 2.8
ENERGY_MAX = 200.0
ENERGY_START = 50.0
ENERGY_REGEN_PER_S = 0.7875
HEAL_HP_PER_S = 12.6
HEAL_HP_PER_ENERGY = 3.0

# Extra reach (beyond the weapon range) within which an attack-moving enemy acquires a target
# and keeps chasing it. StarCraft II units scan a little beyond their weapon range.
ACQUIRE_EXTRA_RANGE = 0.0
MIN_ACQUIRE_RANGE = 5.0
# An enemy unit within this edge distance of a teammate that has a target joins the fight: it
# acquires targets within SIGHT_RANGE instead of its own acquisition range.
HELP_RADIUS = 4.0
BANELING_SPLASH_RADIUS = 2.2
# Colossus thermal lances: a line through the target, perpendicular to the shot, of this half
# length; a unit is hit if it is within its own radius plus LANCE_HALF_WIDTH of that line.
LANCE_HALF_LENGTH = 1.4
LANCE_HALF_WIDTH = 0.3


@dataclass(frozen=True)
class UnitType:
    name: str
    race: str  # "T", "P", "Z"
    health: float
    shield: float
    armor: float
    damage: float  # per hit, before bonus and armour
    hits: int  # hits per attack (zealot 2, colossus 2)
    bonus: float  # extra damage per hit against units with `bonus_vs`
    bonus_vs: str  # attribute name or ""
    cooldown_s: float  # seconds between attacks (0: no weapon / suicide)
    range: float  # edge-to-edge weapon (or heal) range
    speed: float  # cells per second
    radius: float
    attributes: FrozenSet[str]
    max_cooldown_loops: float  # SMAC's state normalisation constant (docs/smac.md section 5)
    is_air: bool = False
    can_attack_air: bool = False
    cliff_walker: bool = False  # walks over cliffs (colossus)
    healer: bool = False  # medivac: heals instead of attacking
    suicide_splash: bool = False  # baneling
    line_splash: bool = False  # colossus

    @property
    def has_weapon(self) -> bool:
        return self.damage > 0


def _attrs(*names: str) -> FrozenSet[str]:
    return frozenset(names)


UNIT_TYPES: Dict[str, UnitType] = {
    "marine": UnitType("marine", "T", 45, 0, 0, 6, 1, 0, "", 0.61, 5, 3.15, 0.375,
                       _attrs("light", "bio"), 15, can_attack_air=True),
    "marauder": UnitType("marauder", "T", 125, 0, 1, 10, 1, 10, "armored", 1.07, 6, 3.15, 0.5625,
                         _attrs("armored", "bio"), 25),
    "medivac": UnitType("medivac", "T", 150, 0, 1, 0, 0, 0, "", 0.0, 4, 3.5, 0.75,
                        _attrs("armored", "mech", "air"), 15, is_air=True, healer=True),
    "stalker": UnitType("stalker", "P", 80, 80, 1, 13, 1, 5, "armored", 1.34, 6, 4.13, 0.625,
                        _attrs("armored", "mech"), 35, can_attack_air=True),
    "zealot": UnitType("zealot", "P", 100, 50, 1, 8, 2, 0, "", 0.86, 0.1, 3.15, 0.5,
                       _attrs("light", "bio"), 22),
    "colossus": UnitType("colossus", "P", 200, 150, 1, 10, 2, 5, "light", 1.07, 7, 3.15, 1.0,
                         _attrs("armored", "mech", "massive"), 24, cliff_walker=True,
                         line_splash=True),
    "hydralisk": UnitType("hydralisk", "Z", 90, 0, 0, 12, 1, 0, "", 0.59, 5, 3.15, 0.625,
                          _attrs("light", "bio"), 10, can_attack_air=True),
    "zergling": UnitType("zergling", "Z", 35, 0, 0, 5, 1, 0, "", 0.497, 0.1, 4.13, 0.375,
                         _attrs("light", "bio"), 11),
    # The baneling's "cooldown" is irrelevant (it dies on its one attack); max cooldown 1 loop.
    "baneling": UnitType("baneling", "Z", 30, 0, 0, 16, 1, 19, "light", 0.0, 0.25, 3.5, 0.375,
                         _attrs("bio"), 1, suicide_splash=True),
    "spine_crawler": UnitType("spine_crawler", "Z", 300, 0, 2, 25, 1, 5, "armored", 1.32, 7, 0.0,
                              0.5, _attrs("armored", "structure"), 15),
}


def per_hit_damage(attacker: UnitType, target: UnitType) -> float:
    """Raw damage of one hit of ``attacker`` on ``target`` (before shields and armour)."""
    if not attacker.has_weapon or attacker.healer:
        return 0.0
    if target.is_air and not attacker.can_attack_air:
        return 0.0
    bonus = attacker.bonus if attacker.bonus_vs and attacker.bonus_vs in target.attributes else 0.0
    return attacker.damage + bonus
