"""The push gateway's HTTP surface: a Starlette app (served by uvicorn, see server.py).

Endpoints (tokens: tokens.py; the latest-per-user map: latest.py; Kafka: kafka_io.py):

* ``GET /users/{user}/stream?token=T``: Server-Sent Events, the user's latest recommendation at
  once (when known), then every update; ``data:`` is the recommendation record as published.
* ``WS /users/{user}/ws?token=T``: the same over a WebSocket (one text message per record).
* ``GET /users/{user}/latest?token=T``: the latest record (404 when none is known).
* ``POST /events`` (``Authorization: Bearer T``): one event, validated by the workers' contract
  (core.intake.parse_record, key = the token's user), produced to the events topic; 202, or 400
  with the reason, 401 (token), 403 (another user's event), 413 (size), 429 (rate).
* ``POST /session``: a new anonymous shopper id and its token (the demo shop's login).
* ``GET /health``, ``GET /metrics`` (Prometheus text format); ``GET /`` the demo shop.

A token for user A gets 403 on user B's stream and events.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from ..core.events import InvalidEvent, encode_event
from ..core.intake import parse_record
from ..serving.compose import record_limits
from ..settings import Settings
from .latest import LatestRecommendations
from .limits import Counters, RateLimiter
from .metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from .tokens import Grant, TokenError, anonymous_user_id, mint_token, verify_token

__all__ = ["Gateway", "EventSinkLike", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventSinkLike(Protocol):
    async def send(self, user_id: str, value: bytes) -> None: ...


class FeedLike(Protocol):
    consumed: int
    undecodable: int
    last_record_ts: int
    assigned: int

    @property
    def alive(self) -> bool: ...


@dataclass
class Gateway:
    """Everything the endpoints share. ``sink``/``feed`` are the Kafka clients (kafka_io.py), or
    fakes in unit tests; ``shop`` is the demo catalogue (None: no shop pages)."""

    settings: Settings
    secret: bytes
    sink: EventSinkLike | None = None
    feed: FeedLike | None = None
    shop: list[dict[str, Any]] | None = None
    latest: LatestRecommendations = field(init=False)
    counters: Counters = field(default_factory=Counters)
    events_limiter: RateLimiter = field(init=False)
    sessions_limiter: RateLimiter = field(init=False)
    metrics: GatewayMetrics = field(init=False)

    def __post_init__(self) -> None:
        rate = self.settings.gateway_rate_per_s
        self.latest = LatestRecommendations(self.settings.gateway_latest_users)
        self.events_limiter = RateLimiter(rate, burst=max(1.0, 2 * rate))
        self.sessions_limiter = RateLimiter(rate / 10, burst=max(1.0, rate / 2))
        self.metrics = GatewayMetrics(self)

    def grant(self, token: str | None) -> Grant:
        if not token:
            raise TokenError("no token: pass ?token=... or an Authorization: Bearer header")
        return verify_token(self.secret, token)

    def mint(self, user_id: str) -> tuple[str, int]:
        ttl = self.settings.gateway_token_ttl_s
        token = mint_token(self.secret, user_id, ttl)
        return token, int(token.split(".")[1])


def _error(status: int, error: str, reason: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason, **extra}, status_code=status)


def _token_of(request: Request | WebSocket) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("token")


def _authorize(gw: Gateway, request: Request | WebSocket, user: str) -> Grant | JSONResponse:
    """The grant for ``user``'s stream, or the 401/403 response."""
    try:
        grant = gw.grant(_token_of(request))
    except TokenError as exc:
        gw.counters.inc("auth_failures")
        return _error(401, "unauthorized", str(exc))
    if grant.user_id != user:
        gw.counters.inc("forbidden")
        return _error(403, "forbidden", "the token is for another user")
    return grant


