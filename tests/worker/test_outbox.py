"""Reliable delivery on a worker, against a model of the router's inbox: paced replays, live
pushes around reads, gaps and catch-up reads, acks clamped to what was sent.

:class:`ReliableDelivery` runs with fake channel, link and registry objects; the "router"
answers its reads from a list of stored seqs. The property: whatever the interleaving of
pushes, acks and read answers, the client gets every stored seq after its position once, in
order, with op 21 exactly once after every seq up to its top; never more than the window
unacked; never closed.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mpim import config
from mpim.proto import Op, decode
from mpim.records import InboxEntry, Replayed
from mpim.worker.channel import CLOSED
from mpim.worker.outbox import Outbox
from mpim.worker.reliable import ReliableDelivery

OPEN = 2


class FakeLoop:
    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now


@dataclass(eq=False)
class FakeChannel:
    key: str = "k"
    mid: int = 7
    is_ws: bool = False
    state: int = OPEN
    rel: Outbox = field(default_factory=Outbox)
    out: bytearray = field(default_factory=bytearray)
    notified: bool = False

    def write(self, data: bytes) -> None:
        self.out += data

    def send_frame(self, data: bytes) -> None:
        self.out += data

    def peer(self) -> str:
        return "127.0.0.1:1"

    def frames(self) -> list[tuple[int, int]]:
        """(op, seq) of everything written, and op 21's top as its seq."""
        frames, tail = decode(bytes(self.out), 1 << 20)
        assert tail == b""
        return [(f.op, json.loads(f.body)["seq"] if f.op == Op.RESUMED else f.seq) for f in frames]


class FakeRegistry:
    def close(self, channel: FakeChannel, *, abort: bool = False, notify: bool = False) -> None:
        channel.state = CLOSED
        channel.notified = notify


@dataclass
class Read:
    epoch: str
    seq: int
    cursor: bool
    page: bool
    done: Callable[[Replayed], None]
    asked_at: int  # the stream's top when the read was asked for (it answers with that or later)


class FakeLink:
    def __init__(self, top: Callable[[], int]) -> None:
        self.top = top
        self.reads: list[Read] = []
        self.acks: list[int] = []

    def resume(self, channel: Any, epoch: str, seq: int, cursor: bool, done: Any, page: bool = False) -> None:
        self.reads.append(Read(epoch, seq, cursor, page, done, self.top()))

    def ack(self, channel: Any, seq: int) -> None:
        self.acks.append(seq)


class Rig:
    """One ack client on one worker, its user's stored stream, and the router's answers."""

    def __init__(self, window: int = 4, replay_max: int = 6, stored: int = 0, cursor: int = 0) -> None:
        cfg = config.replace(config.Config(), delivery={"max_unacked": window, "replay_max": replay_max})
        self.loop = FakeLoop()
        self.link = FakeLink(lambda: self.top)
        self.stats: collections.Counter[str] = collections.Counter()
        self.service = ReliableDelivery(cfg, self.loop, FakeRegistry(), self.link, self.stats)  # type: ignore[arg-type]
        self.channel = FakeChannel()
        self.top = stored  # the inbox: seqs 1..top, epoch "e1"
        self.cursor = cursor
        self.replay_max = replay_max
        self.known = 0  # the highest seq the worker was told of
        self.skipped_to = -1  # the resume was further back than replay_max: not recovered, from here

    def resume(self, body: bytes = b"{}") -> None:
        from mpim.proto import Frame

        self.service.resume(self.channel, Frame(1, 20, 9, body))  # type: ignore[arg-type]

    def store(self) -> int:
        """A push by mid: appended, then pushed live."""
        self.top += 1
        return self.top

    def live(self, seq: int) -> None:
        self.known = max(self.known, seq)
        self.service.push(self.channel, 1000, b"m%d" % seq, seq)  # type: ignore[arg-type]

    def answer(self, read: Read, top: int | None = None) -> None:
        """The router's read of the stream as it stood at ``top`` (default: now)."""
        top = self.top if top is None else top
        self.known = max(self.known, top)
        seq = self.cursor if read.cursor else read.seq
        if read.epoch not in ("", "e1") and not read.cursor:
            read.done(Replayed(0, [], "e1", top, False))
            return
        if top - seq > self.replay_max and not read.page:
            self.skipped_to = top
            read.done(Replayed(0, [], "e1", top, False))
            return
        upto = min(top, seq + self.replay_max)
        entries = [InboxEntry(s, 1000, b"m%d" % s) for s in range(seq + 1, upto + 1)]
        read.done(Replayed(0, entries, "e1", top, True))

    def ack_all(self) -> None:
        seqs = [seq for op, seq in self.channel.frames() if op == 1000]
        if seqs:
            self.service.ack(self.channel, max(seqs))  # type: ignore[arg-type]

    def pushed(self) -> list[int]:
        return [seq for op, seq in self.channel.frames() if op == 1000]


def test_a_backlog_larger_than_the_window_is_paced_by_acks_and_ends_in_op_21() -> None:
    rig = Rig(window=512, replay_max=1000, stored=600)
    rig.resume()
    rig.answer(rig.link.reads.pop())
    assert rig.pushed() == list(range(1, 513))  # the window, then it waits for acks
    assert (Op.RESUMED, 600) not in rig.channel.frames()
    rig.service.ack(rig.channel, 300)  # type: ignore[arg-type]
    assert rig.pushed() == list(range(1, 601))
    assert rig.channel.frames()[-1] == (Op.RESUMED, 600)
    rig.ack_all()
    assert rig.channel.state == OPEN and rig.stats["ack_cut"] == 0 and rig.link.acks == [300, 600]


