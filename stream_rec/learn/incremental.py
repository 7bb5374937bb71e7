"""Incremental evaluation (Transformers4Rec's protocol, Moreira et al. 2021, section 4.1): the
stream after training is cut into windows in time order; each window is first scored (every
prefix, an item the model does not know counting as a miss), then learned from.

Rows per window: the **frozen** model (the bundle as trained), the **incremental** one (the same
model after an update on every earlier window: new items admitted, warm-started fine-tuning on
the window plus a replay sample of older sessions, :mod:`.update`), and **V-SKNN** refitted on
every session before the window (rolling by nature: its neighbours are the most recent sessions
sharing an item). Also: the share of targets the frozen model cannot know, and the incremental
model's HR@20 on them, and the seconds of each update.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.events import Event
from ..core.features import ItemVocab
from ..core.item_neighbours import DEFAULT_CANDIDATES, ItemNeighbours
from ..errors import ConfigError
from ..model.examples import Session
from ..model.sasrec import SessionTransformer
from ..model.training_data import session_arrays
from .cases import Cases, ItemBlend, hr_mrr, prefix_cases, ranks
from .update import UpdateConfig, fine_tune
from .vocab import admit, grow, initial_rows, item_ids, new_item_counts

__all__ = ["IncrementalOptions", "run_incremental", "window_bounds"]


@dataclass(frozen=True)
class IncrementalOptions:
    windows: int = 10  # equal slices of the stream by position
    window_ms: int | None = None  # or by time: each window spans this many ms of event time
    update: UpdateConfig = field(default_factory=UpdateConfig)
    min_count: int = 3  # occurrences before a new item gets a row
    init: str = "cooccurrence"
    vsknn: bool = True
    blend_weight: float | None = None  # the bundle's item-neighbour blend, when it serves one
    blend_candidates: int = DEFAULT_CANDIDATES
    blend_recent: int = 1  # the session's last items blended (the bundle's)
    scale: float = 16.0  # the model's softmax scale (the blend normalises over it)


def window_bounds(
    stream: Sequence[Sequence[Event]], opts: IncrementalOptions
) -> list[tuple[int, int]]:
    """[start, end) session indices of each window, by position or by the first event's time."""
    n = len(stream)
    if n == 0:
        return []
    if opts.window_ms is not None:
        if opts.window_ms <= 0:
            raise ConfigError(f"window must be > 0 ms; got {opts.window_ms}")
        starts = np.asarray([s[0].ts for s in stream], np.int64)
        slot = (starts - starts[0]) // opts.window_ms
        edges = np.flatnonzero(np.diff(slot)) + 1
        cuts = [0, *edges.tolist(), n]
    else:
        if opts.windows < 2:
            raise ConfigError(
                f"--windows must be >= 2 (one to learn from, one to score); got {opts.windows}"
            )
        cuts = [round(i * n / opts.windows) for i in range(opts.windows + 1)]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _fit_vsknn(history_ids: list[list[str]]) -> Any:
    from ..evaluation.baselines import SessionKNN

    return SessionKNN().fit([s for s in history_ids if s])


def _score_vsknn(model: Any, window_ids: list[list[str]]) -> tuple[float, float]:
    from ..datasets.eventlog import augment
    from ..evaluation.baselines import evaluate

    prefixes, targets = augment(window_ids)
    if not targets:
        return float("nan"), float("nan")
    out = evaluate(model, prefixes, targets, percent=True)
    return float(out["hr@20"]), float(out["mrr@20"])


