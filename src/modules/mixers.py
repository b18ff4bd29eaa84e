"""Mixing networks: the joint value Q_tot from the agents' chosen utilities (and the state).

Every mixer maps ``agent_qs [..., N]`` and ``states [..., S]`` with the same leading dims
(the learner uses [B, T]) to ``q_tot [..., 1]``. ``build_mixer`` picks one by name.

* VDN (Sunehag et al.): the sum of the utilities; the state is not used.
* QMIX (Rashid et al.): a two-layer network whose weights come from hypernetworks of the state
  and are made non-negative with abs, so Q_tot is monotone non-decreasing in every utility:
  ``q_tot = elu(qs @ |W1(s)| + b1(s)) @ |W2(s)| + V(s)``. W1 and W2 are one linear layer of
  the state, or linear-ReLU-linear with ``hypernet_embed`` units (``hypernet_layers`` 1 or 2);
  b1 is linear; V is linear-ReLU-linear with ``mixing_embed_dim`` units (PyMARL's design).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _positive_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return value


def _check_agent_qs(owner: str, agent_qs: torch.Tensor, n_agents: int) -> None:
    if not isinstance(agent_qs, torch.Tensor) or agent_qs.dim() < 1 or agent_qs.shape[-1] != n_agents:
        got = tuple(agent_qs.shape) if isinstance(agent_qs, torch.Tensor) else type(agent_qs).__name__
        raise ValueError(f"{owner}: agent_qs must be [..., n_agents={n_agents}], got {got}")


class VDNMixer(nn.Module):
    """Q_tot = sum of the agents' utilities. ``states`` is accepted for a uniform interface and
    not used."""

    def __init__(self, n_agents: int):
        super().__init__()
        self.n_agents = _positive_int("VDNMixer", "n_agents", n_agents)

    def forward(self, agent_qs: torch.Tensor, states: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_agent_qs("VDNMixer", agent_qs, self.n_agents)
        return agent_qs.sum(dim=-1, keepdim=True)


def _hypernetwork(state_dim: int, out_dim: int, layers: int, embed_dim: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(state_dim, out_dim)
    return nn.Sequential(nn.Linear(state_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, out_dim))


class QMixer(nn.Module):
    """QMIX's monotonic mixing network (see the module docstring)."""

    HYPERNET_LAYERS = (1, 2)

    def __init__(self, n_agents: int, state_dim: int, mixing_embed_dim: int = 32, hypernet_layers: int = 2,
                 hypernet_embed: int = 64):
        super().__init__()
        self.n_agents = _positive_int("QMixer", "n_agents", n_agents)
        self.state_dim = _positive_int("QMixer", "state_dim", state_dim)
        self.embed_dim = _positive_int("QMixer", "mixing_embed_dim", mixing_embed_dim)
        if isinstance(hypernet_layers, bool) or hypernet_layers not in self.HYPERNET_LAYERS:
            raise ValueError(f"QMixer: hypernet_layers must be one of {self.HYPERNET_LAYERS}, got {hypernet_layers!r}")
        self.hypernet_layers = hypernet_layers
        hypernet_embed = _positive_int("QMixer", "hypernet_embed", hypernet_embed)
        E = self.embed_dim
        self.hyper_w_1 = _hypernetwork(state_dim, n_agents * E, hypernet_layers, hypernet_embed)
        self.hyper_b_1 = nn.Linear(state_dim, E)
        self.hyper_w_final = _hypernetwork(state_dim, E, hypernet_layers, hypernet_embed)
        self.V = nn.Sequential(nn.Linear(state_dim, E), nn.ReLU(), nn.Linear(E, 1))

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """agent_qs [..., N], states [..., S] (same leading dims) -> q_tot [..., 1]."""
        _check_agent_qs("QMixer", agent_qs, self.n_agents)
        if not isinstance(states, torch.Tensor) or states.dim() < 1 or states.shape[-1] != self.state_dim:
            got = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
            raise ValueError(f"QMixer: states must be [..., state_dim={self.state_dim}], got {got}")
        lead = agent_qs.shape[:-1]
        if states.shape[:-1] != lead:
            raise ValueError(f"QMixer: agent_qs {tuple(agent_qs.shape)} and states {tuple(states.shape)} "
                             "must have the same leading dims")
        N, E = self.n_agents, self.embed_dim
        qs = agent_qs.reshape(-1, N, 1)
        s = states.reshape(-1, self.state_dim)
        # Per row r: hidden_r = elu(q_r @ W1_r + b1_r) with W1_r [N, E], then hidden_r @ w_r + V_r.
        # Broadcast-multiply-and-sum instead of bmm: faster for these tiny per-row matrices.
        w1 = self.hyper_w_1(s).abs().view(-1, N, E)
        hidden = F.elu(torch.sum(qs * w1, dim=1) + self.hyper_b_1(s))  # [R, E]
        w_final = self.hyper_w_final(s).abs()  # [R, E]
        q_tot = torch.sum(hidden * w_final, dim=1, keepdim=True) + self.V(s)  # [R, 1]
        return q_tot.view(*lead, 1)


MIXER_NAMES = (None, "none", "vdn", "qmix")


def build_mixer(name: Optional[str], n_agents: int, state_dim: int, mixing_embed_dim: int = 32,
                hypernet_layers: int = 2, hypernet_embed: int = 64) -> Optional[nn.Module]:
    """The mixer called ``name``: None or "none" (independent learners: returns None), "vdn" or
    "qmix". The embedding arguments are used by QMIX only; their defaults are
    ``config/default.yaml``'s ``mixer:`` section (PyMARL's and pymarl2's QMIX)."""
    if name is None or name == "none":
        return None
    if name == "vdn":
        return VDNMixer(n_agents)
    if name == "qmix":
        return QMixer(n_agents, state_dim, mixing_embed_dim, hypernet_layers, hypernet_embed)
    raise ValueError(f"unknown mixer {name!r}; expected one of {MIXER_NAMES}")
