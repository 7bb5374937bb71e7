"""What every bench module shares: the progress line and the record tuple that is produced."""

from __future__ import annotations

import sys

__all__ = ["Record", "say"]

Record = tuple[bytes, bytes, str, str]  # key, value, event_id, user_id


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
