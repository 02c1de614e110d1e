"""The go-zero bench client's pure parts: its frames are what the server parses, copies are
de-duplicated by ackSeq and checked like an ack client's, one cumulative ack per read."""

from __future__ import annotations

import asyncio
import json
import urllib.parse

from bench.ackclients import AckTally
from bench.gzclients import GzChatClient, gozero_url
from mpim.gozero.chat import chat_body
from mpim.gozero.frames import decode
from mpim.gozero.push import push_frame
from mpim.router.streams import envelope
from mpim.worker.wsframe import text_frame


class Sink:
    """The transport: what the client wrote, unmasked by the test's own parse."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


class Recorded(GzChatClient):
    """The client, its text frames kept as they are (before the library masks them)."""

    __slots__ = ("texts",)

    def send_text(self, text: bytes) -> None:
        self.texts.append(text)


def opened(mid: int = 4, noack: bool = False) -> tuple[Recorded, list[bytes], asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[None] = loop.create_future()
    me = Recorded(AckTally(), mid - 1, ready, mid, gozero_url(1, "/ws", mid), noack)
    me.texts = []
    me.transport = Sink()
    me.upgraded = True
    me.opened()
    return me, me.texts, loop


def copy(seq: int, sender: int, n: int, to: int = 4, sent: float = 1.0) -> bytes:
    _, body = chat_body({"recvId": to, "msg": {"mType": 0, "content": f"{n} {sent!r}"}}, sender, 0)
    return text_frame(push_frame(1000, seq, envelope(str(n), sender, to, json.loads(body)), 0))


def test_the_url_carries_goims_json_token() -> None:
    url = gozero_url(3102, "/ws", 7)
    assert json.loads(urllib.parse.unquote(url.split("token=")[1])) == {"mid": 7}


def test_a_chat_frame_is_what_the_server_parses() -> None:
    me, texts, loop = opened()
    try:
        me.chat(9, 12.5)
        frame = decode(texts[0])
        assert (frame.frame_type, frame.id, frame.method) == (0, "0", "conversation.chat")
        to, body = chat_body(frame.data, 4, 0)
        assert (to, json.loads(body)["msg"]["content"]) == (9, "0 12.5")
    finally:
        loop.close()


def test_copies_acks_refusals_and_order() -> None:
    me, texts, loop = opened()
    try:
        me.chat(9, 1.0)
        me.chat(9, 2.0)
        ack = text_frame(b'{"frameType":2,"id":"0","ackSeq":1,"method":"","formId":"","data":null}')
        error = text_frame(
            b'{"frameType":9,"id":"1","ackSeq":0,"method":"","formId":"","data":"full","code":-429}'
        )
        me.data_received(ack + copy(1, 4, 0, to=9) + error)
        t = me.tally
        assert (t.chat_sent, t.chat_acked, t.chat_refused, t.own_recv, t.recv) == (2, 1, 1, 1, 1)
        assert t.first_refusal == "full" and sum(t.ack_hist.values()) == 2
        assert json.loads(texts[-1]) == {"frameType": 2, "method": "push", "ackSeq": 1}
        me.data_received(copy(2, 7, 0) + copy(3, 7, 2) + copy(4, 7, 1) + copy(4, 7, 1) + copy(6, 8, 0))
        assert (t.recv, t.reorder, t.dup, t.seq_dups, t.seq_gaps, t.pair_checked) == (5, 1, 1, 1, 1, 2)
        assert json.loads(texts[-1])["ackSeq"] == 6 and t.acks == 2
        me.data_received(copy(7, 8, 1, to=5))  # neither from nor to me
        assert t.misdelivered == 1
    finally:
        loop.close()


def test_nothing_acks_a_message_in_mode_none() -> None:
    me, _, loop = opened(noack=True)
    try:
        me.chat(2, 0.0)
        assert (me.tally.chat_acked, me.pending) == (1, {})
    finally:
        loop.close()
