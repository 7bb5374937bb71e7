"""`stream-rec worker --processes 2`: two workers of one group, each with its own status port and
state; both get partitions and answer, a killed one is restarted, SIGTERM stops both cleanly."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest

from .conftest import Pipeline, event_record

pytestmark = [pytest.mark.integration]


def _stats(port: int) -> dict | None:
    """The worker's /stats, or None while nothing answers there. Polling a port in the
    ephemeral range that no one listens on can connect the client to itself (TCP
    simultaneous open) and read its own request back: a BadStatusLine, also "not up yet"."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as answer:
            return orjson.loads(answer.read())
    except (OSError, http.client.HTTPException):
        return None


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _until(check, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_two_processes_share_the_group_and_a_killed_one_comes_back(broker, tiny_bundle, tmp_path):
    p = Pipeline(
        broker, tiny_bundle, tmp_path, engine="direct", partitions=4, session_timeout_s=2.0
    )
    asyncio.run(p.create_topics())
    port = p.settings.worker_port
    env = {**os.environ, **p.settings.to_env(), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "supervisor.log", "wb")
    sup = subprocess.Popen(
        [sys.executable, "-m", "stream_rec.cli", "worker", "--processes", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        records = [
            event_record(f"e{i}", f"u{i % 40}", item=f"i{i % 50:05d}", ts=1000 + i)
            for i in range(400)
        ]
        _until(lambda: _stats(port) and _stats(port + 1))
        asyncio.run(p.send(records))
        _until(
            lambda: (
                (_stats(port) or {}).get("events", 0) > 0
                and (_stats(port + 1) or {}).get("events", 0) > 0
            )
        )
        _until(lambda: sum((_stats(q) or {}).get("events", 0) for q in (port, port + 1)) >= 400)
        assert (tmp_path / "state" / "proc-0").is_dir() and (tmp_path / "state" / "proc-1").is_dir()
        # kill worker 1: the supervisor starts it again on the same port
        pid = _children(sup.pid)[1]
        os.kill(pid, signal.SIGKILL)
        _until(lambda: len(_children(sup.pid)) == 2 and _stats(port + 1))
        # the new worker 1 takes partitions again and answers before the supervisor is stopped
        more = [
            event_record(f"f{i}", f"u{i % 40}", item=f"i{i % 50:05d}", ts=5000 + i)
            for i in range(400)
        ]
        deadline = time.monotonic() + 90
        while (_stats(port + 1) or {}).get("events", 0) == 0 and time.monotonic() < deadline:
            asyncio.run(p.send(more[:100]))
            time.sleep(2)
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(90) == 0
        assert _children(sup.pid) == []
    finally:
        for child in _children(sup.pid):
            os.kill(child, signal.SIGKILL)
        if sup.poll() is None:
            sup.kill()
        log.close()
    text = (tmp_path / "supervisor.log").read_text(errors="replace")
    assert "restarting it" in text
