"""Running the gateway: uvicorn on a loopback address, the Kafka clients in the app's lifespan.

``run_gateway`` is ``stream-rec gateway``; ``GatewayThread`` runs one in a background thread of
this process (the demo, the tests), and stops it, with its Kafka clients, on exit.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from ..errors import ConfigError, StreamRecError
from ..settings import Settings
from .app import Gateway, create_app
from .kafka_io import EventSink, RecommendationFeed

__all__ = ["build_gateway", "secret_of", "run_gateway", "GatewayThread", "shop_gateway"]

log = logging.getLogger(__name__)
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")


def secret_of(settings: Settings) -> bytes:
    """``--gateway-secret``; when empty, a random one for this process (tokens then work only on
    this gateway, until it restarts: set the secret when several gateways serve one site)."""
    if settings.gateway_secret:
        return settings.gateway_secret.reveal().encode()
    log.warning("no --gateway-secret: signing tokens with a random per-process secret")
    return secrets.token_bytes(32)


def build_gateway(settings: Settings, shop_items: int | None, secret: bytes | None = None) -> Any:
    """The ASGI app: a Gateway with its Kafka feed and sink started by the app's lifespan."""
    from .shop import catalogue_items

    gw = Gateway(settings, secret or secret_of(settings),
                 shop=catalogue_items(shop_items) if shop_items else None)
    feed, sink = RecommendationFeed(settings, gw.latest), EventSink(settings)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        await sink.start()
        try:
            await feed.start()
        except BaseException:
            await sink.stop()
            raise
        gw.sink, gw.feed = sink, feed
        try:
            yield
        finally:
            await feed.stop()
            await sink.stop()

    return create_app(gw, lifespan)


def _config(settings: Settings, app: Any, port: int) -> Any:
    import uvicorn

    if settings.gateway_host in _WILDCARDS:
        raise ConfigError(f"the gateway binds one address, never a wildcard; got "
                          f"{settings.gateway_host!r} (put a proxy in front to publish it)")
    return uvicorn.Config(app, host=settings.gateway_host, port=port, log_level="warning",
                          lifespan="on", ws="websockets-sansio", timeout_graceful_shutdown=2)


def run_gateway(settings: Settings, shop_items: int | None) -> None:
    """Serve until Ctrl-C (``stream-rec gateway``)."""
    import uvicorn

    if not settings.bootstrap_servers:
        raise StreamRecError("the gateway needs a Kafka: pass --bootstrap-servers HOST:PORT")
    app = build_gateway(settings, shop_items)
    server = uvicorn.Server(_config(settings, app, settings.gateway_port))
    print(f"gateway on http://{settings.gateway_host}:{settings.gateway_port}/", flush=True)
    server.run()


class GatewayThread:
    """``with GatewayThread(settings, port, shop_items) as gw: gw.url``: a gateway on a thread."""

    def __init__(self, settings: Settings, port: int, shop_items: int | None = None,
                 secret: bytes | None = None) -> None:
        import uvicorn

        self.secret = secret or secret_of(settings)
        self.app = build_gateway(settings, shop_items, self.secret)
        self.server = uvicorn.Server(_config(settings, self.app, port))
        self.url = f"http://{settings.gateway_host}:{port}"
        self._thread = threading.Thread(target=self._serve, name="gateway", daemon=True)
        self._error: BaseException | None = None

    @property
    def gateway(self) -> Gateway:
        gw: Gateway = self.app.state.gateway
        return gw

    def _serve(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # handed to the caller by __enter__
            self._error = exc

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._thread.join(timeout=5)
                raise StreamRecError(f"the gateway did not start: {self._error!r}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)


@contextmanager
def shop_gateway(settings: Settings, shop_items: int, say: Callable[[str], None]) -> Iterator[str]:
    """The demo's gateway and shop on ``--gateway-port`` (another free port when it is taken)."""
    from ..kafka.probe import free_port, port_free

    port = settings.gateway_port
    if not port_free(settings.gateway_host, port):
        port = free_port(settings.gateway_host)
    secret = settings.gateway_secret.reveal().encode() or secrets.token_bytes(32)  # a demo's own
    with GatewayThread(settings, port, shop_items, secret) as gw:
        say(f"the shop: {gw.url}/ (a browser on this machine; Ctrl-C stops it too)")
        yield gw.url
