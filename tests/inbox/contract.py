"""The inbox contract: every store passes these (collected by test_contract.py).

Written against the ``inbox`` fixture (conftest.py), which runs each test once per
store in FACTORIES. Time is the fixture's fake clock; nothing here waits or times.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from mpim.inbox import SEQ_MAX, Chatted, Inbox, InboxError, InboxLimits, Message, Page, Position
from mpim.inbox.base import InboxTestHooks
from tests.inbox.conftest import InboxCase

OP = 1000


def item(mid: int, body: bytes = b"x", sender: int = 0, op: int = OP) -> tuple[int, int, bytes, int]:
    return (mid, op, body, sender)


def seqs(page: Page) -> list[int]:
    return [m.seq for m in page.messages]


def test_seqs_start_at_one_and_are_consecutive_per_user(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        first = await store.append([item(1)])
        more = await store.append([item(1), item(1)])
        other = await store.append([item(2)])
        epoch = (await store.top(1)).epoch
        assert first + more == [Position(epoch, 1), Position(epoch, 2), Position(epoch, 3)]
        assert [p.seq for p in other] == [1]
        assert await store.top(1) == Position(epoch, 3)
        assert (await store.top(2)).seq == 1

    inbox.run(body)


def test_one_append_across_users_keeps_item_order(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        mids = [1, 2, 1, 3, 2, 1]
        positions = await store.append([item(mid, b"%d" % i) for i, mid in enumerate(mids)])
        assert [p.seq for p in positions] == [1, 1, 2, 1, 2, 3]
        page = await store.read(1, 0, 10)
        assert [(m.seq, m.body) for m in page.messages] == [(1, b"0"), (2, b"2"), (3, b"5")]
        assert seqs(await store.read(2, 0, 10)) == [1, 2]
        assert seqs(await store.read(3, 0, 10)) == [1]

    inbox.run(body)


def test_concurrent_appends_get_seqs_in_call_order(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        calls = [store.append([item(7, b"%d" % i), item(8, b"%d" % i)]) for i in range(50)]
        results = await asyncio.gather(*calls)
        assert [r[0].seq for r in results] == list(range(1, 51))
        assert [r[1].seq for r in results] == list(range(1, 51))
        page = await store.read(7, 0, 100)
        assert [m.body for m in page.messages] == [b"%d" % i for i in range(50)]

    inbox.run(body)


def test_message_fields_round_trip(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        inbox.clock.now = 1_700_000_123.25
        await store.append([(5, 1001, b"\x00\xffbinary\x00", 42), (5, -3, b"", 0)])
        page = await store.read(5, 0, 10)
        assert page.messages == [
            Message(1, 1001, b"\x00\xffbinary\x00", 1_700_000_123.25, 42),
            Message(2, -3, b"", 1_700_000_123.25, 0),
        ]
        assert isinstance(page.messages[0].body, bytes)

    inbox.run(body)


def test_read_after_a_position_with_limit(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        await store.append([item(1, b"%d" % i) for i in range(1, 11)])
        top = await store.top(1)
        page = await store.read(1, 3, 4)
        assert seqs(page) == [4, 5, 6, 7]
        assert page.top == top == Position(top.epoch, 10)
        assert page.complete
        assert seqs(await store.read(1, 7, 100)) == [8, 9, 10]
        assert await store.read(1, 10, 5) == Page([], top, True)
        assert await store.read(1, 12, 5) == Page([], top, True)  # beyond top: nothing, nothing lost
        assert await store.read(1, 0, 0) == Page([], top, True)
        assert seqs(await store.read(1, -5, 2)) == [1, 2]

    inbox.run(body)


def test_unknown_user_has_a_stable_empty_position(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        top = await store.top(99)
        assert isinstance(top.epoch, str) and top.epoch
        assert top.seq == 0
        assert await store.top(99) == top
        assert await store.read(99, 0, 10) == Page([], top, True)
        assert await store.cursors(99) == {}
        # the position a client saw before its first message stays valid after it
        assert await store.append([item(99)]) == [Position(top.epoch, 1)]

    inbox.run(body)


def test_trim_by_count_at_append(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        for i in range(1, 6):
            await store.append([item(1, b"%d" % i)])
        await store.append([item(2, b"%d" % i) for i in range(1, 6)])  # more than max_count in one call
        for mid in (1, 2):
            page = await store.read(mid, 0, 10)
            assert [(m.seq, m.body) for m in page.messages] == [(3, b"3"), (4, b"4"), (5, b"5")]
            assert not page.complete
            assert page.top.seq == 5
            assert not (await store.read(mid, 1, 10)).complete
            assert (await store.read(mid, 2, 10)).complete
            assert seqs(await store.read(mid, 1, 2)) == [3, 4]

    inbox.run(body, InboxLimits(max_count=3))


def test_trim_by_age_drops_old_messages_and_idle_cursors(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        clock = inbox.clock
        start = clock.now
        await store.append([item(1), item(1), item(2)])
        await store.ack(1, "old-phone", 1)
        clock.now = start + 50
        await store.append([item(1), item(3)])
        await store.ack(1, "laptop", 2)
        epoch = (await store.top(1)).epoch

        assert await store.trim(start + 100) == 0  # nothing is older than max_age yet
        assert await store.trim(start + 120) == 3  # user 1's seqs 1-2 and user 2's seq 1

        page = await store.read(1, 0, 10)
        assert seqs(page) == [3]
        assert not page.complete
        assert (await store.read(1, 2, 10)).complete
        assert await store.cursors(1) == {"laptop": 2}

        # user 2's whole stream is gone: it keeps its counter and epoch
        assert await store.read(2, 0, 10) == Page([], Position(epoch, 1), False)
        assert await store.append([item(2)]) == [Position(epoch, 2)]

        assert await store.trim(start + 10_000) == 3
        assert await store.cursors(1) == {}
        assert await store.top(1) == Position(epoch, 3)
        assert await store.read(1, 3, 10) == Page([], Position(epoch, 3), True)

    inbox.run(body, InboxLimits(max_count=100, max_age=100.0))


def test_ack_moves_forward_and_is_clamped_to_top(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        await store.append([item(1)] * 5)
        assert await store.ack(1, "phone", 3) == 3
        assert await store.ack(1, "phone", 2) == 3
        assert await store.ack(1, "phone", 10) == 5
        assert await store.ack(1, "phone", -1) == 5
        assert await store.ack(1, "web", 1) == 1
        assert await store.cursors(1) == {"phone": 5, "web": 1}
        assert await store.ack(2, "phone", 4) == 0  # nothing to ack for a user with no messages
        assert await store.cursors(2) == {"phone": 0}

    inbox.run(body)


def test_concurrent_acks_and_appends_apply_in_call_order(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        results = await asyncio.gather(
            store.append([item(1)] * 3),
            store.ack(1, "d", 10),
            store.append([item(1)]),
            store.ack(1, "d", 10),
            store.ack(1, "d", 2),
        )
        epoch = (await store.top(1)).epoch
        assert list(results[1:]) == [3, [Position(epoch, 4)], 4, 4]
        assert await store.cursors(1) == {"d": 4}

    inbox.run(body)


def test_seq_wrap_past_int32_starts_a_new_epoch(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        hooks = cast(InboxTestHooks, store)
        old = (await store.top(1)).epoch
        await store.append([item(2)])
        await hooks.force_seq(1, SEQ_MAX - 1)
        assert await store.top(1) == Position(old, SEQ_MAX - 1)
        assert await store.ack(1, "phone", SEQ_MAX) == SEQ_MAX - 1

        positions = await store.append([item(1, b"last"), item(1, b"a"), item(1, b"b")])
        new = positions[1].epoch
        assert positions == [Position(old, SEQ_MAX), Position(new, 1), Position(new, 2)]
        assert new != old
        assert await store.top(1) == Position(new, 2)
        page = await store.read(1, 0, 10)
        assert [(m.seq, m.body) for m in page.messages] == [(1, b"a"), (2, b"b")]
        assert page.complete
        assert await store.cursors(1) == {}  # cursors counted the old epoch
        assert await store.top(2) == Position(old, 1)  # other users are untouched

        await hooks.force_seq(3, SEQ_MAX)
        (wrapped,) = await store.append([item(3)])
        assert wrapped.seq == 1 and wrapped.epoch not in (old, new)

    inbox.run(body)


def test_bad_input_is_refused_without_harming_other_callers(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        bad: list[Any] = [
            [(1, OP, "text", 0)],
            [(2**63, OP, b"", 0)],
            [(1, 2**31, b"", 0)],
            [(1, OP, b"")],
            [(1, OP, b"", "me")],
        ]
        results = await asyncio.gather(
            store.append([item(1)]), *(store.append(b) for b in bad), return_exceptions=True
        )
        assert isinstance(results[0], list)
        assert all(isinstance(r, TypeError | ValueError) for r in results[1:]), results
        with pytest.raises(ValueError):
            await store.read(1, 0, -1)
        with pytest.raises(ValueError):
            await store.top(cast(int, "1"))
        with pytest.raises(TypeError):
            await store.ack(1, cast(str, 5), 1)
        with pytest.raises(ValueError):
            await store.ack(1, "\udc80", 1)
        assert await store.ack(1, "téléphone", 1) == 1
        assert await store.append([]) == []
        assert (await store.top(1)).seq == 1

    inbox.run(body)


def test_a_closed_store_refuses_calls(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        await store.append([item(1)])
        await store.close()
        with pytest.raises(InboxError):
            await store.append([item(1)])
        with pytest.raises(InboxError):
            await store.read(1, 0, 10)
        with pytest.raises(InboxError):
            await store.ack(1, "d", 1)

    inbox.run(body)


# -- limits hold when the inbox is read, not only at the trim pass -----------------------------


def test_a_read_never_returns_an_expired_message(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        clock = inbox.clock
        start = clock.now
        await store.append([item(1, b"%d" % i) for i in range(1, 4)] + [item(2)])
        clock.now = start + 50
        await store.append([item(1, b"4"), item(1, b"5")])
        epoch = (await store.top(1)).epoch
        top = Position(epoch, 5)

        clock.now = start + 120  # seqs 1-3 (and user 2's only message) are past max_age: not trimmed yet
        pages = {
            (after, limit): await store.read(1, after, limit)
            for after in (-1, 0, 1, 3, 4, 5)
            for limit in (0, 1, 10)
        }
        assert pages[0, 10] == Page(pages[0, 10].messages, top, False)
        assert seqs(pages[0, 10]) == [4, 5]
        assert seqs(pages[0, 1]) == [4] and not pages[0, 1].complete  # the limit counts what is returned
        assert pages[0, 0] == Page([], top, False)
        assert seqs(pages[1, 10]) == [4, 5] and not pages[1, 10].complete
        assert seqs(pages[3, 10]) == [4, 5] and pages[3, 10].complete
        assert seqs(pages[3, 1]) == [4] and pages[3, 1].complete
        assert pages[3, 0] == Page([], top, True)
        assert pages[5, 10] == Page([], top, True)
        assert await store.top(1) == top  # the last seq stays
        assert await store.read(2, 0, 10) == Page([], Position(epoch, 1), False)

        # exactly what a read gives once trim has run
        assert await store.trim(clock.now) == 4
        for (after, limit), page in pages.items():
            assert await store.read(1, after, limit) == page, (after, limit)
        assert await store.read(2, 0, 10) == Page([], Position(epoch, 1), False)

        clock.now = start + 200  # now everything is
        assert await store.read(1, 3, 10) == Page([], top, False)
        assert await store.read(1, 5, 10) == Page([], top, True)
        assert await store.top(1) == top
        assert await store.append([item(1, b"6")]) == [Position(epoch, 6)]
        assert await store.read(1, 3, 10) == Page(
            [Message(6, OP, b"6", clock.now, 0)], Position(epoch, 6), False
        )
        assert (await store.read(1, 5, 10)).complete

    inbox.run(body, InboxLimits(max_count=100, max_age=100.0))


def test_a_message_expires_at_max_age_not_before(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        clock = inbox.clock
        start = clock.now
        await store.append([item(1)])
        clock.now = start + 100.0
        assert seqs(await store.read(1, 0, 10)) == [1]  # exactly max_age old: kept, as trim keeps it
        assert await store.trim(clock.now) == 0
        clock.now = start + 100.5
        assert await store.read(1, 0, 10) == Page([], Position((await store.top(1)).epoch, 1), False)

    inbox.run(body, InboxLimits(max_count=100, max_age=100.0))


def test_reads_match_a_model_of_the_limits_at_every_moment(inbox: InboxCase) -> None:
    """40 messages one second apart (max_count 30, max_age 10): at each moment, for a range of
    positions and limits, a read is the model's: unexpired messages among the newest 30."""

    async def body(store: Inbox) -> None:
        clock = inbox.clock
        start = clock.now
        for i in range(1, 41):
            clock.now = start + i
            await store.append([item(1, b"%d" % i)])
        top = await store.top(1)
        for now in (40.0, 45.0, 49.5, 50.0, 50.5, 60.0):
            clock.now = start + now
            floor = max([10, *(s for s in range(1, 41) if s < now - 10)])  # the newest 30; unexpired
            for after in (0, 9, 10, 20, 35, 39, 40):
                for limit in (0, 1, 3, 100):
                    page = await store.read(1, after, limit)
                    want = list(range(max(after, floor) + 1, 41))[:limit]
                    assert (seqs(page), page.top, page.complete) == (want, top, after >= floor), (
                        now,
                        after,
                        limit,
                    )

    inbox.run(body, InboxLimits(max_count=30, max_age=10.0))


