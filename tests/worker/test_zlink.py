"""The worker's ZeroMQ link without a router: deliveries and reports, driven directly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpim import bus, config
from mpim.runtime import Endpoints
from mpim.worker.zlink import ZmqLink


class FakeRoom:
    def __init__(self, room_id: str, members: int) -> None:
        self.id = room_id
        self.members = [object()] * members


class FakeHub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.calls: list[tuple[Any, ...]] = []
        self.rooms: list[FakeRoom] = []
        self.buckets: list[list[Any]] = []
        self.online = 0

    def push_keys(self, keys: list[str], op: int, body: bytes) -> int:
        self.calls.append(("keys", keys, op, body))
        return len(keys)

    def push_room(self, room_id: str, op: int, body: bytes) -> bool:
        self.calls.append(("room", room_id, op, body))
        return True

    def push_all(self, op: int, body: bytes, speed: int = 0) -> None:
        self.calls.append(("all", op, body, speed))

    def set_room_online(self, counts: dict[str, int]) -> None:
        self.calls.append(("online", counts))


@pytest.fixture
def link(tmp_path: Path) -> Iterator[tuple[ZmqLink, FakeHub]]:
    loop = asyncio.new_event_loop()
    link = ZmqLink(config.Config(), Endpoints.in_dir(str(tmp_path)), "3")
    hub = FakeHub(loop)
    link.hub = hub  # type: ignore[assignment]
    link.loop = loop
    sent: list[Any] = []
    link.report = type("R", (), {"send": lambda self, data, flags=0: sent.append(bus.unpack(data))})()  # type: ignore[assignment]
    hub.sent = sent  # type: ignore[attr-defined]
    try:
        yield link, hub
    finally:
        link.sub.close(linger=0)
        link.ctx.destroy(linger=0)
        loop.close()


def test_deliveries_reach_the_hub(link: tuple[ZmqLink, FakeHub]) -> None:
    zl, hub = link
    zl._on_message(bus.room_topic("live://1") + bus.push_room(1000, b"a") + bus.push_room(1001, b"b"))
    zl._on_message(bus.worker_topic(zl.id) + bus.push_keys(1000, ["k1", "k2"], b"c"))
    zl._on_message(bus.BROADCAST + bus.push_all(1000, 5, b"d"))
    zl._on_message(bus.CONTROL + bus.status(zl.router_epoch, {"live://1": 9}))
    assert hub.calls == [
        ("room", "live://1", 1000, b"a"),
        ("room", "live://1", 1001, b"b"),
        ("keys", ["k1", "k2"], 1000, b"c"),
        ("all", 1000, b"d", 5),
        ("online", {"live://1": 9}),
    ]


def test_a_new_router_epoch_sends_every_session(link: tuple[ZmqLink, FakeHub]) -> None:
    zl, hub = link
    zl._on_message(bus.CONTROL + bus.status(42, None))
    zl._flush()
    [report] = hub.sent  # type: ignore[attr-defined]
    assert report[:3] == [zl.host, "3", zl.pid]
    assert report[3] == [[bus.EV_SYNC, 42, []]]
    assert zl.epoch == 42


def test_the_name_drops_a_redundant_pid(tmp_path: Path) -> None:
    import os

    zl = ZmqLink(config.Config(), Endpoints.in_dir(str(tmp_path)), f"2.{os.getpid()}")
    try:
        assert zl.name == "2" and zl.id.endswith(f"/2/{os.getpid()}")
    finally:
        zl.report.close(linger=0)
        zl.sub.close(linger=0)
        zl.ctx.destroy(linger=0)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"x-unknown-topic",
        bus.BROADCAST + b"\xc1",
        bus.BROADCAST + bus.pack([99, 1]),
        bus.BROADCAST + bus.pack("not a list"),
        bus.room_topic("r") + bus.pack([bus.PUSH_ROOM]),
        bus.BROADCAST + bus.push_all(1, 0, b"ok") + b"\x92",
    ],
)
def test_malformed_bus_messages_are_counted_and_ignored(
    link: tuple[ZmqLink, FakeHub], message: bytes
) -> None:
    zl, hub = link
    zl._on_message(message)
    assert zl.stats["bad_messages"] == 1
    zl._on_message(bus.BROADCAST + bus.push_all(1, 0, b"still works"))
    assert hub.calls[-1] == ("all", 1, b"still works", 0)
