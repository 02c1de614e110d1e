"""The room batcher on a fake loop and clock: when a room is flushed, what one flush writes, order.

No sockets and no timing thresholds: the fake loop runs ``call_soon`` callbacks only
when told (one loop turn), and timers only when its clock is moved past them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from mpim.config import RoomSection
from mpim.proto import Op, decode, encode, encode_header
from mpim.worker.room import RoomTable, ws_batch
from mpim.worker.wsframe import binary_frame


class _Handle:
    def __init__(self, when: float | None, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when  # None: call_soon
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``time``, ``call_soon``, ``call_later``, ``call_at``: nothing runs until :meth:`turn` or
    :meth:`advance` says so."""

    def __init__(self) -> None:
        self.now = 0.0  # a machine that just booted: nothing may take a small clock for "long ago"
        self.soon: list[_Handle] = []
        self.timers: list[_Handle] = []

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> _Handle:
        handle = _Handle(None, callback, args)
        self.soon.append(handle)
        return handle

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> _Handle:
        handle = _Handle(when, callback, args)
        self.timers.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _Handle:
        return self.call_at(self.now + delay, callback, *args)

    def pending_timers(self) -> list[_Handle]:
        return [h for h in self.timers if not h.cancelled]

    def turn(self, lag: float = 0.0) -> None:
        """One loop turn: the callbacks ``call_soon`` queued so far, ``lag`` seconds late."""
        self.now += lag
        ready, self.soon = self.soon, []
        for handle in ready:
            if not handle.cancelled:
                handle.callback(*handle.args)

    def advance(self, seconds: float, lag: float = 0.0) -> None:
        """Move the clock; due timers run in time order (each ``lag`` late), then a turn."""
        end = self.now + seconds
        while True:
            due = sorted(
                (h for h in self.pending_timers() if h.when is not None and h.when <= end), key=_when
            )
            if not due:
                break
            handle = due[0]
            self.timers.remove(handle)
            self.now = max(self.now, (handle.when or 0.0) + lag)
            handle.callback(*handle.args)
            self.turn()
        self.now = max(self.now, end)
        self.turn()


def _when(handle: _Handle) -> float:
    return handle.when or 0.0


class FakeChannel:
    """What the batcher needs of a channel: its kind and a ``write`` that records (and takes ``cost`` s)."""

    def __init__(self, is_ws: bool, loop: FakeLoop | None = None, cost: float = 0.0) -> None:
        self.is_ws = is_ws
        self.writes: list[bytes] = []
        self.written_at: list[float] = []
        self.room: Any = None
        self.loop = loop
        self.cost = cost

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        if self.loop is not None:
            self.loop.now += self.cost
            self.written_at.append(self.loop.now)

    def frames(self) -> list[bytes]:
        """Every pushed body received, in order (unwrapping WebSocket op-9 messages)."""
        out = []
        for data in self.writes:
            inner = unwrap_ws(data) if self.is_ws else data
            out.extend(frame.body for frame in decode(inner)[0])
        return out


def unwrap_ws(message: bytes) -> bytes:
    """The inner goim frames of one pre-encoded WebSocket op-9 message (payload < 64 KiB)."""
    length = message[1] & 0x7F
    payload = message[4:] if length == 126 else message[2:]
    assert payload[:16] == encode_header(Op.RAW, len(payload) - 16)
    return payload[16:]


def table(loop: FakeLoop, **room: Any) -> RoomTable:
    return RoomTable(loop, replace(RoomSection(), **room))  # type: ignore[arg-type]


def members(
    rooms: RoomTable,
    room_id: str = "live://1",
    tcp: int = 2,
    ws: int = 2,
    loop: FakeLoop | None = None,
    cost: float = 0.0,
) -> list[FakeChannel]:
    """Members joined to ``room_id``; with ``loop``, each write takes ``cost`` seconds of its clock."""
    channels = [FakeChannel(False, loop, cost) for _ in range(tcp)]
    channels += [FakeChannel(True, loop, cost) for _ in range(ws)]
    for channel in channels:
        channel.room = rooms.join(room_id, channel)  # type: ignore[arg-type]
    return channels


def test_default_mode_is_adaptive() -> None:
    assert RoomSection().mode == "adaptive"


