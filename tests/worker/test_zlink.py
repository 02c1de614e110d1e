"""The worker's host link without a router: records and bus messages driven directly."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from mpim import bus, config, records
from mpim.records import (
    BusSeen,
    Chat,
    ChatAck,
    Confirmed,
    Connect,
    Denied,
    Entry,
    FenceRequest,
    Hello,
    Kick,
    Mark,
    PushAll,
    PushKeys,
    PushMids,
    PushRoom,
    Resume,
    Resync,
    RoomChange,
    RoomCounts,
    Sync,
)
from mpim.runtime import Endpoints
from mpim.worker.zlink import HostLink

_decode = records.Decoder(records.WorkerRecord)


class FakeTargets:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.online = 0
        self.sessions: list[Entry] = []
        self.rooms: dict[str, int] = {}

    # SessionTarget
    def confirmed(self, channel: Any) -> None:
        self.calls.append(("confirmed", channel))

    def kick(self, keys: list[str]) -> None:
        self.calls.append(("kick", keys))

    def lost(self, channel: Any, why: str) -> None:
        self.calls.append(("lost", channel))

    def denied(self, channel: Any, reason: str) -> None:
        self.calls.append(("denied", channel, reason))

    def entries(self) -> list[Entry]:
        return list(self.sessions)

    # DeliveryTarget
    def push_keys(self, op: int, keys: list[str], body: bytes, at: float = 0.0) -> int:
        self.calls.append(("keys", op, keys, body))
        return len(keys)

    def push_mids(self, op: int, keys: list[str], seqs: Iterable[int], body: bytes, at: float = 0.0) -> int:
        self.calls.append(("mids", op, keys, body, list(seqs)))
        return len(keys)

    def push_room(self, op: int, room_id: str, body: bytes, at: float = 0.0) -> bool:
        self.calls.append(("room", op, room_id, body))
        return True

    def push_all(self, op: int, speed: int, body: bytes, at: float = 0.0) -> None:
        self.calls.append(("all", op, speed, body))

    def set_room_online(self, counts: dict[str, int]) -> None:
        self.calls.append(("online", counts))

    # RoomCounter
    def local_counts(self) -> dict[str, int]:
        return dict(self.rooms)

    def counters(self) -> dict[str, int]:
        return {}


class FakeConn:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.closed = False

    def send(self, record: bytes) -> None:
        self.sent.append(_decode(record))

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[Any]:
        out, self.sent = self.sent, []
        return out


class Channel:
    def __init__(self, key: str, mid: int = 1) -> None:
        self.key = key
        self.mid = mid


def bus_message(topic: bytes, *recs: Any) -> bytes:
    return topic + records.array([records.encode(r) for r in recs])


def with_link(tmp_path: Path, scenario: Callable[[HostLink, FakeTargets, FakeConn], Awaitable[None]]) -> None:
    async def main() -> None:
        link = HostLink(config.Config(), Endpoints.in_dir(str(tmp_path)), "3")
        targets = FakeTargets()
        link.attach(targets, targets, targets)  # type: ignore[arg-type]
        conn = FakeConn()
        link.router.conn = conn  # type: ignore[assignment]
        try:
            await scenario(link, targets, conn)
        finally:
            await link.close()

    asyncio.run(main())


def test_deliveries_reach_the_targets(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conn: FakeConn) -> None:
        link.bus.on_message(
            bus_message(bus.room_topic("live://1"), PushRoom(1000, b"a"), PushRoom(1001, b"b"))
        )
        link.bus.on_message(bus_message(bus.BROADCAST, PushAll(1000, 5, b"d")))
        link.router.on_record(PushKeys(1000, ["k1", "k2"], b"c"))
        link.router.on_record(PushMids(1000, ["k1", "k3"], [4, 9], b"m"))
        link.router.on_record(RoomCounts({"live://1": 9}))
        link.router.on_record(Kick(["old"]))
        assert t.calls == [
            ("room", 1000, "live://1", b"a"),
            ("room", 1001, "live://1", b"b"),
            ("all", 1000, 5, b"d"),
            ("keys", 1000, ["k1", "k2"], b"c"),
            ("mids", 1000, ["k1", "k3"], b"m", [4, 9]),
            ("online", {"live://1": 9}),
            ("kick", ["old"]),
        ]

    with_link(tmp_path, scenario)


def test_a_denied_registration_reaches_the_sessions_once(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conn: FakeConn) -> None:
        mine, theirs = Channel("a", 2), Channel("b", 3)
        link.register(mine, "", "1.2.3.4")  # type: ignore[arg-type]
        link.register(theirs, "", "1.2.3.4")  # type: ignore[arg-type]
        link.router.on_record(Denied([1], "key 'a' is held by another user (mid 1)"))
        link.router.on_record(Confirmed([1, 2]))  # a late answer for a denied request changes nothing
        assert t.calls == [("denied", mine, "key 'a' is held by another user (mid 1)"), ("confirmed", theirs)]
        link.router.on_record(Denied([99], "unknown request"))  # ignored
        assert len(t.calls) == 2

    with_link(tmp_path, scenario)


def test_marks_are_reported_once_per_loop_turn(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conn: FakeConn) -> None:
        link.bus.on_message(bus_message(bus.BROADCAST, Mark(1)))
        link.bus.on_message(bus_message(bus.BROADCAST, Mark(2)))
        await asyncio.sleep(0)
        assert conn.take() == [BusSeen(2)]
        await asyncio.sleep(0)
        assert conn.take() == []

    with_link(tmp_path, scenario)


def test_a_new_room_makes_the_registration_wait_for_its_fence(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conn: FakeConn) -> None:
        first, second, third = Channel("a"), Channel("b"), Channel("c")
        link.room_opened("live://new")
        link.register(first, "live://new", "1.2.3.4")  # type: ignore[arg-type]
        link.register(second, "", "1.2.3.4")  # type: ignore[arg-type]
        assert conn.take() == [
            Connect(1, "a", 1, "live://new", "1.2.3.4", 1),
            Connect(2, "b", 1, "", "1.2.3.4"),
        ]
        link.router.on_record(Confirmed([1, 2]))
        assert t.calls == [("confirmed", first), ("confirmed", second)]
        link.change_room(third, "live://new")  # type: ignore[arg-type]
        assert conn.take() == [RoomChange(3, "c", "live://new", 0)]  # the router has seen its fence

    with_link(tmp_path, scenario)


def test_a_cancelled_request_is_not_confirmed(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conn: FakeConn) -> None:
        gone = Channel("g")
        link.register(gone, "", "ip")  # type: ignore[arg-type]
        link.cancel(gone)  # type: ignore[arg-type]
        link.router.on_record(Confirmed([1]))
        assert t.calls == []

    with_link(tmp_path, scenario)


@pytest.mark.parametrize("now", [0.0, 1.0, 1e6])
def test_the_first_report_carries_the_room_counts_whatever_the_clock_reads(
    tmp_path: Path, now: float
) -> None:
    """A worker started right after boot (loop time below the online interval) reports its rooms
    at once, as one started later does; the next reports within the interval leave them out."""

    async def scenario(link: HostLink, t: FakeTargets, conn: FakeConn) -> None:
        t.rooms = {"live://1": 2}
        loop = asyncio.get_running_loop()
        clock = [now]
        loop.time = lambda: clock[0]  # type: ignore[method-assign]
        try:
            for _ in range(2):  # two reports, as their timer would run them
                assert link.router.reports._alive_handle is not None
                link.router.reports._alive_handle.cancel()
                link.router.reports._alive()
                clock[0] += link.cfg.router.report_interval
        finally:
            del loop.time  # the loop's own clock again
        first, second = conn.take()
        assert (first.rooms, second.rooms) == ({"live://1": 2}, None)

    with_link(tmp_path, scenario)


def test_greeting_sends_hello_sessions_and_waiting_requests(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conn: FakeConn) -> None:
        t.sessions = [Entry("s", 5, "", "ip")]
        link.register(Channel("w"), "", "ip")  # type: ignore[arg-type]
        fresh = FakeConn()
        link.router.conn = fresh  # type: ignore[assignment]
        link.router._greet(fresh)  # type: ignore[arg-type]
        assert fresh.take() == [
            Hello(link.host, "3", os.getpid()),
            Sync([Entry("s", 5, "", "ip")]),
            Connect(1, "w", 1, "", "ip"),
        ]
        link.router.on_record(Resync())
        assert fresh.take() == [Sync([Entry("s", 5, "", "ip")])]
        link.router.on_record(FenceRequest())  # answered on the bus, not on the link
        assert fresh.take() == []

    with_link(tmp_path, scenario)


def test_the_name_drops_a_redundant_pid(tmp_path: Path) -> None:
    link = HostLink(config.Config(), Endpoints.in_dir(str(tmp_path)), f"2.{os.getpid()}")
    try:
        assert link.name == "2" and link.id.endswith(f"/2/{os.getpid()}")
    finally:
        link.bus.close()


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"x-unknown-topic",
        bus.BROADCAST + b"\xc1",
        bus.BROADCAST + records.array([b"\x92\x63\x01"]),
        bus.BROADCAST + b"\xa3not",
        bus.room_topic("r") + records.array([b"\x91\x28"]),
        bus_message(bus.BROADCAST, PushAll(1, 0, b"ok")) + b"\x92",
    ],
)
def test_malformed_bus_messages_are_counted_and_ignored(tmp_path: Path, message: bytes) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conn: FakeConn) -> None:
        link.bus.on_message(message)
        assert link.stats["bad_messages"] == 1
        link.bus.on_message(bus_message(bus.BROADCAST, PushAll(1, 0, b"still works")))
        assert t.calls[-1] == ("all", 1, 0, b"still works")

    with_link(tmp_path, scenario)


# -- calls that wait for the router: every one gets an answer -----------------------------------------


def quick(tmp_path: Path) -> HostLink:
    cfg = config.replace(config.Config(), upstream={"timeout": 0.1})
    return HostLink(cfg, Endpoints.in_dir(str(tmp_path)), "3")


def with_quick_link(
    tmp_path: Path, scenario: Callable[[HostLink, FakeTargets, FakeConn], Awaitable[None]]
) -> None:
    async def main() -> None:
        link = quick(tmp_path)
        targets = FakeTargets()
        link.attach(targets, targets, targets)  # type: ignore[arg-type]
        conn = FakeConn()
        link.router.conn = conn  # type: ignore[assignment]
        try:
            await scenario(link, targets, conn)
        finally:
            await link.close()

    asyncio.run(main())


class Open(Channel):
    state = 2  # (not CLOSED)


def test_a_message_while_the_router_is_unreachable_is_refused_at_once(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conn: FakeConn) -> None:
        link.router.conn = None
        answers: list[ChatAck] = []
        link.chat(Open("a"), 1000, b"{}", "m1", 5, answers.append)  # type: ignore[arg-type]
        assert [(a.code, "same id" in a.message) for a in answers] == [(-503, True)]
        assert link.stats["chat_refused"] == 1

    with_quick_link(tmp_path, scenario)


def test_a_message_the_router_never_answers_gets_504_within_the_timeout(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conn: FakeConn) -> None:
        answers: list[ChatAck] = []
        link.chat(Open("a"), 1000, b"{}", "m1", 5, answers.append)  # type: ignore[arg-type]
        link.chat(Open("b"), 1000, b"{}", "m2", 5, answers.append)  # type: ignore[arg-type]
        assert [type(r) for r in conn.take()] == [Chat, Chat]
        link.router.on_record(ChatAck(2, 0, "", 7))  # the second is answered in time
        await asyncio.sleep(0.3)
        assert [(a.req, a.code) for a in answers] == [(2, 0), (1, -504)]
        link.router.on_record(ChatAck(1, 0, "", 8))  # too late: changes nothing
        assert len(answers) == 2 and link.stats["call_timeouts"] == 1

    with_quick_link(tmp_path, scenario)


def test_a_resume_the_router_cannot_answer_closes_the_client(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conn: FakeConn) -> None:
        waiting, unsent, down = Open("w"), Open("u"), Open("d")
        link.resume(waiting, "", 0, True, lambda rec: None)  # type: ignore[arg-type]
        assert conn.take() == [Resume(1, "w", 1, "", 0, True)]
        link.resume(unsent, "\ud800", 0, False, lambda rec: None)  # type: ignore[arg-type]  # cannot be encoded
        link.router.conn = None
        link.resume(down, "", 0, True, lambda rec: None)  # type: ignore[arg-type]
        assert t.calls == [("lost", unsent), ("lost", down)]
        await asyncio.sleep(0.3)
        assert t.calls[-1] == ("lost", waiting)

    with_quick_link(tmp_path, scenario)
