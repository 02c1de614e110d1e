from __future__ import annotations

import asyncio
from typing import Any

from mpim import bus
from mpim.router.main import Outbox


class FakePub:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes, flags: int = 0) -> None:
        self.sent.append(data)


def test_one_message_per_topic_per_loop_turn_in_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        pub = FakePub()
        box = Outbox(loop, pub, limit=100)  # type: ignore[arg-type]
        room, other = bus.room_topic("r://1"), bus.worker_topic("w")
        for i in range(3):
            box.publish(room, bus.push_room(1, b"%d" % i))
        box.publish(other, bus.push_keys(1, ["k"], b"x"))
        assert pub.sent == []
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert [bus.split(m)[0] for m in pub.sent] == [room, other]
        assert [e[2] for e in bus.unpack_all(bus.split(pub.sent[0])[1])] == [b"0", b"1", b"2"]
    finally:
        loop.close()


def test_a_topic_over_the_limit_is_sent_at_once() -> None:
    loop = asyncio.new_event_loop()
    try:
        pub = FakePub()
        box = Outbox(loop, pub, limit=100)  # type: ignore[arg-type]
        topic = bus.room_topic("big")
        box.publish(topic, bus.push_room(1, b"x" * 60))
        box.publish(topic, bus.push_room(1, b"y" * 60))
        assert len(pub.sent) == 1  # 120 bytes >= 100: out now
        box.publish(topic, bus.push_room(1, b"z"))
        loop.call_soon(loop.stop)
        loop.run_forever()
        bodies: list[Any] = [e[2] for m in pub.sent for e in bus.unpack_all(bus.split(m)[1])]
        assert bodies == [b"x" * 60, b"y" * 60, b"z"]
    finally:
        loop.close()
