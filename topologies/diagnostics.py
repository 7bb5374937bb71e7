"""What a stuck worker awaits: ``kill -USR1 <worker pid>`` logs every asyncio task's stack and
the consumer's fetch state, then turns aiokafka's debug log on for 3 s."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("stream_rec.direct")

__all__ = ["dump_tasks"]


def dump_tasks(worker: Any) -> None:
    """Log every asyncio task's stack (``kill -USR1 <worker pid>``): what a stuck worker awaits."""
    import io

    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=out)
    c = worker.consumer
    if c is not None:
        sub = c._subscription.subscription
        fetcher = c._fetcher
        out.write(f"in flight batches {len(worker._inflight)}; "
                  f"fetcher records {list(fetcher._records)}; "
                  f"in flight nodes {fetcher._in_flight}\n")
        if sub is not None and sub.assignment is not None:
            for tp in sub.assignment.tps:
                st = sub.assignment.state_value(tp)
                out.write(f"{tp}: position {st.position if st.has_valid_position else None} "
                          f"highwater {st.highwater} paused {st.paused}\n")
    log.warning("asyncio tasks (SIGUSR1):\n%s", out.getvalue())
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.setLevel(logging.DEBUG)
    asyncio.get_running_loop().call_later(3, aiokafka_log.setLevel, logging.WARNING)
