"""Offline evaluation of a model bundle: every test prefix, scored through the serving state path.

A test session is a sequence of events of our contract. Its scored prefixes are those that end
right before an item event (other than the session's first): the recommendation that answers the
prefix's last event is ranked against that item. For the standard Diginetica split (clicks only)
these are exactly SR-GNN's 60,858 (prefix, target) pairs.

Each prefix's state is folded with :func:`stream_rec.core.session.apply_event` under the serving
:class:`~stream_rec.core.session.SessionPolicy`, featurized with :func:`stream_rec.core.features.featurize`
and encoded by the bundle's ONNX encoder, as :meth:`stream_rec.core.recommender.Recommender.recommend` does.
The vectors are encoded once and searched with each index (exact numpy reference, HNSW at the
serving ``ef``), so the two differ by the search alone. Business filters are off: nothing is
excluded from the ranking.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.cooccurrence import SessionNeighbours
from ..core.item_neighbours import MAX_OWN
from ..core.scoring import Blend, EncodedSessions, encode_sequences, search_sessions
from ..core.session import SessionState
from ..datasets.eventlog import ProtocolOptions, SessionSplit
from ..datasets.splits import STANDARD_DATASETS, load_named_split
from ..errors import ConfigError, DataError
from ..serving.compose import blend_args, logit_scale, served_ef, serving_index, session_policy
from .baselines import ItemKNN, Popularity, SessionKNN, evaluate
from .cases import EvalCase, answering_every_event, prefix_states, split_test_events
from .metrics import RankingAccumulator, by_target_note

if TYPE_CHECKING:
    from ..core.features import ItemVocab
    from ..core.seams import CandidateIndex, SessionEncoder
    from ..serving.bundle import ModelBundle
    from ..settings import Settings

__all__ = [
    "BASELINES",
    "EvaluateOptions",
    "OfflineResult",
    "load_split",
    "encode_states",
    "rank_cases",
    "evaluate_bundle",
    "evaluate_baselines",
    "run_evaluation",
]

Progress = Callable[[str], None]
BASELINES: dict[str, Callable[[], Any]] = {
    "POP": Popularity,
    "Item-KNN": ItemKNN,
    "SKNN": lambda: SessionKNN(position_weights=False),
    "V-SKNN": SessionKNN,
}


def _stderr(msg: str) -> None:
    print(f"[evaluate] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- data
def load_split(
    dataset: str,
    *,
    data_root: str | Path | None = None,
    data_dir: str | Path | None = None,
    events_file: str | Path | None = None,
    protocol: ProtocolOptions | None = None,
    progress: Progress | None = _stderr,
) -> SessionSplit:
    """The split to evaluate on: a standard two-file split (Diginetica's and Nowplaying's
    statistics checked against their SOURCE.md; ``sessions`` from ``data_dir``) or an event log
    put through the SR-GNN protocol."""
    say = progress or (lambda _msg: None)
    if dataset in STANDARD_DATASETS:
        named = load_named_split(dataset, data_root, data_dir)
        say(f"{dataset} split ({named.directory}): {named.describe()}")
        return named.split
    if dataset == "events":
        from ..datasets.eventlog import split_event_log

        if not events_file:
            raise ConfigError("--dataset events needs --events-file FILE (JSONL, .gz too)")
        split, invalid = split_event_log(events_file, protocol)
        say(f"{events_file}: {len(invalid):,} invalid records skipped; "
            + ", ".join(f"{k} {v:,}" for k, v in split.stats().as_dict().items()))
        say("protocol: " + ", ".join(f"{k} {v:,}" for k, v in (split.report or {}).items()))
        return split
    raise ConfigError(f"--dataset {dataset!r}: expected one of {', '.join(STANDARD_DATASETS)} or events")


def encode_states(
    encoder: SessionEncoder,
    vocab: ItemVocab,
    states: Sequence[SessionState],
    *,
    max_len: int,
    query_buckets: int,
    batch_size: int = 1024,
    progress: Progress | None = None,
) -> EncodedSessions:
    """The states encoded as the serving core encodes them (:func:`core.scoring.encode_sequences`:
    length-sorted chunks, the repeat head's bonuses), in slices of ``batch_size`` for progress."""
    t0 = time.perf_counter()
    parts = []
    for lo in range(0, len(states), 20 * batch_size):
        chunk = states[lo : lo + 20 * batch_size]
        parts.append(encode_sequences(encoder, vocab, [s.sequence() for s in chunk], max_len=max_len,
                                      query_buckets=query_buckets, max_batch=batch_size))
        if progress is not None:
            progress(f"encoded {lo + len(chunk):,}/{len(states):,} prefixes ({time.perf_counter() - t0:.0f}s)")
    if not parts:
        return EncodedSessions(np.zeros((0, encoder.dim), np.float32), np.zeros(0, bool),
                               last_rows=np.zeros((0, MAX_OWN), np.int64))
    bonuses = None if parts[0].bonuses is None else [b for p in parts for b in p.bonuses or []]
    return EncodedSessions(np.concatenate([p.vectors for p in parts]),
                           np.concatenate([p.known for p in parts]), bonuses,
                           np.concatenate([p.last_rows for p in parts if p.last_rows is not None]))


def rank_cases(
    index: CandidateIndex,
    encoded: EncodedSessions,
    cases: Sequence[EvalCase],
    vocab: ItemVocab,
    k: int = 20,
    batch_size: int = 4096,
    blend: Blend | None = None,
    sessions: Sequence[np.ndarray] | None = None,
    item_vectors: np.ndarray | None = None,
    scale: float = 1.0,
) -> tuple[RankingAccumulator, np.ndarray, list[list[str]]]:
    """Search ``index`` for each encoded case as the serving core does
    (:func:`core.scoring.search_sessions`: co-occurrence ``blend``, with ``sessions`` holding each
    case's item rows, and the repeat head): the metrics accumulator, each case's rank (0 = miss)
    and each case's recommended item ids, best first."""
    acc = RankingAccumulator(k, catalogue_size=len(vocab))
    ranks = np.zeros(len(cases), np.int64)
    lists: list[list[str]] = []
    ids = vocab.item_ids
    for lo in range(0, len(cases), batch_size):
        part = slice(lo, lo + batch_size)
        bonuses = None if encoded.bonuses is None else encoded.bonuses[part]
        rows, _ = search_sessions(
            index, EncodedSessions(encoded.vectors[part], encoded.known[part], bonuses,
                                   None if encoded.last_rows is None else encoded.last_rows[part]), k,
            blend=blend, session_rows=None if sessions is None else sessions[part],
            item_vectors=item_vectors, scale=scale,
        )
        for n, (case, r) in enumerate(zip(cases[part], rows.tolist())):
            items = [ids[row - 1] for row in r if row > 0]
            ranks[lo + n] = acc.add(items, case.target, case.prefix_length, repeat=case.repeat)
            lists.append(items)
    return acc, ranks, lists


@dataclass
class OfflineResult:
    """The report (JSON-ready, metrics in percent), the scored cases, and per index each case's
    rank (0 = miss) and recommended item ids."""

    report: dict[str, Any]
    cases: list[EvalCase]
    ranks: dict[str, np.ndarray]  # index kind -> (N,)
    lists: dict[str, list[list[str]]]  # index kind -> N lists of item ids


# ------------------------------------------------------------------------------------ model
def evaluate_bundle(
    bundle: ModelBundle,
    split: SessionSplit,
    settings: Settings,
    *,
    indexes: Sequence[str] = ("exact", "hnsw"),
    max_sessions: int | None = None,
    progress: Progress | None = _stderr,
) -> OfflineResult:
    """The bundle's metrics on ``split``'s test prefixes, one summary per index (percent).

    ``settings`` gives the serving policy (``session_gap_s``), the cut-off (``top_k``), the
    HNSW ``hnsw_ef`` and the encoder's providers and threads. Keys: ``index`` ({kind: summary}),
    ``prefixes``, ``k``, ``ef``, ``seconds``.
    """
    say = progress or (lambda _msg: None)
    sessions = split_test_events(split)
    if max_sessions:
        sessions = sessions[:max_sessions]
    policy = session_policy(settings, bundle.max_len)
    served = answering_every_event(settings)  # what the streaming replay's worker serves
    t0 = time.perf_counter()
    cases, states = prefix_states(sessions, policy, split.item_types)
    if not cases:
        raise DataError("no test prefix to score: every test session has fewer than 2 item events")
    say(f"{len(cases):,} prefixes from {len(sessions):,} test sessions folded "
        f"({time.perf_counter() - t0:.1f}s)")
    encoder = bundle.encoder(
        providers=settings.providers,  # type: ignore[arg-type]
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
    )
    t1 = time.perf_counter()
    encoded = encode_states(encoder, bundle.vocab, states, max_len=bundle.max_len,
                            query_buckets=bundle.query_buckets, progress=say)
    encode_s = time.perf_counter() - t1
    say(f"encoded {len(cases):,} prefixes with the ONNX encoder ({encode_s:.1f}s)")
    k = settings.top_k
    args = blend_args(bundle, settings)
    blend = Blend(args["neighbours"], args["blend_weight"]) if args else None
    sessions_rows = None
    # the item-neighbour blend's share for the session's own items (0: none)
    own = float(getattr(blend.neighbours, "repeat", 0.0)) if blend is not None else 0.0
    window = int(getattr(blend.neighbours, "own_window", 0)) if blend is not None and own else 0
    if blend is not None:
        if isinstance(blend.neighbours, SessionNeighbours):  # V-SKNN reads each session's items
            sessions_rows = [bundle.vocab.rows_for_hashes(s.seen_item_hashes()) for s in states]
        say(f"blending co-occurrence into the scores (weight {blend.weight}"
            + (f", the session's last {window} own items {own:g})" if own else ")"))
    results: dict[str, Any] = {}
    ranks: dict[str, np.ndarray] = {}
    lists: dict[str, list[list[str]]] = {}
    for kind in indexes:
        index = serving_index(bundle, served, kind)
        t2 = time.perf_counter()
        acc, ranks[kind], lists[kind] = rank_cases(
            index, encoded, cases, bundle.vocab, k, blend=blend, sessions=sessions_rows,
            item_vectors=bundle.item_vectors, scale=logit_scale(bundle))
        summary = acc.summary(percent=True)
        summary["search_seconds"] = round(time.perf_counter() - t2, 2)
        if kind == "hnsw":
            summary["ef"] = served_ef(bundle, served)
        results[kind] = summary
        say(f"{kind}: hr@{k} {summary[f'hr@{k}']:.2f} mrr@{k} {summary[f'mrr@{k}']:.2f}"
            f"{by_target_note(summary, k)} ({summary['search_seconds']:.1f}s)")
    report = {
        "model_version": bundle.version,
        "bundle": str(bundle.path),
        "prefixes": len(cases),
        "test_sessions": len(sessions),
        "k": k,
        "ef": served_ef(bundle, served),
        "cooccurrence_weight": blend.weight if blend is not None else 0.0,
        "repeat": own,
        "own_window": window,
        "index": results,
        "encode_seconds": round(encode_s, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return OfflineResult(report, cases, ranks, lists)


def evaluate_baselines(
    split: SessionSplit,
    names: Sequence[str] = tuple(BASELINES),
    k: int = 20,
    *,
    max_sessions: int | None = None,
    progress: Progress | None = _stderr,
) -> dict[str, dict[str, Any]]:
    """POP, Item-KNN, SKNN and V-SKNN fitted on the training sessions, scored on the test prefixes."""
    say = progress or (lambda _msg: None)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline {', '.join(unknown)}; expected {', '.join(BASELINES)}")
    test = split.test_sessions[:max_sessions] if max_sessions else split.test_sessions
    from ..datasets.eventlog import augment

    prefixes, targets = augment(test)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        t0 = time.perf_counter()
        model = BASELINES[name]().fit(split.train_sessions)
        summary = evaluate(model, prefixes, targets, k, catalogue_size=len(split.items), percent=True)
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        out[name] = summary
        say(f"{name}: hr@{k} {summary[f'hr@{k}']:.2f} mrr@{k} {summary[f'mrr@{k}']:.2f}"
            f"{by_target_note(summary, k)} ({summary['seconds']:.0f}s)")
    return out


# ------------------------------------------------------------------------------ the command
@dataclass(frozen=True)
class EvaluateOptions:
    """What `stream-rec evaluate` was asked for."""

    dataset: str = "diginetica"
    data_root: str | None = None
    data_dir: str | None = None  # --dataset sessions (or another location of a named split)
    events_file: str | None = None
    min_item_count: int = 5  # --dataset events: the protocol's filter
    test_days: float = 7.0  # --dataset events: sessions of the last days are the test set
    baselines: bool = False  # also score POP, Item-KNN, SKNN and V-SKNN
    baselines_only: bool = False  # score the baselines alone, no bundle
    streaming: bool = False  # also replay the test sessions through broker + worker
    max_sessions: int | None = None  # only the first n test sessions (quick runs)
    run_dir: str = "var/evaluate"


def _points(a: float, b: float) -> float:
    return round(a - b, 4)


def run_evaluation(
    settings: Settings, opts: EvaluateOptions, progress: Progress | None = _stderr
) -> dict[str, Any]:
    """Offline (exact and HNSW), and optionally streaming and baselines: one report (percent).

    The top-level metrics are the serving index's (HNSW at ``settings.hnsw_ef``); ``index`` holds
    both indexes' summaries, ``hnsw_cost`` exact minus HNSW in points.
    """
    from ..serving.bundle import ModelBundle, resolve_bundle

    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    split = load_split(
        opts.dataset, data_root=opts.data_root, data_dir=opts.data_dir, events_file=opts.events_file,
        protocol=ProtocolOptions(min_item_count=opts.min_item_count, test_days=opts.test_days),
        progress=progress,
    )
    if opts.baselines_only:  # what a model has to beat on this split, before there is one
        baselines = evaluate_baselines(split, k=settings.top_k, max_sessions=opts.max_sessions,
                                       progress=progress)
        return {"dataset": opts.dataset, "prefixes": next(iter(baselines.values()))["prefixes"],
                "data": split.stats().as_dict(), "percent": True, "baselines": baselines,
                "seconds": round(time.perf_counter() - t0, 1)}
    path = resolve_bundle(settings.bundles_dir, settings.bundle or None, settings.model_version or None)
    bundle = ModelBundle.load(path)
    training = dict(bundle.manifest.get("training", {}))
    trained_on = str(training.get("data", "?"))
    if not trained_on.startswith(opts.dataset):
        say(f"warning: bundle {bundle.version} was trained on {trained_on!r}, not on {opts.dataset}")
    off = evaluate_bundle(bundle, split, settings, max_sessions=opts.max_sessions, progress=progress)
    k = settings.top_k
    serving = off.report["index"]["hnsw"]
    exact = off.report["index"]["exact"]
    report: dict[str, Any] = {
        "dataset": opts.dataset,
        f"hr@{k}": serving[f"hr@{k}"],
        f"mrr@{k}": serving[f"mrr@{k}"],
        f"ndcg@{k}": serving[f"ndcg@{k}"],
        f"coverage@{k}": serving[f"coverage@{k}"],
        **{m: serving[m] for m in ("hr@10", "mrr@10") if m in serving},
        "prefixes": off.report["prefixes"],
        "serving_index": "hnsw",
        "ef": served_ef(bundle, answering_every_event(settings)),
        "blend": {"weight": off.report["cooccurrence_weight"], "repeat": off.report["repeat"],
                  "own_window": off.report["own_window"]},
        f"hr@{k}_by_length": serving[f"hr@{k}_by_length"],
        **({"by_target": serving["by_target"]} if "by_target" in serving else {}),
        "index": off.report["index"],
        "hnsw_cost": {m: _points(exact[m], serving[m]) for m in (f"hr@{k}", f"mrr@{k}", f"ndcg@{k}")},
        "percent": True,
        "model_version": bundle.version,
        "bundle": str(bundle.path),
        "data": split.stats().as_dict(),
        "test_sessions": off.report["test_sessions"],
        "training": {
            key: training.get(key)
            for key in ("data", "sessions", "seconds", "cpu_seconds", "threads", "epochs", "seed")
        },
        "valid": {key: bundle.manifest.get("metrics", {}).get(key)
                  for key in ("valid_hr@20", "valid_mrr@20", "best_epoch", "epochs_run")},
    }
    if opts.streaming:
        from .streaming import StreamingOptions, streaming_evaluate

        streamed = streaming_evaluate(
            settings, bundle.path, split, max_sessions=opts.max_sessions,
            options=StreamingOptions(run_dir=opts.run_dir), progress=progress,
        )
        live = streamed.report
        live.update(streamed.agreement(off.cases, off.ranks["hnsw"], off.lists["hnsw"]))
        live["minus_offline_hnsw"] = {m: _points(live[m], serving[m]) for m in (f"hr@{k}", f"mrr@{k}")}
        report["streaming"] = live
        say(f"streaming: hr@{k} {live[f'hr@{k}']:.2f} mrr@{k} {live[f'mrr@{k}']:.2f}; "
            f"{live['same_list_prefixes']:,}/{len(off.cases):,} prefixes got the same top-{k} "
            "as offline HNSW")
    if opts.baselines:
        report["baselines"] = evaluate_baselines(split, k=k, max_sessions=opts.max_sessions,
                                                 progress=progress)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report
