"""A broker and a group of worker processes that a fault run can start, kill, freeze and restart."""

from __future__ import annotations

import dataclasses
import os
import signal
import uuid
from pathlib import Path

from ..bench.monitor import ProcStats
from ..kafka.embedded import EmbeddedBroker
from ..kafka.probe import free_port
from ..kafka.worker_process import WorkerProcess
from ..settings import EMBEDDED_SESSION_TIMEOUT_S, Settings

__all__ = ["Cluster"]


class Cluster:
    """Workers ``0..n-1`` of one consumer group, each with its own state directory and port.

    ``bootstrap`` empty: an embedded broker on loopback, which :meth:`freeze_broker` can stop
    and resume. Every run gets its own topics and group.
    """

    def __init__(
        self, run_dir: Path, bundle: Path, partitions: int, bootstrap: str = "", **overrides: object
    ) -> None:
        self.run_dir = run_dir
        self.broker = EmbeddedBroker() if not bootstrap else None
        if self.broker is not None:
            self.broker.start()
            bootstrap = self.broker.bootstrap_servers
        if self.broker is not None and "session_timeout_s" not in overrides:
            overrides["session_timeout_s"] = EMBEDDED_SESSION_TIMEOUT_S
        tag = uuid.uuid4().hex[:8]
        self.settings = Settings.from_env(
            {},
            bootstrap_servers=bootstrap,
            events_topic=f"faults-events-{tag}",
            recs_topic=f"faults-recs-{tag}",
            dlq_topic=f"faults-dlq-{tag}",
            app_id=f"faults-{tag}",
            **{
                "partitions": partitions,
                "bundle": str(bundle),
                "model_poll_s": 0,
                "coalesce": False,
                "changelog_barrier": True,
                **overrides,
            },
        )
        self.workers: dict[int, WorkerProcess] = {}

    def worker_settings(self, i: int) -> Settings:
        return dataclasses.replace(
            self.settings, data_dir=str(self.run_dir / f"worker-{i}"), worker_port=free_port()
        )

    def start(self, i: int) -> WorkerProcess:
        (self.run_dir / f"log-{i}").mkdir(parents=True, exist_ok=True)
        w = WorkerProcess(self.worker_settings(i), self.run_dir / f"log-{i}").start()
        self.workers[i] = w
        return w

    def kill(self, i: int) -> None:
        """SIGKILL: no leave-group, no commit, no flush."""
        w = self.workers.pop(i)
        assert w.proc is not None
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait()
        w.stop()

    def stop(self, i: int) -> None:
        """SIGTERM: the worker commits, leaves the group and exits."""
        self.workers.pop(i).stop()

    def signal_broker(self, sig: signal.Signals) -> None:
        """SIGSTOP freezes the embedded broker (sockets stay open, nothing is answered),
        SIGCONT resumes it."""
        os.kill(self._broker_pid(), sig)

    def _broker_pid(self) -> int:
        if self.broker is None or self.broker.pid is None:
            raise RuntimeError("only the embedded broker can be frozen by a fault run")
        return self.broker.pid

    def rss_mb(self) -> dict[int, float]:
        out = {}
        for i, w in self.workers.items():
            if w.proc is not None and (rss := ProcStats(w.proc.pid).rss_mb()) is not None:
                out[i] = rss
        return out

    def dead(self) -> list[int]:
        return [i for i, w in self.workers.items() if not w.alive()]

    def close(self) -> None:
        for i in list(self.workers):
            self.stop(i)
        if self.broker is not None:
            self.broker.stop()
