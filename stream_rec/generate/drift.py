"""A drifting catalogue for the generated stream: items launched day by day, trending, retired.

Launch k (0, 1, ...) happens at ``start_ts + k / launches_per_day`` days. It gets a category drawn
by shopper interest, related items among its category's popular ones, and a trend curve
``f(age) = (age / T) * exp(1 - age / T)`` (T = ``trend_days``: rises for T days, then fades; an
item older than 6 T is retired and never picked again except by a shopper going back to it).
While items trend, a pick in their category is one of them with probability ``trend_share``
(weighted by the curve). Launched ids continue the catalogue's numbering (``i{n_items + k + 1}``).
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from itertools import accumulate

import numpy as np

from .catalogue import Catalogue
from .config import GeneratorConfig

__all__ = ["Drift"]

_DAY_MS = 86_400_000.0
_RETIRE_AFTER = 6.0  # trend periods


class Drift:
    """The launched items so far and the trending ones per category (advanced in time order)."""

    def __init__(self, cfg: GeneratorConfig, catalogue: Catalogue) -> None:
        self.cfg = cfg
        self._cat = catalogue
        self._rng = np.random.default_rng((cfg.catalogue_seed, cfg.seed, 23))
        self._cat_cum = np.cumsum(catalogue.category_weight)
        self._width = max(5, len(str(cfg.n_items)))
        self.launched = 0
        self.item_ids: list[str] = []  # launch k -> id
        self.category: list[int] = []
        self.related: list[list[int]] = []  # catalogue indices (base items)
        self.launch_ts: list[int] = []
        self._trending: dict[int, list[int]] = {}  # category -> launches still trending

    @property
    def active(self) -> bool:
        return self.cfg.launches_per_day > 0

    def advance(self, ts: int) -> None:
        """Launch every item due by ``ts`` and retire the faded ones."""
        cfg = self.cfg
        due = int((ts - cfg.start_ts) / _DAY_MS * cfg.launches_per_day) + 1
        while self.launched < due:
            k = self.launched
            c = int(
                min(
                    np.searchsorted(self._cat_cum, self._rng.random() * self._cat_cum[-1]),
                    len(self._cat_cum) - 1,
                )
            )
            members = self._cat.category_items[c]
            top = members[: max(1, min(len(members), 20))]
            self.item_ids.append(f"i{cfg.n_items + k + 1:0{self._width}d}")
            self.category.append(c)
            self.related.append(self._rng.choice(top, size=cfg.related_per_item).tolist())
            self.launch_ts.append(cfg.start_ts + int(k / cfg.launches_per_day * _DAY_MS))
            self._trending.setdefault(c, []).append(k)
            self.launched += 1
        horizon = _RETIRE_AFTER * cfg.trend_days * _DAY_MS
        for c, ks in self._trending.items():
            if ks and ts - self.launch_ts[ks[0]] > horizon:
                self._trending[c] = [k for k in ks if ts - self.launch_ts[k] <= horizon]

    def pick(self, rng: random.Random, category: int, ts: int) -> int | None:
        """A trending launch of ``category`` (its index k), or None for a catalogue pick."""
        ks = self._trending.get(category)
        if not ks or rng.random() >= self.cfg.trend_share:
            return None
        period = self.cfg.trend_days * _DAY_MS
        weights = []
        for k in ks:
            age = max(ts - self.launch_ts[k], 0) / period
            weights.append(age * math.exp(1.0 - age))
        cum = list(accumulate(weights))
        if cum[-1] <= 0:
            return None
        return ks[min(bisect(cum, rng.random() * cum[-1]), len(ks) - 1)]
