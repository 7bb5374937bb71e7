"""The pure core: (session states, events) -> (new states, recommendations).

Nothing here knows about Kafka. The faust worker, replay/backfill, offline
evaluation, the benchmark and ``stream_rec.testing`` all call
:meth:`Recommender.step`, so a replay gives exactly what live would have given.

One step is one micro-batch: events are folded into their users' states in
order, then every session that needs an answer is encoded in ONE encoder call
and searched in ONE index call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .cooccurrence import SessionNeighbours
from .events import Event, Recommendation, RecommendationBatch
from .features import MAX_QUERY_TOKENS, TYPE_CODES, ItemVocab, ModelInputs, item_hash
from .item_neighbours import ItemNeighbours
from .scoring import Blend, encode_sequences, has_repeat_head, search_sessions
from .seams import CandidateIndex, SessionEncoder
from .session import SessionPolicy, SessionState, apply_event
from .trending import TrendingItems

__all__ = ["ServingConfig", "Recommender", "StepResult", "StageTimes"]


@dataclass(frozen=True)
class ServingConfig:
    top_k: int = 20
    filter_purchased: bool = True
    filter_clicked: bool = False
    # True: one recommendation per user per step (for the user's last event).
    # False: one per event (evaluation replays score every prefix).
    coalesce: bool = True
    # Sessions per encoder call. 64 is as fast per session as larger batches on CPU (the
    # microbenchmark peaks at 16-64) and bounds ONNX Runtime's memory arena: its size follows
    # the largest (batch, length) it has run, ~27 MB at 64 x 50 against ~110 MB at 256 x 50.
    max_encode_batch: int = 64
    # Sessions with no item the model knows get trending items (decayed counts kept in
    # the stream) instead of a vector computed from event types alone.
    cold_start_trending: bool = True
    trending_half_life_s: float = 3600.0
    # Attach to each item the session item most similar to it ("because you viewed X").
    explain: bool = False


@dataclass
class StageTimes:
    """Seconds spent per stage, accumulated over steps (for the benchmark and /metrics)."""

    state: float = 0.0
    encode: float = 0.0
    search: float = 0.0
    steps: int = 0
    events: int = 0
    sessions: int = 0


@dataclass
class StepResult:
    states: dict[str, SessionState]  # users whose state changed, new state
    answers: RecommendationBatch  # what to publish: RecommendationBatch.records()

    @cached_property
    def recommendations(self) -> list[Recommendation]:
        return self.answers.to_list()


class Recommender:
    """Folds events into session state and recommends the top-k for the refreshed sessions."""

    def __init__(
        self,
        encoder: SessionEncoder,
        index: CandidateIndex,
        vocab: ItemVocab,
        *,
        model_version: str,
        max_len: int,
        query_buckets: int,
        policy: SessionPolicy | None = None,
        config: ServingConfig | None = None,
        popularity: np.ndarray | None = None,
        item_vectors: np.ndarray | None = None,
        neighbours: SessionNeighbours | ItemNeighbours | None = None,
        blend_weight: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.vocab = vocab
        self.model_version = model_version
        self.max_len = max_len
        self.query_buckets = query_buckets
        self.policy = policy or SessionPolicy(max_len=max_len)
        self.config = config or ServingConfig()
        self.times = StageTimes()
        self.trending = TrendingItems(len(vocab), self.config.trending_half_life_s, prior=popularity)
        self.item_vectors = item_vectors
        if self.config.explain and item_vectors is None:
            raise ValueError("explanations need the bundle's item vectors")
        # Co-occurrence blended into the scores (item_neighbours.py or cooccurrence.py); None =
        # the model only.
        self.neighbours = neighbours if blend_weight > 0 else None
        self.blend = Blend(self.neighbours, blend_weight) if self.neighbours is not None else None
        self.blend_weight, self.scale = blend_weight, scale
        # The model's repeat head (core/repeat.py): the session's items get a logit bonus.
        self.repeat = has_repeat_head(encoder)
        if self.repeat and item_vectors is None:
            raise ValueError("the repeat head needs the bundle's item vectors")
        if self.neighbours is not None and item_vectors is None:
            raise ValueError("the co-occurrence blend needs the bundle's item vectors")

    # ---------------------------------------------------------------------------------
    def step(
        self,
        states: Mapping[str, SessionState | None],
        events: Sequence[Event],
        offsets: Sequence[int | None] | None = None,
        now_ms: int | None = None,
    ) -> StepResult:
        """Fold ``events`` (in order) into ``states`` and recommend for the refreshed sessions.

        ``states`` maps each user in ``events`` to its stored state (None when new).
        ``offsets`` (Kafka offsets, aligned with ``events``) make redeliveries no-ops.
        """
        t0 = time.perf_counter()
        current: dict[str, SessionState] = {}
        snapshots: list[tuple[Event, SessionState]] = []
        last_index: dict[str, int] = {}
        for i, event in enumerate(events):
            user = event.user_id
            state = current.get(user)
            if state is None:
                state = states.get(user) or SessionState.empty()
            state = apply_event(state, event, self.policy, None if offsets is None else offsets[i])
            current[user] = state
            last_index[user] = len(snapshots)
            snapshots.append((event, state))
        if self.config.coalesce:
            snapshots = [snapshots[i] for i in sorted(last_index.values())]
        t1 = time.perf_counter()
        if self.config.cold_start_trending and events:
            self._count_trending(events, now_ms)
        recs = self.recommend(snapshots, now_ms=now_ms, _t0=t1)
        self.times.state += t1 - t0
        self.times.steps += 1
        self.times.events += len(events)
        return StepResult(states=current, answers=recs)

    def warm_up(self) -> None:
        """Encode the largest batch the core ever encodes, and search for it, once.

        ONNX Runtime keeps the memory arena sized for the largest input it has run; doing
        it at start makes a worker's memory flat from then on (it would otherwise grow in
        steps whenever a longer session lands in a fuller batch) and spares the first
        busy batch the allocation.
        """
        n, length = self.config.max_encode_batch, self.max_len
        inputs = ModelInputs(
            items=np.ones((n, length), np.int64),
            types=np.full((n, length), TYPE_CODES["click"], np.int64),
            queries=np.zeros((n, length, MAX_QUERY_TOKENS), np.int64),
        )
        self.index.search(self.encoder.encode(inputs), self.config.top_k, None)

    def recommend(
        self,
        snapshots: Sequence[tuple[Event, SessionState]],
        now_ms: int | None = None,
        _t0: float | None = None,
    ) -> RecommendationBatch:
        """Top-k for each (answered event, session state after it), in one encode and one search."""
        if not snapshots:
            emitted = now_ms if now_ms is not None else int(time.time() * 1000)
            none = np.zeros((0, self.config.top_k))
            return RecommendationBatch([], [], [], emitted, self.model_version, self.vocab.item_ids, none, none)
        t0 = _t0 if _t0 is not None else time.perf_counter()
        encoded = encode_sequences(
            self.encoder, self.vocab, [s.sequence() for _, s in snapshots], max_len=self.max_len,
            query_buckets=self.query_buckets, max_batch=self.config.max_encode_batch,
            keys=[e.user_id for e, _ in snapshots],
        )
        known = encoded.known
        t1 = time.perf_counter()
        exclude = self._exclusions([s for _, s in snapshots])
        session_rows = None
        if self.blend is not None and not isinstance(self.blend.neighbours, ItemNeighbours):
            session_rows = [self.vocab.rows_for_hashes(s.seen_item_hashes()) for _, s in snapshots]
        rows, scores = search_sessions(
            self.index, encoded, self.config.top_k, exclude=exclude, blend=self.blend,
            session_rows=session_rows, item_vectors=self.item_vectors, scale=self.scale,
        )
        if self.config.cold_start_trending:
            # Sessions with no item the model knows (what it encodes, so no second lookup).
            cold = np.flatnonzero(~known).tolist()
            if cold:
                t_rows, t_scores = self.trending.top(
                    self.config.top_k, [exclude[i] for i in cold] if exclude else None, len(cold))
                rows[cold], scores[cold] = t_rows, t_scores
        t2 = time.perf_counter()
        emitted = now_ms if now_ms is not None else int(time.time() * 1000)
        because = self._explain(snapshots, rows) if self.config.explain else None
        out = RecommendationBatch(
            users=[e.user_id for e, _ in snapshots],
            source_event_ids=[e.event_id for e, _ in snapshots],
            event_ts=[e.ts for e, _ in snapshots],
            emitted_ts=emitted,
            model_version=self.model_version,
            item_ids=self.vocab.item_ids,
            rows=rows,
            scores=scores,
            because=because,
        )
        self.times.encode += t1 - t0
        self.times.search += t2 - t1
        self.times.sessions += len(snapshots)
        return out

    def _explain(self, snapshots: Sequence[tuple[Event, SessionState]], rows: np.ndarray) -> list[list[int]]:
        """Per recommended row, the session's known item row most similar to it (0 if none)."""
        assert self.item_vectors is not None
        out = []
        for (_, state), rec_rows in zip(snapshots, rows):
            seen = self.vocab.rows_for_hashes(state.seen_item_hashes()[-self.max_len:])
            seen = np.unique(seen[seen > 0])
            if not len(seen):
                out.append([0] * len(rec_rows))
                continue
            sims = self.item_vectors[rec_rows] @ self.item_vectors[seen].T  # (k, n_seen)
            out.append(seen[np.argmax(sims, axis=1)].tolist())
        return out

    def _count_trending(self, events: Sequence[Event], now_ms: int | None) -> None:
        with_items = [e for e in events if e.item_id is not None]
        if not with_items:
            return
        rows = self.vocab.rows_for_hashes(np.array([item_hash(e.item_id or "") for e in with_items], np.int64))
        purchases = np.array([e.type == "purchase" for e in with_items])
        # Processing time bounds the trending clock (trending.py): a skewed ts cannot take it over.
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        self.trending.update(rows, max(e.ts for e in with_items), purchases, now_ms=now)

    def _exclusions(self, states: Sequence[SessionState]) -> list[np.ndarray] | None:
        cfg = self.config
        if not (cfg.filter_purchased or cfg.filter_clicked):
            return None
        out = []
        for s in states:
            parts = []
            if cfg.filter_purchased and len(s.purchased):
                parts.append(s.purchased)
            if cfg.filter_clicked:
                parts.append(s.seen_item_hashes())
            if parts:
                rows = self.vocab.rows_for_hashes(np.concatenate(parts))
                out.append(np.unique(rows[rows > 0]))
            else:
                out.append(np.zeros(0, np.int64))
        return out

