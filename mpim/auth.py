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

from mpim.limits import INT32, INT64, MAX_KEY, check_room_id, in_range

_TOO_DEEP = "token is not valid JSON: nested too deeply"


class AuthError(Exception):
    """The token is refused; the message says why (for the log, not the client)."""


CAPS = ("ack", "seq")  # what a client may opt in to (see the README's "Reliable delivery")


@dataclass(frozen=True, slots=True)
class Identity:
    mid: int
    key: str
    room: str
    platform: str
    accepts: frozenset[int]
    caps: frozenset[str] = frozenset()


def parse_caps(values: Any) -> frozenset[str]:
    """The ``caps`` claim: a list of strings; unknown ones are ignored (goim's parser ignores the field)."""
    if values is None:
        return frozenset()
    if not isinstance(values, list):
        raise AuthError("caps must be a list of strings")
    return frozenset(v for v in values if isinstance(v, str) and v in CAPS)


def parse_ops(values: Any) -> frozenset[int]:
    """A list of int32 operation codes."""
    if not isinstance(values, list):
        raise ValueError("accepts must be a list of integers")
    ops = set()
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not in_range(v, INT32):
            raise ValueError(f"accepts holds {v!r}, not an int32")
        ops.add(v)
    return frozenset(ops)


def identity_from_claims(claims: Any) -> Identity:
    if not isinstance(claims, dict):
        raise AuthError("token is not a JSON object")
    mid = claims.get("mid", 0)
    if not isinstance(mid, int) or isinstance(mid, bool) or not in_range(mid, INT64):
        raise AuthError(f"mid {mid!r} is not an int64")
    fields = {}
    for name in ("key", "room_id", "platform"):
        value = claims.get(name) or ""
        if not isinstance(value, str):
            raise AuthError(f"{name} {value!r} is not a string")
        if not value.isascii():
            try:
                value.encode("utf-8")  # JSON "\ud800" decodes to a lone surrogate
            except UnicodeEncodeError:
                raise AuthError(f"{name} is not valid UTF-8 (it holds a lone surrogate)") from None
        fields[name] = value
    if len(fields["key"]) > MAX_KEY:
        raise AuthError(f"key is longer than {MAX_KEY} characters")
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
        caps=parse_caps(claims.get("caps")),
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
                raise AuthError(_TOO_DEEP) from None
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
            raise AuthError(_TOO_DEEP) from None
        return identity_from_claims(claims)


def mint(
    secret: str,
    mid: int,
    room: str = "",
    key: str = "",
    platform: str = "",
    accepts: tuple[int, ...] = (),
    ttl: float = 3600.0,
    caps: tuple[str, ...] = (),
) -> str:
    """Sign an HS256 token for a client (tests, demos, `mpim token`)."""
    claims: dict[str, Any] = {
        "mid": mid,
        "key": key,
        "room_id": room,
        "platform": platform,
        "accepts": list(accepts),
        "exp": int(time.time() + ttl),
    }
    if caps:
        claims["caps"] = list(caps)
    return jwt.encode(claims, secret, algorithm="HS256")
