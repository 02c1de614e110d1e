"""Reliable-delivery clients of the load generator: the ``ack`` cap, resume, acks, private chat.

An *ack client* authenticates with ``"caps": ["ack"]`` (and a stable key,
``bench-<mid>``), sends op 20 (resume, body ``{}``: from this device's cursor)
when the Auth reply comes, and is ready when op 21 answers. Every push by mid
then carries the user's stream seq in its header (offset 12). The client walks
its frames like a goim client, de-duplicates by that seq (a repeated or older
seq is counted as *dup* and dropped; a skipped one as *seq gap*), and after each
read that brought anything new sends ONE cumulative ack (op 18, header seq = the
highest seq processed): acks coalesced per read, as a real client would.

It runs in one of two modes:

- **push** (reliable unicast): bodies are the benchmark's 20-byte prefix and are
  checked per stream exactly like goim clients' (:class:`bench.clients.Client`).
- **chat**: the client also sends private messages (op 4 with the JSON body
  ``{"id", "to", "op", "body": [n, sent]}``: ``n`` counts the sender's
  messages from 0, ``sent`` is ``time.monotonic()`` when the frame was written;
  its header seq is ``n + 1``, echoed by the server's acknowledgment). The server
  pushes the envelope ``{"id", "from", "to", "body"}`` to the recipient and to
  the sender's own connection. The recipient's copy goes into the latency
  histogram and is checked per sender -> recipient pair (a seq below the pair's
  highest seen is *reorder*, one seen before is *dup*); the sender's own copies
  come back in its sending order (checked like a stream: gaps, reorder, dup) and
  go into their own histogram. The acknowledgment (op 5 with ``[upstream] ack =
  "only"``, goim's empty echo with ``"none"``) is matched by header seq to its
  send time for the ack latency; a code other than 0 counts as *refused*.

Per-connection state lives in a :class:`Reliable` object with ``__slots__`` (the
goim client classes keep their layout); the counters are an :class:`AckTally`,
a :class:`~bench.tally.Tally` with more fields.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from bench.clients import TcpClient, WsClient
from bench.tally import CAP, RESOLUTION, Tally
from bench.wire import PUSH_OP
from mpim.proto import Op, encode

_RAW = int(Op.RAW)
_AUTH_REPLY = int(Op.AUTH_REPLY)
_SEND_MSG = int(Op.SEND_MSG)
_SEND_MSG_REPLY = int(Op.SEND_MSG_REPLY)
_HEAD = struct.Struct(">i4xii")  # packLen, op, seq
_HEAD_AND_PREFIX = struct.Struct(">i4xiiIqd")  # and the benchmark prefix: stream, seq, sent
HEAD_SIZE = _HEAD.size
FULL_SIZE = _HEAD_AND_PREFIX.size
RESUME = encode(Op.RESUME, b"{}", seq=2)

_monotonic = time.monotonic


def ack_auth_frame(mid: int, room: str = "", accepts: tuple[int, ...] = (PUSH_OP,)) -> bytes:
    """A JSON token asking for the ``ack`` cap, with a stable device key."""
    token = {
        "mid": mid, "key": f"bench-{mid}", "room_id": room, "platform": "bench",
        "accepts": list(accepts), "caps": ["ack"],
    }  # fmt: skip
    return encode(Op.AUTH, json.dumps(token, separators=(",", ":")).encode(), seq=1)


def chat_frame(n: int, to: int, sent: float, op: int = PUSH_OP) -> bytes:
    """Op 4: the sender's ``n``-th private message, to user ``to``, stamped ``sent``."""
    body = b'{"id":"%d","to":%d,"op":%d,"body":[%d,%s]}' % (n, to, op, n, repr(sent).encode())
    return encode(_SEND_MSG, body, seq=n + 1)


