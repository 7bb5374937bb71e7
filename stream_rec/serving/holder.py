"""The recommender in service, and its hot swap when a newer bundle appears (both engines).

An unpinned worker serves the newest *valid* bundle: a bundle that fails to load or to pass
its checks (serving/bundle.py: files, shapes, the encoder against the manifest's max_len and
dim, the HNSW graph against the item vectors) is skipped with a log line naming it and why,
at start and at each poll (a skipped bundle is not tried again until its manifest changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ..core.recommender import Recommender
from ..errors import BundleError
from ..settings import Settings
from .bundle import MANIFEST, ModelBundle, bundles_newest_first, resolve_bundle
from .compose import build_recommender

__all__ = ["ModelHolder"]

log = logging.getLogger("stream_rec.worker")


class ModelHolder:
    """The recommender in service, swapped atomically when a newer bundle appears."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pinned = bool(settings.bundle or settings.model_version)
        self.skipped: dict[Path, float] = {}  # bundle -> manifest mtime when it failed
        if self.pinned:
            self.path = resolve_bundle(
                settings.bundles_dir, settings.bundle or None, settings.model_version or None
            )
            self.recommender = self._load(self.path)
        else:
            found = self._newest_valid(bundles_newest_first(settings.bundles_dir))
            if found is None:
                raise BundleError(
                    f"no valid model bundle in {settings.bundles_dir!r}; skipped "
                    f"{', '.join(p.name for p in self.skipped)} (see the log)"
                )
            self.path, self.recommender = found
        log.warning("serving model %s from %s", self.recommender.model_version, self.path)

    def _newest_valid(self, candidates: list[Path]) -> tuple[Path, Recommender] | None:
        """The first of ``candidates`` that loads, with its recommender; the others are skipped
        (logged once each)."""
        for path in candidates:
            mtime = _mtime(path)
            if self.skipped.get(path) == mtime:
                continue
            try:
                return path, self._load(path)
            except Exception as exc:  # noqa: BLE001 - any failure to load makes it invalid
                self.skipped[path] = mtime
                log.error("skipping model bundle %s: %s: %s", path, type(exc).__name__, exc)
        return None

    def _load(self, path: Path) -> Recommender:
        recommender = build_recommender(ModelBundle.load(path), self.settings)
        recommender.warm_up()
        return recommender

    async def watch(
        self,
        on_swap: Callable[[], None] = lambda: None,
        beside: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """Poll for newer bundles every ``model_poll_s`` (forever; cancel to stop), swapping to
        each. ``beside`` (the bundles-topic fetcher) runs meanwhile, restarted if it stops.
        A pinned holder, or ``model_poll_s`` 0, never swaps."""
        if self.settings.model_poll_s <= 0 or self.pinned:
            return
        task = asyncio.create_task(beside()) if beside is not None else None
        try:
            while True:
                await asyncio.sleep(self.settings.model_poll_s)
                try:
                    if await self.maybe_swap():
                        on_swap()
                except Exception as exc:  # a bad new bundle must not stop serving the old one
                    log.error(
                        "model swap failed, still serving %s: %s",
                        self.recommender.model_version,
                        exc,
                    )
                if beside is not None and task is not None and task.done():
                    why = "cancelled" if task.cancelled() else repr(task.exception())
                    log.error("%s stopped (%s); restarting it", beside, why)
                    task = asyncio.create_task(beside())
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def maybe_swap(self) -> bool:
        if self.pinned:
            return False
        candidates = bundles_newest_first(self.settings.bundles_dir)
        newer = candidates[: candidates.index(self.path)] if self.path in candidates else candidates
        if not newer:
            return False
        # Load (and warm up) off the event loop; the swap itself is one assignment.
        found = await asyncio.to_thread(self._newest_valid, newer)
        if found is None:
            return False
        old = self.recommender.model_version
        self.path, new = found
        self.recommender = new
        log.warning("model swapped: %s -> %s", old, new.model_version)
        return True


def _mtime(bundle: Path) -> float:
    try:
        return (bundle / MANIFEST).stat().st_mtime
    except OSError:
        return -1.0
