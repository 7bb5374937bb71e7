"""File inputs of a replay: JSONL (plain or gzip) and CSV with a column mapping.

Every line becomes the record ``produce --file`` would send for it: the value is the line's
bytes (a CSV row is first turned into the JSON event its ``--columns`` mapping describes), the
key is its ``user_id`` when it has one. The partition is the one Kafka's default partitioner
gives that key (:func:`stream_rec.kafka.partitioning.partition_for`), so each user's state
lands in the table of the partition its live events go to. The "offset" is the record's place
among the file's records of that partition: the replay's resume position, never stored in a
state (which keeps the last events-topic offset it applied, -1 for a file backfill).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from ..errors import ConfigError, DataError
from ..kafka.partitioning import partition_for

__all__ = ["FileInput", "parse_columns", "EVENT_FIELDS"]

EVENT_FIELDS = ("event_id", "user_id", "type", "item_id", "query", "ts", "session_id")

# (key, value, offset, Kafka timestamp ms or None, partition): the intake's record shape.
Record = tuple[bytes | None, bytes, int, int | None, int]


def parse_columns(text: str) -> dict[str, str]:
    """``event_field=csv_column,...`` -> {event field: CSV column}; ``user_id`` and ``ts`` at
    least (unmapped fields are read from a column of their own name when there is one)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        target, sep, source = part.partition("=")
        if not sep or target not in EVENT_FIELDS or not source:
            raise ConfigError(
                f"--columns takes event_field=csv_column pairs, fields {', '.join(EVENT_FIELDS)}; "
                f"got {part!r}")
        out[target] = source
    return out


@dataclass
class FileInput:
    """One JSONL or CSV file, read from ``skip`` records on (a resumed replay)."""

    path: str
    partitions: int
    columns: dict[str, str] | None = None  # CSV: event field -> column; None: JSONL
    skip: int = 0  # records already replayed (the checkpoint's position)
    next_offsets: dict[int, int] = field(default_factory=dict)  # per partition, at ``skip``
    position: int = 0  # records read so far, skipped ones included
    _raw: IO[bytes] | None = None

    @property
    def describe(self) -> str:
        return f"file:{Path(self.path).resolve()}"

    def total_bytes(self) -> int:
        return Path(self.path).stat().st_size

    def bytes_read(self) -> int:
        """Bytes of the file (compressed, for gzip) read so far: the progress line's fraction."""
        return self._raw.tell() if self._raw is not None and not self._raw.closed else 0

    def records(self) -> Iterator[Record]:
        source = Path(self.path)
        if not source.is_file():
            raise DataError(f"events file {str(source)!r} does not exist")
        with open(source, "rb") as raw:
            self._raw = raw
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if gzipped else raw  # type: ignore[assignment]
            try:
                lines = self._csv_values(stream) if self.columns is not None else _lines(stream)
                yield from self._numbered(lines)
            except (OSError, EOFError) as exc:  # a corrupt or truncated gzip stream
                raise DataError(f"cannot read events file {str(source)!r}: {exc}") from exc

    def _numbered(self, values: Iterator[bytes]) -> Iterator[Record]:
        offsets = dict(self.next_offsets)
        n_partitions = self.partitions
        partition_of: dict[bytes, int] = {}  # murmur2 in Python costs ~2 us a key; users repeat
        for value in values:
            self.position += 1
            if self.position <= self.skip:
                continue
            key = _key_of(value)
            if key is None:
                p = 0
            else:
                p = partition_of.get(key, -1)
                if p < 0:
                    p = partition_of[key] = partition_for(key, n_partitions)
            offset = offsets.get(p, 0)
            offsets[p] = offset + 1
            yield key, value, offset, None, p

    def _csv_values(self, stream: IO[bytes]) -> Iterator[bytes]:
        assert self.columns is not None
        reader = csv.DictReader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
        header = reader.fieldnames or []
        mapping = {f: self.columns.get(f, f) for f in EVENT_FIELDS}
        missing = [f"{f} (column {mapping[f]!r})" for f in ("user_id", "ts")
                   if mapping[f] not in header]
        if missing:
            raise DataError(f"CSV {self.path!r} has no column for {', '.join(missing)}; "
                            f"its columns: {', '.join(header)}")
        mapping = {f: c for f, c in mapping.items() if c in header}
        for row in reader:
            obj: dict[str, object] = {}
            for f, c in mapping.items():
                value = row.get(c)
                if value is None or value == "":
                    continue
                obj[f] = int(value) if f == "ts" and value.lstrip("-").isdigit() else value
            yield orjson.dumps(obj)


def _lines(stream: IO[bytes], chunk: int = 1 << 20) -> Iterator[bytes]:
    """Non-blank lines, stripped, read a megabyte at a time (gzip's readline is slow)."""
    rest = b""
    while True:
        data = stream.read(chunk)
        if not data:
            break
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        for line in lines:
            line = line.strip()
            if line:
                yield line
    rest = rest.strip()
    if rest:
        yield rest


_USER = b'"user_id":"'


def _key_of(value: bytes) -> bytes | None:
    """The key ``produce --file`` gives a line: its user_id (None when it has none)."""
    # The common line (`encode_event`'s) without parsing it twice: one plain string user_id.
    at = value.find(_USER)
    if at >= 0 and value.count(b'"user_id"') == 1:
        start = at + len(_USER)
        end = value.find(b'"', start)
        if end > start and b"\\" not in value[start:end]:
            return value[start:end]
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and obj.get("user_id") is not None:
        return str(obj["user_id"]).encode()
    return None
