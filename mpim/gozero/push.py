"""Pushes for go-zero clients: the goim frames a worker built, written again as go-zero data frames.

Sans-I/O. Every push (by key, by mid, to a room, to everyone, and private
messages) reaches a go-zero client as::

    {"frameType": 0, "id": "", "ackSeq": <stream seq>, "method": "push",
     "formId": "root", "data": <the body as JSON, or a string>, "op": <push op>}

``ackSeq`` is the user's stream seq for a stored push (by mid, private chat;
the client acks it), 0 for the others. A private message has ``id`` = its message
id, ``formId`` = the sender and ``data`` = go-zero chat data
(:func:`mpim.gozero.chat.present`). A body that is not UTF-8 is given as its
base64 text with ``"base64": true``.
"""

from __future__ import annotations

from mpim.gozero.chat import present
from mpim.gozero.frames import FRAME_DATA, body_json, encode, goim_items

PUSH_METHOD = "push"
ROOT = "root"  # formId of what the server (the business backend) pushes


class _Last:
    """The last private message presented: its copies for the sender and the recipient (each with
    its own seq) usually follow each other on a worker."""

    __slots__ = ("chat", "envelope")

    def __init__(self) -> None:
        self.envelope = b""
        self.chat: tuple[str, str, bytes] | None = None


_last = _Last()


def push_frame(op: int, seq: int, body: bytes, now_ms: int) -> bytes:
    """One pushed goim frame (its op, stream seq and body) as a go-zero data frame."""
    chat = None
    if body.startswith(b'{"id":'):
        last = _last
        if body == last.envelope:
            chat = last.chat
        else:
            chat = present(body, now_ms)
            last.envelope, last.chat = body, chat
    if chat is not None:
        form_id, msg_id, data = chat
        extra = b',"op":%d' % op
    else:
        form_id, msg_id = ROOT, ""
        data, b64 = body_json(body)
        extra = b',"op":%d,"base64":true' % op if b64 else b',"op":%d' % op
    return encode(
        FRAME_DATA, id=msg_id, ack_seq=seq, method=PUSH_METHOD, form_id=form_id, data=data, extra=extra
    )


def push_frames(message: bytes, now_ms: int) -> list[bytes]:
    """The go-zero frames of one WebSocket message built for goim clients (a frame or an op-9 batch)."""
    return [push_frame(op, seq, body, now_ms) for op, seq, body in goim_items(message)]
