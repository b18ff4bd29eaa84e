"""Mixing networks: the joint value Q_tot from the agents' chosen utilities (and the state).

Every mixer maps ``agent_qs [..., N]`` and ``states [..., S]`` with the same leading dims
(the learner uses [B, T]) to ``q_tot [..., 1]``. ``build_mixer`` picks one by name.

* VDN (Sunehag et al.): the sum of the utilities; the state is not used.
* QMIX (Rashid et al.): a two-layer network whose weights come from hypernetworks of the state
  and are made non-negative with abs, so Q_tot is monotone non-decreasing in every utility:
  ``q_tot = elu(qs @ |W1(s)| + b1(s)) @ |W2(s)| + V(s)``. W1 and W2 are one linear layer of
  the state, or linear-ReLU-linear with ``hypernet_embed`` units (``hypernet_layers`` 1 or 2);
  b1 is linear; V is linear-ReLU-linear with ``mixing_embed_dim`` units (PyMARL's design).
* Attention (TransfQMix-style, Gallici et al.): QMIX's two-layer monotonic mixing, whose weights
  are read from a transformer over the state's entities (one token per ally, one per enemy and a
  learned mixer token). Agent i's first-layer weights come from its own ally token, the rest from
  the mixer token, all made non-negative with abs, so Q_tot stays monotone in every utility.
  Enemy tokens carry no position, so Q_tot does not depend on the order of the enemies; a dead
  or padding entity (``qmixlab.modules.entities.split_state``: SMAC writes it as zeros) is
  masked out of the attention keys and changes nothing. Needs the environment's
  ``StateLayout`` (``docs/environments.md``).
* QPLEX (Wang et al.): duplex dueling. Each utility is moved into a state-dependent scale,
  ``q'_i = w_i(s) q_i + b_i(s)`` with ``w_i > 0``, and split into ``v'_i = w_i max_a q_i + b_i``
  and the advantage ``a'_i = q'_i - v'_i <= 0``; ``Q_tot = sum_i v'_i + sum_i lambda_i(s, u) a'_i``
  with advantage weights ``lambda_i > 0`` from the state and the joint action. Q_tot is largest,
  and equals ``V_tot = sum_i v'_i``, exactly when every agent takes its own greedy action (IGM).
  It needs the joint action and each agent's max utility besides the chosen utilities.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from qmixlab.envs.spec import StateLayout
from qmixlab.modules.entities import split_state


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


def _check_states(owner: str, states: torch.Tensor, state_dim: int, agent_qs: torch.Tensor) -> None:
    if not isinstance(states, torch.Tensor) or states.dim() < 1 or states.shape[-1] != state_dim:
        got = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
        raise ValueError(f"{owner}: states must be [..., state_dim={state_dim}], got {got}")
    if states.shape[:-1] != agent_qs.shape[:-1]:
        raise ValueError(f"{owner}: agent_qs {tuple(agent_qs.shape)} and states {tuple(states.shape)} "
                         "must have the same leading dims")


class _SelfAttentionBlock(nn.Module):
    """Multi-head self-attention over tokens, then a feed-forward layer, each residual and
    layer-normalised. ``keys_present`` (bool [R, K]) removes absent tokens from every query's
    keys; each token still answers as a query."""

    def __init__(self, embed_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)
        self.norm_attention = nn.LayerNorm(embed_dim)
        self.feed_forward = nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim), nn.ReLU(),
                                          nn.Linear(4 * embed_dim, embed_dim))
        self.norm_feed_forward = nn.LayerNorm(embed_dim)

    def forward(self, tokens: torch.Tensor, keys_present: torch.Tensor) -> torch.Tensor:
        R, K, D = tokens.shape
        q, k, v = self.qkv(tokens).view(R, K, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keys_present[:, None, None, :])
        attended = attended.transpose(1, 2).reshape(R, K, D)
        tokens = self.norm_attention(tokens + self.out(attended))
        return self.norm_feed_forward(tokens + self.feed_forward(tokens))


class AttentionMixer(nn.Module):
    """TransfQMix-style monotonic mixer over the state's entities (see the module docstring).

    ``state_layout`` is the environment's SMAC ``StateLayout``: ally i of the state is agent i,
    so the state must hold ``n_agents`` allies. An agent's slice of the last-action block joins
    its ally token; the timestep feature, when present, joins the mixer token. The parameters do
    not depend on the numbers of allies or enemies, so one mixer's weights load into another's
    built for a different team size.
    """

    def __init__(self, n_agents: int, state_layout, attention_embed_dim: int = 32, attention_heads: int = 4,
                 attention_layers: int = 2, mixing_embed_dim: int = 32):
        super().__init__()
        self.n_agents = _positive_int("AttentionMixer", "n_agents", n_agents)
        if not isinstance(state_layout, StateLayout):
            raise ValueError("AttentionMixer: needs the environment's state layout (a StateLayout with "
                             f"allies, enemies, last_action, timestep), got {state_layout!r}")
        if state_layout.allies[0] != n_agents:
            raise ValueError(f"AttentionMixer: the state holds {state_layout.allies[0]} allies but there are "
                             f"{n_agents} agents; SMAC's state has one ally entity per agent")
        if state_layout.last_action % n_agents:
            raise ValueError(f"AttentionMixer: the last-action block of {state_layout.last_action} features "
                             f"does not split into {n_agents} agents' one-hot actions")
        embed_dim = _positive_int("AttentionMixer", "attention_embed_dim", attention_embed_dim)
        heads = _positive_int("AttentionMixer", "attention_heads", attention_heads)
        if embed_dim % heads:
            raise ValueError(f"AttentionMixer: attention_embed_dim={embed_dim} must be a multiple of "
                             f"attention_heads={heads}")
        layers = _positive_int("AttentionMixer", "attention_layers", attention_layers)
        self.layout = state_layout
        self.state_dim = state_layout.size
        self.embed_dim = _positive_int("AttentionMixer", "mixing_embed_dim", mixing_embed_dim)
        self.last_action_per_agent = state_layout.last_action // n_agents
        D, E = embed_dim, self.embed_dim
        self.embed_ally = nn.Linear(state_layout.allies[1] + self.last_action_per_agent, D)
        self.embed_enemy = nn.Linear(max(state_layout.enemies[1], 1), D)
        self.mixer_token = nn.Parameter(torch.zeros(D))
        self.embed_timestep = nn.Linear(state_layout.timestep, D) if state_layout.timestep else None
        self.blocks = nn.ModuleList(_SelfAttentionBlock(D, heads) for _ in range(layers))
        self.w1_from_ally = nn.Linear(D, E)
        self.b1_from_mixer = nn.Linear(D, E)
        self.w2_from_mixer = nn.Linear(D, E)
        self.v_from_mixer = nn.Sequential(nn.Linear(D, E), nn.ReLU(), nn.Linear(E, 1))

    def tokens(self, states: torch.Tensor):
        """``states [R, S]`` -> tokens ``[R, 1 + allies + enemies, D]`` (mixer token, allies,
        enemies) and which are present (bool, same first two dims)."""
        R, layout, blocks = states.shape[0], self.layout, self.layout.slices()
        entities = split_state(states, layout)  # dead units and padding are absent (all zeros in SMAC)
        allies, enemies = entities.allies, entities.enemies
        present = [torch.ones(R, 1, dtype=torch.bool, device=states.device), entities.ally_alive,
                   entities.enemy_alive]
        ally_inputs = allies
        if self.last_action_per_agent:
            last_actions = states[:, blocks["last_action"]].reshape(R, self.n_agents, self.last_action_per_agent)
            ally_inputs = torch.cat([allies, last_actions], dim=-1)
        mixer = self.mixer_token.expand(R, 1, -1)
        if self.embed_timestep is not None:
            mixer = mixer + self.embed_timestep(states[:, blocks["timestep"]]).unsqueeze(1)
        parts = [mixer, self.embed_ally(ally_inputs)]
        if layout.enemies[0] and layout.enemies[1]:
            parts.append(self.embed_enemy(enemies))
        else:
            present.pop()
        return torch.cat(parts, dim=1), torch.cat(present, dim=1)

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """agent_qs [..., N], states [..., S] (same leading dims) -> q_tot [..., 1]."""
        _check_agent_qs("AttentionMixer", agent_qs, self.n_agents)
        _check_states("AttentionMixer", states, self.state_dim, agent_qs)
        lead, N = agent_qs.shape[:-1], self.n_agents
        tokens, present = self.tokens(states.reshape(-1, self.state_dim))
        for block in self.blocks:
            tokens = block(tokens, present)
        mixer, allies = tokens[:, 0], tokens[:, 1:1 + N]
        w1 = self.w1_from_ally(allies).abs()  # [R, N, E]: agent i's weights from its own token
        hidden = F.elu(torch.sum(agent_qs.reshape(-1, N, 1) * w1, dim=1) + self.b1_from_mixer(mixer))
        w2 = self.w2_from_mixer(mixer).abs()
        q_tot = torch.sum(hidden * w2, dim=1, keepdim=True) + self.v_from_mixer(mixer)
        return q_tot.view(*lead, 1)


class QPLEXMixer(nn.Module):
    """QPLEX's duplex dueling mixer (see the module docstring).

    ``forward(agent_qs, states, actions, max_qs)``: the chosen utilities ``[..., N]``, the
    state ``[..., S]``, the chosen actions (int ``[..., N]``) and each agent's largest utility
    over its available actions ``[..., N]`` (``max_qs >= agent_qs``). The agents' scale and
    shift ``w_i(s) > 0``, ``b_i(s)`` and the value net are linear-ReLU-linear with
    ``hypernet_embed`` units; each of the ``qplex_attention_heads`` advantage-weight heads
    multiplies ``|key(s)|``, ``sigmoid(agents(s))`` and ``sigmoid(action(s, u))``, each
    linear-ReLU-linear with ``qplex_adv_hypernet_embed`` units (pymarl2's QPLEX defaults: 4 heads, 64 units).

    As in QPLEX's own implementation, the advantages enter ``lambda_i`` detached, so the agents
    are trained through ``sum_i q'_i`` and the weights ``lambda_i`` only through the mixer.
    """

    def __init__(self, n_agents: int, n_actions: int, state_dim: int, hypernet_embed: int = 64,
                 qplex_attention_heads: int = 4, qplex_adv_hypernet_embed: int = 64):
        super().__init__()
        self.n_agents = _positive_int("QPLEXMixer", "n_agents", n_agents)
        self.n_actions = _positive_int("QPLEXMixer", "n_actions", n_actions)
        self.state_dim = _positive_int("QPLEXMixer", "state_dim", state_dim)
        hypernet_embed = _positive_int("QPLEXMixer", "hypernet_embed", hypernet_embed)
        heads = _positive_int("QPLEXMixer", "qplex_attention_heads", qplex_attention_heads)
        adv_embed = _positive_int("QPLEXMixer", "qplex_adv_hypernet_embed", qplex_adv_hypernet_embed)
        N, S = n_agents, state_dim
        self.scale = _hypernetwork(S, N, 2, hypernet_embed)
        self.shift = _hypernetwork(S, N, 2, hypernet_embed)
        self.head_keys = _hypernetwork(S, heads, 2, adv_embed)
        self.head_agents = _hypernetwork(S, heads * N, 2, adv_embed)
        self.head_actions = _hypernetwork(S + N * n_actions, heads * N, 2, adv_embed)
        self.heads = heads

    def advantage_weights(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """lambda ``[R, N] > 0`` from ``states [R, S]`` and integer ``actions [R, N]``."""
        R, N, H = states.shape[0], self.n_agents, self.heads
        joint_action = F.one_hot(actions, self.n_actions).to(states.dtype).reshape(R, N * self.n_actions)
        key = self.head_keys(states).abs().unsqueeze(-1) + 1e-10  # [R, H, 1]
        agents = torch.sigmoid(self.head_agents(states)).view(R, H, N)
        action = torch.sigmoid(self.head_actions(torch.cat([states, joint_action], dim=1))).view(R, H, N)
        return (key * agents * action).sum(dim=1)

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor, actions: torch.Tensor,
                max_qs: torch.Tensor) -> torch.Tensor:
        """-> q_tot [..., 1] (see the class docstring)."""
        _check_agent_qs("QPLEXMixer", agent_qs, self.n_agents)
        _check_states("QPLEXMixer", states, self.state_dim, agent_qs)
        for name, value in (("actions", actions), ("max_qs", max_qs)):
            if not isinstance(value, torch.Tensor) or value.shape != agent_qs.shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"QPLEXMixer: {name} must have agent_qs's shape {tuple(agent_qs.shape)}, got {got}")
        lead, N = agent_qs.shape[:-1], self.n_agents
        s = states.reshape(-1, self.state_dim)
        scale = self.scale(s).abs() + 1e-10  # strictly positive: keeps the greedy action greedy
        shift = self.shift(s)
        qs = scale * agent_qs.reshape(-1, N) + shift
        vs = scale * max_qs.reshape(-1, N) + shift
        weights = self.advantage_weights(s, actions.reshape(-1, N).long())
        # sum q' + sum (lambda - 1) a' == sum v' + sum lambda a'
        q_tot = qs.sum(dim=1) + ((weights - 1.0) * (qs - vs).detach()).sum(dim=1)
        return q_tot.view(*lead, 1)


MIXER_NAMES = (None, "none", "vdn", "qmix", "attention", "qplex")


def build_mixer(name: Optional[str], n_agents: int, state_dim: int, mixing_embed_dim: int = 32,
                hypernet_layers: int = 2, hypernet_embed: int = 64, *, n_actions: Optional[int] = None,
                state_layout=None, attention_embed_dim: int = 32, attention_heads: int = 4,
                attention_layers: int = 2, qplex_attention_heads: int = 4,
                qplex_adv_hypernet_embed: int = 64) -> Optional[nn.Module]:
    """The mixer called ``name``: None or "none" (independent learners: returns None), "vdn",
    "qmix", "attention" (needs ``state_layout``, the environment's ``StateLayout``) or "qplex"
    (needs ``n_actions``). Each uses only its own size arguments; their defaults are
    ``config/default.yaml``'s ``mixer:`` section."""
    if name is None or name == "none":
        return None
    if name == "vdn":
        return VDNMixer(n_agents)
    if name == "qmix":
        return QMixer(n_agents, state_dim, mixing_embed_dim, hypernet_layers, hypernet_embed)
    if name == "attention":
        if state_layout is None:
            raise ValueError("mixer 'attention' splits the state into ally and enemy entities and needs the "
                             "environment's state layout (EnvSpec.state_layout), which this environment does "
                             "not declare; use mixer.name=qmix or qplex (docs/environments.md)")
        if state_layout.size != state_dim:
            raise ValueError(f"mixer 'attention': the state layout adds up to {state_layout.size} features, "
                             f"the state has {state_dim}")
        return AttentionMixer(n_agents, state_layout, attention_embed_dim, attention_heads, attention_layers,
                              mixing_embed_dim)
    if name == "qplex":
        if n_actions is None:
            raise ValueError("mixer 'qplex' reads the joint action: pass n_actions")
        return QPLEXMixer(n_agents, n_actions, state_dim, hypernet_embed, qplex_attention_heads,
                          qplex_adv_hypernet_embed)
    raise ValueError(f"unknown mixer {name!r}; expected one of {MIXER_NAMES}")
