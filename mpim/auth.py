"""Client authentication: the token carried by the Auth frame.

``json`` mode accepts goim's plain JSON token and trusts the client; ``jwt`` mode
verifies an HS256 token signed with ``[auth] secret`` carrying the same claims
plus ``exp``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import jwt

MAX_ROOM_ID = 256
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


class AuthError(Exception):
    """The token is refused; the message says why (for the log, not the client)."""


@dataclass(frozen=True, slots=True)
class Identity:
    mid: int
    key: str
    room: str
    platform: str
    accepts: frozenset[int]


def check_room_id(room: str) -> str:
    """Room ids are printable strings up to 256 bytes (NUL terminates bus topics)."""
    if "\x00" in room or len(room.encode()) > MAX_ROOM_ID:
        raise ValueError(f"room id must be at most {MAX_ROOM_ID} bytes without NUL")
    return room


def parse_ops(values: Any) -> frozenset[int]:
    """A list of int32 operation codes."""
    if not isinstance(values, list):
        raise ValueError("accepts must be a list of integers")
    ops = set()
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not _INT32_MIN <= v <= _INT32_MAX:
            raise ValueError(f"accepts holds {v!r}, not an int32")
        ops.add(v)
    return frozenset(ops)


def identity_from_claims(claims: Any) -> Identity:
    if not isinstance(claims, dict):
        raise AuthError("token is not a JSON object")
    mid = claims.get("mid", 0)
    if not isinstance(mid, int) or isinstance(mid, bool) or not _INT64_MIN <= mid <= _INT64_MAX:
        raise AuthError(f"mid {mid!r} is not an int64")
    fields = {}
    for name in ("key", "room_id", "platform"):
        value = claims.get(name) or ""
        if not isinstance(value, str):
            raise AuthError(f"{name} {value!r} is not a string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise AuthError(f"{name} is not valid Unicode (lone surrogate)") from None
        fields[name] = value
    if len(fields["key"]) > 128:
        raise AuthError("key is longer than 128 characters")
    try:
        room = check_room_id(fields["room_id"])
        accepts = parse_ops(claims.get("accepts") or [])
    except ValueError as exc:
        raise AuthError(str(exc)) from None
    return Identity(
        mid=mid,
        key=fields["key"],
        room=sys.intern(room),
        platform=sys.intern(fields["platform"][:32]),
        accepts=accepts,
    )


class Authenticator:
    """Turns an Auth body into an :class:`Identity` or raises :class:`AuthError`."""

    def __init__(self, mode: str, secret: str = "") -> None:
        if mode not in ("jwt", "json"):
            raise ValueError(f"unknown auth mode {mode!r}")
        if mode == "jwt" and not secret:
            raise ValueError("jwt mode needs a secret")
        self.mode = mode
        self._secret = secret

    def verify(self, token: bytes) -> Identity:
        if self.mode == "json":
            try:
                claims = json.loads(token)
            except (ValueError, UnicodeDecodeError):
                raise AuthError("token is not valid JSON") from None
            except RecursionError:
                raise AuthError("token JSON is nested too deeply") from None
            return identity_from_claims(claims)
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"require": ["exp"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"jwt rejected: {exc}") from None
        except RecursionError:
            raise AuthError("jwt rejected: JSON nested too deeply") from None
        return identity_from_claims(claims)


def mint(
    secret: str,
    mid: int,
    room: str = "",
    key: str = "",
    platform: str = "",
    accepts: tuple[int, ...] = (),
    ttl: float = 3600.0,
) -> str:
    """Sign an HS256 token for a client (tests, demos, `mpim token`)."""
    claims = {
        "mid": mid,
        "key": key,
        "room_id": room,
        "platform": platform,
        "accepts": list(accepts),
        "exp": int(time.time() + ttl),
    }
    return jwt.encode(claims, secret, algorithm="HS256")
