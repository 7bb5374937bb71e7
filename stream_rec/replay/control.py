"""A replay's checkpoint, pacing and progress line.

The checkpoint is a small JSON file written (atomically: aside, then renamed) after the
batch's state is in RocksDB: the input it belongs to, how many records were consumed, and per
partition the next offset. An interrupted replay continues from it; the batch that was in
RocksDB but not yet in the checkpoint is folded again, and each state's last-applied offset
(``SessionState.last_offset``) makes that a no-op.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError

__all__ = ["Checkpoint", "Pacer", "Progress", "parse_speed"]


@dataclass
class Checkpoint:
    path: Path
    input: str
    mode: str
    position: int = 0  # records consumed (files: lines; topics: records)
    next_offsets: dict[int, int] = field(default_factory=dict)
    output_bytes: int = 0  # --to-file: bytes written, so a resume truncates a partial batch
    done: bool = False

    @classmethod
    def open(cls, path: Path, input_: str, mode: str) -> Checkpoint:
        """The checkpoint at ``path`` for this input, or a fresh one; another input's: an error."""
        if not path.is_file():
            return cls(path, input_, mode)
        data = orjson.loads(path.read_bytes())
        if data.get("input") != input_ or data.get("mode") != mode:
            raise ConfigError(
                f"checkpoint {str(path)!r} belongs to a replay of {data.get('input')!r} "
                f"(mode {data.get('mode')}); this one replays {input_!r} (mode {mode}): "
                "remove it or pass another --checkpoint")
        return cls(path, input_, mode, int(data["position"]),
                   {int(p): int(o) for p, o in data["next_offsets"].items()},
                   int(data.get("output_bytes", 0)), bool(data.get("done", False)))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(orjson.dumps({
            "input": self.input, "mode": self.mode, "position": self.position,
            "next_offsets": {str(p): o for p, o in sorted(self.next_offsets.items())},
            "output_bytes": self.output_bytes, "done": self.done,
        }))
        os.replace(tmp, self.path)


def parse_speed(text: str) -> float:
    """``10x`` or ``10`` -> 10.0: recorded time divided by this."""
    try:
        value = float(text[:-1] if text.lower().endswith("x") else text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ConfigError(f"--speed takes a factor such as 10x (recorded speed x 10); got {text!r}")
    return value


class Pacer:
    """How long to wait before an event: ``rate`` events/s, or recorded time / ``speed``."""

    def __init__(self, rate: float = 0.0, speed: float = 0.0) -> None:
        self.rate, self.speed = rate, speed
        self.start = time.perf_counter()
        self.count = 0
        self.first_ts: int | None = None

    @property
    def paced(self) -> bool:
        return self.rate > 0 or self.speed > 0

    def delay(self, value: bytes) -> float:
        """Seconds until the record ``value`` is due (<= 0: now)."""
        self.count += 1
        if self.rate > 0:
            due = self.start + (self.count - 1) / self.rate
        elif self.speed > 0:
            ts = _ts_of(value)
            if ts is None:
                return 0.0
            if self.first_ts is None:
                self.first_ts = ts
            due = self.start + (ts - self.first_ts) / 1000 / self.speed
        else:
            return 0.0
        return due - time.perf_counter()


def _ts_of(value: bytes) -> int | None:
    try:
        ts = orjson.loads(value).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return ts if isinstance(ts, int) else None


class Progress:
    """One line on stderr about every ``every_s``: events, events/s, done fraction and ETA."""

    def __init__(self, every_s: float = 1.0, enabled: bool = True) -> None:
        self.every_s, self.enabled = every_s, enabled
        self.start = self.last = time.perf_counter()

    def update(self, records: int, fraction: float | None, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last < self.every_s):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        line = f"replay: {records:,} records, {records / elapsed:,.0f}/s"
        if fraction is not None and fraction > 0:
            eta = elapsed * (1 - fraction) / fraction
            line += f", {100 * fraction:.1f}%, ETA {eta:,.0f} s"
        print(line, file=sys.stderr, flush=True)


def summary_line(summary: dict[str, Any]) -> str:
    return (f"replayed {summary['records']:,} records ({summary['events']:,} events, "
            f"{summary['dead_letters']:,} dead letters) into {summary['users']:,} users' "
            f"states in {summary['seconds']:.1f} s ({summary['events_per_s']:,.0f} events/s); "
            f"{summary['recommendations']:,} recommendations")
