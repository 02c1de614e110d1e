"""Bounds and checks shared by every edge that takes input: the wire, the push APIs, the config.

One place for the integer ranges of goim's fields, the room id rule and the
``BadRequest`` that both push ingresses (HTTP and ZeroMQ) answer with code -400.
Rate limits per connection are :mod:`mpim.worker.ratelimit`; limits per client IP
(connections, new connections per second, Auth failures) :mod:`mpim.worker.iplimits`.
"""

from __future__ import annotations

INT32 = (-(1 << 31), (1 << 31) - 1)
INT64 = (-(1 << 63), (1 << 63) - 1)
MAX_ROOM_ID = 256  # bytes, UTF-8
MAX_KEY = 128  # characters


class BadRequest(Exception):
    """A push request the ingress refuses; ``code`` is the API's (-400 bad input, -413 too large)."""

    def __init__(self, message: str, code: int = -400) -> None:
        super().__init__(message)
        self.code = code


def in_range(value: int, bounds: tuple[int, int]) -> bool:
    return bounds[0] <= value <= bounds[1]


def parse_int(name: str, text: str, bounds: tuple[int, int]) -> int:
    """A decimal integer within ``bounds``; :class:`BadRequest` naming ``name`` otherwise."""
    try:
        value = int(text, 10)
    except ValueError:
        raise BadRequest(f"{name}: {text[:40]!r} is not an integer") from None
    if not in_range(value, bounds):
        raise BadRequest(f"{name}: {value} is out of range [{bounds[0]}, {bounds[1]}]")
    return value


def check_text(name: str, value: str) -> str:
    """A client-supplied string must be encodable as UTF-8 (no lone surrogates from JSON escapes)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid UTF-8 text") from None
    return value


def check_room_id(room: str) -> str:
    """Room ids are UTF-8 strings up to 256 bytes without NUL (NUL ends a bus topic)."""
    try:
        size = len(room.encode())
    except UnicodeEncodeError:
        raise ValueError("room id is not valid UTF-8 text") from None
    if "\x00" in room or size > MAX_ROOM_ID:
        raise ValueError(f"room id must be at most {MAX_ROOM_ID} bytes without NUL")
    return room
