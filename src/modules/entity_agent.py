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
action or as "attacked some enemy" (one shared row), so that it too fits every team size. Which
entities are masked, and how masked logits are filled, is decided by ``qmixlab.components.masks``
(axis 11 of ``docs/masking.md``: ``MaskOptions.visibility`` and ``attention_fill_value``).

It has ``RNNAgent``'s interface (``n_agents``, ``n_actions``, ``initial_hidden``, ``step``,
``unroll``), so ``AgentController`` and the learner run it unchanged. As in ``RNNAgent``,
``unroll`` with ``lengths`` (masking axis 9 of ``docs/masking.md``) computes only the rows
episodes need: episodes sorted by length, per chunk of ``GRU_CHUNK_STEPS`` steps the ones still
running go through the attention, the GRU (``gru_packed``) and the Q heads. On MMM maps a
medivac's actions ``6 + i`` heal ally ``i``; this agent still reads their values from enemy tokens.

The same function is computed faster than written above, for the small sizes of SMAC:

* Rows are columns. Before the GRU and in the attack head, tensors hold the rows (agent, step
  and episode) in their last, contiguous dimension. A token type's embedding and its
  attention_in projections are one matrix product each over that type's tokens of all rows,
  composed (``attention_in(embed(x)) = (W_in W_e) x + W_in b_e + b_in``) so that they run over
  the token's few features rather than its E; the attention itself is elementwise work
  vectorised over the rows (``_RowAttention``: per-row kernels such as
  ``scaled_dot_product_attention`` on [rows, heads, L, d] cost far more than their arithmetic
  at these sizes).
* Only the own and enemy tokens are read after the attention, so only they are queried and go
  through ``out_proj`` (every token is still a key).
* fc_in's bias and the one-hot rows form one table whose gathered rows are the addend of
  fc_in's product (as in ``RNNAgent``); ``attack_enemy`` runs before the GRU (it is per row).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from qmixlab.components.masks import MaskOptions, attention_key_mask, hide_unseen_entities
from qmixlab.envs.spec import ObsLayout
from qmixlab.modules.agents import RNNAgent, check_agent_obs, check_last_actions, packed_rows, ragged_chunks
from qmixlab.modules.entities import ObsEntities, split_observation
from qmixlab.modules.gru import gru_packed, gru_sequence


def _key_bias(key_mask: torch.Tensor, options: MaskOptions, dtype: torch.dtype) -> torch.Tensor:
    """What ``masks.masked_attention`` adds to the attention logits: 0 for a key that may be
    attended, ``options.attention_fill`` (possibly -inf) for a masked one; key_mask bool, any shape."""
    return torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device).masked_fill_(
        ~key_mask, options.attention_fill(dtype))


def _feature_columns(features: torch.Tensor) -> torch.Tensor:
    """Entity features [M, count, F] as columns [F, count * M], column ``k * M + m``."""
    M, count, width = features.shape
    return features.transpose(0, 1).reshape(count * M, width).t()