# -- private chat: a retried id is appended once, durably with the message ---------------------

WINDOW = 300.0


def chat(to: int, sender: int, body: bytes = b"hi") -> list[tuple[int, int, bytes, int]]:
    """A private message's items: the recipient's copy, then the sender's own."""
    return [item(to, body, sender), item(sender, body, sender)]


def test_a_retried_chat_id_gets_the_first_positions_and_appends_nothing(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        first = await store.append_chat(1, "m1", chat(2, 1), WINDOW)
        epoch = (await store.top(1)).epoch
        assert first == Chatted([Position(epoch, 1), Position(epoch, 1)], False)
        await store.append([item(2, b"push")])
        inbox.clock.now += WINDOW - 1
        assert await store.append_chat(1, "m1", chat(2, 1, b"again"), WINDOW) == Chatted(
            first.positions, True
        )
        assert await store.find_chat(1, "m1") == first.positions
        assert [m.body for m in (await store.read(2, 0, 10)).messages] == [b"hi", b"push"]
        assert seqs(await store.read(1, 0, 10)) == [1]
        # the id is the sender's: another sender's m1, or another id, is a new message
        assert await store.append_chat(3, "m1", chat(2, 3), WINDOW) == Chatted(
            [Position(epoch, 3), Position(epoch, 1)], False
        )
        assert (await store.append_chat(1, "m2", chat(2, 1), WINDOW)).positions == [
            Position(epoch, 4),
            Position(epoch, 2),
        ]
        assert await store.find_chat(1, "nope") is None
        # a message to oneself: one item
        own = await store.append_chat(4, "self", [item(4, b"note", 4)], WINDOW)
        assert own == Chatted([Position(epoch, 1)], False)
        assert await store.append_chat(4, "self", [item(4, b"note", 4)], WINDOW) == Chatted(
            own.positions, True
        )

    inbox.run(body)


def test_a_retry_in_the_same_batch_as_the_first_is_a_duplicate(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        results = await asyncio.gather(
            store.append([item(2, b"before")]),
            store.append_chat(1, "m1", chat(2, 1), WINDOW),
            store.ack(2, "phone", 5),
            store.append_chat(1, "m1", chat(2, 1), WINDOW),
            store.append([item(2, b"after")]),
        )
        epoch = (await store.top(2)).epoch
        first = Chatted([Position(epoch, 2), Position(epoch, 1)], False)
        assert list(results) == [
            [Position(epoch, 1)],
            first,
            2,
            Chatted(first.positions, True),
            [Position(epoch, 3)],
        ]
        assert [m.body for m in (await store.read(2, 0, 10)).messages] == [b"before", b"hi", b"after"]

    inbox.run(body)


def test_a_chat_id_is_forgotten_after_its_window(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        clock = inbox.clock
        first = await store.append_chat(1, "m1", chat(2, 1), 60.0)
        clock.now += 60.5
        assert await store.find_chat(1, "m1") is None
        again = await store.append_chat(1, "m1", chat(2, 1), 60.0)
        assert not again.duplicate and [p.seq for p in again.positions] == [2, 2]
        assert await store.append_chat(1, "m1", chat(2, 1), 60.0) == Chatted(again.positions, True)
        clock.now += 61.0
        await store.trim(clock.now)  # (drops what the window no longer needs; nothing visible changes)
        assert await store.find_chat(1, "m1") is None
        assert not (await store.append_chat(1, "m1", chat(2, 1), 60.0)).duplicate
        assert seqs(await store.read(2, 0, 10)) == [1, 2, 3]
        assert first.positions[0].seq == 1

    inbox.run(body)


def test_chat_ids_outlive_reopening_a_durable_store(inbox: InboxCase) -> None:
    firsts: list[Chatted] = []

    async def before(store: Inbox) -> None:
        firsts.append(await store.append_chat(1, "m1", chat(2, 1), WINDOW))
        firsts.append(await store.append_chat(1, "m2", chat(2, 1), WINDOW))

    async def after(store: Inbox) -> None:
        retried = await store.append_chat(1, "m1", chat(2, 1), WINDOW)
        if inbox.durable:
            assert retried == Chatted(firsts[0].positions, True)
            assert await store.find_chat(1, "m2") == firsts[1].positions
            assert seqs(await store.read(2, 0, 10)) == [1, 2]
        else:  # the memory store forgets everything on close, the ids too: new epochs say so
            assert not retried.duplicate and retried.positions[0].epoch != firsts[0].positions[0].epoch

    inbox.run(before)
    inbox.run(after)


def test_bad_chat_ids_are_refused_without_harming_other_callers(inbox: InboxCase) -> None:
    async def body(store: Inbox) -> None:
        results = await asyncio.gather(
            store.append_chat(1, "ok", chat(2, 1), WINDOW),
            store.append_chat(1, "\udc80", chat(2, 1), WINDOW),
            store.append_chat(1, cast(str, 7), chat(2, 1), WINDOW),
            store.append_chat(1, "", chat(2, 1), WINDOW),
            store.append_chat(1, "no window", chat(2, 1), 0.0),
            store.append_chat(1, "no items", [], WINDOW),
            return_exceptions=True,
        )
        assert isinstance(results[0], Chatted)
        assert all(isinstance(r, TypeError | ValueError) for r in results[1:]), results
        with pytest.raises(ValueError):
            await store.find_chat(1, "\udc80")
        assert seqs(await store.read(2, 0, 10)) == [1]

    inbox.run(body)
