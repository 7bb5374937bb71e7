"""Signed, expiring subscriber tokens: who may read a user's stream and post that user's events.

A token is ``<user, base64url>.<expiry, epoch s>.<HMAC-SHA256(secret, user.expiry), base64url>``.
The gateway keeps no token store: any gateway with the same ``--gateway-secret`` verifies any
token, so gateways scale out without sharing state. A token names exactly one user id; a shopper
without an account gets a random anonymous id and a token for it (``POST /session``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import NamedTuple

from ..errors import StreamRecError

__all__ = ["TokenError", "Grant", "mint_token", "verify_token", "anonymous_user_id"]

MAX_USER_ID_BYTES = 256  # as the event contract's ids (core/events.py MAX_ID_LEN, in characters)


class TokenError(StreamRecError):
    """A token that is malformed, tampered with, expired or for another user (the reason says)."""


class Grant(NamedTuple):
    """What a valid token grants: one user's stream and events, until ``expires_at`` (epoch s)."""

    user_id: str
    expires_at: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, user_part: str, expiry: int) -> str:
    return _b64(hmac.new(secret, f"{user_part}.{expiry}".encode("ascii"), hashlib.sha256).digest())


def mint_token(secret: bytes, user_id: str, ttl_s: float, now: float | None = None) -> str:
    """A token for ``user_id`` valid for ``ttl_s`` seconds from ``now`` (default: the clock)."""
    if not secret:
        raise TokenError("cannot sign tokens with an empty secret")
    if not user_id or len(user_id.encode()) > MAX_USER_ID_BYTES:
        raise TokenError(f"a token's user id must be 1-{MAX_USER_ID_BYTES} bytes; got {user_id!r}")
    expiry = int((time.time() if now is None else now) + ttl_s)
    user_part = _b64(user_id.encode())
    return f"{user_part}.{expiry}.{_signature(secret, user_part, expiry)}"


def verify_token(secret: bytes, token: str, now: float | None = None) -> Grant:
    """What the token grants, or TokenError (malformed, bad signature, expired)."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        raise TokenError("malformed token: expected <user>.<expiry>.<signature>")
    user_part, expiry_text, signature = parts
    if not secret:
        raise TokenError("cannot verify tokens with an empty secret")
    expected = _signature(secret, user_part, int(expiry_text))
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise TokenError("bad token signature")
    expiry = int(expiry_text)
    if expiry <= (time.time() if now is None else now):
        raise TokenError("token expired")
    try:
        return Grant(_unb64(user_part).decode("utf-8"), expiry)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("malformed token: the user part is not base64url UTF-8") from None


def anonymous_user_id() -> str:
    """A fresh, unguessable anonymous shopper id (128 random bits)."""
    return "anon-" + secrets.token_hex(16)
