"""The go-zero chat server's JSON text frames, sans-I/O.

One frame is one WebSocket text (or binary) message holding one JSON object::

    {"frameType": <int>, "id": "<str>", "ackSeq": <int>, "method": "<str>",
     "formId": "<str>", "data": <any JSON>}

A client may leave any field out (or send ``null``: the Go server's zero value)
and add fields of its own (ignored). :func:`decode` turns a client message into
a :class:`GzFrame` or raises :class:`FrameError` saying what is wrong (the
peer's fault: the caller answers an error frame and closes). :func:`encode`
writes a server frame with all six fields, as the Go server's ``json.Marshal``
does. :func:`body_json` is how a pushed body becomes ``data``, and
:func:`goim_items` reads back the goim frames of a WebSocket message the worker
built for goim clients, so a push is encoded once for every kind of client.
Nothing here touches a socket or an event loop.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any, NamedTuple

from mpim.limits import INT64, in_range
from mpim.proto import HEADER_SIZE, Op

FRAME_DATA, FRAME_PING, FRAME_ACK, FRAME_NOACK, FRAME_TRANSPOND, FRAME_ERR = 0, 1, 2, 3, 6, 9
MAX_ID = 64  # characters of a frame id (the message id of chat and acks)
MAX_TEXT = 128  # characters of method, formId, transpondUid
_TEXT_FIELDS = (("id", MAX_ID), ("method", MAX_TEXT), ("formId", MAX_TEXT), ("transpondUid", MAX_TEXT))
_FRAME = b'{"frameType":%d,"id":%b,"ackSeq":%d,"method":%b,"formId":%b,"data":%b%b}'
_HEADER = struct.Struct(">ihhii")
_RAW = int(Op.RAW)


class FrameError(Exception):
    """A client frame that is not one; ``reason`` says what is wrong (for the log and the error frame)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GzFrame(NamedTuple):
    frame_type: int
    id: str
    ack_seq: int
    method: str
    form_id: str
    data: Any
    transpond_uid: str


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:37] + "..."


def decode(message: bytes) -> GzFrame:
    """A client's message -> its frame; :class:`FrameError` if it is not a go-zero frame."""
    try:
        value: Any = _decode(message.decode("utf-8"))
    except UnicodeDecodeError:
        raise FrameError("the frame is not UTF-8 text") from None
    except (ValueError, RecursionError):
        raise FrameError("the frame is not JSON") from None
    if not isinstance(value, dict):
        raise FrameError("a frame must be a JSON object")
    frame_type = value.get("frameType")
    if frame_type is None:
        frame_type = FRAME_DATA
    elif type(frame_type) is not int or not 0 <= frame_type <= 255:
        raise FrameError(f"frameType must be an integer from 0 to 255, got {_shown(frame_type)}")
    ack_seq = value.get("ackSeq")
    if ack_seq is None:
        ack_seq = 0
    elif type(ack_seq) is not int or not in_range(ack_seq, INT64):
        raise FrameError(f"ackSeq must be an int64, got {_shown(ack_seq)}")
    texts: list[str] = []
    for name, limit in _TEXT_FIELDS:
        text = value.get(name)
        if text is None:
            text = ""
        elif not isinstance(text, str):
            raise FrameError(f"{name} must be a string, got {_shown(text)}")
        elif len(text) > limit:
            raise FrameError(f"{name} is longer than {limit} characters")
        elif not text.isascii() and not _utf8(text):
            raise FrameError(f"{name} is not valid UTF-8 text (a lone surrogate)")
        texts.append(text)
    return GzFrame(frame_type, texts[0], ack_seq, texts[1], texts[2], value.get("data"), texts[3])


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def dumps_utf8(value: Any) -> bytes:
    """Compact JSON in UTF-8; UnicodeEncodeError if a string holds a lone surrogate."""
    return _encode_text(value).encode()


def dumps(value: Any) -> bytes:
    """Compact JSON in UTF-8; a string that cannot be UTF-8 (a lone surrogate) is written escaped.
    ValueError for NaN or an infinity."""
    try:
        return _encode_text(value).encode()
    except UnicodeEncodeError:
        return _encode_ascii(value).encode()


def encode(
    frame_type: int,
    *,
    id: str = "",
    ack_seq: int = 0,
    method: str = "",
    form_id: str = "",
    data: bytes = b"null",
    extra: bytes = b"",
) -> bytes:
    """A server frame; ``data`` is JSON already, ``extra`` more members (``b',"code":-400'``)."""
    return _FRAME % (frame_type, dumps(id), ack_seq, dumps(method), dumps(form_id), data, extra)


def error_frame(message: str, *, id: str = "", method: str = "", code: int = 0) -> bytes:
    """frameType 9: ``data`` says what went wrong; ``code`` is mpim's (-400, -429, -503...)."""
    return encode(FRAME_ERR, id=id, method=method, data=dumps(message), extra=b',"code":%d' % code)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


# (built once: json.loads / json.dumps with options build a new decoder / encoder on every call)
_decode = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite).decode
_check_json = json.JSONDecoder(parse_constant=_no_constant).decode
_encode_text = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def body_json(body: bytes) -> tuple[bytes, bool]:
    """A pushed body as a JSON value: the body itself when it is JSON, else a JSON string of it
    (its text, or its base64 when it is not UTF-8: the second value is then true)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return dumps(base64.b64encode(body).decode("ascii")), True
    try:
        _check_json(text)
    except (ValueError, RecursionError):
        return dumps(text), False
    return body, False


def goim_items(message: bytes) -> list[tuple[int, int, bytes]]:
    """``(op, seq, body)`` of the goim frames in one unmasked WebSocket binary message built by the
    worker: one frame, or an op-9 batch of them (a push whose own op is 9 and whose body is not
    frames is one frame). ValueError if it is not such a message."""
    size = message[1] & 0x7F
    start = 2 if size < 126 else 4 if size == 126 else 10
    end = len(message)
    if end - start < HEADER_SIZE:
        raise ValueError("no goim frame in the message")
    pack_len, _, _, op, _ = _HEADER.unpack_from(message, start)
    if op == _RAW and pack_len == end - start:
        try:
            return _frames(message, start + HEADER_SIZE, end)
        except ValueError:
            pass
    return _frames(message, start, end)


def _frames(message: bytes, pos: int, end: int) -> list[tuple[int, int, bytes]]:
    items = []
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise ValueError("a truncated goim header")
        pack_len, _, _, op, seq = _HEADER.unpack_from(message, pos)
        if pack_len < HEADER_SIZE or pos + pack_len > end:
            raise ValueError(f"packLen {pack_len} does not fit the message")
        items.append((op, seq, message[pos + HEADER_SIZE : pos + pack_len]))
        pos += pack_len
    return items