async def _sse(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    user = request.path_params["user"]
    grant = _authorize(gw, request, user)
    if isinstance(grant, Response):
        return grant
    gw.counters.inc("sse_connections")

    async def frames() -> Any:
        sub = gw.latest.subscribe(user)
        try:
            yield b"retry: 2000\n\n"
            while (left := grant.expires_at - time.time()) > 0:
                value = await sub.next(timeout=min(KEEPALIVE_S, left))
                yield b": keep-alive\n\n" if value is None else b"data: " + value + b"\n\n"
        finally:  # the client went away (starlette cancels us) or the token expired
            gw.latest.unsubscribe(user, sub)

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


async def _ws(websocket: WebSocket) -> None:
    gw: Gateway = websocket.app.state.gateway
    user = websocket.path_params["user"]
    grant = _authorize(gw, websocket, user)
    if isinstance(grant, Response):
        await websocket.close(code=4000 + grant.status_code)  # before accept: HTTP 403
        return
    await websocket.accept()
    gw.counters.inc("ws_connections")
    sub = gw.latest.subscribe(user)

    async def pump() -> None:
        while (left := grant.expires_at - time.time()) > 0:
            value = await sub.next(timeout=min(KEEPALIVE_S, left))
            if value is not None:
                await websocket.send_text(value.decode())
        await websocket.close(code=4401)

    pumping = asyncio.create_task(pump())
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # the client sends nothing we need; we only watch for its going away
    finally:
        pumping.cancel()
        await asyncio.gather(pumping, return_exceptions=True)
        gw.latest.unsubscribe(user, sub)


async def _latest(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    user = request.path_params["user"]
    grant = _authorize(gw, request, user)
    if isinstance(grant, Response):
        return grant
    value = gw.latest.latest(user)
    if value is None:
        return _error(404, "not_found", f"no recommendation known for {user!r} yet")
    return Response(value, media_type="application/json")


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _post_event(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    try:
        grant = gw.grant(_token_of(request))
    except TokenError as exc:
        gw.counters.inc("auth_failures")
        return _error(401, "unauthorized", str(exc))
    if not gw.events_limiter.allow(grant.user_id):
        gw.counters.inc("rate_limited")
        return _error(429, "rate_limited", f"at most {gw.settings.gateway_rate_per_s:g} events/s "
                      "per client (--gateway-rate-per-s)")
    limit = gw.settings.gateway_max_body_bytes
    body = await _body(request, limit)
    if body is None:
        gw.counters.inc("too_large")
        return _error(413, "too_large", f"at most {limit} bytes (--gateway-max-body-bytes)")
    parsed = parse_record(grant.user_id.encode(), body, int(time.time() * 1000),
                          record_limits(gw.settings))
    if isinstance(parsed, InvalidEvent):
        if parsed.code == "key_mismatch":
            gw.counters.inc("forbidden")
            return _error(403, "forbidden", "the token is for another user than user_id")
        gw.counters.inc("events_rejected")
        return _error(400, "invalid_event", parsed.reason, code=parsed.code)
    if gw.sink is None:
        return _error(503, "unavailable", "this gateway has no events topic")
    await gw.sink.send(parsed.user_id, encode_event(parsed))
    gw.counters.inc("events_accepted")
    return JSONResponse({"accepted": parsed.event_id}, status_code=202)


async def _session(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    client = request.client.host if request.client else "?"
    if not gw.sessions_limiter.allow(client):
        gw.counters.inc("rate_limited")
        return _error(429, "rate_limited", "too many new sessions from this client")
    user_id = anonymous_user_id()
    token, expires_at = gw.mint(user_id)
    gw.counters.inc("sessions_minted")
    return JSONResponse({"user_id": user_id, "token": token, "expires_at": expires_at})


async def _metrics(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def _health(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    feed_ok = gw.feed is None or gw.feed.alive
    body = {"status": "ok" if feed_ok else "failing", "feed": gw.feed is not None and feed_ok,
            "assigned_partitions": gw.feed.assigned if gw.feed else 0,
            "latest_users": len(gw.latest), "subscribers": gw.latest.subscriber_count}
    return JSONResponse(body, status_code=200 if feed_ok else 503)


async def _index(request: Request) -> Response:
    csp = "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'"
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": csp})


async def _catalogue(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    return Response(orjson.dumps({"items": gw.shop}), media_type="application/json")


def create_app(gw: Gateway, lifespan: Any = None) -> Starlette:
    """The ASGI app over ``gw``; ``lifespan`` starts and stops its Kafka clients (server.py)."""
    routes = [
        Route("/users/{user}/stream", _sse), WebSocketRoute("/users/{user}/ws", _ws),
        Route("/users/{user}/latest", _latest), Route("/events", _post_event, methods=["POST"]),
        Route("/session", _session, methods=["POST"]),
        Route("/health", _health), Route("/metrics", _metrics),
    ]
    if gw.shop is not None:
        routes += [Route("/", _index), Route("/catalogue.json", _catalogue),
                   Mount("/static", StaticFiles(directory=STATIC), name="static")]
    origins = [o.strip() for o in gw.settings.gateway_cors_origins.split(",") if o.strip()]
    middleware = [Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                             allow_headers=["Authorization", "Content-Type"])] if origins else []

    @asynccontextmanager
    async def no_clients(app: Starlette) -> Any:
        yield

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan or no_clients)
    app.state.gateway = gw
    return app
