"""Group commit of the SQLite inbox: when a group of writes commits (mpim/inbox/group.py and
SqliteInbox's scheduling). The loop's clock is a fake one that only the test moves, so a write
that waits for a timer never completes on its own: no test here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from mpim.inbox import InboxError, InboxLimits, SqliteInbox, sqlite
from mpim.inbox.group import PROBE_EVERY, GroupCommit
from mpim.inbox.sqlwrite import write_batch

T = TypeVar("T")
LIMITS = InboxLimits(max_count=100, max_age=3600.0)
WINDOW = 0.005


class Clocked:
    """An asyncio loop whose ``time()`` is ``self.now``: timers fire only when the test moves it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.now = 0.0
        self.loop.time = lambda: self.now  # type: ignore[method-assign]

    def run(self, body: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            return await body()

        return self.loop.run_until_complete(main())


@pytest.fixture
def clocked() -> Iterator[Clocked]:
    c = Clocked()
    yield c
    c.loop.close()


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_sequential_appender_is_never_held_by_the_window(tmp_path: Path, clocked: Clocked) -> None:
    """One backend pushing one message after the other (each sent when the previous one was
    answered): every append commits in the loop turn after it was made, however soon after the
    previous commit it comes; the clock never moves, so no append waited for a timer."""
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS, group_window=WINDOW)

    async def body() -> None:
        for n in range(20):
            appended = store.append_soon([(1, 1000, b"m%d" % n, 0)])
            await turns(2)  # the turn that ends the group, and the one its callbacks run in
            assert appended.done(), f"append {n} waited"
            assert appended.result()[0].seq == n + 1
        assert (store.stats["commits"], store.stats["writes"]) == (20, 20)
        await store.close()

    clocked.run(body)


def test_writes_of_one_turn_share_one_commit_in_call_order(tmp_path: Path, clocked: Clocked) -> None:
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS, group_window=WINDOW)

    async def body() -> None:
        acked = asyncio.ensure_future(store.ack(1, "phone", 2))  # (a task: it runs before the turn ends)
        first = [store.append_soon([(n % 3, 1000, b"a%d" % n, 0)]) for n in range(7)]  # quiet: no wait
        await turns(3)
        assert all(f.done() for f in first) and acked.done()
        assert [f.result()[0].seq for f in first] == [1, 1, 1, 2, 2, 2, 3]
        assert acked.result() == 2
        assert (store.stats["commits"], store.stats["writes"], store.stats["waits"]) == (1, 8, 0)
        await store.close()

    clocked.run(body)


def test_a_group_waits_for_writes_on_their_way_and_they_join_it(tmp_path: Path, clocked: Clocked) -> None:
    """Several writes in one turn soon after a commit wait for the window's end (measuring); the
    writes that arrive meanwhile join them; then the measured rate makes even a lone write wait."""
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS, group_window=WINDOW)

    async def body() -> None:
        await store.append([(1, 1000, b"quiet", 0)])
        clocked.now = 0.001
        group = [store.append_soon([(1, 1000, b"g0", 0)]), store.append_soon([(2, 1000, b"g1", 0)])]
        await turns(3)
        assert not any(f.done() for f in group) and store.stats["waits"] == 1
        for n in range(2, 6):  # writes on their way: each joins the waiting group
            clocked.now += 0.0005
            group.append(store.append_soon([(1 + n % 2, 1000, b"g%d" % n, 0)]))
            await turns(1)
        assert not any(f.done() for f in group) and store.stats["commits"] == 1
        clocked.now = 0.001 + WINDOW  # the window after the first commit ends
        await asyncio.wait_for(asyncio.gather(*group), 1)
        assert [f.result()[0].seq for f in group] == [2, 1, 3, 2, 4, 3]  # each user's seqs in call order
        assert (store.stats["commits"], store.stats["writes"]) == (2, 7)
        lone = store.append_soon([(3, 1000, b"lone", 0)])  # 4 joined in 5 ms: more are expected
        await turns(3)
        assert not lone.done() and store.stats["waits"] == 2
        clocked.now += WINDOW
        assert (await asyncio.wait_for(lone, 1))[0].seq == 1
        await store.close()

    clocked.run(body)


def test_waits_that_gather_nothing_stop(tmp_path: Path, clocked: Clocked) -> None:
    """After a burst of load the measured rate makes lone writes wait; when those waits gather
    nothing (a sequential backend is left), the rate falls and the writes stop waiting."""
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS, group_window=WINDOW)

    async def body() -> None:
        await store.append([(1, 1000, b"quiet", 0)])
        group = [store.append_soon([(1, 1000, b"a", 0)]), store.append_soon([(1, 1000, b"b", 0)])]
        await turns(2)
        group += [store.append_soon([(1, 1000, b"c%d" % n, 0)]) for n in range(10)]  # (while it waits)
        clocked.now += WINDOW
        await asyncio.wait_for(asyncio.gather(*group), 1)
        held = 0
        for n in range(20):
            appended = store.append_soon([(2, 1000, b"s%d" % n, 0)])
            await turns(2)
            if not appended.done():
                held += 1
                clocked.now += WINDOW  # its wait ends, having gathered nothing
                await asyncio.wait_for(appended, 1)
            assert appended.result()[0].seq == n + 1
        assert 1 <= held <= 6
        assert held == store.stats["waits"] - 1  # and the last writes did not wait
        await store.close()

    clocked.run(body)


