"""The entity view of SMAC-layout observations and states, with visibility masks.

An observation of one agent (``docs/smac.md`` section 4, described by the environment's
``ObsLayout``) is split into tokens: the move features, the agent's own features, one token per
other ally and one per enemy. A state (section 5, ``StateLayout``) is split into one token per
ally and per enemy.

SMAC writes zeros for an entity it does not show, and visibility is read from that layout:

* ally ``k`` in an observation: its first feature is "visible" (1 when ally ``k`` is alive and
  strictly within sight range, else the block is all zeros), so it is visible iff that feature
  is non-zero.
* enemy ``j`` in an observation: its first feature is "attackable", which is 0 for an enemy seen
  between attack range 6 and sight range 9 (and always for a medivac), so it cannot tell
  visibility. Enemy ``j`` is visible iff any feature of its block is non-zero: a seen enemy has a
  positive health fraction with ``obs_all_health`` (the default), else a non-zero distance unless
  it stands exactly on the agent.
* the agent's own token and the move token are always visible (a dead agent's whole observation
  is zeros; its own token is still there, and its only available action is the no-op).
* ally or enemy ``i`` in the state: visible (alive) iff its first feature, health / max, is
  non-zero (dead units are all zeros).

The masks decide what is unseen: ``qmixlab.components.masks.hide_unseen_entities`` then replaces
unseen features by zeros with ``where``. A block holding NaN or inf counts as visible by the rules
above (it is not the zeros SMAC writes), and its values then reach the outputs, so they are seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from qmixlab.envs.spec import EnvSpec, ObsLayout, StateLayout
from qmixlab.errors import ConfigError


@dataclass(frozen=True)
class ObsEntities:
    """One observation batch ``[..., obs_dim]`` as entity tokens (views into it, no copies).

    move [..., move], own [..., own], allies [..., n_allies, ally_feats],
    enemies [..., n_enemies, enemy_feats], ally_visible [..., n_allies] bool,
    enemy_visible [..., n_enemies] bool.
    """

    move: torch.Tensor
    own: torch.Tensor
    allies: torch.Tensor
    enemies: torch.Tensor
    ally_visible: torch.Tensor
    enemy_visible: torch.Tensor


@dataclass(frozen=True)
class StateEntities:
    """One state batch ``[..., state_dim]`` as ally and enemy tokens: allies [..., n_agents,
    ally_attrs], enemies [..., n_enemies, enemy_attrs], ally_alive / enemy_alive bool."""

    allies: torch.Tensor
    enemies: torch.Tensor
    ally_alive: torch.Tensor
    enemy_alive: torch.Tensor


def _check_width(name: str, x: torch.Tensor, width: int, layout) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != width:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor [..., {width}] for {layout}, got {got}")


def _entity_block(x: torch.Tensor, block: slice, count: int, features: int) -> torch.Tensor:
    return x[..., block].unflatten(-1, (count, features))


def split_observation(obs: torch.Tensor, layout: ObsLayout) -> ObsEntities:
    """Split SMAC-layout observations ``[..., obs_dim]`` into entity tokens and visibility."""
    _check_width("obs", obs, layout.size, layout)
    (n_enemies, enemy_feats), (n_allies, ally_feats) = layout.enemies, layout.allies
    for kind, count, features in (("enemies", n_enemies, enemy_feats), ("allies", n_allies, ally_feats)):
        if count and not features:
            raise ValueError(f"{layout}: {count} {kind} with no features each; visibility cannot be read")
    blocks = layout.slices()
    enemies = _entity_block(obs, blocks["enemies"], n_enemies, enemy_feats)
    allies = _entity_block(obs, blocks["allies"], n_allies, ally_feats)
    return ObsEntities(
        move=obs[..., blocks["move"]],
        own=obs[..., blocks["own"]],
        allies=allies,
        enemies=enemies,
        ally_visible=allies[..., 0] != 0,  # the "visible" feature
        enemy_visible=(enemies != 0).any(-1),  # feature 0 ("attackable") is 0 for seen enemies beyond range 6
    )


def split_state(state: torch.Tensor, layout: StateLayout) -> StateEntities:
    """Split SMAC-layout states ``[..., state_dim]`` into ally and enemy tokens; an entity is
    alive iff its first attribute (health / max) is non-zero."""
    _check_width("state", state, layout.size, layout)
    for kind, (count, features) in (("allies", layout.allies), ("enemies", layout.enemies)):
        if count and not features:
            raise ValueError(f"{layout}: {count} {kind} with no attributes each; whether they live cannot be read")
    blocks = layout.slices()
    allies = _entity_block(state, blocks["allies"], *layout.allies)
    enemies = _entity_block(state, blocks["enemies"], *layout.enemies)
    return StateEntities(allies=allies, enemies=enemies, ally_alive=allies[..., 0] != 0,
                         enemy_alive=enemies[..., 0] != 0)


def require_obs_layout(spec: EnvSpec, env_name: str, wanted_by: str = "agent.name=entity_attention") -> ObsLayout:
    """The spec's observation layout, or a ``ConfigError`` naming the environment."""
    return _require(spec.obs_layout, "observation", env_name, wanted_by, "ObsLayout", "obs_layout")


def require_state_layout(spec: EnvSpec, env_name: str, wanted_by: str) -> StateLayout:
    """The spec's state layout, or a ``ConfigError`` naming the environment."""
    return _require(spec.state_layout, "state", env_name, wanted_by, "StateLayout", "state_layout")


def _require(layout: Optional[object], what: str, env_name: str, wanted_by: str, class_name: str, field: str):
    if layout is None:
        raise ConfigError(
            f"{wanted_by} needs the entity layout of the {what}, but environment {env_name!r} declares "
            f"none (EnvSpec.{field} is None: only SMAC-layout environments, smacsim and sc2, provide "
            f"a {class_name}; see docs/environments.md); use agent.name=rnn"
        )
    return layout
