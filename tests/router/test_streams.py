"""The router's per-user streams (mpim.router.streams): resume past the inbox limits, private
chat retries de-duplicated by the store (so also across a router restart)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mpim.inbox import Inbox, InboxLimits, MemoryInbox, SqliteInbox
from mpim.records import PushMids
from mpim.router.streams import ChatError
from tests.inbox.conftest import FakeClock
from tests.router.fakes import FakeLink, Harness

A, B = 101, 102


def online(inbox: Inbox, **sections: Any) -> tuple[Harness, FakeLink]:
    """A router on `inbox` (what a restarted router opens again) with A and B connected."""
    h = Harness(inbox=inbox, **sections)
    link = h.worker("w1")
    h.connect(link, "a-phone", A)
    h.connect(link, "b-phone", B)
    link.take()
    return h, link


def stored(h: Harness, mid: int) -> list[dict[str, Any]]:
    page = h.wait(h.router.streams.page(mid, 0, 100))
    return list(page["messages"])


def test_resume_past_max_age_is_not_recovered_and_replays_only_the_unexpired() -> None:
    clock = FakeClock()
    h = Harness(inbox=MemoryInbox(InboxLimits(max_age=2.0), clock))
    try:
        streams = h.router.streams
        for body in (b"old-1", b"old-2"):
            h.wait(streams.push_mids(1000, [7], body))
        clock.now += 1.5
        _, seqs = h.wait(streams.push_mids(1000, [7], b"new-3"))
        epoch = h.wait(streams.resume(7, "phone", "", 0, True)).epoch  # (the store's epoch)
        clock.now += 1.0  # [inbox] max_age = 2: the first two are past it, not trimmed yet
        got = h.wait(streams.resume(7, "phone", epoch, 0, False))
        assert (got.recovered, got.epoch, got.top) == (False, epoch, 3)
        assert got.messages == [(seqs[7], 1000, b"new-3")]
        resumed = h.wait(streams.resume(7, "phone", epoch, 2, False))  # had everything expired
        assert (resumed.recovered, resumed.messages) == (True, [(3, 1000, b"new-3")])
        assert streams.stats["unrecovered"] == 1
    finally:
        h.close()


def test_a_chat_retried_after_a_router_restart_is_answered_with_the_first_seqs(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    h, link = online(SqliteInbox(path, InboxLimits()))
    try:
        first = h.wait(h.router.streams.chat(A, "m1", B, 1000, "hi"))
        assert first == (1, 1)
        (pushed,) = link.take()
        assert isinstance(pushed, PushMids) and sorted(pushed.keys) == ["a-phone", "b-phone"]
        assert h.router.streams.inbox is not None
        h.wait(h.router.streams.inbox.close())
    finally:
        h.close()
    # the router is killed and started again: its memory is gone, the inbox file is not
    h, link = online(SqliteInbox(path, InboxLimits()))
    try:
        streams = h.router.streams
        again = h.wait(streams.chat(A, "m1", B, 1000, "hi"))
        assert again == first
        assert link.take() == []  # not delivered twice
        assert [m["seq"] for m in stored(h, B)] == [1]
        assert streams.stats["dups"] == 1 and streams.stats["chats"] == 0
        assert h.wait(streams.chat(A, "m2", B, 1000, "next")) == (2, 2)
        assert streams.inbox is not None
        h.wait(streams.inbox.close())
    finally:
        h.close()


def test_a_retry_at_the_unread_limit_gets_the_first_answer_not_429() -> None:
    inbox = MemoryInbox(InboxLimits())
    h, _ = online(inbox, delivery={"max_unread": 1})
    try:
        first = h.wait(h.router.streams.chat(A, "m1", B, 1000, "hi"))
    finally:
        h.close()
    h, link = online(inbox, delivery={"max_unread": 1})  # (a restarted router, the same store)
    try:
        assert h.wait(h.router.streams.chat(A, "m1", B, 1000, "hi")) == first
        assert link.take() == []
        with pytest.raises(ChatError) as refused:  # a new message is refused: B has one unread
            h.wait(h.router.streams.chat(A, "m2", B, 1000, "more"))
        assert refused.value.code == -429
    finally:
        h.close()


def test_retries_while_the_first_is_stored_join_it() -> None:
    h, link = online(MemoryInbox(InboxLimits()))
    try:
        streams = h.router.streams

        async def three() -> list[tuple[int, int]]:
            return list(await asyncio.gather(*(streams.chat(A, "m1", B, 1000, "hi") for _ in range(3))))

        assert h.wait(three()) == [(1, 1)] * 3
        pushed = link.take()
        assert len(pushed) == 1 and isinstance(pushed[0], PushMids)
        assert sorted(pushed[0].keys) == ["a-phone", "b-phone"]
        assert [m["seq"] for m in stored(h, B)] == [1]
        assert streams.stats["dups"] == 2
    finally:
        h.close()


def test_a_zero_dedup_window_stores_every_retry() -> None:
    h, _ = online(MemoryInbox(InboxLimits()), upstream={"dedup_window": 0.0})
    try:
        streams = h.router.streams
        assert h.wait(streams.chat(A, "m1", B, 1000, "hi")) == (1, 1)
        assert h.wait(streams.chat(A, "m1", B, 1000, "hi")) == (2, 2)
        assert [m["seq"] for m in stored(h, B)] == [1, 2]
    finally:
        h.close()


def test_a_chat_id_that_is_not_text_is_refused() -> None:
    h, _ = online(MemoryInbox(InboxLimits()))
    try:
        with pytest.raises(ChatError) as refused:
            h.wait(h.router.streams.chat(A, "\udc80", B, 1000, "hi"))
        assert refused.value.code == -400
        assert stored(h, B) == []
    finally:
        h.close()