def test_a_failed_commit_fails_every_write_of_its_group(
    tmp_path: Path, clocked: Clocked, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS, group_window=WINDOW)

    def broken(*args: object, **kwargs: object) -> object:
        raise sqlite3.OperationalError("disk I/O error")

    async def body() -> None:
        await store.append([(1, 1000, b"a", 0)])
        monkeypatch.setattr(sqlite, "write_batch", broken)
        group = [store.append_soon([(1, 1000, b"b", 0)]), store.append_soon([(2, 1000, b"c", 0)])]
        group.append(asyncio.ensure_future(store.ack(1, "d", 1)))  # (a turn later: joins the waiting group)
        await turns(3)
        assert store.stats["waits"] == 1 and not any(f.done() for f in group)
        clocked.now += WINDOW
        results = await asyncio.wait_for(asyncio.gather(*group, return_exceptions=True), 1)
        assert all(isinstance(r, InboxError) and "disk I/O error" in str(r) for r in results)
        monkeypatch.setattr(sqlite, "write_batch", write_batch)
        clocked.now += 1.0  # (quiet)
        assert [p.seq for p in await store.append([(1, 1000, b"d", 0)])] == [2]  # the store goes on
        await store.close()

    clocked.run(body)


def test_close_commits_a_waiting_group_at_once(tmp_path: Path, clocked: Clocked) -> None:
    path = tmp_path / "inbox.sqlite3"
    store = SqliteInbox(path, LIMITS, group_window=WINDOW)

    async def body() -> None:
        await store.append([(1, 1000, b"a", 0)])
        group = [store.append_soon([(1, 1000, b"b", 0)]), store.append_soon([(1, 1000, b"c", 0)])]
        await turns(2)
        assert not any(f.done() for f in group)
        await store.close()  # the clock has not moved: the window is not over
        assert [f.result()[0].seq for f in group] == [2, 3]
        clocked.now += WINDOW
        await turns(3)  # the cancelled timer does nothing
        assert store.stats["commits"] == 2

    clocked.run(body)
    again = SqliteInbox(path, LIMITS)

    async def check() -> None:
        assert [m.body for m in (await again.read(1, 0, 10)).messages] == [b"a", b"b", b"c"]
        await again.close()

    clocked.run(check)


def test_a_zero_window_commits_every_group_in_its_turn(tmp_path: Path, clocked: Clocked) -> None:
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS, group_window=0.0)

    async def body() -> None:
        for n in range(5):
            group = [store.append_soon([(1, 1000, b"m", 0)]) for _ in range(3)]
            await turns(2)
            assert all(f.done() for f in group), n
        assert (store.stats["commits"], store.stats["waits"]) == (5, 0)
        await store.close()

    clocked.run(body)


# -- the policy alone ---------------------------------------------------------------------------


def test_a_lone_write_waits_only_for_a_measured_rate() -> None:
    g = GroupCommit(WINDOW)
    assert g.delay(10.0, 1) == 0.0  # nothing committed yet
    g.committed(10.0, 1)
    assert g.delay(10.001, 1) == 0.0  # busy, but nothing says another write is coming
    g.committed(10.001, 1)
    assert g.delay(10.001 + WINDOW, 5) == 0.0  # quiet: the window after the last commit is over
    assert g.rate == 0.0 and g.waits == 0


def test_several_writes_in_a_turn_wait_once_per_probe_interval_to_measure() -> None:
    g = GroupCommit(WINDOW)
    g.committed(10.0, 1)
    assert g.delay(10.004, 2) == pytest.approx(WINDOW)  # a probe: a whole window, not the rest of it
    g.committed(10.009, 2)  # it gathered nothing: several backends that each wait for their answer
    assert g.rate == 0.0
    assert g.delay(10.010, 2) == 0.0  # no second probe so soon
    g.committed(10.010, 2)
    assert g.delay(10.010 + PROBE_EVERY, 3) == 0.0  # (quiet)
    g.committed(10.010 + PROBE_EVERY, 3)
    assert g.delay(10.011 + PROBE_EVERY, 3) == pytest.approx(WINDOW)  # a probe again
    assert g.waits == 2


def test_the_rate_counts_what_joined_waiting_groups_and_fades() -> None:
    g = GroupCommit(WINDOW)
    g.committed(10.0, 1)
    assert g.delay(10.0, 2) == pytest.approx(WINDOW)
    g.committed(10.005, 17)  # 15 joined in 5 ms
    assert g.rate == pytest.approx(3000.0)
    assert g.delay(10.0055, 1) == pytest.approx(0.0045)  # 13.5 more expected: a lone write waits
    g.committed(10.010, 1)  # nothing came
    assert g.rate == pytest.approx(7.5 / (0.0025 + 0.0045))
    assert g.delay(10.010 + PROBE_EVERY + 0.001, 1) == 0.0  # (quiet)
    g.committed(10.011 + PROBE_EVERY, 1)
    assert g.delay(10.012 + PROBE_EVERY, 1) == 0.0  # the rate is older than PROBE_EVERY: forgotten
    assert g.rate == 0.0
