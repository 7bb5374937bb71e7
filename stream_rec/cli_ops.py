"""`stream-rec repartition`: the partition count of a running system, changed (issue 24)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from .cli_common import _add_settings, _positive_float, _positive_int, settings_from
from .errors import StreamRecError

__all__ = ["add_repartition", "cmd_repartition"]


def add_repartition(sub: Any, kafka: tuple[str, ...]) -> None:
    p = sub.add_parser(
        "repartition",
        help="move a stopped worker group to N partitions (new versioned topics, "
        "state and unanswered events carried over)",
        description="Stop the workers first. Creates <events>.p<N> and the changelog of the group "
        "<app-id>.p<N> with N partitions, moves every user's state into it by the new partitioner, "
        "then copies the old events topic to the new one from the old group's offsets until it was "
        "idle for --bridge-idle-s (start the new workers and switch the producers meanwhile). "
        "--retire deletes the old events topic and changelog instead. Runbook: docs/operations.md.",
    )
    p.add_argument("--partitions", type=_positive_int, help="the new partition count",
                   dest="new_partitions", metavar="N")
    p.add_argument(
        "--bridge-idle-s",
        type=_positive_float,
        default=30.0,
        help="stop copying events once the old topic was idle this long (default 30)",
    )
    p.add_argument(
        "--group-wait-s",
        type=_positive_float,
        default=60.0,
        help="how long to wait for the old group to empty (default 60)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="do not check that the old group is empty (the embedded broker lists a "
        "stopped worker until the group's next join)",
    )
    p.add_argument(
        "--retire",
        action="store_true",
        help="delete --events-topic and the changelog of --app-id (the old ones)",
    )
    old = tuple(n for n in kafka if n != "partitions")  # the old count is read from the topics
    _add_settings(p, (*old, "app_id", "replication_factor", "min_insync_replicas"))


def cmd_repartition(args: argparse.Namespace) -> int:
    from .kafka.repartition import repartition, retire

    settings = settings_from(args)
    if not settings.bootstrap_servers:
        raise StreamRecError(
            "repartition needs --bootstrap-servers HOST:PORT (or STREAM_REC_BOOTSTRAP_SERVERS)"
        )

    def say(message: str) -> None:
        print(f"[repartition] {message}", file=sys.stderr, flush=True)

    if args.retire:
        asyncio.run(retire(settings, say, force=args.force))
        return 0
    if args.new_partitions is None:
        raise StreamRecError("repartition needs --partitions N (the new count), or --retire")
    out = asyncio.run(
        repartition(
            settings,
            args.new_partitions,
            args.bridge_idle_s,
            say,
            group_wait_s=args.group_wait_s,
            force=args.force,
        )
    )
    print(" ".join(f"{k}={v}" for k, v in out.items()))
    return 0