def test_single_message_to_a_quiet_room_is_written_in_this_loop_turn() -> None:
    loop = FakeLoop()
    rooms = table(loop)
    channels = members(rooms)
    assert rooms.push("live://1", encode(1000, b"hello"))
    assert loop.pending_timers() == []  # no window: no timer at all
    loop.turn()  # the same loop turn, the clock has not moved
    for channel in channels:
        assert len(channel.writes) == 1 and channel.frames() == [b"hello"]
    tcp, ws = channels[0], channels[-1]
    assert tcp.writes[0] == encode(1000, b"hello")
    assert ws.writes[0] == binary_frame(encode_header(Op.RAW, 21) + encode(1000, b"hello"))


def test_quiet_room_after_a_loaded_period_is_written_at_once() -> None:
    loop = FakeLoop()
    rooms = table(loop, max_delay=0.5)
    members(rooms, "live://busy", tcp=10, ws=0, loop=loop, cost=0.001)
    (channel,) = members(rooms, "live://quiet", tcp=1, ws=0)
    for _ in range(100):  # a room that keeps the loop busy widens the window...
        rooms.push("live://busy", encode(1000, b"x"))
        loop.turn()
        loop.advance(0.002)
    assert rooms.window.value > rooms.batch_delay
    rooms.push("live://quiet", encode(1000, b"now"))  # ...a quiet room is not held by it
    loop.turn()
    assert channel.frames() == [b"now"]


def test_burst_in_one_loop_turn_is_one_write_per_member() -> None:
    loop = FakeLoop()
    rooms = table(loop)
    channels = members(rooms)
    bodies = [b"m%d" % i for i in range(5)]
    for body in bodies:
        rooms.push("live://1", encode(1000, body))
    loop.turn()
    inner = b"".join(encode(1000, body) for body in bodies)
    for channel in channels:
        assert channel.writes == [ws_batch(inner) if channel.is_ws else inner]
        assert channel.frames() == bodies
    assert rooms.meter.room_flushes == 1 and rooms.meter.room_frames == 5
    assert rooms.meter.room_deliveries == 20


def test_burst_over_several_turns_is_batched_within_the_window() -> None:
    loop = FakeLoop()
    rooms = table(loop, batch_delay=0.01)
    channels = members(rooms)
    start = loop.now
    rooms.push("live://1", encode(1000, b"first"))
    loop.turn()  # quiet room: out at once
    for i in range(6):  # then one message per millisecond
        loop.advance(0.001)
        rooms.push("live://1", encode(1000, b"%d" % i))
        loop.turn()
    for channel in channels:
        assert len(channel.writes) == 1  # held: the room was flushed less than a window ago
    (timer,) = loop.pending_timers()
    assert timer.when == pytest.approx(start + 0.01)
    loop.advance(0.01)
    for channel in channels:
        assert len(channel.writes) == 2  # the rest of the burst in one write
        assert channel.frames() == [b"first", *(b"%d" % i for i in range(6))]


def test_batch_count_flushes_at_once_and_the_rest_waits_for_the_window() -> None:
    loop = FakeLoop()
    rooms = table(loop, batch=3, batch_delay=10.0)
    (channel,) = members(rooms, tcp=0, ws=1)
    for i in range(4):
        rooms.push("live://1", encode(1000, b"%d" % i))
    assert len(channel.writes) == 1  # written inside push, not later
    loop.turn()
    room = rooms.get("live://1")
    assert room is not None and room.pending == [encode(1000, b"3")]
    loop.advance(10.0)
    assert channel.frames() == [b"0", b"1", b"2", b"3"]


def drive(
    rooms: RoomTable, loop: FakeLoop, every: float, count: int, widths: list[float] | None = None
) -> list[float]:
    """A message every ``every`` seconds of the clock; each loop turn reads all that arrived meanwhile
    (as one bus read does), then the loop idles a second. Returns each message's arrival time;
    ``widths`` gets the window after every turn."""
    arrivals = [loop.now + i * every for i in range(count)]
    sent = 0
    while sent < count:
        while sent < count and arrivals[sent] <= loop.now + 1e-12:
            rooms.push("live://1", encode(1000, b"%d" % sent))
            sent += 1
        loop.turn()
        if widths is not None:
            widths.append(rooms.window.value)
        if sent < count:
            loop.advance(max(0.0, arrivals[sent] - loop.now))
    loop.advance(1.0)
    return arrivals


