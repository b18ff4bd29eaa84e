"""smacsim: an SC2-free, vectorised, SMAC-compatible multi-agent combat simulator."""

from .env import BatchedSMACSim, SMACSim
from .maps import MAPS, get_map

__all__ = ["BatchedSMACSim", "SMACSim", "MAPS", "get_map"]
