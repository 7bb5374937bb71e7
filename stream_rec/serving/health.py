"""Health that tells the truth: what ``/health/live`` and ``/health/ready`` answer (both engines).

A worker whose web server answers but whose consumer is stuck is not healthy. The checks:

- **stalled** (live and ready fail): no micro-batch processed for ``stall_s`` seconds while
  the consumer lag of an assigned partition is positive (there was work and none was done);
- **commits failing** (live and ready fail): ``commit_failures`` offset commits in a row failed
  (after a broker restart the client can retry a dead commit forever);
- **restoring** (ready fails, live does not): partitions are being restored from their
  changelogs; a restore can take minutes and restarting the pod would only start it again.

Kubernetes restarts a pod on a failing liveness probe and takes it out of its Service on a
failing readiness probe; the compose healthcheck uses ``/health/ready``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Health", "HealthReport"]


@dataclass(frozen=True)
class HealthReport:
    live: list[str] = field(default_factory=list)  # reasons liveness fails; empty = live
    ready: list[str] = field(default_factory=list)  # reasons readiness fails; empty = ready

    def body(self, which: str) -> tuple[int, dict[str, object]]:
        """(HTTP status, JSON body) of ``/health/<which>`` (``live`` or ``ready``)."""
        problems = self.live if which == "live" else self.ready
        body: dict[str, object] = {"status": "fail" if problems else "ok", "problems": problems}
        return (503 if problems else 200), body


class Health:
    def __init__(self, stall_s: float = 60.0, commit_failures: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s, self.max_commit_failures, self.clock = stall_s, commit_failures, clock
        self.last_progress = clock()
        self.commit_failures = 0  # in a row
        self.last_commit_error = ""
        self.restoring: set[int] = set()

    def progressed(self) -> None:
        """A micro-batch was processed (or the consumer found nothing to do)."""
        self.last_progress = self.clock()

    def commit_ok(self) -> None:
        self.commit_failures = 0

    def commit_failed(self, exc: BaseException) -> None:
        self.commit_failures += 1
        self.last_commit_error = f"{type(exc).__name__}: {exc}"[:200]

    def restore_started(self, partitions: list[int]) -> None:
        self.restoring.update(partitions)

    def restore_finished(self, partitions: list[int]) -> None:
        self.restoring.difference_update(partitions)
        self.last_progress = self.clock()  # the stall clock starts after the restore

    def report(self, lag: dict[int, int]) -> HealthReport:
        live: list[str] = []
        idle = self.clock() - self.last_progress
        behind = sum(n for n in lag.values() if n > 0)
        if self.stall_s > 0 and behind and idle > self.stall_s and not self.restoring:
            live.append(f"stalled: no batch processed for {idle:.0f}s with a consumer lag of "
                        f"{behind:,}")
        if self.max_commit_failures and self.commit_failures >= self.max_commit_failures:
            live.append(f"commits failing: {self.commit_failures} in a row, "
                        f"last {self.last_commit_error}")
        ready = list(live)
        if self.restoring:
            ready.append(f"restoring partitions {sorted(self.restoring)} from their changelogs")
        return HealthReport(live, ready)
