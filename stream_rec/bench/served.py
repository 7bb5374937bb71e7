"""`stream-rec bench --bundle B --dataset D`: the served model on a data set's real test events.

The saturation backlog is the split's test sessions as ``stream-rec evaluate --streaming``
replays them (:func:`~stream_rec.evaluation.cases.split_test_events`, in the same order, with
their own ids and timestamps), served as that evaluation serves them
(:func:`~stream_rec.evaluation.cases.answering_every_event`: coalescing and filters off, so
every event is answered). What reaches our consumer on the recommendations topic during
saturation is matched to the scored prefixes by ``source_event_id`` and ranked by
:func:`~stream_rec.evaluation.streaming.score_answers`: HR@20 / MRR@20 of the very run whose
events/s, relay ratio, latency and CPU the summary reports.

The latency phases replay the same sessions again, each round under fresh event and user ids
(``<id>~r1``, ...): new users whose sessions hold items the model knows, not cold ones.

Every round interleaves the sessions, ``OPEN_SESSIONS`` at a time in turn (each user's events in
their own order, so every answer and the scores are those of the sessions sent one after
another): on a live site a shopper's next event comes seconds later, after many other
shoppers' events, not in the same micro-batch. Sent back to back, one session's events share a
batch, and the incremental encoder (one position per event for a user it encoded before) could
serve almost none of them: 162k of 171k positions encoded in full in one such run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.events import Event, Recommendation, decode_recommendation, encode_event
from ..errors import ConfigError, DataError
from .common import say

if TYPE_CHECKING:
    from ..evaluation.cases import EvalCase
    from ..serving.bundle import ModelBundle

__all__ = ["DATASETS", "OPEN_SESSIONS", "ServedOptions", "ServedWorkload", "interleaved",
           "load_workload", "served_quality"]

DATASETS = ("diginetica", "nowplaying", "sessions", "events")
# Sessions open at a time in the replay: a user's events ~1,000 events apart, several
# micro-batches even at saturation (batches of ~256), and within the encoder cache's default.
OPEN_SESSIONS = 1000


@dataclass(frozen=True)
class ServedOptions:
    """Which test events the served-model bench replays (the flags of `stream-rec evaluate`)."""

    dataset: str = "diginetica"
    data_root: str | None = None
    data_dir: str | None = None  # --dataset sessions (or another location of a named split)
    events_file: str | None = None  # --dataset events
    min_item_count: int = 5  # --dataset events: the protocol's filter
    test_days: float = 7.0  # --dataset events: sessions of the last days are the test set
    max_sessions: int | None = None  # only the first n test sessions (quick runs)

    def validated(self) -> ServedOptions:
        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}; "
                              f"got {self.dataset!r}")
        if self.dataset == "events" and not self.events_file:
            raise ConfigError("--dataset events needs --events-file FILE (JSONL, .gz too)")
        return self


def _renamed(event: Event, round_: int) -> Event:
    tag = f"~r{round_}"
    return Event(event.event_id + tag, event.user_id + tag, event.type, event.ts, event.item_id,
                 event.query, None if event.session_id is None else event.session_id + tag)


def interleaved(sessions: Sequence[Sequence[Event]], open_sessions: int) -> Iterator[Event]:
    """Every session's events in order, ``open_sessions`` sessions taking turns (one event each
    per turn); a session that ends gives its place to the next one. A user's sessions never
    overlap: on a live site a shopper's next visit follows the last, so a session whose user
    still has one open waits for it to end (and then takes its place)."""
    waiting = (events for events in sessions if events)
    turns: deque[tuple[Sequence[Event], int]] = deque()
    open_users: set[str] = set()
    later: dict[str, deque[Sequence[Event]]] = {}  # each open user's next sessions, in order

    def admit() -> None:
        while len(turns) < open_sessions:
            events = next(waiting, None)
            if events is None:
                return
            user = events[0].user_id
            if user in open_users:
                later.setdefault(user, deque()).append(events)
                continue
            open_users.add(user)
            turns.append((events, 0))

    admit()
    while turns:
        events, i = turns.popleft()
        yield events[i]
        if i + 1 < len(events):
            turns.append((events, i + 1))
            continue
        user = events[0].user_id
        queued = later.get(user)
        if queued:
            turns.append((queued.popleft(), 0))
            if not queued:
                del later[user]
        else:
            open_users.discard(user)
            admit()


class ServedWorkload:
    """The test sessions as the benchmark's event stream (the shape of the generator's
    :meth:`records` and :meth:`events`): first the test sessions with their own ids (round 0,
    scored), then again and again under fresh ids (rounds 1, 2, ...); each round interleaved."""

    def __init__(
        self, dataset: str, sessions: Sequence[Sequence[Event]], cases: Sequence[EvalCase],
        open_sessions: int = OPEN_SESSIONS,
    ) -> None:
        self.dataset = dataset
        self.open_sessions = open_sessions
        self.sessions = sessions
        self.cases = cases
        self.n_events = sum(len(s) for s in sessions)

    def events(self, n: int) -> Iterator[Event]:
        """The first ``n`` events of the stream."""
        sent, round_ = 0, 0
        while sent < n and self.n_events:
            for e in interleaved(self.sessions, self.open_sessions):
                if sent >= n:
                    return
                yield e if round_ == 0 else _renamed(e, round_)
                sent += 1
            round_ += 1

    def records(self, n: int, now_ms: int | None = None) -> Iterator[tuple[bytes, bytes, bool]]:
        """``n`` records ``(key, value, valid)``; events keep their own ts (``now_ms`` is unused:
        the scored replay sends the events `evaluate --streaming` sends, each user's in the same
        order, sessions interleaved)."""
        for e in self.events(n):
            yield e.user_id.encode(), encode_event(e), True


def load_workload(opts: ServedOptions, bundle: ModelBundle) -> ServedWorkload:
    """The split's test sessions (the first ``max_sessions``) and their scored prefixes."""
    from ..core.session import SessionPolicy
    from ..datasets.eventlog import ProtocolOptions
    from ..evaluation.cases import prefix_states, split_test_events
    from ..evaluation.offline import load_split

    opts = opts.validated()
    protocol = ProtocolOptions(min_item_count=opts.min_item_count, test_days=opts.test_days)
    split = load_split(opts.dataset, data_root=opts.data_root, data_dir=opts.data_dir,
                       events_file=opts.events_file, protocol=protocol, progress=say)
    trained_on = str(bundle.manifest.get("training", {}).get("data", "?"))
    if not trained_on.startswith(opts.dataset):
        say(f"warning: bundle {bundle.version} was trained on {trained_on!r}, "
            f"not on {opts.dataset}")
    sessions = split_test_events(split)
    if opts.max_sessions:
        sessions = sessions[: opts.max_sessions]
    ids = [e.event_id for s in sessions for e in s]
    if len(set(ids)) != len(ids):
        raise DataError("event ids repeat in the test sessions; each event needs its own id")
    cases, _ = prefix_states(sessions, SessionPolicy(max_len=bundle.max_len), split.item_types)
    say(f"served-model bench: {len(sessions):,} test sessions of {opts.dataset}, "
        f"{len(ids):,} events, {len(cases):,} scored prefixes")
    return ServedWorkload(opts.dataset, sessions, cases)


