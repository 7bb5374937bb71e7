"""`stream-rec evaluate --incremental`: a bundle's model scored window by window on a data set's
test sessions, frozen and learning from each window once it is scored (:mod:`.incremental`).

The history (what the bundle was trained on: replayed in updates, V-SKNN's first sessions) is the
split's training sessions; the stream is its test sessions in their order. Standard splits have
no dates: windows by position (``--windows``); event logs may use ``--window 1d``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ..evaluation.cases import split_test_events
from ..evaluation.offline import EvaluateOptions, load_split
from ..settings import Settings
from .incremental import IncrementalOptions, run_incremental

__all__ = ["run_incremental_evaluation", "parse_window"]

_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_window(text: str) -> int:
    """'10m', '1h', '1d', '90s' -> milliseconds (ConfigError naming the expected form)."""
    text = text.strip().lower()
    try:
        value, unit = float(text[:-1]), text[-1]
        ms = int(value * _UNITS_MS[unit])
    except (ValueError, KeyError, IndexError):
        raise ConfigError(
            f"--window {text!r}: expected a number and a unit (s, m, h, d), e.g. 10m, 1h, 1d"
        ) from None
    if ms <= 0:
        raise ConfigError(f"--window {text!r}: expected a positive duration")
    return ms


def run_incremental_evaluation(
    settings: Settings,
    opts: EvaluateOptions,
    inc: IncrementalOptions,
    checkpoint_dir: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from dataclasses import replace

    from ..datasets.eventlog import ProtocolOptions, SessionSplit
    from ..model.training_data import sessions_of
    from ..serving.bundle import ModelBundle, resolve_bundle
    from ..serving.compose import logit_scale
    from .weights import load_model, model_source

    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    split = load_split(
        opts.dataset,
        data_root=opts.data_root,
        data_dir=opts.data_dir,
        events_file=opts.events_file,
        protocol=ProtocolOptions(min_item_count=opts.min_item_count, test_days=opts.test_days),
        progress=progress,
    )
    path = resolve_bundle(
        settings.bundles_dir, settings.bundle or None, settings.model_version or None
    )
    bundle = ModelBundle.load(path)
    model = load_model(bundle, checkpoint_dir)
    source = model_source(bundle)
    if source == "checkpoint":
        say(f"weights: the selected model of {checkpoint_dir} (before its refit pass)")
    if split.train_events is not None:
        history = list(split.train_events)
    else:
        from ..datasets.diginetica import split_to_events

        only_train = SessionSplit(
            train_sessions=split.train_sessions, test_sessions=[], items=split.items
        )
        history = sessions_of(split_to_events(only_train, "train"))
    if opts.dataset == "events":
        stream = _raw_test_sessions(opts)  # unseen items kept: learning them is the point
        say(f"stream: the last {opts.test_days:g} days' sessions with every item (not filtered)")
    else:
        stream = split_test_events(split)
    if opts.max_sessions:
        stream = stream[: opts.max_sessions]
    if not stream:
        raise ConfigError(f"{opts.dataset}: no test session to evaluate on")
    nb = bundle.manifest.get("item_neighbours") or {}
    if nb and inc.blend_weight is None:
        inc = replace(
            inc,
            blend_weight=float(nb.get("weight", 0.0)),
            blend_candidates=int(nb.get("candidates", inc.blend_candidates)),
            blend_recent=int(nb.get("recent", 1)),
            scale=logit_scale(bundle),
        )
    say(
        f"incremental evaluation of {bundle.version}: {len(history):,} history sessions, "
        f"{len(stream):,} stream sessions"
        + (f", served blend weight {inc.blend_weight:g}" if inc.blend_weight else "")
    )
    report = run_incremental(model, bundle.vocab, history, stream, inc, progress)
    report.update(
        dataset=opts.dataset,
        model_version=bundle.version,
        bundle=str(path),
        weights=source,
        history_sessions=len(history),
        stream_sessions=len(stream),
        seconds=round(time.perf_counter() - t0, 1),
    )
    return report


def _raw_test_sessions(opts: EvaluateOptions) -> list[tuple[Any, ...]]:
    """The event log's sessions that start in its last ``test_days`` with at least two item
    events, in time order, every item kept (the protocol drops items unseen in training)."""
    from ..datasets.eventlog import ProtocolOptions, read_event_log, sessionize

    if not opts.events_file:
        raise ConfigError("--dataset events needs --events-file PATH")
    events, _invalid = read_event_log(opts.events_file)
    sessions = list(sessionize(events, ProtocolOptions(min_item_count=1, test_days=opts.test_days)))
    if not sessions:
        return []
    last = max(s.date for s in sessions)
    cut = last - opts.test_days * 86_400.0
    return [s.events for s in sessions if s.date > cut and len(s.items) >= 2 and s.events]