def run_incremental(
    model: SessionTransformer,
    vocab: ItemVocab,
    history: Sequence[Sequence[Event]],
    stream: Sequence[Sequence[Event]],
    opts: IncrementalOptions = IncrementalOptions(),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score the frozen and the incremental model (and V-SKNN) window by window; ``history``: the
    sessions the model was trained on (replayed in updates, V-SKNN's first sessions). With
    ``opts.blend_weight`` each model is also scored as served with the item-neighbour blend: the
    frozen one with a table of ``history``, the incremental one with a table rebuilt at each
    update from every session so far."""
    say = progress or (lambda _m: None)
    bounds = window_bounds(stream, opts)
    frozen, frozen_vocab = model, vocab
    current, cur_vocab = _copy(model), vocab
    older = [session_arrays(s) for s in history]
    history_ids = [item_ids(s) for s in history]
    frozen_vsknn = _fit_vsknn(history_ids) if opts.vsknn else None
    frozen_blend = current_blend = _blend(older, vocab, opts)
    rows: list[dict[str, Any]] = []
    for w, (a, b) in enumerate(bounds):
        window = stream[a:b]
        arrays = [session_arrays(s) for s in window]
        t0 = time.perf_counter()
        row: dict[str, Any] = {"window": w + 1, "sessions": len(window)}
        f_ranks, f_cases = _score(row, "frozen", frozen, frozen_vocab, arrays, frozen_blend)
        i_ranks, _ = _score(row, "incremental", current, cur_vocab, arrays, current_blend)
        unseen = f_cases.target_rows == 0
        row["cases"] = len(f_ranks)
        row["unseen_share"] = round(100.0 * float(unseen.mean()), 2) if len(f_ranks) else None
        row["incremental_hr@20_unseen"] = (
            round(hr_mrr(i_ranks[unseen])[0], 2) if unseen.any() else None
        )
        row["items"] = len(cur_vocab)
        if frozen_vsknn is not None:
            window_ids = [item_ids(s) for s in window]
            row["vsknn_frozen"] = _pair(_score_vsknn(frozen_vsknn, window_ids))
            row["vsknn"] = _pair(_score_vsknn(_fit_vsknn(history_ids), window_ids))
        row["score_seconds"] = round(time.perf_counter() - t0, 1)
        older.extend(arrays)
        history_ids.extend(item_ids(s) for s in window)
        if w + 1 < len(bounds):  # learn from this window for the next one
            t1 = time.perf_counter()
            counts = new_item_counts([*stream[:b]], cur_vocab)
            new_ids = admit(counts, opts.min_count)
            if new_ids:
                init = initial_rows(current, cur_vocab, new_ids, stream[:b], opts.init)
                current, cur_vocab = grow(current, cur_vocab, new_ids, init)
            stats = fine_tune(
                current, cur_vocab, arrays, older[: len(older) - len(arrays)], opts.update
            )
            current_blend = _blend(older, cur_vocab, opts)
            row["update"] = {
                "items_added": len(new_ids),
                "sessions": stats.sessions,
                "replayed": stats.replayed,
                "steps": stats.steps,
                "loss": round(stats.loss, 4),
                "seconds": round(time.perf_counter() - t1, 2),
                "cpu_seconds": round(stats.cpu_seconds, 2),
            }
        rows.append(row)
        say(_line(row))
    return {"windows": rows, "mean": _means(rows), "options": _options(opts)}


def _score(
    row: dict[str, Any],
    name: str,
    model: SessionTransformer,
    vocab: ItemVocab,
    arrays: list[Session],
    blend: ItemBlend | None,
) -> tuple[np.ndarray, Cases]:
    """Adds ``name`` (and ``<name>_served`` with the blend) to ``row``; returns the model's ranks
    and the cases."""
    cases = prefix_cases(arrays, vocab, model.config.query_buckets, model.config.max_len)
    r = ranks(model, cases)
    row[name] = _pair(hr_mrr(r))
    if blend is not None:
        row[f"{name}_served"] = _pair(hr_mrr(ranks(model, cases, blend)))
    return r, cases


def _blend(older: list[Session], vocab: ItemVocab, opts: IncrementalOptions) -> ItemBlend | None:
    if opts.blend_weight is None:
        return None
    rows = [vocab.rows_for_hashes(np.asarray(s[0], np.int64)) for s in older]
    table = ItemNeighbours.build(rows, len(vocab), candidates=opts.blend_candidates).with_recent(
        opts.blend_recent
    )
    return ItemBlend(table, opts.blend_weight, opts.scale)


def _copy(model: SessionTransformer) -> SessionTransformer:
    out = SessionTransformer(model.config)
    out.load_state_dict(model.state_dict())
    return out.eval()


def _pair(x: tuple[float, float]) -> dict[str, float]:
    return {"hr@20": round(x[0], 2), "mrr@20": round(x[1], 2)}


def _means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Averages over time (each window counts once), all windows and after the first."""
    out: dict[str, Any] = {}
    for span, sel in (("all", rows), ("after_first", rows[1:])):
        part: dict[str, Any] = {}
        for key, _label in _LABELS:
            vals = [r[key] for r in sel if key in r and not np.isnan(r[key]["hr@20"])]
            if vals:
                part[key] = _pair(
                    (
                        float(np.mean([v["hr@20"] for v in vals])),
                        float(np.mean([v["mrr@20"] for v in vals])),
                    )
                )
        out[span] = part
    updates = [r["update"]["seconds"] for r in rows if "update" in r]
    out["update_seconds_mean"] = round(float(np.mean(updates)), 2) if updates else None
    return out


def _options(opts: IncrementalOptions) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(opts)


_LABELS = (
    ("frozen", "frozen"),
    ("incremental", "incremental"),
    ("frozen_served", "frozen+blend"),
    ("incremental_served", "incremental+blend"),
    ("vsknn_frozen", "V-SKNN frozen"),
    ("vsknn", "V-SKNN rolling"),
)


def _line(r: dict[str, Any]) -> str:
    parts = [f"window {r['window']}: {r['sessions']:,} sessions, {r['cases']:,} cases"]
    parts += [f"{label} {r[k]['hr@20']:.2f}/{r[k]['mrr@20']:.2f}" for k, label in _LABELS if k in r]
    parts.append(f"unseen {r['unseen_share']}%")
    if "update" in r:
        u = r["update"]
        parts.append(f"update +{u['items_added']} items, {u['steps']} steps, {u['seconds']:.1f}s")
    return ", ".join(parts)
