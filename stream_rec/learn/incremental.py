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
from ..errors import ConfigError
from ..model.sasrec import SessionTransformer
from ..model.training_data import session_arrays
from .cases import hr_mrr, prefix_cases, ranks
from .update import UpdateConfig, fine_tune
from .vocab import admit, grow, initial_rows, new_item_counts

__all__ = ["IncrementalOptions", "run_incremental", "window_bounds"]

_ITEM_TYPES = ("click", "purchase")


@dataclass(frozen=True)
class IncrementalOptions:
    windows: int = 10  # equal slices of the stream by position
    window_ms: int | None = None  # or by time: each window spans this many ms of event time
    update: UpdateConfig = field(default_factory=UpdateConfig)
    min_count: int = 3  # occurrences before a new item gets a row
    init: str = "cooccurrence"
    vsknn: bool = True


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


def _ids(session: Sequence[Event]) -> list[str]:
    return [e.item_id for e in session if e.item_id is not None and e.type in _ITEM_TYPES]


def _vsknn(history_ids: list[list[str]], window_ids: list[list[str]]) -> tuple[float, float]:
    from ..evaluation.baselines import SessionKNN, evaluate

    model = SessionKNN().fit([s for s in history_ids if s])
    prefixes, targets = [], []
    for s in window_ids:
        for j in range(1, len(s)):
            prefixes.append(s[:j])
            targets.append(s[j])
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
    sessions the model was trained on (replayed in updates, V-SKNN's first sessions)."""
    say = progress or (lambda _m: None)
    bounds = window_bounds(stream, opts)
    cfg = model.config
    frozen, frozen_vocab = model, vocab
    current, cur_vocab = _copy(model), vocab
    older = [session_arrays(s) for s in history]
    history_ids = [_ids(s) for s in history]
    rows: list[dict[str, Any]] = []
    for w, (a, b) in enumerate(bounds):
        window = stream[a:b]
        arrays = [session_arrays(s) for s in window]
        t0 = time.perf_counter()
        f_cases = prefix_cases(arrays, frozen_vocab, cfg.query_buckets, cfg.max_len)
        f_ranks = ranks(frozen, f_cases)
        i_cases = prefix_cases(arrays, cur_vocab, cfg.query_buckets, cfg.max_len)
        i_ranks = ranks(current, i_cases)
        unseen = f_cases.target_rows == 0
        row: dict[str, Any] = {
            "window": w + 1,
            "sessions": len(window),
            "cases": len(f_cases),
            "frozen": _pair(hr_mrr(f_ranks)),
            "incremental": _pair(hr_mrr(i_ranks)),
            "unseen_share": round(100.0 * float(unseen.mean()), 2) if len(f_cases) else None,
            "incremental_hr@20_unseen": round(hr_mrr(i_ranks[unseen])[0], 2)
            if unseen.any()
            else None,
            "items": len(cur_vocab),
        }
        if opts.vsknn:
            row["vsknn"] = _pair(_vsknn(history_ids, [_ids(s) for s in window]))
        row["score_seconds"] = round(time.perf_counter() - t0, 1)
        if w + 1 < len(bounds):  # learn from this window for the next one
            t1 = time.perf_counter()
            counts = new_item_counts([*stream[:b]], cur_vocab)
            new_ids = admit(counts, opts.min_count)
            if new_ids:
                init = initial_rows(current, cur_vocab, new_ids, stream[:b], opts.init)
                current, cur_vocab = grow(current, cur_vocab, new_ids, init)
            stats = fine_tune(current, cur_vocab, arrays, older, opts.update)
            row["update"] = {
                "items_added": len(new_ids),
                "sessions": stats.sessions,
                "replayed": stats.replayed,
                "steps": stats.steps,
                "loss": round(stats.loss, 4),
                "seconds": round(time.perf_counter() - t1, 2),
                "cpu_seconds": round(stats.cpu_seconds, 2),
            }
        older.extend(arrays)
        history_ids.extend(_ids(s) for s in window)
        rows.append(row)
        say(_line(row))
    return {"windows": rows, "mean": _means(rows), "options": _options(opts)}


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
        for key in ("frozen", "incremental", "vsknn"):
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


def _line(r: dict[str, Any]) -> str:
    parts = [
        f"window {r['window']}: {r['sessions']:,} sessions, {r['cases']:,} cases",
        f"frozen {r['frozen']['hr@20']:.2f}/{r['frozen']['mrr@20']:.2f}",
        f"incremental {r['incremental']['hr@20']:.2f}/{r['incremental']['mrr@20']:.2f}",
    ]
    if "vsknn" in r:
        parts.append(f"V-SKNN {r['vsknn']['hr@20']:.2f}/{r['vsknn']['mrr@20']:.2f}")
    parts.append(f"unseen {r['unseen_share']}%")
    if "update" in r:
        u = r["update"]
        parts.append(f"update +{u['items_added']} items, {u['steps']} steps, {u['seconds']:.1f}s")
    return ", ".join(parts)