def test_busy_loop_widens_the_window_then_narrows_it() -> None:
    loop = FakeLoop()
    rooms = table(loop, batch=1000, batch_delay=0.005, max_delay=0.5)
    (channel, *_) = members(rooms, tcp=10, ws=0, loop=loop, cost=0.001)  # a flush takes 10 ms
    drive(rooms, loop, 0.002, 1000)  # one by one, the writes would take 5x the time there is
    assert 0.005 < rooms.window.value < 0.5  # wide enough, not wider
    assert rooms.window.load < 0.7  # the loop keeps up
    assert len(channel.writes) < 1000 / 3
    drive(rooms, loop, 0.05, 50)  # a message every 50 ms: time to spare
    assert rooms.window.value == 0.005


def test_window_stops_at_max_delay() -> None:
    loop = FakeLoop()
    rooms = table(loop, batch=100_000, batch_delay=0.0, max_delay=0.08)
    members(rooms, tcp=6, ws=0, loop=loop, cost=0.01)  # a flush takes 60 ms
    widths: list[float] = []
    drive(rooms, loop, 0.001, 3000, widths)
    assert max(widths) == widths[-1] == 0.08


def test_batch_count_does_not_cut_a_widened_window_short() -> None:
    loop = FakeLoop()
    rooms = table(loop, batch=5, batch_delay=0.005, max_delay=0.2)
    (channel, *_) = members(rooms, tcp=10, ws=0, loop=loop, cost=0.002)  # a flush takes 20 ms
    drive(rooms, loop, 0.002, 2000)  # 500 messages/s into one room
    sizes = [len(decode(data)[0]) for data in channel.writes]
    assert channel.frames() == [b"%d" % i for i in range(2000)]
    assert max(sizes) > 5 and len(sizes) < 2000 / 5  # more than batch per write once the window widened


def test_overload_batches_more_and_holds_no_message_longer_than_the_window() -> None:
    """A message every millisecond, each flush 20 ms: every message, in order, few writes, bounded wait."""
    loop = FakeLoop()
    rooms = table(loop, batch=100_000, batch_delay=0.0, max_delay=0.1)
    (channel,) = members(rooms, tcp=1, ws=0, loop=loop, cost=0.02)
    sent_at = drive(rooms, loop, 0.001, 3000)
    assert channel.frames() == [b"%d" % i for i in range(3000)]  # every message, in order
    assert len(channel.writes) < 3000 / 20  # over 20 messages per write on average
    written_at = [
        t for data, t in zip(channel.writes, channel.written_at, strict=True) for _ in decode(data)[0]
    ]
    worst = max(w - s for s, w in zip(sent_at, written_at, strict=True))
    assert worst <= 0.1 + 2 * 0.02 + 1e-9  # max_delay, the flush running when it came, its own


def test_order_is_kept_under_random_timing() -> None:
    rng = random.Random(14)
    loop = FakeLoop()
    rooms = table(loop, batch=7, batch_delay=0.003, max_delay=0.05)
    channels = members(rooms, tcp=3, ws=3)
    for i in range(3000):
        rooms.push("live://1", encode(1000, b"%d" % i))
        if rng.random() < 0.5:
            loop.turn(lag=rng.choice((0.0, 0.0, 0.001, 0.02)))
        if rng.random() < 0.05:
            loop.now += rng.random() * 0.01  # a slow flush
        if rng.random() < 0.3:
            loop.advance(rng.random() * 0.02, lag=rng.choice((0.0, 0.005)))
    loop.advance(1.0)
    for channel in channels:
        assert channel.frames() == [b"%d" % i for i in range(3000)]


def test_fixed_mode_waits_batch_delay_after_the_first_message() -> None:
    loop = FakeLoop()
    rooms = table(loop, mode="fixed", batch_delay=1.0)
    (channel,) = members(rooms, tcp=1, ws=0)
    start = loop.now
    rooms.push("live://1", encode(1000, b"a"))
    loop.turn()
    assert channel.writes == []  # goim's window, even for a quiet room
    (timer,) = loop.pending_timers()
    assert timer.when == pytest.approx(start + 1.0)
    loop.advance(0.5)
    rooms.push("live://1", encode(1000, b"b"))
    loop.advance(0.5)
    assert channel.writes == [encode(1000, b"a") + encode(1000, b"b")]


