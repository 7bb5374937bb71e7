"""Bundles through Kafka, for workers that share no disk with the learner (Kubernetes pods).

A bundle is sent to a compacted topic of one partition as a tar in chunks (keys
``c/<version>/<n>``), then announced (key ``v/<version>``: version, created, chunks, bytes,
sha256). Each worker runs a :class:`BundleFetcher`: it reads the topic from the beginning,
writes the chunks of versions it lacks to a scratch directory, and when a version is announced
and complete, checks its size and SHA-256, unpacks it into a hidden directory and renames that
into its bundles directory, where the worker's usual poll finds it and swaps (the bundle's own
manifest checks every file again at load). ``retire`` writes tombstones for all but the newest
versions, so compaction frees their chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import re
import shutil
import tarfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from ..errors import BundleError
from ..settings import Settings

__all__ = [
    "CHUNK_BYTES",
    "publish_bundle",
    "retire_bundles",
    "BundleFetcher",
    "fetch_first_bundle",
    "fetcher_for",
]

log = logging.getLogger("stream_rec.bundles")
CHUNK_BYTES = 768 << 10  # under Kafka's default 1 MiB message limit
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # a bundle directory's name, no path
_CHUNK = re.compile(r"[0-9]{6}")


def _checked_note(note: Any) -> dict[str, Any]:
    """An announcement's fields, checked: chunks, bytes and sha256 consistent with each other."""
    if not isinstance(note, dict):
        raise BundleError("announcement is not a JSON object")
    size, chunks, digest = note.get("bytes"), note.get("chunks"), note.get("sha256")
    if not (isinstance(size, int) and isinstance(chunks, int) and isinstance(digest, str)):
        raise BundleError("announcement lacks integer bytes and chunks or a sha256")
    if not 0 <= size or chunks != max(1, -(-size // CHUNK_BYTES)):
        raise BundleError(f"announcement of {size} bytes in {chunks} chunks")
    return note


def _pack(path: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(path.iterdir()):
            if f.is_file():
                tar.add(f, arcname=f.name)
    return buf.getvalue()


def _unpack(data: bytes, dest: Path) -> None:
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/" in member.name or member.name.startswith("."):
                raise BundleError(f"bundle archive holds {member.name!r}: expected plain files")
            src = tar.extractfile(member)
            assert src is not None
            (dest / member.name).write_bytes(src.read())


async def _ensure(settings: Settings, topic: str) -> None:
    from .admin import ensure_topics

    await ensure_topics(
        settings.bootstrap_servers,
        {topic: 1},
        replication_factor=settings.replication_factor,
        configs={topic: {"cleanup.policy": "compact"}},
        settings=settings,
        min_insync_replicas=settings.min_insync_replicas,
    )


async def publish_bundle(
    settings: Settings, path: str | Path, topic: str | None = None
) -> dict[str, Any]:
    """Send the bundle at ``path`` to ``topic`` (default: settings.bundles_topic); returns its
    announcement."""
    from aiokafka import AIOKafkaProducer

    from .clients import producer_config

    topic = topic or settings.bundles_topic
    if not topic:
        raise BundleError("no bundles topic: set --bundles-topic")
    path = Path(path)
    manifest = orjson.loads((path / "manifest.json").read_bytes())
    data = await asyncio.to_thread(_pack, path)  # off the event loop: a bundle is MBs
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    version = str(manifest["version"])
    note = {
        "version": version,
        "created": manifest.get("created"),
        "chunks": len(chunks),
        "bytes": len(data),
        "sha256": await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest()),
    }
    await _ensure(settings, topic)
    producer = AIOKafkaProducer(
        **producer_config(settings, max_request_size=CHUNK_BYTES + (64 << 10))
    )
    await producer.start()
    try:
        sent = [
            await producer.send(topic, key=f"c/{version}/{n:06d}".encode(), value=chunk)
            for n, chunk in enumerate(chunks)
        ]
        await asyncio.gather(*sent)
        await (await producer.send(topic, key=f"v/{version}".encode(), value=orjson.dumps(note)))
    finally:
        await producer.stop()
    log.warning(
        "bundle %s published to %s (%d chunks, %d bytes)", version, topic, len(chunks), len(data)
    )
    return note


async def retire_bundles(
    settings: Settings, notes: list[dict[str, Any]], keep: int = 3, topic: str | None = None
) -> int:
    """Tombstones for every chunk and announcement of ``notes`` but the newest ``keep``."""
    from aiokafka import AIOKafkaProducer

    from .clients import producer_config

    topic = topic or settings.bundles_topic
    old = sorted(notes, key=lambda n: str(n.get("created")))[: max(0, len(notes) - keep)]
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        for note in old:
            v = note["version"]
            for n in range(int(note["chunks"])):
                await producer.send(topic, key=f"c/{v}/{n:06d}".encode(), value=None)
            await producer.send(topic, key=f"v/{v}".encode(), value=None)
        await producer.flush()
    finally:
        await producer.stop()
    return len(old)


class BundleFetcher:
    """Follows the bundles topic and writes each new complete bundle into ``bundles_dir``."""

    def __init__(
        self,
        settings: Settings,
        bundles_dir: str | Path | None = None,
        topic: str | None = None,
        notes_only: bool = False,
    ) -> None:
        self.settings = settings
        self.notes_only = notes_only  # only collect the announcements (publish --keep)
        self.topic = topic or settings.bundles_topic
        self.bundles_dir = Path(bundles_dir or settings.bundles_dir)
        self.scratch = self.bundles_dir / ".fetch"
        self.notes: dict[str, dict[str, Any]] = {}
        self.fetched: list[str] = []
        self.refused: list[str] = []
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from .clients import consumer_config

        await _ensure(self.settings, self.topic)
        shutil.rmtree(self.scratch, ignore_errors=True)
        consumer = AIOKafkaConsumer(
            **consumer_config(
                self.settings,
                group_id=None,
                enable_auto_commit=False,
                max_partition_fetch_bytes=4 * CHUNK_BYTES,
                fetch_max_bytes=8 * CHUNK_BYTES,
            )
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        await asyncio.to_thread(self._take, m.key, m.value)
        finally:
            await consumer.stop()

    def _take(self, key: bytes | None, value: bytes | None) -> None:
        """One record; a malformed one is logged and skipped, never fatal (the fetcher re-reads
        the topic from its start after a restart)."""
        if key is None or value is None:
            return
        try:
            kind, _, rest = key.decode("utf-8", "replace").partition("/")
            if kind == "c" and not self.notes_only:
                version, _, n = rest.rpartition("/")
                if _VERSION.fullmatch(version) and _CHUNK.fullmatch(n):
                    if not (self.bundles_dir / version).exists():
                        part = self.scratch / version / n
                        part.parent.mkdir(parents=True, exist_ok=True)
                        part.write_bytes(value)
                    return
            elif kind == "v" and _VERSION.fullmatch(rest):
                note = _checked_note(orjson.loads(value))
                self.notes[rest] = note
                if not self.notes_only:
                    self._complete(rest, note)
                return
            raise BundleError(f"unexpected key {key[:80]!r}")
        except Exception as exc:  # noqa: BLE001 - a bad record must not stop the fetcher
            self.refused.append(key.decode("utf-8", "replace")[:80])
            log.error("bundles topic %s: record %r skipped: %s", self.topic, key[:80], exc)

    def _complete(self, version: str, note: dict[str, Any]) -> None:
        final = self.bundles_dir / version
        if final.exists():
            return
        parts = self.scratch / version
        names = [f"{n:06d}" for n in range(int(note["chunks"]))]
        if not all((parts / n).is_file() for n in names):
            log.error("bundle %s announced but %s holds only part of it", version, self.topic)
            return
        data = b"".join((parts / n).read_bytes() for n in names)
        if len(data) != note["bytes"] or hashlib.sha256(data).hexdigest() != note["sha256"]:
            self.refused.append(version)
            log.error(
                "bundle %s from %s does not match its announcement: skipped", version, self.topic
            )
            return
        tmp = self.bundles_dir / f".fetch-{version}"
        shutil.rmtree(tmp, ignore_errors=True)
        _unpack(data, tmp)
        tmp.rename(final)
        shutil.rmtree(parts, ignore_errors=True)
        self.fetched.append(version)
        log.warning("bundle %s fetched from %s into %s", version, self.topic, self.bundles_dir)


async def fetch_first_bundle(settings: Settings, timeout_s: float = 300.0) -> None:
    """A worker with an empty bundles directory waits here for the first bundle of the bundles
    topic (a new pod: `stream-rec publish` or the learner sent one); BundleError after
    ``timeout_s`` with none."""
    root = Path(settings.bundles_dir)
    if root.is_dir() and any(
        not d.name.startswith(".") and (d / "manifest.json").is_file() for d in root.iterdir()
    ):
        return  # there is one already (the worker checks it as it loads it)
    Path(settings.bundles_dir).mkdir(parents=True, exist_ok=True)
    fetcher = BundleFetcher(settings)
    task = asyncio.create_task(fetcher.run())
    log.warning("no bundle in %s: waiting for one on %s", settings.bundles_dir, fetcher.topic)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not fetcher.fetched:
            if task.done():
                task.result()  # raises what stopped it
            if loop.time() > deadline:
                raise BundleError(
                    f"no bundle arrived on {fetcher.topic} within {timeout_s:.0f}s; "
                    "publish one with `stream-rec publish --bundle B`"
                )
            await asyncio.sleep(0.2)
    finally:
        fetcher.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def fetcher_for(settings: Settings) -> Callable[[], Coroutine[Any, Any, None]] | None:
    """What a worker runs beside its bundle poll: a fetcher of the bundles topic, if one is set."""
    if not settings.bundles_topic:
        return None
    return lambda: BundleFetcher(settings).run()
