"""Every prefix of a stream's sessions and its next item, scored so that an item the model does
not know (yet) is a miss, not a skipped case: the only fair way to compare a model that has
admitted new items with one that has not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.features import ItemVocab
from ..core.item_neighbours import (
    MAX_OWN,
    ItemNeighbours,
    item_blended_search,
    last_known_rows,
)
from ..model.examples import Example, Rows, Session, featurize_sessions, pad_examples
from ..model.sasrec import SessionTransformer
from ..runtime.index import ExactIndex

__all__ = ["Cases", "ItemBlend", "prefix_cases", "ranks", "hr_mrr", "K"]

K = 20


@dataclass(frozen=True)
class Cases:
    prefixes: list[Rows]  # rows under the vocabulary they were built with
    target_rows: np.ndarray  # (N,) the next item's row, 0 when that vocabulary lacks it
    target_hashes: np.ndarray  # (N,) the next item's hash (to re-map under a grown vocabulary)
    session: np.ndarray  # (N,) index of the case's session

    def __len__(self) -> int:
        return len(self.target_rows)


def prefix_cases(
    sessions: Sequence[Session], vocab: ItemVocab, query_buckets: int, max_len: int
) -> Cases:
    """For each session, every item event after its first event, predicted from the events
    before it (at most ``max_len``), as the test protocol scores a session."""
    featurized = featurize_sessions(sessions, vocab, query_buckets) if sessions else []
    prefixes: list[Rows] = []
    rows, hashes, sid = [], [], []
    for n, ((items, types, queries), raw) in enumerate(zip(featurized, sessions)):
        item_hashes = np.asarray(raw[0], np.int64)
        for j in np.flatnonzero(item_hashes != 0).tolist():
            if j == 0:
                continue
            start = max(0, j - max_len)
            prefixes.append((items[start:j], types[start:j], queries[start:j]))
            rows.append(int(items[j]))
            hashes.append(int(item_hashes[j]))
            sid.append(n)
    return Cases(
        prefixes,
        np.asarray(rows, np.int64),
        np.asarray(hashes, np.int64),
        np.asarray(sid, np.int64),
    )


@dataclass(frozen=True)
class ItemBlend:
    """The served item-neighbour blend: its table (over the model's rows), weight and scale."""

    table: ItemNeighbours
    weight: float
    scale: float


def ranks(
    model: SessionTransformer, cases: Cases, blend: ItemBlend | None = None, batch_size: int = 512
) -> np.ndarray:
    """(N,) the rank (1..K) of each case's target in the model's top K over all items by exact
    inner product (with ``blend``: the serving blend over exact search), 0 when it is not there
    (or unknown to the model)."""
    out = np.zeros(len(cases), np.int64)
    if not len(cases):
        return out
    was_training = model.training
    model.eval()
    with torch.no_grad():
        items_t = model.item_vectors()  # (n_items + 1, D), row 0 zeros
        items_np = items_t.numpy().astype(np.float32)
        exact = ExactIndex(items_np) if blend is not None else None
        order = np.argsort([len(p[0]) for p in cases.prefixes], kind="stable")
        for lo in range(0, len(order), batch_size):
            part = order[lo : lo + batch_size]
            batch = [
                Example(it, ty, qu, np.zeros(len(it), np.int64))
                for it, ty, qu in (cases.prefixes[i] for i in part)
            ]
            items, types, queries, _ = pad_examples(batch)
            q = model.session_vector(items, types, queries)
            if blend is None:
                k = min(K, items_t.shape[0] - 1)
                top = (q @ items_t[1:].T).topk(k, dim=1).indices.numpy() + 1  # rows
            else:
                assert exact is not None
                last = last_known_rows([cases.prefixes[i][0] for i in part], MAX_OWN)
                t = blend.table
                top, _ = item_blended_search(
                    exact,
                    q.numpy().astype(np.float32),
                    last,
                    K,
                    t,
                    items_np,
                    blend.scale,
                    blend.weight,
                    t.candidates,
                )
            want = cases.target_rows[part]
            hit = (top == want[:, None]) & (want[:, None] > 0)
            out[part] = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    model.train(was_training)
    return out


def hr_mrr(r: np.ndarray) -> tuple[float, float]:
    """HR@K and MRR@K in percent from :func:`ranks` (nan when there is no case)."""
    if r.size == 0:
        return float("nan"), float("nan")
    return 100.0 * float((r > 0).mean()), 100.0 * float(
        np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0).mean()
    )