def test_fixed_mode_with_zero_delay_flushes_in_this_turn() -> None:
    loop = FakeLoop()
    rooms = table(loop, mode="fixed", batch_delay=0.0)
    (channel,) = members(rooms, tcp=1, ws=0)
    rooms.push("live://1", encode(1000, b"a"))
    rooms.push("live://1", encode(1000, b"b"))
    loop.turn()
    assert channel.writes == [encode(1000, b"a") + encode(1000, b"b")]


def test_every_member_gets_the_same_bytes_and_leavers_get_nothing() -> None:
    loop = FakeLoop()
    rooms = table(loop)
    channels = members(rooms, tcp=3, ws=3)
    gone = channels.pop(0)
    rooms.leave(gone.room, gone)  # type: ignore[arg-type]
    rooms.push("live://1", encode(1000, b"x"))
    loop.turn()
    assert gone.writes == []
    tcp = [c.writes[0] for c in channels if not c.is_ws]
    ws = [c.writes[0] for c in channels if c.is_ws]
    assert len(tcp) == 2 and all(w is tcp[0] for w in tcp)
    assert len(ws) == 3 and all(w is ws[0] for w in ws)


def test_last_member_leaving_cancels_the_pending_flush() -> None:
    loop = FakeLoop()
    closed: list[str] = []
    rooms = RoomTable(loop, RoomSection(), on_close=closed.append)  # type: ignore[arg-type]
    (channel,) = members(rooms, tcp=1, ws=0)
    rooms.push("live://1", encode(1000, b"x"))
    rooms.leave(channel.room, channel)  # type: ignore[arg-type]
    loop.advance(1.0)
    assert channel.writes == [] and closed == ["live://1"] and rooms.get("live://1") is None
    assert not rooms.push("live://1", encode(1000, b"y"))


def test_reconfigure_switches_mode_and_keeps_pending_frames() -> None:
    loop = FakeLoop()
    rooms = table(loop, mode="fixed", batch_delay=5.0)
    (channel,) = members(rooms, tcp=1, ws=0)
    rooms.push("live://1", encode(1000, b"a"))
    rooms.reconfigure(replace(RoomSection(), mode="adaptive", max_delay=0.2))
    assert rooms.adaptive and rooms.window.ceiling == 0.2
    rooms.push("live://1", encode(1000, b"b"))
    loop.advance(5.0)
    assert channel.frames() == [b"a", b"b"]


def test_a_push_accepted_before_a_member_joined_is_not_that_members() -> None:
    """A worker paused (or slow) reads its bus backlog after the joins it answered meanwhile: a
    room push the router accepted before a member joined reaches the older members only, in
    order with what was pending; later pushes reach everyone (the two-host soak with router
    shards, seed 44: a goim client that reconnected to a paused worker got six room pushes a
    second time on its new connection)."""
    import time

    loop = FakeLoop()
    rooms = table(loop)
    old_tcp, old_ws = members(rooms, tcp=1, ws=1)
    before = time.monotonic()
    assert rooms.push("live://1", encode(1000, b"queued"), before)  # (pending, not yet flushed)
    new_tcp, new_ws = FakeChannel(False, loop), FakeChannel(True, loop)
    for ch in (new_tcp, new_ws):
        rooms.join("live://1", ch)  # type: ignore[arg-type]
    assert rooms.push("live://1", encode(1000, b"backlog"), before)  # (accepted before the joins)
    assert rooms.push("live://1", encode(1000, b"after"), time.monotonic() + 0.001)
    rooms.flush_all()  # (the window after the early write: flushed now, not when it ends)
    for ch in (old_tcp, old_ws):
        assert ch.frames() == [b"queued", b"backlog", b"after"]
    for ch in (new_tcp, new_ws):
        assert ch.frames() == [b"after"]
    assert rooms.push("live://1", encode(1000, b"much later"), time.monotonic() + 2.0)
    assert not rooms.get("live://1").fresh  # type: ignore[union-attr]  # (old joins are forgotten)
