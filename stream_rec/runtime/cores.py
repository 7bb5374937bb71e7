"""How many cores this process may use, and the search threads a worker takes by default.

Why: batched HNSW queries run on ``--index-threads`` threads (hnswlib releases the GIL). One
worker process on a 2-core machine served 4% more of the relay with 2 search threads than with
1 (docs/benchmarks.md, "Session 12"); two processes on those 2 cores need 1 each, and a pod
limited to one CPU by its cgroup must not start one thread per core of the node.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cores", "auto_index_threads", "MAX_AUTO_THREADS"]

MAX_AUTO_THREADS = 4  # beyond this a batch of ~50 queries gains little and threads cost a start
_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def available_cores(cpu_max: Path = _CPU_MAX) -> int:
    """The CPUs this process may run on, capped by its cgroup's CPU quota when one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def auto_index_threads(processes: int = 1, cores: int | None = None) -> int:
    """Search threads per worker when ``--index-threads`` is 0 (auto): this host's cores shared
    by its ``processes`` worker processes, at least 1 and at most :data:`MAX_AUTO_THREADS`."""
    have = available_cores() if cores is None else cores
    return max(1, min(MAX_AUTO_THREADS, have // max(1, processes)))
