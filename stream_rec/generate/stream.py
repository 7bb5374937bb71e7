"""A seeded shopper event stream with structure a session model can learn.

The world: a catalogue of items in categories (category popularity is skewed; item popularity
within a category is Zipf), each category with a few query words ("boots", "leather") so that
searches carry signal, and each item with a few *related* items (mostly in its category) that
the next click often follows. Shoppers have preferred categories and come back hours or days
later, sometimes to an item they looked at before. A session is a funnel: often a search
first, then clicks mostly within the intended category, and in some sessions a purchase of an
item clicked before. Many shoppers' sessions interleave in time order.

The catalogue depends only on ``(n_items, n_categories, catalogue_seed)``; ``seed`` drives the
shoppers. So a model trained on one seed serves a stream generated with another seed: same
shop, new shoppers.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from bisect import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from ..core.events import Event, encode_event
from ..errors import ConfigError
from .catalogue import Catalogue
from .config import BROWSE_SHARE, GeneratorConfig
from .drift import Drift
from .invalid import INVALID_KINDS, invalid_record

__all__ = ["EventGenerator"]

_MODIFIERS = ("cheap", "new", "sale", "best", "men", "women", "kids", "black", "white", "gift")
_GAP_TABLE = 4096
_MIN_SESSION_GAP_MS = 35 * 60_000  # longer than SessionPolicy's 30 min inactivity gap
_Step = tuple[int, str, str | None, str | None]  # (ts, type, item_id, query) of one event


@dataclass
class _Shopper:
    user_id: str
    categories: list[int]  # preferred, most preferred first
    cum_pref: list[float]
    mean_gap_ms: float
    seen: list[int]  # items clicked in recent sessions, newest last


class EventGenerator:
    """Seeded, lazy, time-ordered shopper events; >= 100k events/s on one core."""

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        self.config = cfg = config or GeneratorConfig()
        self.catalogue = Catalogue.build(
            cfg.n_items, cfg.n_categories, cfg.related_per_item, cfg.catalogue_seed
        )
        cat = self.catalogue
        # Plain Python lists: sampling in the per-event loop is a bisect on cumulative weights.
        self._cat_cum = list(accumulate(cat.category_weight.tolist()))
        self._items_of = [m.tolist() for m in cat.category_items]
        self._items_cum = [
            list(accumulate(cat.item_weight[m].tolist())) for m in cat.category_items
        ]
        self._related = cat.related.tolist()
        self._category = cat.item_category.tolist()
        self._ids = list(cat.item_ids)
        self._words = cat.words
        # Time gaps drawn from tables made once (a lookup is 10x cheaper than lognormvariate).
        gaps = np.random.default_rng(cfg.seed)
        self._step_ms = (1000 + gaps.lognormal(9.6, 0.9, _GAP_TABLE)).astype(np.int64).tolist()
        self._decide_ms = gaps.lognormal(10.3, 0.6, _GAP_TABLE).astype(np.int64).tolist()
        self._drift: Drift | None = None
        self._now = cfg.start_ts

    def _start_drift(self) -> None:
        """A fresh drifting catalogue (each call of :meth:`events` replays it from the start)."""
        cfg = self.config
        n = cfg.n_items
        del self._ids[n:], self._related[n:], self._category[n:]
        self._drift = Drift(cfg, self.catalogue) if cfg.launches_per_day > 0 else None

    def _advance_drift(self, ts: int) -> None:
        drift = self._drift
        if drift is None:
            return
        self._now = ts
        before = drift.launched
        drift.advance(ts)
        for k in range(before, drift.launched):
            self._ids.append(drift.item_ids[k])
            self._related.append(drift.related[k])
            self._category.append(drift.category[k])

    # ------------------------------------------------------------------ public API
    def events(self, n: int) -> Iterator[Event]:
        """The first ``n`` events of the stream, in time order (ties keep a fixed order)."""
        if n < 0:
            raise ConfigError(f"number of events must be >= 0; got {n}")
        cfg = self.config
        rng = random.Random(cfg.seed)
        shoppers = self._shoppers(rng)
        self._start_drift()
        # One entry per shopper: (next ts, tie-breaker, shopper, session steps left, session id)
        heap: list[tuple[int, int, int, list[_Step], str]] = []
        seq = 0  # tie-breaker: equal timestamps come out in scheduling order
        for u, shopper in enumerate(shoppers):
            first = cfg.start_ts + int(rng.random() * shopper.mean_gap_ms)
            heap.append((first, seq, u, [], ""))
            seq += 1
        heapq.heapify(heap)
        sessions = 0
        prefix = f"e{cfg.seed}-"
        for count in range(n):
            ts, _, u, pending, session_id = heap[0]
            shopper = shoppers[u]
            while not pending:  # the shopper's next session starts at ts
                pending = self._session(rng, shopper, ts)
                session_id = f"s{cfg.seed}-{sessions}"
                sessions += 1
            ev_ts, etype, item_id, query = pending.pop()
            yield Event(
                f"{prefix}{count}", shopper.user_id, etype, ev_ts, item_id, query, session_id
            )
            if pending:
                nxt = pending[-1][0]
            else:  # session over: next visit hours or days later
                gap = rng.expovariate(1.0 / shopper.mean_gap_ms)
                nxt = ev_ts + _MIN_SESSION_GAP_MS + int(gap)
                session_id = ""
            heapq.heapreplace(heap, (nxt, seq, u, pending, session_id))
            seq += 1

    def records(
        self, n: int, invalid_rate: float = 0.0, now_ms: int | None = None
    ) -> Iterator[tuple[bytes, bytes, bool]]:
        """``n`` records ``(key, value, valid)`` for the events topic, keyed by user_id.

        A fraction ``invalid_rate`` of them are corrupted in one of :data:`INVALID_KINDS`
        (each is rejected by ``parse_event``). With ``now_ms``, each record is stamped with
        live time: ``now_ms`` plus the wall-clock time elapsed since the first record, so the
        age of an event measured downstream is real lag (a producer runs far faster than
        simulated shoppers, so simulated gaps are not kept; order is).
        """
        if not 0.0 <= invalid_rate <= 1.0:
            raise ConfigError(f"invalid_rate must be in [0, 1]; got {invalid_rate}")
        bad = random.Random(self.config.seed ^ 0x5EED)
        t0 = time.monotonic()
        for event in self.events(n):
            if now_ms is not None:
                event = Event(
                    event.event_id, event.user_id, event.type,
                    now_ms + int((time.monotonic() - t0) * 1000),
                    event.item_id, event.query, event.session_id,
                )  # fmt: skip
            if invalid_rate and bad.random() < invalid_rate:
                kind = INVALID_KINDS[bad.randrange(len(INVALID_KINDS))]
                yield (*invalid_record(event, kind, bad), False)
            else:
                yield event.user_id.encode(), encode_event(event), True

    def sessions_for_training(self, n_events: int) -> list[list[Event]]:
        """The first ``n_events`` events grouped by session, sessions in order of first event."""
        by_session: dict[str | None, list[Event]] = {}
        for event in self.events(n_events):
            by_session.setdefault(event.session_id, []).append(event)
        return list(by_session.values())

    def describe(self, item_id: str) -> str:
        """A readable label for an item, e.g. ``"i00042 (boots)"``."""
        row = int(item_id[1:]) - 1
        category = self._category[row] if 0 <= row < len(self._category) else 0
        return f"{item_id} ({self._words[category][0]})"

    # ------------------------------------------------------------------ the model of shoppers
    def _shoppers(self, rng: random.Random) -> list[_Shopper]:
        cfg = self.config
        width = max(6, len(str(cfg.n_users)))
        day_ms = 86_400_000.0
        out = []
        for u in range(cfg.n_users):
            n_pref = 1 + int(rng.random() < 0.6) + int(rng.random() < 0.3)
            prefs: list[int] = []
            while len(prefs) < min(n_pref, cfg.n_categories):
                c = self._pick_category(rng)
                if c not in prefs:
                    prefs.append(c)
            weights = sorted((rng.random() + 0.2 for _ in prefs), reverse=True)
            total = sum(weights)
            # Activity varies a lot between shoppers: a log-normal around the configured mean.
            gap = cfg.mean_days_between_sessions * day_ms * math.exp(rng.gauss(-0.32, 0.8))
            out.append(
                _Shopper(
                    f"u{u:0{width}d}", prefs, list(accumulate(w / total for w in weights)), gap, []
                )
            )
        return out

    def _pick_category(self, rng: random.Random) -> int:
        return min(bisect(self._cat_cum, rng.random() * self._cat_cum[-1]), len(self._cat_cum) - 1)

    def _pick_item(self, rng: random.Random, category: int) -> int:
        if self._drift is not None:
            k = self._drift.pick(rng, category, self._now)
            if k is not None:
                return self.config.n_items + k
        cum = self._items_cum[category]
        return self._items_of[category][min(bisect(cum, rng.random() * cum[-1]), len(cum) - 1)]

    def _query(self, rng: random.Random, category: int) -> str:
        words = self._words[category]
        tokens = [words[0] if rng.random() < 0.6 else words[1]]
        if rng.random() < 0.6:
            tokens.insert(0, words[2 + int(rng.random() < 0.5)])  # "leather boots"
        if rng.random() < 0.25:
            tokens.append(_MODIFIERS[int(rng.random() * len(_MODIFIERS))])
        return " ".join(tokens)

    def _session(self, rng: random.Random, shopper: _Shopper, start: int) -> list[_Step]:
        """One visit as (ts, type, item_id, query) tuples, LAST event first (popped from the end)."""
        cfg = self.config
        self._advance_drift(start)
        ids, step_ms, decide_ms = self._ids, self._step_ms, self._decide_ms
        if rng.random() < 0.8:
            intent = shopper.categories[
                bisect(shopper.cum_pref, rng.random() * shopper.cum_pref[-1])
            ]
        else:
            intent = self._pick_category(rng)
        # Geometric length with the configured mean, capped.
        p_stop = 1.0 / cfg.mean_session_len
        length = 1
        while length < cfg.max_session_len and rng.random() > p_stop:
            length += 1
        buys = rng.random() < cfg.purchase_rate
        out: list[_Step] = []
        ts = start
        clicked: list[int] = []
        last: int | None = None
        if rng.random() < cfg.search_rate:
            out.append((ts, "search", None, self._query(rng, intent)))
        elif shopper.seen and rng.random() < cfg.revisit_rate:
            last = shopper.seen[int(rng.random() * len(shopper.seen))]  # back to an old item
            intent = self._category[last]
            out.append((ts, "click", ids[last], None))
            clicked.append(last)
        bought = False
        pick_below = BROWSE_SHARE - cfg.backtrack_rate
        while len(out) < length:
            r = rng.random()
            if out:  # the session's first event is at its start; then ~15 s between actions
                ts += step_ms[int(rng.random() * _GAP_TABLE)]
            if buys and clicked and not bought and r < 1.5 / length:
                # The purchase follows a click: mostly the last item, sometimes an earlier one.
                if rng.random() < 0.7:
                    item = clicked[-1]
                else:
                    item = clicked[int(rng.random() * len(clicked))]
                ts += decide_ms[int(rng.random() * _GAP_TABLE)]  # deciding takes ~30 s more
                out.append((ts, "purchase", ids[item], None))
                bought = True
                if rng.random() < 0.6:
                    break
                continue
            if last is not None and r < cfg.follow_related:
                item = self._related[last][int(rng.random() * cfg.related_per_item)]
            elif r < pick_below:
                item = self._pick_item(rng, intent)
            elif r < BROWSE_SHARE and clicked:
                item = clicked[int(rng.random() * len(clicked))]  # back to an item seen earlier
            else:
                intent = self._pick_category(rng)  # wanders off to another category
                if rng.random() < 0.5:
                    out.append((ts, "search", None, self._query(rng, intent)))
                    continue
                item = self._pick_item(rng, intent)
            out.append((ts, "click", ids[item], None))
            clicked.append(item)
            last = item
        if buys and clicked and not bought:
            item = clicked[-1]
            out.append(
                (ts + decide_ms[int(rng.random() * _GAP_TABLE)], "purchase", ids[item], None)
            )
        shopper.seen = (shopper.seen + clicked[-3:])[-12:]
        out.reverse()
        return out