class _RowAttention(torch.autograd.Function):
    """Multi-head attention with the rows as the last dimension:
    q [heads, d, Lq, M], kv [2, heads, d, L, M] (keys, values), key_bias [L, M] -> [heads, d, Lq, M],

        out[:, :, i, m] = sum_j softmax_j(q_i . k_j / sqrt(d) + key_bias[j, m]) v_j   (per head)

    ``scaled_dot_product_attention`` with the additive mask ``key_bias``, as
    ``masks.masked_attention`` computes it for rows that have a key. Each step is one elementwise
    op over all rows (loops run over the d, L and Lq of one head, never over rows), and the
    backward is written out so that the keys' and values' gradients fill one tensor.
    """

    @staticmethod
    def forward(ctx, q, kv, key_bias):
        d, L = q.shape[1], kv.shape[3]
        scale = d ** -0.5
        k, v = kv[0], kv[1]
        logits = torch.addcmul(key_bias, q[:, 0, :, None], k[:, 0, None], value=scale)  # [heads, Lq, L, M]
        for c in range(1, d):
            logits.addcmul_(q[:, c, :, None], k[:, c, None], value=scale)
        weights = torch.softmax(logits, dim=2)
        out = torch.mul(weights[:, None, :, 0], v[:, :, 0, None])
        for j in range(1, L):
            out.addcmul_(weights[:, None, :, j], v[:, :, j, None])
        ctx.save_for_backward(q, kv, weights)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, kv, weights = ctx.saved_tensors
        d, Lq, L = q.shape[1], q.shape[2], kv.shape[3]
        scale = d ** -0.5
        k, v = kv[0], kv[1]
        grad_out = grad_out.contiguous()
        grad_weights = torch.mul(grad_out[:, 0, :, None], v[:, 0, None])  # [heads, Lq, L, M]
        for c in range(1, d):
            grad_weights.addcmul_(grad_out[:, c, :, None], v[:, c, None])
        weighted = grad_weights.mul_(weights)  # softmax backward: w * (g - sum_j w g)
        grad_logits = torch.addcmul(weighted, weights, weighted.sum(2, keepdim=True), value=-1)
        grad_q = grad_kv = None
        if ctx.needs_input_grad[0]:
            grad_q = torch.mul(grad_logits[:, None, :, 0], k[:, :, 0, None]).mul_(scale)
            for j in range(1, L):
                grad_q.addcmul_(grad_logits[:, None, :, j], k[:, :, j, None], value=scale)
        if ctx.needs_input_grad[1]:
            grad_kv = torch.empty_like(kv)
            torch.mul(grad_logits[:, None, 0], q[:, :, 0, None], out=grad_kv[0]).mul_(scale)
            torch.mul(weights[:, None, 0], grad_out[:, :, 0, None], out=grad_kv[1])
            for i in range(1, Lq):
                grad_kv[0].addcmul_(grad_logits[:, None, i], q[:, :, i, None], value=scale)
                grad_kv[1].addcmul_(weights[:, None, i], grad_out[:, :, i, None])
        return grad_q, grad_kv, None


