"""Shared fixtures: one embedded broker per test session, fresh topic names per test, and a
guard that fails any test leaking threads, child processes, asyncio tasks or environment
variables."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream_rec.kafka.embedded import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of ONE embedded Kafka-compatible broker (Tansu) shared by the session.

    Tests share it, so each must use its own topics and group (see ``unique_topics``).
    """
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap_servers


@dataclass(frozen=True)
class TopicNames:
    """Topic names and a consumer group id that no other test uses."""

    suffix: str
    events: str
    recommendations: str
    dlq: str
    group: str

    def topic(self, role: str) -> str:
        """Another topic name with this test's suffix, e.g. ``topic("changelog")``."""
        return f"{role}-{self.suffix}"


@pytest.fixture
def unique_topics(request: pytest.FixtureRequest) -> TopicNames:
    test = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-")[:40]
    suffix = f"{test}-{uuid.uuid4().hex[:8]}"
    return TopicNames(
        suffix=suffix,
        events=f"events-{suffix}",
        recommendations=f"recommendations-{suffix}",
        dlq=f"events.dlq-{suffix}",
        group=f"group-{suffix}",
    )


# ----------------------------------------------------------------------------- leak guard
LEAK_GRACE_S = 5.0  # a thread or child that is shutting down gets this long to finish
# Threads a test may leave behind on purpose, by name prefix, each with its reason. None so far:
# the session-scoped broker's threads and process start before the first test that uses it,
# so they are in that test's "before" snapshot and never count.
ALLOWED_THREADS: dict[str, str] = {}
# Environment variables that change under a test but not because of it, each with its reason.
ALLOWED_ENV = {
    "PYTEST_CURRENT_TEST": "pytest's own: names the running test and its phase",
    "TORCHINDUCTOR_CACHE_DIR": "torch sets it once per process, the first time its compiler stack "
                               "loads (ONNX export); no test sets it",
}


def _children() -> dict[int, str]:
    """Live (non-zombie) child processes of this process: pid -> command name."""
    me, out = os.getpid(), {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        name, _, rest = text.rpartition(")")
        fields = rest.split()
        if len(fields) > 2 and int(fields[1]) == me and fields[0] != "Z":
            out[int(stat.parent.name)] = name.partition("(")[2]
    return out


def _live_tasks() -> set[asyncio.Task]:
    """Every unfinished asyncio task of any loop (the registry asyncio.all_tasks reads; where a
    Python keeps no such registry the task check is skipped)."""
    registry = getattr(asyncio.tasks, "_all_tasks", None)
    return {t for t in list(registry or ()) if not t.done()}


def _leaks(threads: set[threading.Thread], children: dict[int, str], tasks: set[asyncio.Task],
           env: dict[str, str]) -> list[str]:
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        new_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()
                       and not t.name.startswith(tuple(ALLOWED_THREADS))]
        new_children = {pid: name for pid, name in _children().items() if pid not in children}
        if not (new_threads or new_children) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    problems = [f"thread left running: {t.name!r} ({type(t).__name__})" for t in new_threads]
    problems += [f"child process left running: pid {pid} ({name})"
                 for pid, name in new_children.items()]
    problems += [f"asyncio task left pending: {t!r}" for t in _live_tasks() - tasks]
    changed = sorted(k for k in (set(env) | set(os.environ)) - set(ALLOWED_ENV)
                     if env.get(k) != os.environ.get(k))
    problems += [f"environment variable changed: {k} ({env.get(k)!r} -> {os.environ.get(k)!r})"
                 for k in changed]
    return problems


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves threads, child processes, pending asyncio tasks or changed
    environment variables behind (after its own fixtures are torn down: autouse fixtures are set
    up first, so they are torn down last; session- and module-scoped fixtures are set up before
    it, so what they start is not the test's)."""
    threads, children = set(threading.enumerate()), _children()
    tasks, env = _live_tasks(), dict(os.environ)
    yield
    problems = _leaks(threads, children, tasks, env)
    if problems:
        pytest.fail("the test leaked:\n  " + "\n  ".join(problems), pytrace=False)
