"""Encode sessions and search their candidates: the two halves of an answer, shared.

:meth:`stream_rec.core.recommender.Recommender.recommend` calls them for a micro-batch, and
offline evaluation calls them for a test set, so both rank with the same code: the encoder
call in length-sorted chunks, the repeat head's bonuses, the index search, the co-occurrence
blend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .cooccurrence import SessionNeighbours, blended_search
from .features import ItemVocab, ModelInputs, featurize
from .item_neighbours import MAX_OWN, ItemNeighbours, item_blended_search
from .repeat import rerank, session_bonuses
from .seams import CandidateIndex, KeyedEncoder, RepeatEncoder, SessionEncoder

__all__ = ["EncodedSessions", "encode_sequences", "search_sessions", "Blend"]

Sequence3 = tuple[np.ndarray, np.ndarray, np.ndarray]  # item hashes, types, query hashes


@dataclass
class EncodedSessions:
    """Session vectors (N, D); whether each session holds an item the model knows; and with a
    repeat head each session's (item rows, logit bonuses)."""

    vectors: np.ndarray
    known: np.ndarray
    bonuses: list[tuple[np.ndarray, np.ndarray]] | None = None
    # (N, MAX_OWN) each session's last known item rows, newest first (0 = none)
    last_rows: np.ndarray | None = None


@dataclass(frozen=True)
class Blend:
    """Co-occurrence blended into the scores: the item-neighbour table of the session's last
    item (``core.item_neighbours``, a lookup) or V-SKNN over training sessions
    (``core.cooccurrence``, a search per answer)."""

    neighbours: ItemNeighbours | SessionNeighbours
    weight: float


def has_repeat_head(encoder: SessionEncoder) -> bool:
    return isinstance(encoder, RepeatEncoder) and encoder.repeat


def encode_sequences(
    encoder: SessionEncoder,
    vocab: ItemVocab,
    sequences: Sequence[Sequence3],
    *,
    max_len: int,
    query_buckets: int,
    max_batch: int,
    keys: Sequence[str] | None = None,
) -> EncodedSessions:
    """Encode ``sequences`` (``SessionState.sequence()``) in length-sorted chunks of at most
    ``max_batch``: padding a 3-event session to the 50 of its batch-mate costs ~10 µs per
    padded position on one CPU core, and padding never changes a vector (contract tests).

    With ``keys`` (each sequence's user) and an encoder that keeps per-user caches
    (:class:`~.seams.KeyedEncoder`), a session that grew by one event encodes one position."""
    n = len(sequences)
    if keys is not None and isinstance(encoder, KeyedEncoder) and n:
        inputs = featurize(sequences, vocab, query_buckets, max_len)
        vectors = encoder.encode_keyed(keys, inputs)
        known, last_rows = _known_and_recent(inputs)
        return EncodedSessions(vectors, known, None, last_rows)
    lengths = np.fromiter((min(len(s[0]), max_len) for s in sequences), np.int64, n)
    order = np.argsort(lengths, kind="stable")
    vectors = np.empty((n, encoder.dim), np.float32)
    known = np.empty(n, bool)
    last_rows = np.zeros((n, MAX_OWN), np.int64)
    repeat = has_repeat_head(encoder)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    bonus_of: list[tuple[np.ndarray, np.ndarray]] = [empty] * n if repeat else []
    for chunk in _length_chunks(lengths[order], max_batch):
        rows = order[chunk]
        inputs = featurize([sequences[i] for i in rows], vocab, query_buckets, max_len)
        if repeat:
            assert isinstance(encoder, RepeatEncoder)
            vectors[rows], bonus = encoder.encode_sessions(inputs)
            assert bonus is not None
            for j, i in enumerate(rows.tolist()):
                bonus_of[i] = session_bonuses(inputs.items[j], bonus[j])
        else:
            vectors[rows] = encoder.encode(inputs)
        known[rows], last_rows[rows] = _known_and_recent(inputs)
    return EncodedSessions(vectors, known, bonus_of if repeat else None, last_rows)


def _known_and_recent(inputs: ModelInputs) -> tuple[np.ndarray, np.ndarray]:
    """(B,) whether each session has an item the model knows; (B, MAX_OWN) its last known
    item rows, newest first (0 = none)."""
    has_item = inputs.items > 0  # (B, L)
    last_rows = np.zeros((len(inputs), MAX_OWN), np.int64)
    from_end = np.cumsum(has_item[:, ::-1], axis=1)[:, ::-1]  # known items at or after each
    at_b, at_pos = np.nonzero(has_item & (from_end <= MAX_OWN))
    last_rows[at_b, from_end[at_b, at_pos] - 1] = inputs.items[at_b, at_pos]
    return np.asarray(has_item.any(axis=1)), last_rows


def search_sessions(
    index: CandidateIndex,
    encoded: EncodedSessions,
    k: int,
    *,
    exclude: Sequence[np.ndarray] | None = None,
    blend: Blend | None = None,
    session_rows: Sequence[np.ndarray] | None = None,
    item_vectors: np.ndarray | None = None,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows (N, k), scores (N, k)) for encoded sessions: the index's top k, blended with
    co-occurrence (``blend``, which needs each session's item rows ``session_rows``) and merged
    with the repeat head's bonuses; both need the model's ``item_vectors`` and logit ``scale``."""
    queries, bonuses = encoded.vectors, encoded.bonuses
    if blend is not None:
        if item_vectors is None:
            raise ValueError("the co-occurrence blend needs item vectors")
        if isinstance(blend.neighbours, ItemNeighbours):
            if bonuses is not None:
                raise ValueError("the item-neighbour blend and the repeat head do not combine yet")
            if encoded.last_rows is None:
                raise ValueError("the item-neighbour blend needs each session's last known item "
                                 "(encode_sequences gives it)")
            return item_blended_search(index, queries, encoded.last_rows, k, blend.neighbours,
                                       item_vectors, scale, blend.weight, blend.neighbours.candidates, exclude)
        if session_rows is None:
            raise ValueError("the session co-occurrence blend needs each session's item rows")
        return blended_search(index, queries, session_rows, k, blend.neighbours, item_vectors, scale,
                              blend.weight, exclude, bonuses)
    # A session item with a negative bonus may leave the top k: fetch one more candidate for each.
    spare = max((int((b < 0).sum()) for _, b in bonuses), default=0) if bonuses is not None else 0
    rows, scores = index.search(queries, k + spare, exclude)
    if bonuses is None:
        return rows, scores
    if item_vectors is None:
        raise ValueError("the repeat head needs item vectors")
    out_rows = np.zeros((len(queries), k), np.int64)
    out_scores = np.zeros((len(queries), k), np.float32)
    for b, (b_rows, b_bonus) in enumerate(bonuses):
        out_rows[b], out_scores[b] = rerank(queries[b], rows[b], scores[b], b_rows, b_bonus, item_vectors,
                                            scale, k, None if exclude is None else exclude[b])
    return out_rows, out_scores


def _length_chunks(sorted_lengths: np.ndarray, max_batch: int, max_waste: float = 0.25) -> list[slice]:
    """Split ascending lengths into runs padded to their longest with <= max_waste padding."""
    chunks = []
    start = 0
    n = len(sorted_lengths)
    while start < n:
        end = start + 1
        total = int(sorted_lengths[start])
        while end < n and end - start < max_batch:
            longest = int(sorted_lengths[end])
            if longest * (end + 1 - start) - (total + longest) > max_waste * longest * (end + 1 - start):
                break
            total += longest
            end += 1
        chunks.append(slice(start, end))
        start = end
    return chunks
