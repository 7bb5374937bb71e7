"""`stream-rec replay`'s own flags (the settings flags are added by :mod:`stream_rec.cli_args`)
and the options they make."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

__all__ = ["add_replay_arguments", "replay_options"]


def _time_ms(text: str) -> int:
    """Epoch milliseconds, or an ISO 8601 time (UTC unless it says otherwise)."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected epoch milliseconds or an ISO time such as 2026-12-01T00:00; got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}")
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected events per second > 0; got {text!r}")
    return value


def _speed(text: str) -> float:
    from ..errors import ConfigError
    from .control import parse_speed

    try:
        return parse_speed(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("input (one of)")
    src.add_argument("--file", default=None,
                     help="JSONL event log (gzip too), or CSV with --columns")
    src.add_argument("--columns", default=None, metavar="FIELD=COLUMN,...",
                     help="read --file as CSV with a header row: event field = CSV column, e.g. "
                     "user_id=uid,ts=time_ms,type=action,item_id=sku (unmapped fields: a column of "
                     "their own name)")
    src.add_argument("--from-topic", default=None, help="a topic range instead of a file")
    src.add_argument("--start-offset", type=_count, default=None,
                     help="first offset of every partition (default: the oldest)")
    src.add_argument("--end-offset", type=_count, default=None,
                     help="stop before this offset in every partition (default: the end now)")
    src.add_argument("--start-time", type=_time_ms, default=None,
                     help="from the first record at or after this time (ms or ISO)")
    src.add_argument("--end-time", type=_time_ms, default=None,
                     help="stop at the first record at or after this time (ms or ISO)")
    out = p.add_argument_group("output")
    out.add_argument("--mode", choices=("state", "recs"), default="state",
                     help="state: rebuild the session tables only, nothing emitted (default); "
                     "recs: the tables and the recommendations (--to-topic or --to-file)")
    out.add_argument("--to-topic", default=None, help="--mode recs: publish recommendations here")
    out.add_argument("--allow-live-topic", action="store_true",
                     help="allow --to-topic to be the live recommendations topic (--recs-topic)")
    out.add_argument("--to-file", default=None, help="--mode recs: recommendations as JSONL")
    out.add_argument("--changelog", action="store_true",
                     help="also write the states to <app-id>-sessions-changelog (what a worker "
                     "restores from); the tables under --data-dir/<app-id> are always written")
    run = p.add_argument_group("speed and progress")
    run.add_argument("--rate", type=_rate, default=0.0,
                     help="events per second (default: flat out)")
    run.add_argument("--speed", type=_speed, default=0.0, metavar="Nx",
                     help="recorded speed times N, by the events' ts (e.g. 10x)")
    run.add_argument("--batch-size", type=_count, default=0,
                     help="records per step (default 65536 for state, --batch-max for recs)")
    run.add_argument("--checkpoint", default=None,
                     help="resume file (default <data-dir>/<app-id>/replay-<hash of input and "
                     "mode>.json): an interrupted replay run again continues where it stopped")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def replay_options(args: argparse.Namespace) -> Any:
    from .files import parse_columns
    from .options import ReplayOptions

    return ReplayOptions(
        mode=args.mode, file=args.file,
        columns=parse_columns(args.columns) if args.columns else None,
        from_topic=args.from_topic, start_offset=args.start_offset, end_offset=args.end_offset,
        start_ms=args.start_time, end_ms=args.end_time, to_topic=args.to_topic,
        to_file=args.to_file, allow_live_topic=args.allow_live_topic, changelog=args.changelog,
        rate=args.rate, speed=args.speed, batch_size=args.batch_size,
        checkpoint=args.checkpoint, progress=not args.quiet,
    )
