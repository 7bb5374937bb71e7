"""The push gateway without Kafka: tokens, the latest-per-user map, rate limits, and the HTTP
contract of POST /events and of the stream endpoints' access checks (Starlette's TestClient, a
memory sink instead of the events topic)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from stream_rec.core.events import parse_event
from stream_rec.errors import ConfigError
from stream_rec.gateway.app import Gateway, create_app
from stream_rec.gateway.latest import LatestRecommendations
from stream_rec.gateway.limits import RateLimiter
from stream_rec.gateway.tokens import TokenError, mint_token, verify_token
from stream_rec.settings import Settings

SECRET = b"test-secret-0123456789"


# ----------------------------------------------------------------------------- tokens
def test_a_token_grants_its_user_until_it_expires():
    token = mint_token(SECRET, "u000042", ttl_s=60, now=1_000)
    grant = verify_token(SECRET, token, now=1_030)
    assert grant.user_id == "u000042" and grant.expires_at == 1_060


def test_an_expired_token_is_refused():
    token = mint_token(SECRET, "u1", ttl_s=60, now=1_000)
    with pytest.raises(TokenError, match="expired"):
        verify_token(SECRET, token, now=1_060)


@pytest.mark.parametrize("tamper", ["user", "expiry", "signature", "secret"])
def test_a_tampered_token_is_refused(tamper):
    token = mint_token(SECRET, "u1", ttl_s=60, now=1_000)
    user, expiry, signature = token.split(".")
    other_user = mint_token(SECRET, "u2", ttl_s=60, now=1_000).split(".")[0]
    forged = {"user": f"{other_user}.{expiry}.{signature}",
              "expiry": f"{user}.{int(expiry) + 3600}.{signature}",
              "signature": f"{user}.{expiry}.{signature[:-2]}AA",
              "secret": mint_token(b"another-secret", "u1", ttl_s=60, now=1_000)}[tamper]
    with pytest.raises(TokenError, match="signature"):
        verify_token(SECRET, forged, now=1_001)


@pytest.mark.parametrize("junk", ["", "abc", "a.b.c", "a.1.b.c", "....", "u.-5.x"])
def test_a_malformed_token_is_refused(junk):
    with pytest.raises(TokenError):
        verify_token(SECRET, junk)


def test_ids_are_any_utf8_within_bounds():
    for user in ("anon-1f2e", "Zoë ☕", "a.b.c", "x" * 256):
        assert verify_token(SECRET, mint_token(SECRET, user, 10)).user_id == user
    with pytest.raises(TokenError):
        mint_token(SECRET, "x" * 257, 10)
    with pytest.raises(TokenError, match="empty secret"):
        mint_token(b"", "u1", 10)


# ----------------------------------------------------------------------------- latest map
def test_a_subscriber_gets_the_latest_at_once_then_only_the_newest():
    async def scenario():
        latest = LatestRecommendations(max_users=10)
        latest.publish("u1", b"r1")
        sub = latest.subscribe("u1")
        assert await sub.next(0.1) == b"r1"
        assert await sub.next(0.01) is None  # nothing new: a keep-alive
        latest.publish("u1", b"r2")
        latest.publish("u1", b"r3")  # a slow subscriber skips r2
        latest.publish("u2", b"other")
        assert await sub.next(0.1) == b"r3"
        latest.unsubscribe("u1", sub)
        assert latest.subscriber_count == 0

    asyncio.run(scenario())


def test_the_latest_map_evicts_the_least_recently_used_user():
    latest = LatestRecommendations(max_users=2)
    latest.publish("a", b"1")
    latest.publish("b", b"2")
    assert latest.latest("a") == b"1"  # a read counts as a use
    latest.publish("c", b"3")
    assert (latest.latest("a"), latest.latest("b"), latest.latest("c")) == (b"1", None, b"3")
    assert latest.evicted == 1 and len(latest) == 2


def test_the_rate_limiter_allows_bursts_then_the_rate():
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2, burst=4, clock=lambda: now[0])
    assert [limiter.allow("c") for _ in range(5)] == [True] * 4 + [False]
    assert limiter.allow("other")
    now[0] += 1.0  # two more tokens
    assert [limiter.allow("c") for _ in range(3)] == [True, True, False]
    assert all(RateLimiter(0, 1).allow("c") for _ in range(100))  # 0 = no limit


# ----------------------------------------------------------------------------- HTTP
class MemorySink:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes]] = []

    async def send(self, user_id: str, value: bytes) -> None:
        self.records.append((user_id, value))


@pytest.fixture
def gateway():
    settings = Settings.from_env({}, gateway_rate_per_s=5, gateway_max_body_bytes=2048)
    gw = Gateway(settings, SECRET, sink=MemorySink(), shop=[{"item_id": "i00001", "name": "A",
                                                              "category": "Boots"}])
    with TestClient(create_app(gw), base_url="http://127.0.0.1") as client:
        yield gw, client


def _event(user="u1", **fields):
    return {"event_id": "e1", "user_id": user, "type": "click", "item_id": "i00001",
            "ts": int(time.time() * 1000), **fields}


def _auth(user="u1"):
    return {"Authorization": "Bearer " + mint_token(SECRET, user, 60)}


def test_a_valid_event_is_produced_keyed_by_its_user(gateway):
    gw, client = gateway
    r = client.post("/events", json=_event(), headers=_auth())
    assert r.status_code == 202 and r.json() == {"accepted": "e1"}
    [(user, value)] = gw.sink.records
    assert user == "u1" and parse_event(value, b"u1").event_id == "e1"


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "not valid JSON"),
    (orjson.dumps(_event(type="teleport")), "type"),
    (orjson.dumps({k: v for k, v in _event().items() if k != "item_id"}), "item_id"),
    (orjson.dumps(_event(ts="yesterday")), "ts"),
    (orjson.dumps(_event(ts=int(time.time() * 1000) + 10 * 86_400_000)), "ts"),
])
def test_an_invalid_event_gets_400_with_the_contracts_reason(gateway, body, reason):
    gw, client = gateway
    r = client.post("/events", content=body, headers=_auth())
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_event" and reason in r.json()["reason"]
    assert gw.sink.records == [] and gw.counters.values["events_rejected"] == 1


def test_posting_needs_a_token_for_the_events_user(gateway):
    gw, client = gateway
    assert client.post("/events", json=_event()).status_code == 401
    assert client.post("/events", json=_event(), headers={"Authorization": "Bearer x.1.y"}
                       ).status_code == 401
    assert client.post("/events", json=_event(user="u2"), headers=_auth("u1")).status_code == 403
    assert gw.sink.records == []


def test_bodies_over_the_limit_get_413_and_fast_clients_429(gateway):
    gw, client = gateway
    big = orjson.dumps(_event(query="x" * 5000))
    assert client.post("/events", content=big, headers=_auth("u3")).status_code == 413
    codes = [client.post("/events", json=_event(user="u4"), headers=_auth("u4")).status_code
             for _ in range(14)]
    assert codes[:10] == [202] * 10 and 429 in codes  # a burst of 2 x 5/s, then refused
    assert client.post("/events", json=_event(), headers=_auth()).status_code == 202  # per client


def test_a_stream_needs_a_token_for_that_user(gateway):
    gw, client = gateway
    token_a = mint_token(SECRET, "alice", 60)
    assert client.get("/users/bob/stream", params={"token": token_a}).status_code == 403
    assert client.get("/users/bob/stream").status_code == 401
    assert client.get("/users/bob/latest", params={"token": token_a}).status_code == 403
    assert client.get("/users/alice/latest", params={"token": token_a}).status_code == 404
    gw.latest.publish("alice", b'{"user_id": "alice"}')
    latest = client.get("/users/alice/latest", params={"token": token_a})
    assert latest.json() == {"user_id": "alice"}

    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect(f"/users/bob/ws?token={token_a}"):
            pass


def test_sessions_health_metrics_and_the_shop(gateway):
    gw, client = gateway
    s = client.post("/session").json()
    assert s["user_id"].startswith("anon-")
    assert verify_token(SECRET, s["token"]).user_id == s["user_id"]
    assert client.get("/health").json()["status"] == "ok"
    metrics = client.get("/metrics").text
    assert "stream_rec_gateway_sessions_minted_total 1" in metrics
    assert "# TYPE stream_rec_gateway_subscribers gauge" in metrics
    page = client.get("/")
    assert page.status_code == 200 and "Recommended for you" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/catalogue.json").json()["items"][0]["category"] == "Boots"
    assert client.get("/static/shop.js").status_code == 200


def test_cors_is_off_unless_origins_are_configured():
    for origins, allowed in (("", None), ("https://shop.example", "https://shop.example")):
        gw = Gateway(Settings.from_env({}, gateway_cors_origins=origins), SECRET)
        with TestClient(create_app(gw)) as client:
            r = client.get("/health", headers={"Origin": "https://shop.example"})
            assert r.headers.get("access-control-allow-origin") == allowed


def test_the_gateway_never_binds_a_wildcard_address():
    from stream_rec.gateway.server import _config

    with pytest.raises(ConfigError, match="wildcard"):
        _config(Settings.from_env({}, gateway_host="0.0.0.0"), object(), 8300)
    assert Settings().gateway_host == "127.0.0.1"


def test_push_delay_histogram_and_promtool_clean_metrics(gateway, tmp_path):
    """Each push a subscriber takes is timed from the record's arrival; /metrics of the gateway
    and of a worker pass `promtool check metrics` (when promtool is installed)."""
    import asyncio
    import shutil
    import subprocess

    from prometheus_client.parser import text_string_to_metric_families

    gw, client = gateway
    sub = gw.latest.subscribe("carol")
    gw.latest.publish("carol", b'{"user_id": "carol"}')
    assert asyncio.run(sub.next(timeout=1)) == b'{"user_id": "carol"}'
    gw.latest.unsubscribe("carol", sub)
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    push = families["stream_rec_gateway_push_seconds"]
    count = next(s.value for s in push.samples if s.name.endswith("_count"))
    assert push.type == "histogram" and count == 1
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    from stream_rec.serving.metrics import WorkerMetrics

    worker = WorkerMetrics(lambda: "v1", lambda: {0: 3}, lambda: {0: (10, 2048)}).exposition()
    for name, body in (("gateway", text.encode()), ("worker", worker)):
        out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                             timeout=60)
        assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (
            name, out.stdout.decode(), out.stderr.decode())
