"""Training data: sessions as row arrays, per-position next-item targets, padded batches.

Every position with a later item event is a training example (its target is the next event
that has an item; searches and unknown items are skipped), so one pass over a session trains
all of its prefixes, like SR-GNN's augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.features import MAX_QUERY_TOKENS, ItemVocab, featurize

__all__ = ["Session", "Rows", "Example", "featurize_sessions", "next_item_targets", "training_examples",
           "pad_examples", "pad_teacher", "length_batches"]

Session = tuple[np.ndarray, np.ndarray, np.ndarray]  # item hashes (n,), types (n,), query hashes (n, Q)
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # item rows (n,), types (n,), query buckets (n, Q)
_SORT_POOL = 50  # batches whose sessions are sorted by length together (less padding)


@dataclass(frozen=True)
class Example:
    """One window of at most max_len events with per-position targets (column, -1 = none)."""

    items: np.ndarray  # (n,) rows
    types: np.ndarray  # (n,)
    queries: np.ndarray  # (n, Q) buckets
    targets: np.ndarray  # (n,) column of the next item (row - 1), -1 when there is none
    # Distillation (model/distill.py): per position, a teacher's best columns and their
    # probabilities for the next item, (n, C); -1 / 0 where it has none.
    teacher_cols: np.ndarray | None = None
    teacher_probs: np.ndarray | None = None


def featurize_sessions(sessions: Sequence[Session], vocab: ItemVocab, query_buckets: int) -> list[Rows]:
    """Rows, types and query buckets per session, mapped exactly as serving maps them."""
    lengths = [len(s[0]) for s in sessions]
    joined = (
        np.concatenate([np.asarray(s[0], np.int64) for s in sessions]),
        np.concatenate([np.asarray(s[1], np.int64) for s in sessions]),
        np.concatenate([np.asarray(s[2], np.int64).reshape(-1, MAX_QUERY_TOKENS) for s in sessions]),
    )
    # One "session" holding every event: featurize then only maps ids, it never truncates.
    f = featurize([joined], vocab, query_buckets, max_len=max(1, len(joined[0])))
    bounds = np.cumsum([0, *lengths])
    return [
        (f.items[0, a:b], f.types[0, a:b], f.queries[0, a:b]) for a, b in zip(bounds[:-1], bounds[1:])
    ]


def next_item_targets(rows: np.ndarray) -> np.ndarray:
    """For each position, the column (row - 1) of the next later event with a known item, else -1."""
    n = len(rows)
    at = np.where(rows > 0, np.arange(n), n)
    next_from = np.minimum.accumulate(at[::-1])[::-1]  # first item position >= t
    after = np.append(next_from[1:], n)  # first item position > t
    padded = np.append(rows, 0)
    return padded[after] - 1  # row 0 at index n -> -1


def training_examples(
    featurized: list[Rows], max_len: int, teachers: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
) -> list[Example]:
    """Windows of at most ``max_len`` events (from each session's end) with per-position targets;
    ``teachers[i]`` (cols, probs), each (n_i, C), rides along with session i's positions."""
    out = []
    for n, (items, types, queries) in enumerate(featurized):
        targets = next_item_targets(items)
        for end in range(len(items), 0, -max_len):  # windows from the end; earlier ones lose context
            start = max(0, end - max_len)
            if np.any(targets[start:end] >= 0):
                sl = slice(start, end)
                t_cols, t_probs = (None, None) if teachers is None else (teachers[n][0][sl], teachers[n][1][sl])
                out.append(Example(items[sl], types[sl], queries[sl], targets[sl], t_cols, t_probs))
    return out


def pad_examples(batch: Sequence[Example]) -> tuple[torch.Tensor, ...]:
    length = max(len(e.items) for e in batch)
    b = len(batch)
    items = np.zeros((b, length), np.int64)
    types = np.zeros((b, length), np.int64)
    queries = np.zeros((b, length, batch[0].queries.shape[1]), np.int64)
    targets = np.full((b, length), -1, np.int64)
    for i, e in enumerate(batch):
        n = len(e.items)
        items[i, length - n :], types[i, length - n :] = e.items, e.types
        queries[i, length - n :], targets[i, length - n :] = e.queries, e.targets
    return tuple(torch.from_numpy(a) for a in (items, types, queries, targets))


def pad_teacher(batch: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(cols (B, L, C) int64, probs (B, L, C) float32) left-padded like :func:`pad_examples`, or
    None when the batch carries no teacher."""
    if batch[0].teacher_cols is None:
        return None
    length = max(len(e.items) for e in batch)
    c = batch[0].teacher_cols.shape[1]
    cols = np.full((len(batch), length, c), -1, np.int64)
    probs = np.zeros((len(batch), length, c), np.float32)
    for i, e in enumerate(batch):
        assert e.teacher_cols is not None and e.teacher_probs is not None
        n = len(e.items)
        cols[i, length - n :], probs[i, length - n :] = e.teacher_cols, e.teacher_probs
    return torch.from_numpy(cols), torch.from_numpy(probs)


def length_batches(
    examples: Sequence[Example], batch_size: int, rng: np.random.Generator, chronological: bool = False
) -> list[list[Example]]:
    """Shuffled batches of similar-length windows.

    ``chronological``: the examples (in time order) are cut into consecutive pools of
    ``_SORT_POOL`` batches, shuffled only within a pool, pools in order: an epoch runs through
    time and ends on the newest sessions, as the test slice follows them (MSGIFSR's finding:
    no shuffling across time)."""
    order = np.arange(len(examples)) if chronological else rng.permutation(len(examples))
    pool = batch_size * _SORT_POOL
    batches = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p : p + pool], key=lambda i: len(examples[i].items))
        in_pool = [[examples[i] for i in chunk[j : j + batch_size]] for j in range(0, len(chunk), batch_size)]
        batches += [in_pool[i] for i in rng.permutation(len(in_pool))] if chronological else in_pool
    return batches if chronological else [batches[i] for i in rng.permutation(len(batches))]
