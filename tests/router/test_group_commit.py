"""Group commit on the router: pushes by mid that wait for the group window together share one inbox
commit and one link frame per worker; a push after a quiet spell, and each push of a backend that
waits for every answer, commits in its own loop turn. The loop's clock is the harness's fake one, so
no test here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpim import records
from mpim.inbox import InboxLimits, SqliteInbox, sqlite
from mpim.records import Hello, PushMids, Sync
from mpim.router.api import PushApi
from mpim.router.core import Refused
from mpim.stream import FrameProtocol
from tests.router.fakes import Harness, MockTransport

WINDOW = 0.002
_decode = records.Decoder(list[records.RouterRecord])


class Transport(MockTransport):
    def get_write_buffer_size(self) -> int:
        return 0


class FramedLink(FrameProtocol):
    """A worker's link with the real per-turn framing; keeps each frame (a write) decoded."""

    def __init__(self, h: Harness, name: str) -> None:
        super().__init__(h.loop)
        self.id = f"h/{name}/1"
        self.transport_ = Transport()
        self._req = 0
        self.connection_made(self.transport_)
        h.router.workers.attach(self)
        h.router.on_records(self, [Hello("h", name, 1), Sync([])])
        h.router.confirms.on_bus_fence(self.id, 0)
        h.settle()
        self.take()

    def req(self) -> int:
        self._req += 1
        return self._req

    def take(self) -> list[list[Any]]:
        """The frames written since the last take, each a list of records."""
        data, frames = bytes(self.transport_.data), []
        self.transport_.data.clear()
        while data:
            size = int.from_bytes(data[:4], "big")
            frames.append([_unstamp(r) for r in _decode(data[4 : 4 + size])])
            data = data[4 + size :]
        return frames


def _unstamp(record: Any) -> Any:
    return (
        PushMids(record.op, record.keys, record.seqs, record.body) if isinstance(record, PushMids) else record
    )


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    inbox = SqliteInbox(tmp_path / "inbox.sqlite3", InboxLimits(), group_window=WINDOW)
    harness = Harness(inbox=inbox)
    harness.clock = 100.0
    yield harness
    harness.loop.run_until_complete(inbox.close())
    harness.close()


def commits(h: Harness) -> int:
    inbox = h.router.streams.inbox
    assert isinstance(inbox, SqliteInbox)
    return inbox.stats["commits"]


def inside(h: Harness, coro: Any) -> Any:
    """Run ``coro`` on the harness's loop: pushes made from a running loop, as the HTTP server does."""
    return h.loop.run_until_complete(coro)


def test_a_push_after_a_quiet_spell_commits_in_its_own_loop_turn(h: Harness) -> None:
    w1 = FramedLink(h, "w1")
    h.connect(w1, "a", 7)  # type: ignore[arg-type]
    h.settle()
    w1.take()

    async def go() -> Any:
        push = h.router.push.mids(1000, [7], b"x")
        for _ in range(3):  # a few loop turns and no timer: the clock does not move
            await asyncio.sleep(0)
        assert push.done() and commits(h) == 1
        return push.result()

    assert inside(h, go()) == (1, {7: 1})
    h.settle()
    assert w1.take() == [[PushMids(1000, ["a"], [1], b"x")]]


