"""A SASRec-style causal Transformer over session events (clicks, searches, purchases).

Each position embeds its item, event type, query tokens and its position: *reverse* (distance
from the last event) or *forward* (index from the session's first real event, padding skipped);
either way left padding and any sequence length give the same vector for the same session.
Item embeddings are tied with the output layer; with ``normalize`` the scores are scaled
cosines (NISER+/CORE style).

Two readouts turn the per-position outputs into the session vector:

- ``last``: the last position's output (SASRec).
- ``core``: one representation space (CORE-trm, Hou et al., SIGIR 2022): a linear layer gives
  each position with an item a weight logit, a softmax over those positions (causal: up to the
  position read) weights the session's own item embeddings, and their sum is the session
  vector. A prefix with no item yet (searches only) falls back to its last output. With
  ``recency`` each weight logit also gets a learned bias by its item's distance from the read
  position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.features import PAD, TYPE_CODES
from .loss import session_cross_entropy, used_columns

__all__ = ["SASRecConfig", "SessionTransformer", "READOUTS", "POSITIONS"]

READOUTS = ("last", "core")
POSITIONS = ("reverse", "forward")

_N_TYPES = len(TYPE_CODES) + 1  # + PAD
# Masked attention scores: large and finite, so a row with nothing to attend to cannot become NaN.
_MASKED = -1e9


@dataclass(frozen=True)
class SASRecConfig:
    n_items: int  # vocabulary size; embedding rows are 0..n_items (0 = no item)
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn_dim: int = 256
    max_len: int = 50  # positions embedded; older events share the last position embedding
    query_buckets: int = 4096  # query-token buckets, 0 = no token
    dropout: float = 0.2  # inside the blocks (attention weights, residual branches)
    emb_dropout: float = 0.2  # on the summed input embeddings
    normalize: bool = True  # L2-normalise session and item vectors (cosine scores)
    scale: float = 16.0  # cosine -> logit scale for the softmax (only when normalize)
    repeat: bool = False  # a repeat head: a learned logit bonus for the session's own items
    repeat_counts: int = 8  # occurrence counts the repeat head tells apart (more share the last)
    readout: str = "core"  # "core" (weighted sum of item embeddings) or "last" (last position's output)
    positions: str = "forward"  # "forward" (from the first event) or "reverse" (distance from the last)
    item_dropout: float = 0.2  # core readout: dropout on the summed item embeddings and the scoring table
    # core readout: a learned bias per distance between the read position and each summed item
    # (recency), the same for every prefix, so forward positions keep their train/serve parity.
    recency: bool = False
    # core readout: the read position's output also queries each position's (a learned key), so
    # which earlier items weigh most depends on where the session is now; prefix-consistent too.
    attend: bool = True
    # GCE-GNN's global item graph inside the encoder: each item entering the Transformer and the
    # core sum adds a learned share (per dimension) of the mean embedding of its Item-KNN
    # neighbours (this many, fixed at training time from the training sessions); scoring keeps
    # the plain table unless ``mixed_scoring``. 0 = off. Exported bundles bake the mixed table in
    # (global_items.py).
    global_neighbours: int = 0
    # With the global graph: items are also scored as the encoder reads them (the mixed table),
    # so a rarely clicked item borrows its neighbours' place; the bundle's item vectors are then
    # the mixed table, which serving reads like any other (no cost).
    mixed_scoring: bool = False
    # core readout: + a learned linear map of the read position's output (zero at the start:
    # CORE), so the vector can move from the session's items toward their successors.
    transition: bool = False

    def __post_init__(self) -> None:
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}; got {self.readout!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}; got {self.positions!r}")
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1; got {self.n_items}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.attn_dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False,
        kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        # x: (B, L, D); allowed: (B, L, L) bool, query i may attend to key j.
        # last_only: only the last position queries (Lq = 1), which is all a session vector needs.
        # kv: where to append this layer's (keys, values), (B, H, L, Dh) each (incremental.py).
        b, length, d = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.n_heads, self.head_dim)  # (B, L, 3, H, Dh)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, L, Dh)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, L, Dh) each
        if kv is not None:
            kv.append((k, v))
        if last_only:
            q, allowed = q[:, :, -1:], allowed[:, -1:]  # (B, H, 1, Dh), (B, 1, L)
        scores = q @ k.transpose(-2, -1) / self.head_dim**0.5  # (B, H, Lq, L)
        scores = scores.masked_fill(~allowed.unsqueeze(1), _MASKED)
        weights = self.attn_dropout(torch.softmax(scores, dim=-1))  # (B, H, Lq, L)
        y = (weights @ v).transpose(1, 2).reshape(b, -1, d)  # (B, Lq, D)
        return self.out(y)


class Block(nn.Module):
    """Pre-LN Transformer block."""

    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.attn = CausalSelfAttention(cfg.dim, cfg.n_heads, cfg.dropout)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(), nn.Linear(cfg.ffn_dim, cfg.dim)
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False,
        kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        y = self.attn(self.ln1(x), allowed, last_only, kv)  # (B, Lq, D)
        x = (x[:, -1:] if last_only else x) + self.dropout(y)  # (B, Lq, D)
        return x + self.dropout(self.ffn(self.ln2(x)))  # (B, Lq, D)


class SessionTransformer(nn.Module):
    """Left-padded (items, types, queries) -> session vectors; tied item embeddings score them."""

    neighbour_rows: torch.Tensor  # (n_items + 1, K) buffers of the global item graph, if any
    neighbour_weights: torch.Tensor

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        d = config.dim
        self.item_emb = nn.Embedding(config.n_items + 1, d, padding_idx=0)
        self.type_emb = nn.Embedding(_N_TYPES, d, padding_idx=PAD)
        self.query_emb = nn.Embedding(config.query_buckets, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_dropout = nn.Dropout(config.emb_dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_out = nn.LayerNorm(d)
        if config.readout == "core":
            self.weight_logit = nn.Linear(d, 1)  # (B, L, D) -> (B, L, 1) per-position weight logits
            self.item_dropout = nn.Dropout(config.item_dropout)
            if config.recency:
                self.recency_bias = nn.Embedding(config.max_len, 1)
                nn.init.zeros_(self.recency_bias.weight)
            if config.attend:
                self.weight_query = nn.Linear(d, d, bias=False)
                self.weight_key = nn.Linear(d, d, bias=False)
            if config.transition:
                self.transition = nn.Linear(d, d, bias=False)
                nn.init.zeros_(self.transition.weight)
        if config.global_neighbours:
            k = config.global_neighbours
            self.register_buffer("neighbour_rows", torch.zeros(config.n_items + 1, k, dtype=torch.long))
            self.register_buffer("neighbour_weights", torch.zeros(config.n_items + 1, k))
            self.global_gate = nn.Parameter(torch.zeros(d))
        if config.repeat:
            # bonus(t, j) for item j of the session seen from position t: recency and count of
            # the item's most recent occurrence, plus how well the session state matches it.
            self.repeat_recency = nn.Embedding(config.max_len, 1)
            self.repeat_count = nn.Embedding(config.repeat_counts, 1)
            self.repeat_query = nn.Linear(d, d)
            self.repeat_key = nn.Linear(d, d, bias=False)
            self.repeat_gate = nn.Linear(d, 1)
            for emb in (self.repeat_recency, self.repeat_count):
                nn.init.zeros_(emb.weight)
        for emb in (self.item_emb, self.type_emb, self.query_emb, self.pos_emb):
            nn.init.normal_(emb.weight, std=0.02)
            if emb.padding_idx is not None:
                with torch.no_grad():
                    emb.weight[emb.padding_idx].zero_()

    def item_repr(self, items: torch.Tensor) -> torch.Tensor:
        """(...) item rows -> (..., D) their embeddings as the encoder reads them: the table's
        row plus, with ``global_neighbours``, the gated mean of the row's neighbours."""
        e = self.item_emb(items)
        if not self.config.global_neighbours:
            return e
        rows, weights = self.neighbour_rows[items], self.neighbour_weights[items]  # (..., K) each
        mixed = (self.item_emb(rows) * weights.unsqueeze(-1)).sum(dim=-2)  # (..., D)
        return e + self.global_gate * mixed

    def hidden(
        self, items: torch.Tensor, types: torch.Tensor, queries: torch.Tensor, last_only: bool = False,
        kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """(B, L) items, (B, L) types, (B, L, Q) queries -> (B, L, D) per-position outputs.

        Position t sees events 0..t only (causal), never padding. With ``last_only`` the
        last block computes the last position only and the result is (B, 1, D). ``kv``
        collects each block's attention keys and values (the incremental encoder's cache).
        """
        length = items.shape[1]
        idx = torch.arange(length, device=items.device)  # (L,)
        if self.config.positions == "forward":
            pads = (types == PAD).sum(dim=1, keepdim=True)  # (B, 1): left padding
            pos = (idx.unsqueeze(0) - pads).clamp(0, self.config.max_len - 1)  # (B, L): first event -> 0
        else:
            pos = (length - 1 - idx).clamp(max=self.config.max_len - 1)  # (L,): last event -> 0
        x = (
            self.item_repr(items)
            + self.type_emb(types)
            + self.query_emb(queries).sum(dim=2)  # (B, L, Q, D) -> (B, L, D)
            + self.pos_emb(pos)  # (L, D) or (B, L, D)
        )  # (B, L, D)
        x = self.emb_dropout(x)
        causal = idx.unsqueeze(0) <= idx.unsqueeze(1)  # (L, L): key j <= query i
        is_self = idx.unsqueeze(0) == idx.unsqueeze(1)  # (L, L)
        # A padding row may attend only to itself, so its softmax is never empty.
        allowed = (causal & (types != PAD).unsqueeze(1)) | is_self  # (B, L, L)
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, last_only and i == len(self.blocks) - 1, kv)  # (B, L or 1, D)
        return self.ln_out(x)  # (B, L or 1, D)

    def session_states(
        self, items: torch.Tensor, types: torch.Tensor, queries: torch.Tensor, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, session): per-position outputs and session vectors, (B, Lq, D) each, where the
        query positions Lq are all L or, with ``last_only``, the last one."""
        core = self.config.readout == "core"
        h = self.hidden(items, types, queries, last_only=last_only and not core)  # (B, L or 1, D)
        if core:
            session = self._core_readout(h, items, last_only)  # (B, Lq, D)
            if last_only:
                h = h[:, -1:]
        else:
            session = h
        return h, (F.normalize(session, dim=-1) if self.config.normalize else session)

    def _core_readout(self, h: torch.Tensor, items: torch.Tensor, last_only: bool) -> torch.Tensor:
        """(B, L, D) outputs -> (B, Lq, D) weighted sums of the session's item embeddings."""
        length = items.shape[1]
        idx = torch.arange(length, device=items.device)
        q_idx = idx[-1:] if last_only else idx  # (Lq,)
        logits = self.weight_logit(h).squeeze(-1)  # (B, L)
        has_item = items > 0  # (B, L): searches, unknown items and padding get no weight
        # (B, Lq, L): query position t sums item positions j <= t.
        allowed = (idx.view(1, 1, -1) <= q_idx.view(1, -1, 1)) & has_item.unsqueeze(1)
        scores = logits.unsqueeze(1)  # (B, 1, L)
        if self.config.attend:
            query = self.weight_query(h[:, q_idx])  # (B, Lq, D)
            scores = scores + query @ self.weight_key(h).transpose(1, 2) / self.config.dim**0.5  # (B, Lq, L)
        if self.config.recency:
            distance = (q_idx.view(-1, 1) - idx.view(1, -1)).clamp(0, self.config.max_len - 1)  # (Lq, L)
            scores = scores + self.recency_bias(distance).squeeze(-1)  # (B, Lq, L)
        scores = scores.masked_fill(~allowed, _MASKED)  # (B, Lq, L)
        weights = torch.softmax(scores, dim=-1) * allowed  # rows with no item: all zero
        summed = weights @ self.item_dropout(self.item_repr(items))  # (B, Lq, D)
        any_item = allowed.any(dim=-1, keepdim=True)  # (B, Lq, 1)
        if self.config.transition:
            summed = summed + self.transition(h[:, q_idx])
        return torch.where(any_item, summed, h[:, q_idx])  # no item yet: the output itself

    def position_vectors(
        self, items: torch.Tensor, types: torch.Tensor, queries: torch.Tensor
    ) -> torch.Tensor:
        """(B, L, D) session vectors at every position (for training on all positions)."""
        return self.session_states(items, types, queries)[1]

    def session_vector(
        self, items: torch.Tensor, types: torch.Tensor, queries: torch.Tensor
    ) -> torch.Tensor:
        """(B, D) session vectors: the readout at the last (most recent) position."""
        return self.session_states(items, types, queries, last_only=True)[1][:, -1, :]

    def forward(
        self, items: torch.Tensor, types: torch.Tensor, queries: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The exported graph: session vectors, and with a repeat head the (B, L) bonuses."""
        h, session = self.session_states(items, types, queries, last_only=True)  # (B, 1, D) each
        if not self.config.repeat:
            return session[:, -1]
        _, bonus = self.repeat_bonus(h, items, last_only=True)  # (B, 1, L)
        return session[:, -1], bonus[:, 0]

    def repeat_bonus(
        self, h: torch.Tensor, items: torch.Tensor, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Repeat-head logit bonuses of the session's items seen from each query position.

        h: (B, Lq, D) hidden states of the query positions (all L, or the last with
        ``last_only``); items: (B, L) rows. Returns ``(cols, bonus)``, both (B, Lq, L): the
        column (row - 1) of key position j's item where j is that item's most recent
        occurrence up to the query position (else -1), and the bonus added to its logit.
        """
        b, length = items.shape
        idx = torch.arange(length, device=items.device)
        q_idx = idx[-1:] if last_only else idx  # (Lq,)
        same = items.unsqueeze(2) == items.unsqueeze(1)  # (B, L, L): [j, k] same item
        later = idx.unsqueeze(0) > idx.unsqueeze(1)  # (L, L): k > j
        next_same = torch.where(same & later, idx, length).min(dim=2).values  # (B, L)
        count = (same & ~later).sum(dim=2)  # (B, L): occurrences at or before j
        # Key j is live for query t when j <= t < next occurrence of its item, and j has an item.
        live = (idx.view(1, 1, -1) <= q_idx.view(1, -1, 1)) & (next_same.unsqueeze(1) > q_idx.view(1, -1, 1))
        live = live & (items > 0).unsqueeze(1)  # (B, Lq, L)
        recency = (q_idx.view(-1, 1) - idx.view(1, -1)).clamp(0, self.config.max_len - 1)  # (Lq, L)
        # The items as the encoder reads them (with a global graph, the mixed rows): the exported
        # graph bakes that table in (global_items.encoder_view), so the keys match there too.
        keys = self.repeat_key(F.normalize(self.item_repr(items), dim=-1))  # (B, L, D)
        match = self.repeat_query(h) @ keys.transpose(1, 2) / self.config.dim**0.5  # (B, Lq, L)
        bonus = (
            match
            + self.repeat_recency(recency).squeeze(-1)  # (Lq, L)
            + self.repeat_count(count.clamp(max=self.config.repeat_counts - 1)).squeeze(-1).unsqueeze(1)
            + self.repeat_gate(h)  # (B, Lq, 1)
        )
        cols = torch.where(live, items.unsqueeze(1) - 1, -1)
        return cols, bonus

    def scoring_table(self) -> torch.Tensor:
        """(n_items + 1, D) the raw table items are scored against: the embeddings, or with
        ``mixed_scoring`` (and a global graph) every row as the encoder reads it."""
        if self.config.mixed_scoring and self.config.global_neighbours:
            return self.item_repr(torch.arange(self.config.n_items + 1, device=self.item_emb.weight.device))
        return self.item_emb.weight

    def item_vectors(self) -> torch.Tensor:
        """(n_items + 1, D) item vectors used for scoring; row 0 ("no item") is zeros."""
        w = self.scoring_table()
        w = F.normalize(w, dim=-1) if self.config.normalize else w
        return torch.cat((torch.zeros_like(w[:1]), w[1:]), dim=0)

    def loss(
        self,
        session: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None = None,
        extra_cols: torch.Tensor | None = None,
        extra_bias: torch.Tensor | None = None,
        soft: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    ) -> torch.Tensor:
        """Cross-entropy of (N, D) session vectors against (N,) target columns.

        ``soft`` (cols (N, C), probs (N, C), weight): a teacher's distribution mixed into the
        target (distillation, :mod:`.distill`).

        Full softmax (fused, see :mod:`.loss`) unless ``negatives`` (sorted distinct columns)
        are given; ``extra_cols`` / ``extra_bias`` (N, M) are repeat-head bonuses.
        """
        catalogue = None
        if negatives is not None and self.config.mixed_scoring and self.config.global_neighbours:
            # Mix only the columns read (a batch's ~9k, not 43k items x 10 neighbours), the
            # dropout mask drawn for the whole table as nn.Dropout on it would (loss.used_columns).
            catalogue = self.config.n_items
            used, (mapped, negatives, extra_cols, soft_cols) = used_columns(
                [targets, negatives, extra_cols, None if soft is None else soft[0]]
            )
            targets, w = mapped if mapped is not None else targets, self.item_repr(used + 1)
            p = self.item_dropout.p if self.config.readout == "core" else 0.0  # "last": none
            if self.training and p > 0:
                w = w * torch.empty((catalogue, w.shape[1])).bernoulli_(1 - p).div_(1 - p)[used]
            soft = None if soft is None or soft_cols is None else (soft_cols, soft[1], soft[2])
        else:
            w = self.scoring_table()[1:]  # (n_items, D)
            if self.config.readout == "core":
                w = self.item_dropout(w)  # CORE's robust distance (training only)
        items = F.normalize(w, dim=-1) if self.config.normalize else w
        scaled = session * self.config.scale if self.config.normalize else session
        return session_cross_entropy(
            scaled, items, targets, bound=self.config.scale if self.config.normalize else None,
            negatives=negatives, extra_cols=extra_cols, extra_bias=extra_bias,
            soft_cols=None if soft is None else soft[0], soft_probs=None if soft is None else soft[1],
            soft_weight=0.0 if soft is None else soft[2], catalogue=catalogue,
        )

    def logits(self, session: torch.Tensor) -> torch.Tensor:
        """(N, D) session vectors -> (N, n_items) logits over rows 1..n_items (column c = row c+1)."""
        scores = session @ self.item_vectors()[1:].T  # (N, n_items)
        return scores * self.config.scale if self.config.normalize else scores
