"""New items: counted in the stream, admitted past a threshold, given initialised embedding rows.

An item first seen after the bundle was trained has no row, so no answer can contain it. The
learner counts such items in the sessions it sees; one seen ``min_count`` times is admitted
(Monolith admits new ids the same way): the vocabulary grows by one row at its end (rows of known
items never move, so session state, which holds item hashes, stays valid across the swap), and
the new row starts from the mean of the raw embeddings of the known items it co-occurred with in
those sessions ("cooccurrence"), or from the mean of all rows ("mean"), scaled to the mean norm
of the known rows. Fine-tuning (:mod:`.update`) then trains it like any other row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..core.events import Event
from ..core.features import ItemVocab, item_hash
from ..model.sasrec import SessionTransformer

__all__ = ["INIT_RULES", "item_ids", "new_item_counts", "admit", "grow", "initial_rows"]

INIT_RULES = ("cooccurrence", "mean")
_ITEM_TYPES = ("click", "purchase")


def item_ids(session: Sequence[Event]) -> list[str]:
    """The session's item ids in order (clicks and purchases; searches have none)."""
    return [e.item_id for e in session if e.item_id is not None and e.type in _ITEM_TYPES]


def new_item_counts(sessions: Iterable[Sequence[Event]], vocab: ItemVocab) -> Counter[str]:
    """How often each item the vocabulary does not know occurs (clicks and purchases)."""
    ids = [i for s in sessions for i in item_ids(s)]
    if not ids:
        return Counter()
    hashes = np.fromiter((item_hash(i) for i in ids), np.int64, count=len(ids))
    unknown = vocab.rows_for_hashes(hashes) == 0
    return Counter(i for i, u in zip(ids, unknown.tolist()) if u)


def admit(counts: Counter[str], min_count: int, limit: int | None = None) -> list[str]:
    """Items seen at least ``min_count`` times, most frequent first (ties by id), at most
    ``limit``."""
    chosen = sorted((i for i, c in counts.items() if c >= min_count), key=lambda i: (-counts[i], i))
    return chosen if limit is None else chosen[:limit]


def initial_rows(
    model: SessionTransformer,
    vocab: ItemVocab,
    new_ids: Sequence[str],
    sessions: Iterable[Sequence[Event]],
    rule: str = "cooccurrence",
) -> np.ndarray:
    """(len(new_ids), D) starting rows for ``new_ids`` under ``rule`` (see the module's doc)."""
    if rule not in INIT_RULES:
        raise ValueError(f"init rule {rule!r}: expected one of {', '.join(INIT_RULES)}")
    with torch.no_grad():
        table = model.item_emb.weight[1:].detach().cpu().numpy().astype(np.float64)  # (n, D)
    mean_norm = float(np.linalg.norm(table, axis=1).mean()) if len(table) else 1.0
    fallback = table.mean(axis=0) if len(table) else np.zeros(model.config.dim)
    out = np.tile(fallback, (len(new_ids), 1))
    if rule == "cooccurrence" and new_ids:
        slot = {i: n for n, i in enumerate(new_ids)}
        sums = np.zeros_like(out)
        counts = np.zeros(len(new_ids))
        for s in sessions:
            ids = item_ids(s)
            mine = [slot[i] for i in ids if i in slot]
            if not mine:
                continue
            rows = vocab.rows_for_hashes(np.asarray([item_hash(i) for i in ids], np.int64))
            known = rows[rows > 0]
            if known.size == 0:
                continue
            context = table[known - 1].sum(axis=0)
            for m in mine:
                sums[m] += context
                counts[m] += known.size
        seen = counts > 0
        out[seen] = sums[seen] / counts[seen, None]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (out / norms * mean_norm).astype(np.float32)


def grow(
    model: SessionTransformer, vocab: ItemVocab, new_ids: Sequence[str], rows: np.ndarray
) -> tuple[SessionTransformer, ItemVocab]:
    """A copy of ``model`` with ``rows`` appended to its item table, and the grown vocabulary
    (known items keep their rows; ``new_ids`` get rows n + 1 ...)."""
    from dataclasses import replace

    if len(new_ids) != len(rows):
        raise ValueError(f"{len(new_ids)} new items but {len(rows)} rows")
    grown_vocab = ItemVocab([*vocab.item_ids, *new_ids])
    cfg = replace(model.config, n_items=len(grown_vocab))
    grown = SessionTransformer(cfg)
    state = dict(model.state_dict())
    old = state["item_emb.weight"]
    state["item_emb.weight"] = torch.cat((old, torch.from_numpy(np.asarray(rows, np.float32))), 0)
    for name in ("neighbour_rows", "neighbour_weights"):  # the global item graph: no neighbours
        if name in state:
            pad = state[name].new_zeros((len(rows), state[name].shape[1]))
            state[name] = torch.cat((state[name], pad), 0)
    grown.load_state_dict(state)
    return grown.train(model.training), grown_vocab
