"""``SC2Env``: real SMAC (``smac.env.StarCraft2Env``) behind qmixlab's ``MultiAgentEnv``.

The API is SMAC's own, so the adapter forwards every call unchanged (``info`` included: real
SMAC reports ``info["episode_limit"]=True`` only when ``continuing_episode=True``; the batched
wrapper ``VectorisedEnvs`` separates timeouts from terminal states with SMAC's ``timeouts``
counter either way). What the adapter adds:

* clear errors when the right ``smac`` is missing: the StarCraft II environment comes from the
  oxwhirl/smac git repository, while ``pip install smac`` installs SMAC3, an unrelated
  hyper-parameter optimiser with the same import name;
* a check that StarCraft II and the SMAC map exist *before* ``StarCraft2Env`` is built, instead
  of a pysc2 failure at the first ``reset()``;
* ``get_stats()`` that does not raise before the first battle ends (SMAC divides by
  ``battles_game``);
* ``get_spec()``: SMAC's sizes and layouts, no-op 0 for dead agents, and the step flag
  ``"invalid"`` (the batched wrapper flags crashed and relaunched games with it);
* a ``ValueError`` when an ended episode is stepped without ``reset()`` (SMAC would silently
  step the finished game; qmixlab's contract, ``docs/environments.md``, asks for an error).

The game itself is never needed to import this module or to run its tests.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional

from .multiagentenv import MultiAgentEnv
from .spec import EnvSpec, smac_layouts

SMAC_INSTALL = "pip install git+https://github.com/oxwhirl/smac.git"
SC2_DOWNLOAD = "https://github.com/Blizzard/s2client-proto#downloads"
SMAC_MAPS_DOWNLOAD = "https://github.com/oxwhirl/smac/releases/download/v0.1-beta1/SMAC_Maps.zip"


class SC2SetupError(RuntimeError):
    """SMAC or StarCraft II is missing or the wrong thing is installed."""


def import_starcraft2env():
    """Return ``smac.env.StarCraft2Env``, or raise ``SC2SetupError`` saying how to install it."""
    try:
        smac = importlib.import_module("smac")
    except ImportError as err:
        raise SC2SetupError(
            f"the 'sc2' backend needs SMAC (the StarCraft Multi-Agent Challenge), which is not "
            f"importable ({err}). It is not on PyPI: install it with\n    {SMAC_INSTALL}"
        ) from err
    try:
        smac_env = importlib.import_module("smac.env")
    except ImportError as err:
        if getattr(err, "name", None) not in ("smac.env", "smac"):
            # smac.env exists but one of its own imports failed (pysc2, s2clientprotocol, ...).
            raise SC2SetupError(
                f"SMAC is installed but 'smac.env' failed to import: {err}. Reinstall SMAC with "
                f"its dependencies:\n    {SMAC_INSTALL}"
            ) from err
        if _is_smac3(smac):
            raise SC2SetupError(
                "the installed 'smac' package is SMAC3, the hyper-parameter optimiser from PyPI "
                f"(version {getattr(smac, '__version__', 'unknown')}), not the StarCraft Multi-Agent "
                "Challenge, which shares its import name. Replace it:\n"
                f"    pip uninstall smac\n    {SMAC_INSTALL}\n"
                "(install SMAC3 in a separate environment if you need both)"
            ) from err
        raise SC2SetupError(
            f"the installed 'smac' package (at {getattr(smac, '__file__', None) or 'unknown location'}) "
            f"has no 'smac.env', so it is not the StarCraft Multi-Agent Challenge. Replace it:\n"
            f"    pip uninstall smac\n    {SMAC_INSTALL}"
        ) from err
    if not hasattr(smac_env, "StarCraft2Env"):
        raise SC2SetupError(
            f"'smac.env' has no StarCraft2Env; reinstall SMAC:\n    {SMAC_INSTALL}"
        )
    return smac_env.StarCraft2Env


def _is_smac3(smac_module) -> bool:
    """Markers of SMAC3 (automl): its facades, or the smac.facade subpackage."""
    if hasattr(smac_module, "HyperparameterOptimizationFacade") or hasattr(smac_module, "facade"):
        return True
    if "smac.facade" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("smac.facade") is not None
    except (ImportError, ValueError):
        return False


def default_sc2_path() -> Path:
    """Where pysc2 looks for StarCraft II when SC2PATH is unset."""
    if sys.platform == "darwin":
        return Path("/Applications/StarCraft II")
    if sys.platform.startswith("win"):
        return Path("C:/Program Files (x86)/StarCraft II")
    return Path.home() / "StarCraftII"


def find_sc2(map_name: Optional[str] = None) -> Path:
    """The StarCraft II directory; raises ``SC2SetupError`` if the game or the map is missing."""
    env_path = os.environ.get("SC2PATH")
    sc2_path = Path(env_path).expanduser() if env_path else default_sc2_path()
    where = f"SC2PATH={env_path}" if env_path else f"SC2PATH is unset and the default {sc2_path}"
    get_game = (
        f"Install the StarCraft II Linux package from {SC2_DOWNLOAD} (or the game on Windows/macOS), "
        f"set SC2PATH to its directory, and unzip the SMAC maps ({SMAC_MAPS_DOWNLOAD}) so that "
        "they are in $SC2PATH/Maps/SMAC_Maps."
    )
    if not sc2_path.is_dir():
        raise SC2SetupError(f"StarCraft II not found: {where} does not exist. {get_game}")
    if not (sc2_path / "Versions").is_dir():
        raise SC2SetupError(
            f"{sc2_path} (from {where}) is not a StarCraft II installation: it has no Versions/ "
            f"directory. {get_game}"
        )
    if map_name is not None:
        candidates = [sc2_path / maps / "SMAC_Maps" / f"{map_name}.SC2Map" for maps in ("Maps", "maps")]
        if not any(c.is_file() for c in candidates):
            raise SC2SetupError(
                f"SMAC map {map_name!r} not found: expected {candidates[0]}. Download the SMAC maps "
                f"from {SMAC_MAPS_DOWNLOAD} and unzip them into {sc2_path / 'Maps'} (so that "
                "$SC2PATH/Maps/SMAC_Maps exists)."
            )
    return sc2_path


class SC2Env(MultiAgentEnv):
    """Real SMAC with qmixlab's ``MultiAgentEnv`` interface.

    Takes ``smac.env.StarCraft2Env``'s keyword arguments (``map_name="8m"``, ``seed``,
    ``continuing_episode``, ...) and passes them on unchanged. ``self.env`` is the wrapped
    ``StarCraft2Env``.
    """

    def __init__(self, map_name: str = "8m", **smac_kwargs):
        starcraft2env = import_starcraft2env()
        find_sc2(map_name)  # before StarCraft2Env is built
        self.env = starcraft2env(map_name=map_name, **smac_kwargs)
        self._smac_kwargs = dict(smac_kwargs)
        self._episode_over = False
        self.map_name = map_name
        self.n_agents = self.env.n_agents
        self.n_enemies = self.env.n_enemies
        self.episode_limit = self.env.episode_limit

    def reset(self):
        self._episode_over = False
        return self.env.reset()

    def step(self, actions):
        if self._episode_over:
            raise ValueError("SC2Env: the episode has ended; call reset() before step()")
        reward, terminated, info = self.env.step(actions)
        self._episode_over = bool(terminated)
        return reward, terminated, info

    def get_obs(self):
        return self.env.get_obs()

    def get_obs_agent(self, agent_id: int):
        return self.env.get_obs_agent(agent_id)

    def get_obs_size(self) -> int:
        return self.env.get_obs_size()

    def get_state(self):
        return self.env.get_state()

    def get_state_size(self) -> int:
        return self.env.get_state_size()

    def get_avail_actions(self):
        return self.env.get_avail_actions()

    def get_avail_agent_actions(self, agent_id: int):
        return self.env.get_avail_agent_actions(agent_id)

    def get_total_actions(self) -> int:
        return self.env.get_total_actions()

    def get_env_info(self) -> dict:
        return self.env.get_env_info()

    def get_spec(self) -> EnvSpec:
        info = self.env.get_env_info()
        n_agents, n_actions = int(info["n_agents"]), int(info["n_actions"])

        def option(name: str, smac_default: bool) -> bool:
            return bool(getattr(self.env, name, self._smac_kwargs.get(name, smac_default)))

        obs_layout, state_layout, last_action_block = smac_layouts(
            self.env, n_agents, n_actions, int(info["obs_shape"]), int(info["state_shape"]),
            obs_instead_of_state=option("obs_instead_of_state", False),
            state_last_action=option("state_last_action", True),
            state_timestep_number=option("state_timestep_number", False),
        )
        return EnvSpec(
            n_agents=n_agents, n_actions=n_actions, obs_shape=int(info["obs_shape"]),
            state_shape=int(info["state_shape"]), episode_limit=int(info["episode_limit"]),
            step_flags=("invalid",), noop_action=0, obs_layout=obs_layout,
            state_layout=state_layout, state_last_action=last_action_block,
        )

    def get_stats(self) -> dict:
        try:
            return self.env.get_stats()
        except ZeroDivisionError:
            # SMAC computes win_rate = battles_won / battles_game, so it raises until a battle ends.
            env = self.env
            return {
                "battles_won": env.battles_won,
                "battles_game": env.battles_game,
                "battles_draw": env.timeouts,  # SMAC's own definition
                "win_rate": 0.0,
                "timeouts": env.timeouts,
                "restarts": env.force_restarts,
            }

    def close(self) -> None:
        self.env.close()

    def seed(self):
        return self.env.seed()

    def save_replay(self) -> None:
        self.env.save_replay()
