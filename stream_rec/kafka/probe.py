"""Sockets for the embedded broker: loopback checks, free ports, and a raw Kafka metadata probe.

The probe speaks just enough of the Kafka protocol (Metadata v0) to tell a Kafka broker from any
other TCP listener, without a client library and before one could connect.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from ..errors import ConfigError

__all__ = ["free_port", "loopback_host", "port_free", "metadata_brokers"]


def loopback_host(host: str) -> str:
    """The IPv4 loopback address to listen on, or ConfigError for anything else."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is None or addr.version != 4 or not addr.is_loopback:
        raise ConfigError(
            f"the embedded broker only listens on an IPv4 loopback address such as 127.0.0.1; "
            f"got {host!r}"
        )
    return host


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for a broker or a worker's web server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])



def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Tansu binds (tokio)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        buf += chunk
    return bytes(buf)


def metadata_brokers(host: str, port: int, timeout: float) -> list[tuple[str, int]]:
    """The brokers a Metadata v0 request lists: proof the port speaks Kafka, not just TCP."""
    client_id = b"stream-rec-probe"
    correlation = 7
    body = struct.pack(">hhih", 3, 0, correlation, len(client_id)) + client_id
    body += struct.pack(">i", 0)  # no topics
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        resp = _recv_exact(sock, size)
    got_correlation, n_brokers = struct.unpack_from(">ii", resp, 0)
    if got_correlation != correlation:
        raise ConnectionError(f"reply to correlation id {got_correlation}; sent {correlation}")
    off, brokers = 8, []
    for _ in range(n_brokers):
        _node, hlen = struct.unpack_from(">ih", resp, off)
        off += 6
        bhost = resp[off : off + hlen].decode()
        off += hlen
        (bport,) = struct.unpack_from(">i", resp, off)
        off += 4
        brokers.append((bhost, bport))
    return brokers
