"""The learner: a window of the stream, and an update that publishes a new bundle when the guard
lets it (`stream-rec learn` runs it beside the workers; :mod:`topologies.learner` feeds it).

An update, from the bundle in service (the newest valid one, or the learner's own last):
1. the sessions since the previous update are split in time: the newest ``held_out`` share is
   kept back for the guard, the rest is trained on with a replay sample of the window's older
   sessions (:mod:`.update`);
2. items the model does not know that occur ``min_count`` times in the window get rows
   (:mod:`.vocab`), so the vocabulary and the HNSW index grow;
3. the guard (:mod:`.guard`) scores the candidate and the serving model on the held-out
   sessions; only a candidate within ``margin`` points is written, as a new bundle version
   (model, item vectors, HNSW index, the item-neighbour table updated by the window
   (:mod:`.table`), popularity with the window's counts added). The bundle is written
   in a hidden staging directory and renamed into place: workers polling the bundles
   directory swap to it; a crash or a refused update leaves the old one in service.
4. when the guard refuses the fine-tuned candidate and items were admitted, the serving model
   with only the new items' rows added is guarded the same way and published if it passes
   (``items_only`` in the bundle's training info): a new item waits for one update interval,
   not for a fine-tune the guard accepts.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..core.events import Event
from ..core.features import ItemVocab, item_hash
from ..errors import ConfigError
from ..model.training_data import session_arrays
from ..serving.bundle import HnswParams, ModelBundle, bundles_newest_first
from ..serving.compose import logit_scale
from .cases import ItemBlend
from .guard import DEFAULT_MARGIN, DEFAULT_Z, GuardDecision, guard
from .table import table_sessions, updated_table
from .update import UpdateConfig, UpdateStats, fine_tune, replay_sample
from .vocab import admit, grow, initial_rows, item_ids, new_item_counts
from .window import SessionWindow

__all__ = ["LearnOptions", "UpdateOutcome", "Learner", "STAGING"]

log = logging.getLogger("stream_rec.learn")
STAGING = ".learn-staging"  # hidden: bundles being written are never served


@dataclass(frozen=True)
class LearnOptions:
    every_events: int | None = 50_000  # an update after this many events ...
    every_ms: int | None = None  # ... or this much wall time (whichever is set)
    capacity: int = 50_000  # sessions kept in the window
    held_out: float = 0.1  # newest share of the new sessions scored by the guard
    min_sessions: int = 20  # fewer new sessions: no update
    min_count: int = 3  # occurrences in the window before a new item gets a row
    max_new_items: int = 10_000  # per update
    init: str = "cooccurrence"
    margin: float = DEFAULT_MARGIN
    guard_z: float = DEFAULT_Z  # standard errors a shortfall must exceed the margin by
    update: UpdateConfig = field(default_factory=lambda: UpdateConfig(lr=1e-3))
    checkpoint_dir: str | None = None  # weights for a base bundle without weights.pt
    # An item unknown to the bundle in service that reaches min_count makes the next update
    # due this soon after the previous one (time-based updates only; 0 = never early). At 0.5,
    # with the window-updated table and the noise-aware guard (session 11), every update of the
    # drifting stream was published and a new item's first recommendation came a median 16 s /
    # p90 23 s after its admission at a 30 s interval (off: 27 / 39 s; docs/benchmarks.md).
    early_fraction: float = 0.5
    keep_local: int = 5  # bundles this learner wrote kept on disk (older ones deleted; 0 = all)

    def __post_init__(self) -> None:
        if (self.every_events is None) == (self.every_ms is None):
            raise ConfigError("give exactly one of every_events and every_ms")
        if not 0 < self.held_out < 1:
            raise ConfigError(f"held_out must be in (0, 1); got {self.held_out}")
        if not 0 <= self.early_fraction <= 1:
            raise ConfigError(f"early_fraction must be in [0, 1]; got {self.early_fraction}")


@dataclass
class UpdateOutcome:
    published: Path | None = None
    decision: GuardDecision | None = None
    skipped: str | None = None  # why no candidate was trained
    # When the guard refused the fine-tuned candidate and items were admitted: the serving model
    # with only the new items' rows added, guarded the same way (published when it passes).
    fallback: GuardDecision | None = None
    items_added: int = 0
    sessions: int = 0  # new sessions since the previous update
    stats: UpdateStats | None = None
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds: read, grow, train, ...

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["published"] = str(self.published) if self.published else None
        return out


class Learner:
    def __init__(
        self,
        bundles_dir: str | Path,
        window: SessionWindow,
        opts: LearnOptions,
        serving: str | Path | None = None,
    ) -> None:
        self.bundles_dir = Path(bundles_dir)
        self.window = window
        self.opts = opts
        if serving:
            self.serving, loaded = Path(serving), ModelBundle.load(serving)
        else:
            self.serving, loaded = _newest_loadable(self.bundles_dir)
        self.events_since = 0
        self.last_update = time.monotonic()
        self.outcomes: list[UpdateOutcome] = []
        # a crashed update's leftovers
        shutil.rmtree(self.bundles_dir / STAGING, ignore_errors=True)
        self._known = set(loaded.vocab.item_ids)
        self._unknown: dict[str, int] = {}  # items the bundle in service lacks: occurrences
        self.admissible = 0  # of them, how many reached min_count since the last update

    def observe(self, event: Event) -> None:
        self.window.add(event)
        self.events_since += 1
        item = event.item_id
        if item is not None and item not in self._known and len(self._unknown) < 1_000_000:
            n = self._unknown[item] = self._unknown.get(item, 0) + 1
            if n == self.opts.min_count:
                self.admissible += 1

    def due(self) -> bool:
        o = self.opts
        if o.every_events is not None:
            return self.events_since >= o.every_events
        assert o.every_ms is not None
        waited = (time.monotonic() - self.last_update) * 1000
        early = self.admissible > 0 and o.early_fraction > 0
        return waited >= (o.every_ms * o.early_fraction if early else o.every_ms)

    def update(self, progress: Callable[[str], None] | None = None) -> UpdateOutcome:
        """One update (blocking, CPU-bound: run it off the event loop)."""
        from .weights import load_model

        say = progress or log.warning  # an update is an operational event, like a swap
        t0 = time.perf_counter()
        self.events_since, self.last_update = 0, time.monotonic()
        stop, w = self.window.next_seq, self.window
        continued_seqs, continued = w.continued_sessions()
        new, older = w.sessions(w.mark, stop), w.sessions(0, w.mark)
        out = UpdateOutcome(sessions=len(new))
        lap = _Lap(out.phases)
        lap("read")
        if len(new) < self.opts.min_sessions:
            out.skipped = f"{len(new)} new sessions (< {self.opts.min_sessions})"
            return self._done(out, t0, say)
        n_held = max(1, int(len(new) * self.opts.held_out))
        train_new, held = [*continued, *new[:-n_held]], new[-n_held:]
        bundle = ModelBundle.load(self.serving)
        serving_model = load_model(bundle, self.opts.checkpoint_dir)
        model, vocab = copy.deepcopy(serving_model), bundle.vocab  # the candidate, trained below
        # what the candidate learns from: never the held-out sessions the guard scores it on
        everything = [*older, *train_new]
        new_ids = admit(
            new_item_counts(everything, vocab), self.opts.min_count, self.opts.max_new_items
        )
        rows_only = None  # the serving model with the new rows alone: the fallback candidate
        if new_ids:
            rows = initial_rows(model, vocab, new_ids, everything, self.opts.init)
            model, vocab = grow(model, vocab, new_ids, rows)
            rows_only = copy.deepcopy(model)
        out.items_added = len(new_ids)
        lap("grow")
        cfg = self.opts.update
        rng = np.random.default_rng(cfg.seed + len(self.outcomes))
        replayed = replay_sample(older, int(round(cfg.replay * len(train_new))), rng)
        out.stats = fine_tune(
            model,
            vocab,
            [session_arrays(s) for s in train_new],
            [session_arrays(s) for s in replayed],  # all of them: already the sample
            cfg,
        )
        lap("train")
        held_arrays = [session_arrays(s) for s in held]
        table = bundle.item_neighbours()
        blends: tuple[ItemBlend | None, ItemBlend | None] = (None, None)
        merged = None
        if table is not None:  # both scored as served: the candidate with the table it would carry
            merged = updated_table(
                table, table_sessions(bundle.manifest), vocab, _rows(everything, vocab)
            )
            weight, scale = bundle.item_neighbours_weight, logit_scale(bundle)
            blends = (ItemBlend(merged, weight, scale), ItemBlend(table, weight, scale))

        def judged(candidate: Any) -> GuardDecision:
            return guard(
                (candidate, vocab),
                (serving_model, bundle.vocab),
                held_arrays,
                self.opts.margin,
                blends,
                self.opts.guard_z,
            )

        out.decision = judged(model)
        if not out.decision.publish and rows_only is not None:
            # New items should not wait for a fine-tune the guard accepts: their rows alone, on
            # the serving model's weights, are guarded the same way.
            out.fallback = judged(rows_only)
            if out.fallback.publish:
                model, out.stats = rows_only, None
        lap("guard")
        if out.decision.publish or (out.fallback is not None and out.fallback.publish):
            # a failed publish leaves the mark: the next update retries
            out.published = self._publish(bundle, model, vocab, train_new, out, merged)
            self.serving = out.published
            prune_learned(self.bundles_dir, self.opts.keep_local, keep={out.published, bundle.path})
            self._known.update(vocab.item_ids)
            self._unknown = {i: n for i, n in self._unknown.items() if i not in self._known}
            lap("publish")
        self.admissible = 0
        w.set_mark(stop, continued_seqs)
        return self._done(out, t0, say)

    def _done(self, out: UpdateOutcome, t0: float, say: Callable[[str], None]) -> UpdateOutcome:
        out.seconds = time.perf_counter() - t0
        self.outcomes.append(out)
        d = out.decision
        if out.skipped:
            say(f"update skipped: {out.skipped}")
        elif d is not None:
            say(
                f"update: {out.sessions:,} new sessions, +{out.items_added} items, guard on "
                f"{d.cases:,} held-out cases: candidate {d.candidate_hr:.2f}/{d.candidate_mrr:.2f} "
                f"vs serving {d.serving_hr:.2f}/{d.serving_mrr:.2f} (HR@20/MRR@20): "
                + (
                    f"published {out.published.name}"
                    if out.published and d.publish
                    else f"refused, {d.reason}"
                    + (
                        ""
                        if out.fallback is None
                        else "; the new items' rows alone on the serving model: "
                        f"{out.fallback.candidate_hr:.2f}/{out.fallback.candidate_mrr:.2f}, "
                        + (f"published {out.published.name}" if out.published else "refused")
                    )
                )
                + f" ({out.seconds:.1f}s)"
            )
        return out

    def _publish(
        self,
        base: ModelBundle,
        model: Any,
        vocab: ItemVocab,
        sessions: Sequence[Sequence[Event]],
        out: UpdateOutcome,
        merged: Any = None,
    ) -> Path:
        """``sessions``: the ones new since the previous update (their counts join popularity)."""
        from ..model.bundle_writer import with_item_neighbours, write_bundle

        staging = self.bundles_dir / STAGING
        decision = out.fallback if out.stats is None else out.decision  # the one that published
        hnsw_info = base.manifest.get("hnsw", {})
        hnsw = HnswParams(
            **{f.name: hnsw_info[f.name] for f in fields(HnswParams) if f.name in hnsw_info}
        )
        info = {
            "data": "learn",
            "base": base.version,
            "sessions": out.sessions,
            "events": sum(len(s) for s in sessions),
            "epochs": self.opts.update.epochs if out.stats else 0,
            "update": asdict(out.stats) if out.stats else None,
            "items_only": out.stats is None,  # the fine-tune refused: the new rows alone
            "items_added": out.items_added,
            "window_sessions": len(self.window),
            "guard": decision.as_dict() if decision else None,
        }
        staged = write_bundle(
            staging,
            model,
            vocab,
            _popularity(base, vocab, sessions),
            info,
            {"guard": info["guard"]},
            hnsw,
        )
        try:
            if merged is None:  # the base serves the model alone
                final = self.bundles_dir / staged.name
                staged.rename(final)
                return final
            return with_item_neighbours(
                ModelBundle.load(staged),
                self.bundles_dir,
                merged,
                base.item_neighbours_weight,
                {
                    "rule": f"weight carried from {base.version}; the base table updated by the "
                    "learner's window (known items: both rows mixed by their sessions; new "
                    "items: the window's)",
                    "sessions": table_sessions(base.manifest) + len(sessions),
                },
                note=f"{len(sessions):,} new sessions, table of the window",
                hnsw=_carried_hnsw(ModelBundle.load(staged).manifest["hnsw"], base),
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def prune_learned(bundles_dir: Path, keep_newest: int, keep: set[Path] | None = None) -> list[str]:
    """Delete the bundles the learner wrote (manifest ``training.data == "learn"``) beyond the
    newest ``keep_newest``; trained bundles and ``keep`` are never deleted (0 = keep all)."""
    import json

    if keep_newest <= 0:
        return []
    learned = []
    for path in bundles_newest_first(bundles_dir):
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if manifest.get("training", {}).get("data") == "learn":
            learned.append(path)
    gone = []
    for path in learned[keep_newest:]:
        if path not in (keep or set()):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path.name)
    if gone:
        log.warning("learner: deleted %d older learned bundle(s): %s", len(gone), ", ".join(gone))
    return gone


def _newest_loadable(bundles_dir: Path) -> tuple[Path, ModelBundle]:
    """The newest bundle that loads, and it loaded (a corrupt newest one is skipped, as workers
    skip it)."""
    from ..errors import BundleError

    for path in bundles_newest_first(bundles_dir):
        try:
            return path, ModelBundle.load(path)
        except Exception as exc:  # noqa: BLE001 - any failure to load makes it invalid
            log.error("learner: skipping bundle %s: %s", path.name, exc)
    raise BundleError(f"no valid bundle in {bundles_dir} to learn from")


class _Lap:
    """Records the seconds since the previous call under each name."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into, self.t = into, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.into[name] = round(now - self.t, 3)
        self.t = now


def _rows(sessions: Sequence[Sequence[Event]], vocab: ItemVocab) -> list[np.ndarray]:
    return [
        vocab.rows_for_hashes(np.asarray([item_hash(i) for i in item_ids(s)], np.int64))
        for s in sessions
    ]


def _popularity(
    base: ModelBundle, vocab: ItemVocab, sessions: Sequence[Sequence[Event]]
) -> np.ndarray:
    """The base counts (new items 0), plus ``sessions``' (those new since the base)."""
    pop = np.zeros(len(vocab) + 1, np.float32)
    pop[: len(base.popularity)] = base.popularity
    rows = np.concatenate(_rows(sessions, vocab) or [np.zeros(0, np.int64)])
    pop += np.bincount(rows[rows > 0], minlength=len(vocab) + 1).astype(np.float32)
    return pop


def _carried_hnsw(staged: dict[str, Any], base: ModelBundle) -> dict[str, Any]:
    """The staged bundle's HNSW entry (the base's served ef) with the base's ef selection carried
    over, so served without its blend it still searches at the model alone's ef."""
    selection = base.manifest.get("hnsw", {}).get("ef_selection")
    return {**staged, "ef_selection": selection} if selection else dict(staged)