def served_quality(
    workload: ServedWorkload, answers: Sequence[bytes | None], *, k: int, catalogue_size: int
) -> dict[str, Any]:
    """HR/MRR@k and @10 (percent) of the saturation phase's answers, as `evaluate --streaming`
    scores them; the top-level keys, and ``quality`` with every metric and the answer counts."""
    from ..evaluation.streaming import score_answers

    wanted = {e.event_id for s in workload.sessions for e in s}
    recs: dict[str, Recommendation] = {}
    for raw in answers:
        if raw is None:  # a forgotten user's tombstone
            continue
        rec = decode_recommendation(raw)
        if rec.source_event_id in wanted:
            recs.setdefault(rec.source_event_id, rec)  # a redelivery keeps the first
    report = score_answers(workload.cases, recs, k=k, catalogue_size=catalogue_size).report
    quality = {"dataset": workload.dataset, "test_sessions": len(workload.sessions),
               "events": len(wanted), "answered_events": len(recs),
               "unanswered_events": len(wanted) - len(recs),
               "coalesce": False, "filters": False, "percent": True, **report}
    say(f"quality from the recommendations topic: hr@{k} {report[f'hr@{k}']:.2f} "
        f"mrr@{k} {report[f'mrr@{k}']:.2f} over {report['prefixes']:,} prefixes "
        f"({quality['unanswered_events']:,} events unanswered)")
    top = {m: report[m] for m in (f"hr@{k}", f"mrr@{k}", "hr@10", "mrr@10") if m in report}
    return {**top, "quality": quality}