def contacts(mid: int, users: int, count: int) -> list[int]:
    """The users ``mid`` writes to: ``count`` others drawn once per mid (0 = anyone: [])."""
    if count <= 0 or users < 2:
        return []
    others = users - 1
    picks = random.Random(mid).sample(range(others), min(count, others))
    return [p + 1 if p + 1 < mid else p + 2 for p in picks]  # 1..users without mid


def recipient(mid: int, users: int, rng: random.Random, known: list[int]) -> int:
    """A random recipient for ``mid``: one of ``known``, or anyone else of the ``users``."""
    if known:
        return known[rng.randrange(len(known))]
    to = rng.randrange(1, users)  # 1..users-1, shifted past mid
    return to + 1 if to >= mid else to


class AckTally(Tally):
    """The goim counters plus acks, resumes, sequence gaps and the chat figures."""

    __slots__ = (
        "ack_hist", "acks", "chat_acked", "chat_refused", "chat_sent", "first_refusal", "own_hist",
        "own_recv", "pair_checked", "peer_seen", "resumes", "seq_dups", "seq_gaps",
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.acks = 0  # op 18 frames sent
        self.resumes = 0  # op 21 received
        self.seq_gaps = 0  # stream seqs skipped in the headers
        self.seq_dups = 0  # frames dropped for a stream seq already seen (also in dup, not in recv)
        self.chat_sent = 0
        self.chat_acked = 0  # acknowledgments with code 0 (or goim's echo)
        self.chat_refused = 0
        self.first_refusal = ""
        self.own_recv = 0  # the sender's own copies (also in recv)
        self.pair_checked = 0  # recipient copies that followed an earlier message of their pair
        self.ack_hist: dict[int, int] = {}
        self.own_hist: dict[int, int] = {}
        self.peer_seen: set[tuple[int, int, int]] = set()  # (recipient, sender, n) of this phase

    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        out.update(
            acks=self.acks, resumes=self.resumes, seq_gaps=self.seq_gaps, seq_dups=self.seq_dups,
            chat_sent=self.chat_sent, chat_acked=self.chat_acked, chat_refused=self.chat_refused,
            own_recv=self.own_recv, pair_checked=self.pair_checked, first_refusal=self.first_refusal,
        )  # fmt: skip
        return out

    def report(self) -> dict[str, Any]:
        out = super().report()
        out["ack_hist"] = {str(i): n for i, n in self.ack_hist.items()}
        out["own_hist"] = {str(i): n for i, n in self.own_hist.items()}
        return out


def bucket(seconds: float) -> int:
    i = int(seconds * RESOLUTION)
    return i if i < CAP else CAP


class Reliable:
    """One ack client's protocol state (composed into :class:`AckTcpClient` / :class:`AckWsClient`)."""

    __slots__ = ("acked", "chat", "epoch", "peer_last", "pending", "resumed", "sent", "top")

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.resumed = False
        self.epoch = ""
        self.top = 0  # highest stream seq processed
        self.acked = 0  # highest seq acked
        self.sent = 0  # private messages sent
        self.pending: dict[int, float] = {}  # header seq of an unanswered op 4 -> its send time
        self.peer_last: dict[int, int] = {}  # sender mid -> highest n received from it

    def walk(self, client: AckClient, buf: bytes, pos: int, end: int, now: float) -> int:
        """Account the frames in ``buf[pos:end]``; returns where an incomplete frame starts."""
        tally: AckTally = client.tally
        count = 0
        while end - pos >= HEAD_SIZE:
            size, op, seq = _HEAD.unpack_from(buf, pos)
            if op == _RAW:  # a WebSocket batch: step into the outer header
                pos += HEAD_SIZE
                continue
            if size < HEAD_SIZE:
                raise ValueError(f"packLen {size} from the server")
            if pos + size > end:
                break
            if op == PUSH_OP:
                if seq > 0:
                    top = self.top
                    if seq <= top:  # de-duplicated by seq, as a real client does
                        tally.dup += 1
                        tally.seq_dups += 1
                        pos += size
                        continue
                    if seq > top + 1:
                        tally.seq_gaps += seq - top - 1
                    self.top = seq
                count += 1
                if self.chat:
                    self.delivered(client, tally, buf[pos + HEAD_SIZE : pos + size], now)
                elif size >= FULL_SIZE:
                    _, _, _, target, n, sent = _HEAD_AND_PREFIX.unpack_from(buf, pos)
                    self.streamed(client, tally, target, n, now - sent)
            elif op == _AUTH_REPLY:
                client.send_frame(RESUME)
            elif op == Op.RESUMED:
                self.on_resumed(client, tally, buf[pos + HEAD_SIZE : pos + size])
            elif op == _SEND_MSG_REPLY or (op == _SEND_MSG and size == HEAD_SIZE):
                self.answered(tally, seq, buf[pos + HEAD_SIZE : pos + size], now)
            else:
                client.control(op)
            pos += size
        tally.recv += count
        return pos

    # -- what arrives ----------------------------------------------------------------------
    def streamed(self, client: AckClient, tally: AckTally, target: int, n: int, latency: float) -> None:
        """A reliable unicast push: the same per-stream check as a goim client's."""
        if target == client.stream:
            if n == client.next:
                client.next = n + 1
            else:
                client.irregular(n)
            tally.hist[bucket(latency)] += 1
        else:
            tally.misdelivered += 1

    def delivered(self, client: AckClient, tally: AckTally, body: bytes, now: float) -> None:
        """A private message: the recipient's copy, or the sender's own copy."""
        try:
            env = json.loads(body)
            sender, to = int(env["from"]), int(env["to"])
            n, sent = int(env["body"][0]), float(env["body"][1])
        except (ValueError, KeyError, IndexError, TypeError):
            tally.misdelivered += 1
            return
        mid = client.mid
        if sender == mid:  # our own copy, in sending order
            tally.own_recv += 1
            b = bucket(now - sent)
            tally.own_hist[b] = tally.own_hist.get(b, 0) + 1
            if n == client.next:
                client.next = n + 1
            else:
                client.irregular(n)
            return
        if to != mid:
            tally.misdelivered += 1
            return
        tally.hist[bucket(now - sent)] += 1
        key = (mid, sender, n)
        seen = tally.peer_seen
        if key in seen:
            tally.dup += 1
            return
        seen.add(key)
        last = self.peer_last.get(sender, -1)
        if last >= 0:
            tally.pair_checked += 1
        if n > last:
            self.peer_last[sender] = n
        else:
            tally.reorder += 1  # an earlier message of this pair came after a later one

    def on_resumed(self, client: AckClient, tally: AckTally, body: bytes) -> None:
        info = json.loads(body)
        self.epoch = str(info.get("epoch", ""))
        self.top = max(self.top, int(info.get("seq", 0)))
        self.acked = max(self.acked, self.top)  # (a fresh device: nothing before it to ack)
        self.resumed = True
        tally.resumes += 1
        if not client.ready.done():
            client.ready.set_result(None)

    def answered(self, tally: AckTally, seq: int, body: bytes, now: float) -> None:
        """Op 5 (or goim's empty echo of op 4) for the message sent with header ``seq``."""
        sent = self.pending.pop(seq, None)
        if sent is None:
            return
        b = bucket(now - sent)
        tally.ack_hist[b] = tally.ack_hist.get(b, 0) + 1
        if not body or b',"code":0,' in body:
            tally.chat_acked += 1
        else:
            tally.chat_refused += 1
            if not tally.first_refusal:
                tally.first_refusal = body[:200].decode(errors="replace")

    # -- what goes out -----------------------------------------------------------------------
    def after_read(self, client: AckClient) -> None:
        """One cumulative ack for everything this read brought."""
        if self.top > self.acked and self.resumed:
            self.acked = self.top
            client.send_frame(encode(Op.ACK, b"", seq=self.top))
            client.tally.acks += 1

    def send_chat(self, client: AckClient, to: int, now: float) -> None:
        n = self.sent
        self.sent = n + 1
        self.pending[n + 1] = now
        client.tally.chat_sent += 1
        client.send_frame(chat_frame(n, to, now))


class AckTcpClient(TcpClient):
    __slots__ = ("rel",)

    tally: AckTally

    def __init__(
        self, tally: AckTally, stream: int, room: str, ready: asyncio.Future[None], mid: int, chat: bool
    ) -> None:
        super().__init__(tally, stream, room, ready, mid)
        self.rel = Reliable(chat)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(ack_auth_frame(self.mid, self.room))

    def walk(self, buf: bytes, pos: int, end: int, now: float) -> int:
        return self.rel.walk(self, buf, pos, end, now)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.rel.after_read(self)

    def chat(self, to: int, now: float) -> None:
        self.rel.send_chat(self, to, now)


class AckWsClient(WsClient):
    __slots__ = ("rel",)

    tally: AckTally

    def __init__(
        self,
        tally: AckTally,
        stream: int,
        room: str,
        ready: asyncio.Future[None],
        mid: int,
        url: str,
        chat: bool,
    ) -> None:
        super().__init__(tally, stream, room, ready, mid, url)
        self.rel = Reliable(chat)

    def opened(self) -> None:
        self.ws.send_binary(ack_auth_frame(self.mid, self.room))

    def walk(self, buf: bytes, pos: int, end: int, now: float) -> int:
        return self.rel.walk(self, buf, pos, end, now)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.rel.after_read(self)

    def chat(self, to: int, now: float) -> None:
        self.rel.send_chat(self, to, now)


AckClient = AckTcpClient | AckWsClient


class Chatter(Protocol):
    """A chat client of :func:`chat_loop`: an ack client, or a go-zero one (:mod:`bench.gzclients`)."""

    transport: Any
    mid: int

    def chat(self, to: int, now: float) -> None: ...


async def chat_loop(
    clients: Sequence[Chatter],
    rate: float,
    duration: float,
    users: int,
    contact_count: int,
    seed: int,
    tick: float = 0.002,
) -> dict[str, Any]:
    """Send ``rate`` private messages per second for ``duration`` s from random ``clients``.

    Each message goes from a random client (one still open) to a random other
    user of ``users`` (or one of the sender's ``contact_count`` contacts).
    Returns ``{"sent", "skipped", "seconds"}`` (skipped: the chosen sender was closed;
    the close itself is counted in ``closed``).
    """
    rng = random.Random(seed)
    known: dict[int, list[int]] = {}
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + duration
    n = sent = 0
    while clients:
        now = loop.time()
        if now >= end:
            break
        due = int((now - start) * rate) + 1
        while n < due:
            n += 1
            client = clients[rng.randrange(len(clients))]
            if client.transport is None:
                continue
            mid = client.mid
            if mid not in known:
                known[mid] = contacts(mid, users, contact_count)
            client.chat(recipient(mid, users, rng, known[mid]), _monotonic())
            sent += 1
        await asyncio.sleep(tick)
    return {"sent": sent, "skipped": n - sent, "seconds": loop.time() - start}


def merge_named_hist(reports: Iterable[Mapping[str, Any]], key: str) -> dict[int, int]:
    """Add the histograms under ``key`` of every generator's report."""
    hist: dict[int, int] = {}
    for report in reports:
        for b, n in report.get(key, {}).items():
            hist[int(b)] = hist.get(int(b), 0) + int(n)
    return hist


def ack_client(
    kind: str,
    tally: AckTally,
    stream: int,
    room: str,
    ready: asyncio.Future[None],
    mid: int,
    url: str,
    chat: bool,
) -> AckClient:
    """An ack client over ``kind`` ("tcp" or "ws"; ``url`` is the WebSocket's)."""
    if kind == "tcp":
        return AckTcpClient(tally, stream, room, ready, mid, chat)
    if kind == "ws":
        return AckWsClient(tally, stream, room, ready, mid, url, chat)
    raise ValueError(f"ack clients speak tcp or ws, not {kind!r}")
