"""The recommender in service, and its hot swap when a newer bundle appears (both engines)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..core.recommender import Recommender
from ..settings import Settings
from .bundle import ModelBundle, resolve_bundle
from .compose import build_recommender

__all__ = ["ModelHolder"]

log = logging.getLogger("stream_rec.worker")


class ModelHolder:
    """The recommender in service, swapped atomically when a newer bundle appears."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pinned = bool(settings.bundle or settings.model_version)
        self.path = resolve_bundle(
            settings.bundles_dir, settings.bundle or None, settings.model_version or None)
        self.recommender = self._load(self.path)
        log.warning("serving model %s from %s", self.recommender.model_version, self.path)

    def _load(self, path: Path) -> Recommender:
        recommender = build_recommender(ModelBundle.load(path), self.settings)
        recommender.warm_up()
        return recommender

    async def maybe_swap(self) -> bool:
        if self.pinned:
            return False
        newest = resolve_bundle(self.settings.bundles_dir)
        if newest == self.path:
            return False
        # Load (and warm up) off the event loop; the swap itself is one assignment.
        new = await asyncio.to_thread(self._load, newest)
        old = self.recommender.model_version
        self.recommender, self.path = new, newest
        log.warning("model swapped: %s -> %s", old, new.model_version)
        return True
