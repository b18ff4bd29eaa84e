"""The entity-attention agent (``agent.name=entity_attention``): one network for any team size.

Per agent and time step, with the observation split into entity tokens by
``qmixlab.modules.entities`` (own, move, each other ally, each enemy, with visibility)::

    e_i   = embed_type(i)(features_i)          one Linear per token type; unseen features -> 0
    z     = e + out_proj(MHA(e, key_mask))      masked multi-head self-attention, one layer
    x_t   = relu(fc_in(z_own) + last-action row + agent-id row)   (rows: optional, as RNNAgent;
                                                   one row per basic action and one for any attack)
    h_t   = GRU(x_t, h_{t-1})
    q_basic     = fc_basic(h_t)                 no-op, stop and the 4 moves (actions 0..5)
    q_attack_j  = attack_out(relu(attack_hidden(h_t) + attack_enemy(z_enemy_j)))   action 6 + j

so no weight depends on the number of allies or enemies (the agent-id rows do: with
``use_agent_id`` the weights fit one ``n_agents``). The last action is embedded as its basic
action or as "attacked some enemy" (one shared row), so that it too fits every team size. Which entities are masked, and how masked
logits are filled, is decided by ``qmixlab.components.masks`` (axis 11 of ``docs/masking.md``:
``MaskOptions.visibility`` and ``attention_fill_value``).

It has ``RNNAgent``'s interface (``n_agents``, ``n_actions``, ``initial_hidden``, ``step``,
``unroll``), so ``AgentController`` and the learner run it unchanged; ``unroll`` computes every
row and ignores ``lengths``. On MMM maps a medivac's actions ``6 + i`` heal ally ``i``; this
agent still reads their values from enemy tokens.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from qmixlab.components.masks import MaskOptions, attention_key_mask, hide_unseen_entities, masked_attention
from qmixlab.envs.spec import ObsLayout
from qmixlab.modules.agents import check_agent_obs, check_last_actions
from qmixlab.modules.entities import ObsEntities, split_observation
from qmixlab.modules.gru import gru_sequence


class EntityAttentionAgent(nn.Module):
    """Entity embeddings -> masked self-attention -> GRU on the own token -> Q-values, whose
    attack values are read from the targeted enemy's token.

    Shapes: B batch, T time, N = n_agents, D = obs_layout.size, H = hidden_dim, A = n_actions,
    E = embed_dim. Token order: own, move, allies (``obs_layout.allies[0]``), enemies.
    """

    def __init__(
        self,
        obs_layout: ObsLayout,
        n_actions: int,
        n_agents: int,
        hidden_dim: int = 64,
        embed_dim: int = 32,
        attention_heads: int = 4,
        use_last_action: bool = True,
        use_agent_id: bool = True,
        masks: MaskOptions = MaskOptions(),
    ):
        super().__init__()
        if not isinstance(obs_layout, ObsLayout):
            raise TypeError(f"EntityAttentionAgent: obs_layout must be an ObsLayout, got {obs_layout!r}")
        for name, value in (("n_actions", n_actions), ("n_agents", n_agents), ("hidden_dim", hidden_dim),
                            ("embed_dim", embed_dim), ("attention_heads", attention_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EntityAttentionAgent: {name} must be a positive int, got {value!r}")
        if embed_dim % attention_heads:
            raise ValueError(f"EntityAttentionAgent: embed_dim={embed_dim} must be a multiple of "
                             f"attention_heads={attention_heads}")
        n_enemies = obs_layout.enemies[0]
        if n_actions <= n_enemies:
            raise ValueError(f"EntityAttentionAgent: n_actions={n_actions} must exceed the {n_enemies} attack "
                             "actions (SMAC: no-op, stop, 4 moves, then one attack per enemy)")
        if obs_layout.allies[0] != n_agents - 1:
            raise ValueError(f"EntityAttentionAgent: obs_layout has {obs_layout.allies[0]} allies, expected "
                             f"n_agents - 1 = {n_agents - 1}")
        self.obs_layout = obs_layout
        self.obs_dim, self.n_actions, self.n_agents = obs_layout.size, n_actions, n_agents
        self.n_basic_actions = n_actions - n_enemies
        self.hidden_dim, self.embed_dim, self.attention_heads = hidden_dim, embed_dim, attention_heads
        self.use_last_action, self.use_agent_id = bool(use_last_action), bool(use_agent_id)
        self.masks = masks
        self.embed_own = nn.Linear(obs_layout.own, embed_dim)
        self.embed_move = nn.Linear(obs_layout.move, embed_dim)
        self.embed_ally = nn.Linear(obs_layout.allies[1], embed_dim)
        self.embed_enemy = nn.Linear(obs_layout.enemies[1], embed_dim)
        self.attention_in = nn.Linear(embed_dim, 3 * embed_dim)  # query, key, value
        self.attention_out = nn.Linear(embed_dim, embed_dim)
        self.fc_in = nn.Linear(embed_dim, hidden_dim)
        # One-hot inputs as rows added to fc_in's output (RNNAgent's trick; "no previous action",
        # index n_actions, adds nothing). Last-action rows: the basic actions, then "an attack".
        self.fc_in_last_action = (nn.Parameter(torch.empty(self.n_basic_actions + 1, hidden_dim))
                                  if use_last_action else None)
        self.fc_in_agent_id = nn.Parameter(torch.empty(n_agents, hidden_dim)) if use_agent_id else None
        self.rnn = nn.GRU(hidden_dim, hidden_dim)
        self.fc_basic = nn.Linear(hidden_dim, self.n_basic_actions)
        self.attack_hidden = nn.Linear(hidden_dim, embed_dim)
        self.attack_enemy = nn.Linear(embed_dim, embed_dim, bias=False)
        self.attack_out = nn.Linear(embed_dim, 1)
        bound = 1.0 / embed_dim ** 0.5
        with torch.no_grad():
            for p in (self.fc_in_last_action, self.fc_in_agent_id):
                if p is not None:
                    p.uniform_(-bound, bound)

    # -- RNNAgent's interface ----------------------------------------------------------------

    def initial_hidden(self, batch_size: int) -> torch.Tensor:
        """Zero hidden state [batch_size, N, H] on the agent's device and dtype."""
        return self.fc_basic.weight.new_zeros(batch_size, self.n_agents, self.hidden_dim)

    def step(self, obs: torch.Tensor, last_actions: Optional[torch.Tensor], hidden: torch.Tensor):
        """One time step: obs [B, N, D], last_actions [B, N] long, hidden [B, N, H] ->
        (q [B, N, A], new hidden [B, N, H])."""
        self._check_obs(obs, 3, "[B, N, obs_dim]")
        q, h = self._forward(obs.unsqueeze(1), self._checked_actions(last_actions, obs, 1), hidden)
        return q[:, 0], h

    def unroll(self, obs: torch.Tensor, last_actions: Optional[torch.Tensor], hidden: Optional[torch.Tensor] = None,
               lengths: Optional[torch.Tensor] = None):
        """A whole sequence: obs [B, T, N, D], last_actions [B, T, N] long, hidden [B, N, H] or
        None (zeros) -> q [B, T, N, A]. ``lengths`` is accepted and ignored: every row is
        computed (rows past an episode's end are never read by the loss)."""
        self._check_obs(obs, 4, "[B, T, N, obs_dim]")
        if obs.shape[1] == 0:
            raise ValueError(f"obs has no time steps: shape {tuple(obs.shape)}, expected T >= 1")
        q, _ = self._forward(obs, self._checked_actions(last_actions, obs, None), hidden)
        return q

    # -- the network on entities -------------------------------------------------------------

    def attend(self, entities: ObsEntities):
        """Masked self-attention over one batch of entity views [M, ...] (any leading shape).

        Returns (own [..., E], enemies [..., n_enemies, E]): the attended own and enemy tokens.
        Unseen allies and enemies (``entities.*_visible``) are zeroed by selection first; with
        ``visibility=mask`` they are also left out as keys.
        """
        lead = entities.own.shape[:-1]
        allies = hide_unseen_entities(entities.allies, entities.ally_visible)
        enemies = hide_unseen_entities(entities.enemies, entities.enemy_visible)
        tokens = torch.cat([
            self.embed_own(entities.own).unsqueeze(-2),
            self.embed_move(entities.move).unsqueeze(-2),
            self.embed_ally(allies),
            self.embed_enemy(enemies),
        ], dim=-2)
        L, E, heads = tokens.shape[-2], self.embed_dim, self.attention_heads
        tokens = tokens.reshape(-1, L, E)
        always = entities.ally_visible.new_ones(lead + (2,))  # the own and move tokens
        visible = torch.cat([always, entities.ally_visible, entities.enemy_visible], dim=-1).reshape(-1, L)
        key_mask = attention_key_mask(visible, self.masks)
        # Each row's own token is a key, so no row has every key masked (masked_attention would
        # still zero such a row safely).
        assert bool(key_mask[:, 0].all()), "the own token must always be an attended key"
        q, k, v = self.attention_in(tokens).view(-1, L, 3, heads, E // heads).permute(2, 0, 3, 1, 4)
        attended = masked_attention(q, k, v, key_mask, self.masks)  # [M, heads, L, E/heads]
        z = tokens + self.attention_out(attended.transpose(1, 2).reshape(-1, L, E))
        z = z.view(lead + (L, E))
        n_enemies = self.obs_layout.enemies[0]
        return z[..., 0, :], z[..., L - n_enemies:, :]

    def _forward(self, obs, last_actions, hidden):
        """obs [B, T, N, D], last_actions [B, T, N] or None -> (q [B, T, N, A], last hidden)."""
        B, T, N, _ = obs.shape
        H = self.hidden_dim
        own, enemies = self.attend(split_observation(obs, self.obs_layout))
        x = self.fc_in(own)  # [B, T, N, H]
        if self.use_last_action:
            basic, attack = self.fc_in_last_action[:-1], self.fc_in_last_action[-1:]
            n_enemies = self.n_actions - self.n_basic_actions
            rows = torch.cat([basic, attack.expand(n_enemies, H), basic.new_zeros(1, H)], 0)
            x = x + F.embedding(last_actions, rows)
        if self.use_agent_id:
            x = x + self.fc_in_agent_id
        x = x.relu().transpose(0, 1).reshape(T, B * N, H)
        h0 = self.initial_hidden(B) if hidden is None else self._checked_hidden(hidden, B, N)
        Y = gru_sequence(self.rnn, x, h0.reshape(B * N, H)).view(T, B, N, H).transpose(0, 1)  # [B, T, N, H]
        q_basic = self.fc_basic(Y)
        attack = (self.attack_hidden(Y).unsqueeze(-2) + self.attack_enemy(enemies)).relu()
        q_attack = self.attack_out(attack).squeeze(-1)  # [B, T, N, n_enemies]
        q = torch.cat([q_basic, q_attack], dim=-1)
        return q, Y[:, -1].contiguous()

    # -- checks ------------------------------------------------------------------------------

    def _check_obs(self, obs, dims, layout):
        check_agent_obs(obs, dims, layout, self.n_agents, self.obs_dim, detail=f" ({self.obs_layout})")

    def _checked_actions(self, last_actions, obs, unsqueeze_dim):
        """last_actions validated against obs (shape obs.shape[:-1]); [B, T, N] long, or None."""
        if not self.use_last_action:
            return None
        check_last_actions(last_actions, obs, self.n_actions)
        last_actions = last_actions.long()
        return last_actions if unsqueeze_dim is None else last_actions.unsqueeze(unsqueeze_dim)

    def _checked_hidden(self, hidden, B, N):
        if tuple(hidden.shape) != (B, N, self.hidden_dim):
            raise ValueError(f"hidden has shape {tuple(hidden.shape)}, expected {(B, N, self.hidden_dim)} "
                             "[B, N, hidden_dim]")
        return hidden
