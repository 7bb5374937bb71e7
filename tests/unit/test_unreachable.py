"""The first hour: a broker that is not there is one clear line from every client command, and
``tail`` says where it starts reading. No broker needed: a closed port."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest

from stream_rec.errors import BrokerError
from stream_rec.kafka.admin import wait_for_kafka
from stream_rec.kafka.probe import free_port


@pytest.mark.parametrize("command", [
    ["produce", "--count", "5"],
    ["tail", "--user", "u1"],
    ["replay", "--from-topic", "events"],
])
def test_a_closed_port_is_one_line(command, tmp_path):
    closed = f"127.0.0.1:{free_port()}"
    out = subprocess.run(
        [sys.executable, "-m", "stream_rec.cli", *command, "--bootstrap-servers", closed,
         *(["--data-dir", str(tmp_path)] if command[0] == "replay" else [])],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    if command[0] == "tail":  # tail says what it would read before it tries
        lines = [line for line in lines if not line.startswith("tail: ")]
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"stream-rec {command[0]}: error: cannot reach Kafka at {closed}")
    assert "stream-rec broker" in lines[0] and "Traceback" not in out.stderr


def test_waiting_for_kafka_logs_one_warning_not_an_error_per_attempt(caplog):
    closed = f"127.0.0.1:{free_port()}"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BrokerError, match=f"cannot reach Kafka at {closed}"):
        asyncio.run(wait_for_kafka(closed, timeout=1.0))
    assert not [r for r in caplog.records if r.name.startswith("aiokafka")
                and r.levelno >= logging.ERROR]
    assert [r.levelname for r in caplog.records if r.name == "stream_rec.kafka"] == ["WARNING"]


def test_tail_says_it_reads_new_records_only_unless_from_beginning():
    from stream_rec.kafka import tail as tail_module

    source = tail_module.__loader__.get_source(tail_module.__name__)  # type: ignore[union-attr]
    assert "--from-beginning for the retained ones" in source
