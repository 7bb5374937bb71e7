"""Real TLS (issue 24, item 4): Debian's stunnel4 terminates TLS in front of the embedded broker
(certificates from a throwaway CA made here), the broker advertises the TLS port only, and the
worker, `stream-rec produce`, `stream-rec tail` and the gateway all go through it. A plaintext
client on that port fails, so nothing that worked here can have fallen back to plaintext."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from stream_rec.gateway.server import GatewayThread
from stream_rec.gateway.tokens import mint_token
from stream_rec.kafka.admin import ensure_topics
from stream_rec.kafka.embedded import EmbeddedBroker
from stream_rec.kafka.probe import free_port
from stream_rec.kafka.worker_process import WorkerProcess
from stream_rec.settings import Settings

pytestmark = [pytest.mark.integration]
STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d: Path) -> None:
    """ca.pem (a CA made for this test) and server.pem / server.key for 127.0.0.1 signed by it."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=stream-rec throwaway test CA",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=d,
    )
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """(settings for SSL through stunnel, stunnel's log path)."""
    if STUNNEL is None:
        pytest.skip(
            "stunnel4 is not installed (Debian: apt-get install stunnel4; .ci/run installs it)"
        )
    d = tmp_path_factory.mktemp("tls")
    make_certificates(d)
    tls_port = free_port()
    with EmbeddedBroker(advertised_port=tls_port) as broker:
        (d / "stunnel.conf").write_text(
            f"foreground = yes\npid =\ndebug = 5\noutput = {d / 'stunnel.log'}\n"
            f"[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{broker.port}\n"
            f"cert = {d / 'server.pem'}\nkey = {d / 'server.key'}\n"
        )
        proc = subprocess.Popen(
            [STUNNEL, str(d / "stunnel.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            _wait_port(tls_port)
            tag = uuid.uuid4().hex[:8]
            settings = Settings.from_env(
                {},
                bootstrap_servers=f"127.0.0.1:{tls_port}",
                security_protocol="SSL",
                ssl_cafile=str(d / "ca.pem"),
                events_topic=f"tls-events-{tag}",
                recs_topic=f"tls-recs-{tag}",
                dlq_topic=f"tls-dlq-{tag}",
                app_id=f"tls-{tag}",
                partitions=2,
                changelog_barrier=True,
                session_timeout_s=2.0,
                model_poll_s=0,
            )
            yield settings, d / "stunnel.log"
        finally:
            proc.terminate()
            proc.wait(10)


def test_a_plaintext_client_cannot_use_the_tls_port(tls):
    from aiokafka import AIOKafkaProducer

    settings, _ = tls

    async def plaintext() -> None:
        p = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=3000)
        try:
            await asyncio.wait_for(p.start(), 10)
        finally:
            await p.stop()

    from aiokafka.errors import KafkaError

    with pytest.raises((KafkaError, TimeoutError, OSError)):
        asyncio.run(plaintext())


def _cli(
    settings: Settings, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "stream_rec.cli", *args],
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("engine", ["direct", "faust"])
def test_worker_produce_tail_and_gateway_all_speak_tls(tls, tiny_bundle, tmp_path, engine):
    settings, log = tls
    tag = uuid.uuid4().hex[:8]
    settings = settings.with_(
        bundle=str(tiny_bundle),
        data_dir=str(tmp_path / "state"),
        worker_port=free_port(),
        engine=engine,
        app_id=f"tls-{tag}",
        events_topic=f"tls-events-{tag}",
        recs_topic=f"tls-recs-{tag}",
    )
    asyncio.run(
        ensure_topics(
            settings.bootstrap_servers,
            {settings.events_topic: 2, settings.recs_topic: 2, settings.dlq_topic: 1},
            settings=settings,
        )
    )
    with WorkerProcess(settings, tmp_path) as worker:
        sent = _cli(settings, "produce", "--count", "200", "--rate", "0", "--users", "20")
        assert sent.returncode == 0, sent.stderr.decode(errors="replace")[-2000:]
        try:
            tail = _cli(settings, "tail", "--from-beginning", "--max", "5", "--json", timeout=60)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"tail: no 5 answers in 60 s; worker:\n{worker.log_tail(40)}"
            ) from exc
        assert tail.returncode == 0, (
            tail.stderr.decode(errors="replace")[-2000:],
            worker.log_tail(),
        )
        answers = [orjson.loads(line) for line in tail.stdout.splitlines() if line.startswith(b"{")]
        assert len(answers) == 5 and all(a["items"] for a in answers)
        user = answers[-1]["user_id"]
        secret = b"tls-test-secret"
        with GatewayThread(settings, free_port(), secret=secret) as gw:
            latest = httpx.get(
                f"{gw.url}/users/{user}/latest",
                params={"token": mint_token(secret, user, 60)},
                timeout=60,
            )
            assert latest.status_code == 200 and latest.json()["user_id"] == user
        assert worker.alive(), worker.log_tail()
    handshakes = log.read_text(errors="replace").count("Service [kafka] accepted connection")
    assert handshakes >= 4, log.read_text(errors="replace")[
        -3000:
    ]  # worker, produce, tail, gateway
