"""``--log-format json``: one JSON object per log line, for log collectors.

Fields: ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``, and ``exc``
(the formatted traceback) when the record carries one. Nothing is logged per event at INFO or
above: per-event problems are dead letters, and their log lines are rate-limited.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import orjson

__all__ = ["JsonFormatter"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()
