"""JSONL event files, plain or gzip: the file event source and sink."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from ..core.events import Event, encode_event
from ..errors import DataError

__all__ = ["write_jsonl", "read_jsonl"]


def _open(path: Path, mode: str) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "b")  # type: ignore[return-value]
    return open(path, mode + "b")


def write_jsonl(events: Iterable[Event], path: str | Path) -> int:
    """One JSON event per line (gzip when the name ends in .gz); returns the number written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with _open(target, "w") as f:
        for event in events:
            f.write(encode_event(event) + b"\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[bytes]:
    """The non-blank lines of a JSONL file (gzip when it starts with gzip's magic), as bytes.

    Lines are not parsed: pass them to ``parse_event`` so bad lines become dead letters.
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"events file {str(source)!r} does not exist")
    with open(source, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    try:
        with opener(source, "rb") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield line
    except (OSError, EOFError) as exc:  # a corrupt or truncated gzip stream
        raise DataError(f"cannot read events file {str(source)!r}: {exc}") from exc
