"""What a replay is asked to do (:class:`ReplayOptions`), and the refusals of what it must not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError
from ..settings import Settings

__all__ = ["ReplayOptions"]


@dataclass(frozen=True)
class ReplayOptions:
    mode: str = "state"  # "state": tables only; "recs": tables and recommendations
    file: str | None = None
    columns: dict[str, str] | None = None  # a CSV file's mapping (None: JSONL)
    from_topic: str | None = None
    start_offset: int | None = None
    end_offset: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    to_topic: str | None = None
    to_file: str | None = None
    allow_live_topic: bool = False
    changelog: bool = False  # also write <app id>-sessions-changelog
    rate: float = 0.0
    speed: float = 0.0
    batch_size: int = 0  # records per step; 0 = 65536 for state, the worker's batch_max for recs
    checkpoint: str | None = None  # default <data dir>/<app id>/replay-<input, mode>.json
    progress: bool = True

    def validated(self, settings: Settings) -> ReplayOptions:
        if (self.file is None) == (self.from_topic is None):
            raise ConfigError("replay takes one input: --file F or --from-topic T")
        if self.mode == "state" and (self.to_topic or self.to_file):
            raise ConfigError("--mode state emits nothing; --to-topic/--to-file need --mode recs")
        if self.mode == "recs" and (self.to_topic is None) == (self.to_file is None):
            raise ConfigError("--mode recs needs one output: --to-topic T or --to-file F")
        live = {settings.recs_topic: "the live recommendations topic (--allow-live-topic to "
                "write it anyway)", settings.events_topic: "the events topic",
                f"{settings.app_id}-sessions-changelog": "the session changelog"}
        if self.to_topic in live and not (self.to_topic == settings.recs_topic
                                          and self.allow_live_topic):
            raise ConfigError(f"--to-topic {self.to_topic!r} is {live[self.to_topic]}")
        if (self.from_topic or self.to_topic or self.changelog) and not settings.bootstrap_servers:
            raise ConfigError("--from-topic, --to-topic and --changelog need a Kafka: pass "
                              "--bootstrap-servers HOST:PORT or set STREAM_REC_BOOTSTRAP_SERVERS")
        if self.rate and self.speed:
            raise ConfigError("--rate and --speed exclude each other")
        if self.file is not None and not Path(self.file).is_file():
            raise DataError(f"events file {self.file!r} does not exist")
        return self