class EntityAttentionAgent(nn.Module):
    """Entity embeddings -> masked self-attention -> GRU on the own token -> Q-values, whose
    attack values are read from the targeted enemy's token.

    Shapes: B batch, T time, N = n_agents, D = obs_layout.size, H = hidden_dim, A = n_actions,
    E = embed_dim, M rows (agent and time step). Internally tokens are ordered own, enemies, move,
    allies (queried tokens first; the order of keys changes no output).
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
        None (zeros) -> q [B, T, N, A] (contiguous).

        ``lengths`` [B] (optional): only rows ``t < lengths[b]`` of episode ``b`` are needed. As in
        ``RNNAgent.unroll``, rows past an episode's length are then skipped where it pays (see
        ``_unroll_ragged``): their Q-values are zero or computed anyway, the needed rows are
        exactly as without ``lengths``.
        """
        self._check_obs(obs, 4, "[B, T, N, obs_dim]")
        if obs.shape[1] == 0:
            raise ValueError(f"obs has no time steps: shape {tuple(obs.shape)}, expected T >= 1")
        last_actions = self._checked_actions(last_actions, obs, None)
        episodes_per_chunk = ragged_chunks(lengths, obs, RNNAgent._chunk_episodes)
        if episodes_per_chunk is not None:
            return self._unroll_ragged(obs, last_actions, hidden, lengths, episodes_per_chunk)
        q, _ = self._forward(obs, last_actions, hidden)
        return q

    # -- the network on entities -------------------------------------------------------------

    def attend(self, entities: ObsEntities):
        """Masked self-attention over one batch of entity views [M, ...] (any leading shape).

        Returns (own [..., E], enemies [..., n_enemies, E]): the attended own and enemy tokens.
        Unseen allies and enemies (``entities.*_visible``) are zeroed by selection first; with
        ``visibility=mask`` they are also left out as keys.
        """
        lead, E = entities.own.shape[:-1], self.embed_dim
        M, n_enemies = lead.numel(), entities.enemies.shape[-2]
        z = self._attend_rows(entities).view(E, 1 + n_enemies, M)
        return z[:, 0].t().reshape(lead + (E,)), z[:, 1:].permute(2, 1, 0).reshape(lead + (n_enemies, E))

    def _attend_rows(self, entities: ObsEntities) -> torch.Tensor:
        """``attend`` with rows as columns: the M rows of ``entities`` (leading dimensions
        flattened) -> z [E, (1 + n_enemies) * M], column ``i * M + m`` holding row m's attended
        token i (0: own, 1 + j: enemy j)."""
        E, heads = self.embed_dim, self.attention_heads
        M = entities.own.shape[:-1].numel()
        own_features = entities.own.reshape(M, entities.own.shape[-1])
        (n_enemies, enemy_width), (n_allies, ally_width) = entities.enemies.shape[-2:], entities.allies.shape[-2:]
        enemy_visible = entities.enemy_visible.reshape(M, n_enemies)
        ally_visible = entities.ally_visible.reshape(M, n_allies)
        # Token types in token order: own, enemies (the queried tokens), move, allies. Each type's
        # features as columns [F, count * M], column k * M + m for its token k of row m.
        embeds = (self.embed_own, self.embed_enemy, self.embed_move, self.embed_ally)
        columns = [
            _feature_columns(own_features.unsqueeze(1)),
            _feature_columns(hide_unseen_entities(entities.enemies.reshape(M, n_enemies, enemy_width), enemy_visible)),
            _feature_columns(entities.move.reshape(M, 1, entities.move.shape[-1])),
            _feature_columns(hide_unseen_entities(entities.allies.reshape(M, n_allies, ally_width), ally_visible)),
        ]
        # attention_in(embed(x)) = (W_in W_e) x + (W_in b_e + b_in): a product over a token's few
        # features instead of its E. The composed weights of all types come from one product.
        widths = [layer.in_features for layer in embeds]
        composed = self.attention_in.weight @ torch.cat([layer.weight for layer in embeds]
                                                        + [torch.stack([layer.bias for layer in embeds], 1)], 1)
        weights = composed[:, : sum(widths)].split(widths, 1)
        biases = (composed[:, sum(widths):] + self.attention_in.bias.unsqueeze(1)).unbind(1)

        def project(kind, rows):  # one product per part: slicing an output costs a zero-filled gradient
            return torch.addmm(biases[kind][rows].unsqueeze(1), weights[kind][rows], columns[kind])

        query_rows, key_value_rows = slice(0, E), slice(E, 3 * E)
        tokens = torch.cat([torch.addmm(embeds[kind].bias.unsqueeze(1), embeds[kind].weight, columns[kind])
                            for kind in (0, 1)], dim=1)  # [E, queried * M]
        queries = torch.cat([project(kind, query_rows) for kind in (0, 1)], dim=1)
        keys_and_values = torch.cat([project(kind, key_value_rows) for kind in range(4)], dim=1)  # [2E, L * M]
        queried, L = 1 + n_enemies, 2 + n_enemies + n_allies
        always = enemy_visible.new_ones(1, M)  # the own and move tokens
        key_mask = attention_key_mask(torch.cat([always, enemy_visible.t(), always, ally_visible.t()]), self.masks)
        # Each row's own token is a key, so no row has every key masked (masks.masked_attention
        # would zero such a row; here it cannot occur).
        assert bool(key_mask[0].all()), "the own token must always be an attended key"
        attended = _RowAttention.apply(queries.view(heads, E // heads, queried, M),
                                       keys_and_values.view(2, heads, E // heads, L, M),
                                       _key_bias(key_mask, self.masks, tokens.dtype))
        out = self.attention_out
        return torch.addmm(out.bias.unsqueeze(1), out.weight, attended.view(E, queried * M)).add_(tokens)

    def _per_row(self, obs, last_actions):
        """The parts before the GRU, for the rows of obs [..., N, D] and last_actions [..., N]
        (or None) in their (flattened) order: -> (GRU input [M, H], the attack head's enemy
        keys attack_enemy(z_enemy) [E, n_enemies * M], column ``j * M + m`` for enemy j)."""
        z = self._attend_rows(split_observation(obs, self.obs_layout))
        M = obs.shape[:-1].numel()
        return self._input_layer(z[:, :M], last_actions), torch.mm(self.attack_enemy.weight, z[:, M:])

    def _input_layer(self, own, last_actions):
        """relu(fc_in(z_own) + last-action row + agent-id row): own [E, M] (columns: rows of
        last_actions [..., N], or of any [..., N] without last actions) -> [M, H].

        As ``RNNAgent._input_layer``: fc_in's bias and the one-hot rows form a table with one row
        per (last action, agent) pair, gathered as the addend of fc_in's product.
        """
        H, N = self.hidden_dim, self.n_agents
        table = self.fc_in.bias.view(1, 1, H)
        index = None
        if self.use_last_action:
            basic, attack = self.fc_in_last_action[:-1], self.fc_in_last_action[-1:]
            n_enemies = self.n_actions - self.n_basic_actions
            # Rows by action index: the basic actions, one shared row for every attack, and a
            # zero row for "no previous action" (index n_actions).
            rows = torch.cat([basic, attack.expand(n_enemies, H), basic.new_zeros(1, H)], 0)
            table = table + rows.unsqueeze(1)
            index = last_actions * (N if self.use_agent_id else 1)
        if self.use_agent_id:
            table = table + self.fc_in_agent_id.unsqueeze(0)
            agents = torch.arange(N, device=own.device)
            index = agents if index is None else index + agents
        if index is None:
            return torch.addmm(self.fc_in.bias, own.t(), self.fc_in.weight.t()).relu_()
        if not self.use_last_action:
            index = index.expand(own.shape[1] // N, N)  # the agent ids of the rows, in order
        addend = F.embedding(index.reshape(-1), table.reshape(-1, H))
        return addend.addmm_(own.t(), self.fc_in.weight.t()).relu_()

    def _q_values(self, Y, enemy_keys):
        """The Q heads on the GRU's output Y [M, H] with the enemy keys [E, n_enemies * M] of
        ``_per_row`` -> q [M, A]."""
        E, M, n_enemies = self.embed_dim, Y.shape[0], self.n_actions - self.n_basic_actions
        q_basic = self.fc_basic(Y)
        hidden_part = torch.addmm(self.attack_hidden.bias.unsqueeze(1), self.attack_hidden.weight, Y.t())  # [E, M]
        attack = (enemy_keys.view(E, n_enemies, M) + hidden_part.unsqueeze(1)).relu_()
        q_attack = torch.addmm(self.attack_out.bias.unsqueeze(1), self.attack_out.weight, attack.view(E, n_enemies * M))
        return torch.cat([q_basic, q_attack.view(n_enemies, M).t()], dim=1)

    def _forward(self, obs, last_actions, hidden):
        """Every row: obs [B, T, N, D], last_actions [B, T, N] or None -> (q [B, T, N, A], last
        hidden [B, N, H]). Rows are taken time-major, the GRU's order."""
        B, T, N, _ = obs.shape
        H = self.hidden_dim
        actions_tm = None if last_actions is None else last_actions.transpose(0, 1)
        x, enemy_keys = self._per_row(obs.transpose(0, 1), actions_tm)
        h0 = self.initial_hidden(B) if hidden is None else self._checked_hidden(hidden, B, N)
        Y = gru_sequence(self.rnn, x.view(T, B * N, H), h0.reshape(B * N, H))  # [T, B*N, H]
        q = self._q_values(Y.view(T * B * N, H), enemy_keys).view(T, B, N, self.n_actions)
        return q.transpose(0, 1).contiguous(), Y[-1].view(B, N, H)

    def _unroll_ragged(self, obs, last_actions, hidden, lengths, episodes_per_chunk):
        """``unroll`` computing only the rows episodes need, as ``RNNAgent._unroll_ragged``: the
        rows of the episodes running at each chunk's start are gathered in the GRU's packed
        order, go through the attention and fc_in, ``gru_packed`` and the Q heads, and are
        scattered back. Needed rows and their gradients are exactly the full unroll's (the
        network is causal in time and row-independent apart from the GRU); rows never computed
        hold zero Q-values.
        """
        B, T, N, _ = obs.shape
        H, A = self.hidden_dim, self.n_actions
        order, steps, episodes = packed_rows(lengths.to(device=obs.device, dtype=torch.long), T, episodes_per_chunk)
        actions_rows = None if last_actions is None else last_actions[episodes, steps]
        x, enemy_keys = self._per_row(obs[episodes, steps], actions_rows)  # [R*N, H]: packed
        h0 = self.initial_hidden(B) if hidden is None else self._checked_hidden(hidden, B, N)
        Y = gru_packed(self.rnn, x, h0.index_select(0, order).view(B * N, H), T, [n * N for n in episodes_per_chunk])
        q_rows = self._q_values(Y, enemy_keys).view(-1, N, A)
        return q_rows.new_zeros(B * T, N, A).index_copy(0, episodes * T + steps, q_rows).view(B, T, N, A)

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
