"""Security settings reach every Kafka client (issue 11): every aiokafka client and the faust app
take their keywords from stream_rec.kafka.clients, which carries TLS, SASL and acks=all; the
password is a secret (never in repr, --help or the environment's repr)."""

from __future__ import annotations

import ast
import asyncio
import ssl
from pathlib import Path

import pytest

from stream_rec.cli_args import CliParser, add_subcommands
from stream_rec.errors import ConfigError
from stream_rec.kafka.clients import (
    admin_config,
    consumer_config,
    faust_config,
    producer_config,
    security_config,
)
from stream_rec.settings import Secret, Settings

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = {"AIOKafkaProducer": "producer_config", "AIOKafkaConsumer": "consumer_config",
           "AIOKafkaAdminClient": "admin_config"}
SASL = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "svc", "sasl_password": "hunter2"}


def client_calls():
    for path in sorted([*ROOT.glob("stream_rec/**/*.py"), *ROOT.glob("topologies/*.py")]):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in CLIENTS or name == "App" and path.name == "worker.py":
                    yield path.relative_to(ROOT), node.lineno, name, node


def test_every_kafka_client_builds_its_config_in_kafka_clients():
    calls = list(client_calls())
    assert len(calls) >= 12  # engines, produce, tail, bench, evaluate, demo, admin
    for path, line, name, node in calls:
        where = f"{path}:{line} {name}"
        assert not any(k.arg == "bootstrap_servers" for k in node.keywords), where
        spread = [k.value for k in node.keywords if k.arg is None]
        built = {getattr(v.func, "id", None) for v in spread if isinstance(v, ast.Call)}
        assert (CLIENTS.get(name, "faust_config")) in built, where


def test_sasl_and_tls_reach_producer_consumer_admin_and_faust():
    s = Settings.from_env({}, **SASL)
    for cfg in (producer_config(s), consumer_config(s, group_id="g"), admin_config(s)):
        assert cfg["security_protocol"] == "SASL_SSL" and cfg["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (cfg["sasl_plain_username"], cfg["sasl_plain_password"]) == ("svc", "hunter2")
        assert cfg["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert producer_config(s)["acks"] == "all"
    creds = faust_config(s)["broker_credentials"]
    assert (creds.protocol.value, creds.mechanism.value, creds.password) == (
        "SASL_SSL", "SCRAM-SHA-512", "hunter2")
    assert faust_config(s)["producer_acks"] == -1
    tls = Settings.from_env({}, security_protocol="SSL")
    assert faust_config(tls)["broker_credentials"].protocol.value == "SSL"
    assert set(security_config(Settings())) == {"security_protocol"}  # plaintext by default


def test_aiokafka_clients_accept_the_config():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    s = Settings.from_env({}, **{**SASL, "sasl_mechanism": "SCRAM-SHA-256"})

    async def build():
        producer = AIOKafkaProducer(**producer_config(s, "localhost:1"))
        consumer = AIOKafkaConsumer("t", **consumer_config(s, "localhost:1", group_id=None))
        clients = (producer.client, consumer._client)
        out = [(c._security_protocol, c._sasl_mechanism) for c in clients]
        await consumer.stop()
        await producer.stop()
        return out

    assert asyncio.run(build()) == [("SASL_SSL", "SCRAM-SHA-256")] * 2


def test_the_password_is_a_secret(capsys):
    s = Settings.from_env({"STREAM_REC_SASL_PASSWORD": "hunter2"}, sasl_username="svc",
                          security_protocol="SASL_PLAINTEXT")
    assert isinstance(s.sasl_password, Secret) and s.sasl_password.reveal() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.sasl_password)
    assert s.to_env()["STREAM_REC_SASL_PASSWORD"] == "hunter2"  # a child worker gets it
    assert Settings.from_env(s.to_env()) == s
    assert s.with_(sasl_password="other").sasl_password.reveal() == "other"
    parser = CliParser(prog="stream-rec")
    add_subcommands(parser.add_subparsers(dest="command"))
    for command in ("worker", "produce", "tail"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        text = capsys.readouterr().out
        assert "--sasl-password" in text and "--security-protocol" in text, command
        assert "hunter2" not in text


def test_bad_security_settings_fail_early():
    with pytest.raises(ConfigError, match="sasl_username"):
        Settings.from_env({}, security_protocol="SASL_SSL")
    with pytest.raises(ConfigError, match="go together"):
        Settings.from_env({}, ssl_certfile="c.pem")
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        Settings.from_env({}, sasl_mechanism="GSSAPI")


def test_worker_topics_replication_and_faust_table_views_are_settings():
    s = Settings()
    assert (s.replication_factor, s.min_insync_replicas, s.faust_table_views) == (-1, -1, False)
    from topologies.worker import _faust_app

    app = _faust_app(Settings.from_env({}, bootstrap_servers="localhost:1"))
    assert app.conf.web_tables_enabled is False and app.conf.producer_acks == -1
    app3 = _faust_app(Settings.from_env({}, bootstrap_servers="localhost:1", replication_factor=3))
    assert app3.conf.topic_replication_factor == 3
