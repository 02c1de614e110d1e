"""Server -> client WebSocket frames, built once and written to many connections.

Only this direction is built by hand: server frames are unmasked, so one encoded
binary frame is the same bytes for every member of a room. Everything a client
sends is parsed by the WebSocket library.
"""

from __future__ import annotations

import struct

_LEN16 = struct.Struct(">BBH")
_LEN64 = struct.Struct(">BBQ")
_FIN_BINARY = 0x82
_FIN_TEXT = 0x81


def binary_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented binary frame carrying ``payload``."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_BINARY, size)) + payload
    if size < 65536:
        return _LEN16.pack(_FIN_BINARY, 126, size) + payload
    return _LEN64.pack(_FIN_BINARY, 127, size) + payload


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame carrying ``payload`` (UTF-8 text)."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 65536:
        return _LEN16.pack(_FIN_TEXT, 126, size) + payload
    return _LEN64.pack(_FIN_TEXT, 127, size) + payload
