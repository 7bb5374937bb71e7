"""`stream-rec worker --processes N`: N worker processes of one consumer group, one per core.

One Python process runs its event loop, the decode, the state codec and the ONNX call on one
core (docs/benchmarks.md); the consumer group already spreads partitions over processes, so
every core serves by running one worker per core. The supervisor starts the N workers (worker
``i`` gets ``--worker-port PORT+i`` for its status and metrics, and ``--data-dir DIR/proc-i``
for its RocksDB state), forwards SIGTERM / SIGINT so each commits and leaves, restarts one that
exits on its own (after 1 s, doubling to 30 s while it keeps failing within a minute), kills a
worker still running 30 s after the signal, and exits once every worker stopped. Workers die
with the supervisor. Kubernetes: one pod per core is the same
without the supervisor (deploy/k8s); this is for one machine.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..runtime.cores import auto_index_threads
from ..settings import Settings
from .embedded import _die_with_parent

__all__ = ["Supervisor", "child_settings"]

log = logging.getLogger("stream_rec.supervisor")


def child_settings(settings: Settings, i: int, processes: int = 1) -> Settings:
    """Worker ``i``'s settings: its own status port and state directory, and (``--index-threads``
    0) its share of the host's cores for search."""
    return dataclasses.replace(
        settings,
        worker_port=settings.worker_port + i,
        data_dir=str(Path(settings.data_dir) / f"proc-{i}"),
        index_threads=settings.index_threads or auto_index_threads(processes),
    )


class Supervisor:
    def __init__(self, settings: Settings, processes: int, grace_s: float = 30.0) -> None:
        self.settings, self.processes, self.grace_s = settings, processes, grace_s
        self._stop_at = 0.0
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.backoff: dict[int, float] = {}
        self.restarts = 0
        self._stopping = False

    def _spawn(self, i: int) -> None:
        child = child_settings(self.settings, i, self.processes)
        env = {**os.environ, **child.to_env(), "PYTHONUNBUFFERED": "1"}
        self.children[i] = subprocess.Popen(
            [sys.executable, "-m", "stream_rec.cli", "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(),  # a killed supervisor leaves no worker behind
        )
        self.started[i] = time.monotonic()
        log.warning(
            "worker %d started (pid %d, status port %d)",
            i,
            self.children[i].pid,
            self.settings.worker_port + i,
        )

    def _signal(self, signum: int, _frame: object) -> None:
        if not self._stopping:
            self._stop_at = time.monotonic()
        self._stopping = True
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signum)

    def run(self, poll_s: float = 0.2) -> int:
        """Until every worker exited after SIGTERM/SIGINT; the exit code is the largest child's."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        for i in range(self.processes):
            self._spawn(i)
        due: dict[int, float] = {}
        codes: dict[int, int] = {}
        while True:
            for i, child in list(self.children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self.children[i]
                codes[i] = code
                if self._stopping:
                    continue
                quick = time.monotonic() - self.started[i] < 60
                self.backoff[i] = min(30.0, self.backoff.get(i, 0.5) * 2) if quick else 1.0
                due[i] = time.monotonic() + self.backoff[i]
                log.error(
                    "worker %d exited with code %d; restarting it in %.0fs",
                    i,
                    code,
                    self.backoff[i],
                )
            for i, when in list(due.items()):
                if self._stopping:
                    due.clear()
                elif time.monotonic() >= when:
                    del due[i]
                    self.restarts += 1
                    self._spawn(i)
            if self._stopping and not self.children:
                return max(codes.values(), default=0)
            if self._stopping and time.monotonic() - self._stop_at > self.grace_s:
                for i, child in self.children.items():  # like a pod's termination grace period
                    log.error("worker %d did not stop within %.0fs; killing it", i, self.grace_s)
                    child.kill()
                self._stop_at = float("inf")
            time.sleep(poll_s)