def test_live_pushes_past_the_window_wait_in_the_inbox_and_are_read_back() -> None:
    rig = Rig(window=2, replay_max=3)
    rig.resume()
    rig.answer(rig.link.reads.pop())
    assert rig.channel.frames() == [(Op.RESUMED, 0)]
    for _ in range(9):
        rig.live(rig.store())
    assert rig.pushed() == [1, 2]  # two written, two queued, the rest left in the inbox
    rig.ack_all()
    assert rig.pushed() == [1, 2, 3, 4]
    rig.ack_all()  # the queue ran dry: a catch-up read of what the outbox dropped
    read = rig.link.reads.pop()
    assert (read.seq, read.page) == (4, True)
    rig.answer(read)  # a page of 3 (replay_max): 5, 6, 7 -- and another read after those
    while rig.link.reads or len(rig.pushed()) < 9:
        if rig.link.reads:
            rig.answer(rig.link.reads.pop())
        rig.ack_all()
    assert rig.pushed() == list(range(1, 10)) and rig.stats["catchups"] >= 2


def test_a_push_out_of_order_is_filled_from_the_inbox() -> None:
    rig = Rig()
    rig.resume()
    rig.answer(rig.link.reads.pop())
    one, two = rig.store(), rig.store()
    rig.live(two)  # (seq 2 overtook seq 1 on its way)
    rig.live(one)
    rig.answer(rig.link.reads.pop())
    assert rig.pushed() == [1, 2]


def test_acks_are_clamped_to_what_was_sent_and_ignored_before_anything_was() -> None:
    rig = Rig(window=100, replay_max=100, stored=10)
    rig.service.ack(rig.channel, 7)  # type: ignore[arg-type]  # before op 20: changes nothing
    rig.resume()
    rig.answer(rig.link.reads.pop())
    assert rig.pushed() == list(range(1, 11)) and rig.link.acks == []
    rig.service.ack(rig.channel, 1000)  # type: ignore[arg-type]  # above what was sent: taken as 10
    assert rig.link.acks == [10] and not rig.channel.rel.unacked
    for _ in range(10):
        rig.live(rig.store())
    rig.service.ack(rig.channel, 20)  # type: ignore[arg-type]  # the later correct ack counts
    assert rig.link.acks == [10, 20] and not rig.channel.rel.unacked
    assert rig.stats["acks_clamped"] == 2


def test_an_unrecovered_resume_skips_to_the_top_and_lets_the_client_ack_it() -> None:
    rig = Rig(replay_max=5, stored=50)
    rig.resume()
    rig.answer(rig.link.reads.pop())
    assert rig.channel.frames() == [(Op.RESUMED, 50)]
    rig.service.ack(rig.channel, 50)  # type: ignore[arg-type]
    assert rig.link.acks == [50]


def test_a_catch_up_read_that_finds_the_stream_changed_closes_with_op_6() -> None:
    rig = Rig(window=1)
    rig.resume()
    rig.answer(rig.link.reads.pop())
    for _ in range(4):
        rig.live(rig.store())
    rig.ack_all()
    rig.ack_all()
    read = rig.link.reads.pop()
    read.done(Replayed(0, [], "e2", 9, False))  # the store lost data meanwhile
    assert rig.channel.state == CLOSED and rig.channel.notified


# -- the property --------------------------------------------------------------------------------

STEP = st.sampled_from(["push", "push", "push", "reorder", "lose", "ack", "answer", "answer_late"])


@settings(max_examples=300, deadline=None)
@given(
    window=st.integers(1, 6),
    replay_max=st.integers(1, 8),
    stored=st.integers(0, 12),
    cursor=st.integers(0, 12),
    steps=st.lists(STEP, max_size=80),
)
def test_every_stored_push_after_the_position_arrives_once_in_order(
    window: int, replay_max: int, stored: int, cursor: int, steps: list[str]
) -> None:
    cursor = min(cursor, stored)
    rig = Rig(window=window, replay_max=replay_max, stored=stored, cursor=cursor)
    rig.resume()
    swapped: int | None = None
    for step in steps:
        rel = rig.channel.rel
        assert len(rel.unacked) <= window
        if step == "push":
            if swapped is not None:
                rig.live(swapped)
                swapped = None
            rig.live(rig.store())
        elif step == "reorder" and swapped is None:
            first, second = rig.store(), rig.store()
            rig.live(second)
            swapped = first  # arrives with the next push, after it
        elif step == "lose":
            rig.store()  # stored, never pushed live (its worker's link was down): the next push repairs it
        elif step == "ack":
            rig.ack_all()
        elif step in ("answer", "answer_late") and rig.link.reads:
            read = rig.link.reads.pop(0)  # the router read the stream when asked, or just now
            rig.answer(read, rig.top if step == "answer_late" else read.asked_at)
    if swapped is not None:
        rig.live(swapped)
    for _ in range(1000):  # drain: answer every read, ack everything
        if rig.link.reads:
            rig.answer(rig.link.reads.pop(0))
        elif len(rig.pushed()) and rig.channel.rel.unacked:
            rig.ack_all()
        else:
            break
    frames = rig.channel.frames()
    assert rig.channel.state == OPEN
    pushed = [seq for op, seq in frames if op == 1000]
    answers = [i for i, (op, _) in enumerate(frames) if op == Op.RESUMED]
    assert len(answers) == 1
    top = frames[answers[0]][1]
    first = rig.skipped_to if rig.skipped_to >= 0 else cursor
    # every seq the worker heard of (pushed live, or a read's top); stored ones lost on their way
    # after the last of those are the next push's to repair
    assert pushed == list(range(first + 1, rig.known + 1))
    before = [seq for op, seq in frames[: answers[0]] if op == 1000]
    assert all(seq <= top for seq in before) and (not before or before[-1] == top)
    assert all(seq > top for op, seq in frames[answers[0] + 1 :])