def test_pushes_in_a_busy_window_share_one_commit_and_one_frame_per_worker(h: Harness) -> None:
    w1, w2 = FramedLink(h, "w1"), FramedLink(h, "w2")
    for link, key, mid in ((w1, "a", 1), (w1, "b", 2), (w2, "c", 3)):
        h.connect(link, key, mid)  # type: ignore[arg-type]
    h.settle()
    w1.take(), w2.take()

    async def go() -> list[Any]:
        await h.router.push.mids(1000, [1], b"first")  # quiet: commits at once
        assert commits(h) == 1
        await asyncio.sleep(0)  # (its link frame)
        w1.take()
        # a burst within the window after that commit, the first two pushes in one loop turn (several
        # backends): they wait for the window's end, and the pushes of the next turns join them
        burst = []
        for n, mid in enumerate([1, 3, 2, 1, 3, 1]):
            burst.append(h.router.push.mids(1000, [mid], b"m%d" % n))
            if n > 0:
                await asyncio.sleep(0)
        assert not any(p.done() for p in burst) and commits(h) == 1
        assert w1.take() == w2.take() == []
        h.clock += WINDOW
        answers = await asyncio.gather(*burst)
        await asyncio.sleep(0)
        return answers

    answers = inside(h, go())
    assert commits(h) == 2
    assert [seqs for _, seqs in answers] == [{1: 2}, {3: 1}, {2: 1}, {1: 3}, {3: 2}, {1: 4}]
    # one frame per worker, each user's pushes in seq order
    assert w1.take() == [
        [
            PushMids(1000, ["a"], [2], b"m0"),
            PushMids(1000, ["b"], [1], b"m2"),
            PushMids(1000, ["a"], [3], b"m3"),
            PushMids(1000, ["a"], [4], b"m5"),
        ]
    ]
    assert w2.take() == [[PushMids(1000, ["c"], [1], b"m1"), PushMids(1000, ["c"], [2], b"m4")]]


def test_a_backend_that_waits_for_each_answer_is_never_held_by_the_window(h: Harness) -> None:
    w1 = FramedLink(h, "w1")
    h.connect(w1, "a", 7)  # type: ignore[arg-type]
    h.settle()
    w1.take()

    async def go() -> None:
        for n in range(10):  # each push soon after the last commit, alone: the clock never moves
            push = h.router.push.mids(1000, [7], b"m%d" % n)
            for _ in range(3):
                await asyncio.sleep(0)
            assert push.done(), f"push {n} waited"
            assert push.result() == (1, {7: n + 1})

    inside(h, go())
    h.settle()
    assert commits(h) == 10
    assert w1.take() == [[PushMids(1000, ["a"], [n + 1], b"m%d" % n)] for n in range(10)]


def test_a_push_the_inbox_cannot_store_is_refused_and_not_sent(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    w1 = FramedLink(h, "w1")
    h.connect(w1, "a", 7)  # type: ignore[arg-type]
    h.settle()
    w1.take()

    def broken(*args: object) -> object:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite, "write_batch", broken)

    async def go() -> None:
        with pytest.raises(Refused) as failed:
            await h.router.push.mids(1000, [7], b"x")
        assert failed.value.code == -503 and "disk I/O error" in failed.value.message
        inbox = h.router.streams.inbox
        assert inbox is not None
        await inbox.close()
        with pytest.raises(Refused, match="closed"):  # refused at once, before any loop turn
            h.router.push.mids(1000, [7], b"y").result()

    inside(h, go())
    h.settle()
    assert w1.take() == []


def test_stats_count_commits_and_link_frames(h: Harness) -> None:
    w1 = FramedLink(h, "w1")
    for key, mid in (("a", 1), ("b", 2)):
        h.connect(w1, key, mid)  # type: ignore[arg-type]
    h.settle()
    w1.take()
    api = PushApi(h.cfg, h.router)
    before = json.loads(api.handle("GET", "/mpim/stats", b"", b"").body)["data"]  # type: ignore[union-attr]
    h.wait(h.router.push.mids(1000, [1, 2], b"x"))
    h.settle()
    after = json.loads(api.handle("GET", "/mpim/stats", b"", b"").body)["data"]  # type: ignore[union-attr]
    assert after["inbox"]["commits"] - before["inbox"]["commits"] == 1
    assert after["inbox"]["writes"] - before["inbox"]["writes"] == 1  # one append of two messages
    assert after["links"]["frames"] - before["links"]["frames"] == 1
    assert after["links"]["records"] - before["links"]["records"] == 1  # both users' keys in one record
    assert w1.take() == [[PushMids(1000, ["a", "b"], [1, 1], b"x")]]
