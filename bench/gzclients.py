"""go-zero chat clients of the load generator: JSON text frames on mpim's ``[gozero] path``.

The go-zero twin of :mod:`bench.ackclients`' chat clients, with the same
counters (:class:`~bench.ackclients.AckTally`) and the same checks. A client
connects with goim's JSON token in ``?token=`` (json auth), is ready once
upgraded, and sends ``{"frameType": 0, "id": "<n>", "method":
"conversation.chat", "data": {"recvId", "msg": {"mType": 0, "content": "<n>
<sent>"}}}``: ``n`` counts its messages from 0, ``sent`` is ``time.monotonic()``
when it was written. The server pushes the message to the recipient and back to
the sender as ``{"frameType": 0, "method": "push", "ackSeq": <stream seq>,
"formId": <sender>, "data": {"sendId", "recvId", "msg": {"content"}, ...}}``;
copies are de-duplicated by ``ackSeq`` and checked like a goim ack client's
(recipient copies per sender -> recipient pair, own copies in sending order),
and after each read that brought something new the client sends one cumulative
ack ``{"frameType": 2, "method": "push", "ackSeq": <highest>}``. The server's
ack of a message (``{"frameType": 2, "id": "<n>", "ackSeq": 1}`` with
``[upstream] ack = "only"``; none with ``"none"``, where the message counts as
acked when sent) gives the ack latency; an error frame counts as *refused*.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from typing import Any

from bench.ackclients import AckTally, bucket
from bench.clients import WsClient

_monotonic = time.monotonic
_PUSH, _ACK, _ERROR = 0, 2, 9


def gozero_url(port: int, path: str, mid: int, host: str = "127.0.0.1") -> str:
    token = urllib.parse.quote(json.dumps({"mid": mid}, separators=(",", ":")))
    return f"ws://{host}:{port}{path}?token={token}"


class GzChatClient(WsClient):
    """One go-zero chat user: a WebSocket client walking JSON frames."""

    __slots__ = ("acked", "noack", "peer_last", "pending", "sent", "top")

    tally: AckTally

    def __init__(
        self, tally: AckTally, stream: int, ready: asyncio.Future[None], mid: int, url: str, noack: bool
    ) -> None:
        super().__init__(tally, stream, "", ready, mid, url)
        self.noack = noack  # [upstream] ack = "none": no ack frames come
        self.top = 0  # highest stream seq processed
        self.acked = 0  # highest seq acked
        self.sent = 0  # messages sent
        self.pending: dict[str, float] = {}  # id of an unacked message -> its send time
        self.peer_last: dict[int, int] = {}  # sender -> highest n received from it

    def opened(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def message(self, buf: bytes, start: int, end: int, now: float) -> None:
        try:
            frame: dict[str, Any] = json.loads(buf[start:end])
        except ValueError:
            self.tally.misdelivered += 1
            return
        kind = frame.get("frameType")
        if kind == _PUSH and frame.get("method") == "push":
            self.pushed(frame, now)
        elif kind == _ACK:
            self.answered(frame["id"], now, "")
        elif kind == _ERROR:
            self.answered(frame["id"], now, str(frame.get("data")))

    def pushed(self, frame: dict[str, Any], now: float) -> None:
        tally = self.tally
        seq = int(frame["ackSeq"])
        if seq > 0:
            if seq <= self.top:  # de-duplicated by seq, as a real client does
                tally.dup += 1
                tally.seq_dups += 1
                return
            if seq > self.top + 1:
                tally.seq_gaps += seq - self.top - 1
            self.top = seq
        tally.recv += 1
        try:
            data = frame["data"]
            sender, to = int(data["sendId"]), int(data["recvId"])
            n_text, sent_text = str(data["msg"]["content"]).split(" ")
            n, sent = int(n_text), float(sent_text)
        except (ValueError, KeyError, TypeError):
            tally.misdelivered += 1
            return
        if sender == self.mid:  # our own copy, in sending order
            tally.own_recv += 1
            b = bucket(now - sent)
            tally.own_hist[b] = tally.own_hist.get(b, 0) + 1
            if n == self.next:
                self.next = n + 1
            else:
                self.irregular(n)
            return
        if to != self.mid:
            tally.misdelivered += 1
            return
        tally.hist[bucket(now - sent)] += 1
        key = (self.mid, sender, n)
        if key in tally.peer_seen:
            tally.dup += 1
            return
        tally.peer_seen.add(key)
        last = self.peer_last.get(sender, -1)
        if last >= 0:
            tally.pair_checked += 1
        if n > last:
            self.peer_last[sender] = n
        else:
            tally.reorder += 1

    def answered(self, msg_id: str, now: float, refusal: str) -> None:
        sent = self.pending.pop(msg_id, None)
        if sent is None:
            return
        tally = self.tally
        b = bucket(now - sent)
        tally.ack_hist[b] = tally.ack_hist.get(b, 0) + 1
        if refusal:
            tally.chat_refused += 1
            if not tally.first_refusal:
                tally.first_refusal = refusal[:200]
        else:
            tally.chat_acked += 1

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.top > self.acked and self.upgraded:  # one cumulative ack per read
            self.acked = self.top
            self.send_text(b'{"frameType":2,"method":"push","ackSeq":%d}' % self.top)
            self.tally.acks += 1

    def send_text(self, text: bytes) -> None:
        if self.transport is not None:
            self.ws.send_text(text)
            self.flush()

    def chat(self, to: int, now: float) -> None:
        n = self.sent
        self.sent = n + 1
        self.tally.chat_sent += 1
        if self.noack:
            self.tally.chat_acked += 1  # (nothing will answer it: taken as accepted, like goim's echo)
        else:
            self.pending[str(n)] = now
        self.send_text(
            b'{"frameType":0,"id":"%d","method":"conversation.chat","data":{"recvId":%d,'
            b'"msg":{"mType":0,"content":"%d %s"}}}' % (n, to, n, repr(now).encode())
        )
