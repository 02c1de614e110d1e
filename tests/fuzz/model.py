"""What the server should answer, computed from the wire contract alone.

:func:`reference` reads goim frames straight from the header table in
ARCHITECTURE.md; :func:`expected_replies` plays the channel rules (ignore
everything before Auth, op 3/13/15/17 replies, echo of other ops, close on a bad
token or room id) over those frames.
"""

from __future__ import annotations

from typing import NamedTuple

from mpim.auth import Authenticator, AuthError
from mpim.limits import check_room_id
from mpim.proto import HEADER_SIZE, Frame, Op


def _int(data: bytes, start: int, size: int) -> int:
    return int.from_bytes(data[start : start + size], "big", signed=True)


def reference(stream: bytes, max_body: int) -> tuple[list[tuple[int, Frame]], int | None]:
    """Frames with the offset where each ends, and the offset at which a bad header is complete."""
    out: list[tuple[int, Frame]] = []
    pos = 0
    while len(stream) - pos >= HEADER_SIZE:
        pack_len, header_len = _int(stream, pos, 4), _int(stream, pos + 4, 2)
        if header_len != HEADER_SIZE or not HEADER_SIZE <= pack_len <= HEADER_SIZE + max_body:
            return out, pos + HEADER_SIZE
        if pos + pack_len > len(stream):
            break
        ver, op, seq = _int(stream, pos + 6, 2), _int(stream, pos + 8, 4), _int(stream, pos + 12, 4)
        out.append((pos + pack_len, Frame(ver, op, seq, stream[pos + HEADER_SIZE : pos + pack_len])))
        pos += pack_len
    return out, None


class Reply(NamedTuple):
    op: int
    ver: int
    seq: int
    body: bytes | None  # None: any 4-byte online count


class ChannelModel:
    """The session rules for one connection; ``closed`` once the server must close."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth
        self.authed = False
        self.closed = False
        self.opaque = False  # a client that asked for caps: past its Auth reply, not modelled here
        self.replies: list[Reply] = []

    def frames(self, frames: list[Frame]) -> None:
        for frame in frames:
            if self.closed:
                return
            self.frame(frame)

    def frame(self, f: Frame) -> None:
        out = self.replies.append
        if not self.authed:
            if f.op == Op.AUTH:
                try:
                    identity = self.auth.verify(f.body)
                except AuthError:
                    self.closed = True
                    return
                self.authed = True
                out(Reply(Op.AUTH_REPLY, f.ver, f.seq, b""))
                if identity.caps & {"ack", "seq"}:  # (tests/fuzz/test_reliable_fuzz.py covers those)
                    self.opaque = self.closed = True
            return
        if f.op == Op.HEARTBEAT:
            out(Reply(Op.HEARTBEAT_REPLY, f.ver, f.seq, None))
        elif f.op == Op.CHANGE_ROOM:
            try:
                check_room_id(f.body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                self.closed = True
                return
            out(Reply(Op.CHANGE_ROOM_REPLY, f.ver, f.seq, f.body))
        elif f.op in (Op.SUB, Op.UNSUB):
            out(Reply(f.op + 1, f.ver, f.seq, f.body))
        else:
            out(Reply(f.op, f.ver, f.seq, b""))


def as_replies(frames: list[Frame]) -> list[Reply]:
    return [Reply(f.op, f.ver, f.seq, f.body) for f in frames]


def check_prefix(got: list[Reply], expected: list[Reply], open_ended: bool = False) -> None:
    """``got`` is the start of ``expected`` (a heartbeat reply may carry any 4-byte count);
    ``open_ended``: what follows ``expected`` is not modelled (a client with caps)."""
    if open_ended:
        got = got[: len(expected)]
    assert len(got) <= len(expected), f"more replies than expected:\n{got}\n{expected}"
    for reply, want in zip(got, expected, strict=False):
        seen = reply
        if want.body is None:
            assert reply.body is not None and len(reply.body) == 4, f"got {reply}, expected {want}"
            seen = reply._replace(body=None)
        assert seen == want, f"got {reply}, expected {want}"
