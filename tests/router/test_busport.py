"""The router's bus port: one message per topic per loop turn, a mark at the end, fences read back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from mpim import bus, records
from mpim.records import BusFence, Mark, PushRoom
from mpim.router.busport import BusPort

_decode = records.Decoder(list[records.BusRecord])


class Port:
    def __init__(self, loop: asyncio.AbstractEventLoop, ctx: zmq.Context[Any]) -> None:
        self.loop = loop
        self.sock = ctx.socket(zmq.XPUB)
        self.fences: list[tuple[str, int]] = []
        self.changes: list[bool] = []
        self.port = BusPort(
            loop, self.sock, lambda w, f: self.fences.append((w, f)), self.changes.append, limit=100
        )
        self.sent: list[bytes] = []
        self.port._send = lambda data, flags=0: self.sent.append(data)  # type: ignore[method-assign]

    def turn(self) -> None:
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()

    def messages(self) -> list[tuple[bytes, list[Any]]]:
        out = []
        for message in self.sent:
            topic, payload = bus.split(message)
            out.append((topic, _decode(payload)))
        return out


@pytest.fixture
def port() -> Iterator[Port]:
    loop = asyncio.new_event_loop()
    ctx: zmq.Context[Any] = zmq.Context()
    p = Port(loop, ctx)
    try:
        yield p
    finally:
        p.port.close()
        p.sock.close(linger=0)
        ctx.destroy(linger=0)
        loop.close()


def test_one_message_per_topic_per_loop_turn_in_order_then_the_mark(port: Port) -> None:
    room, other = bus.room_topic("r://1"), bus.room_topic("r://2")
    for i in range(3):
        port.port.publish(room, records.encode(PushRoom(1, b"%d" % i)))
    port.port.publish(other, records.encode(PushRoom(1, b"x")))
    first = port.port.mark()
    assert first == port.port.first_mark
    assert port.sent == []
    port.turn()
    assert port.messages() == [
        (room, [PushRoom(1, b"0"), PushRoom(1, b"1"), PushRoom(1, b"2")]),
        (other, [PushRoom(1, b"x")]),
        (bus.BROADCAST, [Mark(first)]),
    ]
    port.port.publish(room, records.encode(PushRoom(1, b"y")))
    port.turn()
    assert port.messages()[-1] == (room, [PushRoom(1, b"y")])  # no mark asked, none sent
    assert port.port.mark() == first + 1


def test_a_new_port_numbers_its_marks_above_every_mark_an_earlier_one_sent(port: Port) -> None:
    """A worker ignores marks below the highest it saw: a restarted router's must be higher."""
    for _ in range(1000):
        port.port.mark()
        port.turn()
    last = port.messages()[-1][1][-1]
    assert isinstance(last, Mark)
    ctx: zmq.Context[Any] = zmq.Context()
    again = Port(port.loop, ctx)
    try:
        assert again.port.mark() > last.mark
    finally:
        again.port.close()
        again.sock.close(linger=0)
        ctx.destroy(linger=0)


def test_a_topic_over_the_limit_is_sent_at_once(port: Port) -> None:
    topic = bus.room_topic("big")
    port.port.publish(topic, records.encode(PushRoom(1, b"x" * 60)))
    port.port.publish(topic, records.encode(PushRoom(1, b"y" * 60)))
    assert len(port.sent) == 1  # 120 bytes >= 100: out now
    port.port.publish(topic, records.encode(PushRoom(1, b"z")))
    port.turn()
    assert [r.body for _, batch in port.messages() for r in batch] == [b"x" * 60, b"y" * 60, b"z"]


def test_upstream_fences_are_read_and_subscriptions_and_garbage_ignored(port: Port) -> None:
    port.port._upstream(bus.SUBSCRIBE + bus.room_topic("r://1"))
    port.port._upstream(records.encode(BusFence("h/1/2", 7)))
    port.port._upstream(b"\x92garbage")
    assert port.fences == [("h/1/2", 7)] and port.port.stats["bad_fences"] == 1


def test_connection_events_change_the_state_once(port: Port) -> None:
    port.port._event({"event": zmq.EVENT_HANDSHAKE_SUCCEEDED})
    port.port._event({"event": zmq.EVENT_HANDSHAKE_SUCCEEDED})
    port.port._event({"event": zmq.EVENT_DISCONNECTED})
    assert port.changes == [True, False] and not port.port.connected


def test_a_shards_marks_say_whose_they_are_and_one_shard_sends_the_bytes_of_old() -> None:
    loop = asyncio.new_event_loop()
    ctx: zmq.Context[Any] = zmq.Context()
    ports = [Port(loop, ctx) for _ in range(2)]
    ports[1].port.shard = 1
    try:
        for p in ports:
            p.port.mark()
        ports[0].turn()
        (_, [mark0]), (_, [mark1]) = ports[0].messages()[-1], ports[1].messages()[-1]
        assert isinstance(mark0, Mark) and isinstance(mark1, Mark)
        assert (mark0.shard, mark1.shard) == (0, 1)
        assert ports[0].sent[-1].endswith(records.encode(Mark(mark0.mark)))  # (shard 0: as before shards)
        assert records.encode(Mark(5)) == records.encode(Mark(5, 0)) != records.encode(Mark(5, 1))
    finally:
        for p in ports:
            p.port.close()
            p.sock.close(linger=0)
        ctx.destroy(linger=0)
        loop.close()
