"""What only the SQLite store promises: reopening, kill -9 durability, clear errors, batching."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import uvloop

from mpim.inbox import InboxError, InboxLimits, Position, SqliteInbox, sqlite, sqlwrite
from mpim.inbox.base import SEQ_MAX
from mpim.inbox.checkpoint import Checkpointer
from mpim.inbox.sqlwrite import write_batch
from tests.inbox.conftest import FakeClock

T = TypeVar("T")
LIMITS = InboxLimits(max_count=100, max_age=3600.0)


def run(body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body()

    return uvloop.run(main())


def test_reopening_keeps_epochs_seqs_and_cursors(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"

    async def first() -> tuple[Position, Position]:
        store = SqliteInbox(path, LIMITS)
        await store.append([(1, 1000, b"a", 0), (1, 1000, b"b", 9), (2, 1000, b"c", 0)])
        await store.ack(1, "phone", 1)
        top1, top3 = await store.top(1), await store.top(3)
        await store.close()
        return top1, top3

    async def second(top1: Position, top3: Position) -> None:
        store = SqliteInbox(path, LIMITS)
        assert await store.top(1) == top1
        assert await store.top(3) == top3  # the never-written user's epoch too
        page = await store.read(1, 0, 10)
        assert [(m.seq, m.body, m.sender) for m in page.messages] == [(1, b"a", 0), (2, b"b", 9)]
        assert await store.cursors(1) == {"phone": 1}
        assert await store.append([(1, 1000, b"d", 0)]) == [Position(top1.epoch, 3)]
        await store.close()

    top1, top3 = run(first)
    run(lambda: second(top1, top3))


def test_a_new_file_has_new_epochs(tmp_path: Path) -> None:
    async def epoch(path: Path) -> str:
        store = SqliteInbox(path, LIMITS)
        (position,) = await store.append([(1, 1000, b"x", 0)])
        await store.close()
        return position.epoch

    first = run(lambda: epoch(tmp_path / "a.sqlite3"))
    assert run(lambda: epoch(tmp_path / "b.sqlite3")) != first
    for leftover in tmp_path.glob("a.sqlite3*"):
        leftover.unlink()
    assert run(lambda: epoch(tmp_path / "a.sqlite3")) != first


@pytest.mark.parametrize(
    ("group_window", "checkpoint_every"),
    [(0.0, 2000), (0.002, 2000), (0.0, 16)],
    ids=["per-turn", "group-window", "checkpoints"],  # (the last: ~25 checkpoints, one may be cut)
)
def test_kill_9_loses_no_append_that_returned(
    tmp_path: Path, group_window: float, checkpoint_every: int
) -> None:
    path = tmp_path / "inbox.sqlite3"
    writer = str(Path(__file__).with_name("kill_writer.py"))
    child = subprocess.Popen(
        [sys.executable, writer, str(path), str(group_window), str(checkpoint_every)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    lines = []
    for line in child.stdout:
        lines.append(line)
        if len(lines) >= 400:
            break
    os.kill(child.pid, signal.SIGKILL)
    lines += child.stdout.readlines()  # what it printed before dying counts too
    printed = [line.split() for line in lines if line.endswith("\n")]
    child.wait()
    assert child.returncode == -signal.SIGKILL

    async def check() -> None:
        store = SqliteInbox(path, InboxLimits(max_count=1_000_000))
        for mid in (1, 2, 3):
            page = await store.read(mid, 0, 1_000_000)
            stored = {m.seq: m.body.decode() for m in page.messages}
            mine = {int(seq): body for m, seq, body in printed if int(m) == mid}
            assert mine and all(stored.get(seq) == body for seq, body in mine.items())
            assert sorted(stored) == list(range(1, len(stored) + 1))
        await store.close()

    run(check)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a database" * 100, "cannot open"),
        (b"SQLite format 3\x00" + b"\xff" * 200, "cannot open"),
    ],
)
def test_a_corrupt_file_is_an_inbox_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "inbox.sqlite3"
    path.write_bytes(content)
    with pytest.raises(InboxError) as info:
        SqliteInbox(path, LIMITS)
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    conn.close()
    with pytest.raises(InboxError, match="not an mpim inbox"):
        SqliteInbox(path, LIMITS)


def test_an_unreachable_path_is_an_inbox_error(tmp_path: Path) -> None:
    with pytest.raises(InboxError, match="cannot open"):
        SqliteInbox(tmp_path / "missing-dir" / "inbox.sqlite3", LIMITS)


def test_durability_sets_synchronous(tmp_path: Path) -> None:
    for durability, level in (("process", 1), ("power", 2)):
        store = SqliteInbox(tmp_path / f"{durability}.sqlite3", LIMITS, durability=durability)
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        run(store.close)
    with pytest.raises(ValueError, match="durability"):
        SqliteInbox(tmp_path / "x.sqlite3", LIMITS, durability="disk")


def test_calls_in_one_loop_turn_share_one_transaction(tmp_path: Path) -> None:
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)

    async def body() -> None:
        await asyncio.gather(
            *(store.append([(i % 5, 1000, b"x", 0)]) for i in range(20)), store.ack(1, "d", 2)
        )
        assert statements.count("COMMIT") == 1
        await store.append([(1, 1000, b"x", 0)])
        assert statements.count("COMMIT") == 2
        await store.close()

    run(body)


def test_busy_writes_wait_for_the_window_and_share_one_commit(tmp_path: Path) -> None:
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS, group_window=0.5)

    async def body() -> None:
        await store.append([(1, 1000, b"quiet", 0)])  # nothing committed lately: at once
        assert (store.stats["commits"], store.stats["writes"]) == (1, 1)
        calls = []
        for n in range(6):  # within the window after that commit: the first two in one loop turn
            calls.append(asyncio.ensure_future(store.append([(1 + n % 2, 1000, b"m%d" % n, 0)])))
            if n > 0:  # (two writes in one turn wait for the window's end; the next ones join them)
                await asyncio.sleep(0)
        assert not any(call.done() for call in calls) and store.stats["commits"] == 1
        positions = [(await call)[0].seq for call in calls]
        assert positions == [2, 1, 3, 2, 4, 3]  # each user's seqs in call order
        assert (store.stats["commits"], store.stats["writes"]) == (2, 7)
        await store.close()

    run(body)


def test_close_commits_pending_appends(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"

    async def body() -> None:
        store = SqliteInbox(path, LIMITS)
        task = asyncio.ensure_future(store.append([(1, 1000, b"late", 0)]))
        await asyncio.sleep(0)  # the task has queued its append; the flush has not run yet
        await store.close()
        assert (await task)[0].seq == 1
        again = SqliteInbox(path, LIMITS)
        assert [m.body for m in (await again.read(1, 0, 10)).messages] == [b"late"]
        await again.close()

    run(body)


@pytest.mark.parametrize("error", [sqlite3.OperationalError("disk I/O error"), RuntimeError("a bug")])
def test_a_failed_write_fails_its_batch_and_the_store_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS)

    def broken(*args: object, **kwargs: object) -> object:
        raise error

    async def body() -> None:
        await store.append([(1, 1000, b"a", 0)])
        monkeypatch.setattr(sqlite, "write_batch", broken)
        results = await asyncio.gather(
            store.append([(1, 1000, b"b", 0)]), store.ack(1, "d", 1), return_exceptions=True
        )
        assert all(isinstance(r, InboxError) and str(error) in str(r) for r in results)
        monkeypatch.setattr(sqlite, "write_batch", write_batch)
        assert [p.seq for p in await store.append([(1, 1000, b"c", 0)])] == [2]
        await store.close()

    run(body)


def test_trim_works_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite, "TRIM_CHUNK", 7)
    clock = FakeClock()
    store = SqliteInbox(tmp_path / "inbox.sqlite3", InboxLimits(max_count=1000, max_age=10.0), clock)

    async def body() -> None:
        await store.append([(mid, 1000, b"x", 0) for mid in range(1, 6) for _ in range(10)])
        clock.now += 5
        await store.append([(1, 1000, b"young", 0)])
        assert await store.trim(clock.now + 6) == 50
        page = await store.read(1, 0, 100)
        assert [m.seq for m in page.messages] == [11] and not page.complete
        assert (await store.read(5, 0, 10)).top.seq == 10
        await store.close()

    run(body)


USER_READ = "LEFT JOIN users AS u ON u.mid = k.mid"  # (sqlwrite.read_user)


def test_known_users_are_not_read_again_and_trimming_updates_them(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteInbox(tmp_path / "inbox.sqlite3", InboxLimits(max_count=1000, max_age=10.0), clock)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)

    async def body() -> None:
        await store.append([(1, 1000, b"a", 0), (2, 1000, b"b", 0)])
        assert sum(USER_READ in s for s in statements) == 2  # first sight: read once each
        statements.clear()
        await store.append([(1, 1000, b"c", 0)])
        await store.append([(2, 1000, b"d", 0)])
        assert not any(USER_READ in s for s in statements)
        clock.now += 11
        assert await store.trim(clock.now) == 4  # every message, both users: their watermark moved
        assert [p.seq for p in await store.append([(1, 1000, b"e", 0)])] == [3]
        assert any(USER_READ in s for s in statements)  # (read again after the trim)
        page = await store.read(1, 0, 10)
        assert [m.body for m in page.messages] == [b"e"] and not page.complete  # seqs 1-2 stay gone
        await store.force_seq(2, 40)
        assert [p.seq for p in await store.append([(2, 1000, b"f", 0)])] == [41]
        await store.close()

    run(body)


def test_a_rolled_back_batch_leaves_the_known_users_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS)
    real = sqlwrite._Batch.write

    def failing(batch: sqlwrite._Batch) -> None:
        raise sqlite3.OperationalError("disk full")

    async def body() -> None:
        await store.append([(1, 1000, b"a", 0)])
        monkeypatch.setattr(sqlwrite._Batch, "write", failing)  # seqs assigned, then the write fails
        with pytest.raises(InboxError, match="disk full"):
            await store.append([(1, 1000, b"lost", 0), (2, 1000, b"lost", 0)])
        monkeypatch.setattr(sqlwrite._Batch, "write", real)
        assert [p.seq for p in await store.append([(1, 1000, b"b", 0), (2, 1000, b"c", 0)])] == [2, 1]
        assert [m.body for m in (await store.read(1, 0, 10)).messages] == [b"a", b"b"]
        await store.close()

    run(body)


def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    run(SqliteInbox(path, LIMITS).close)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE inbox_meta SET value = '99' WHERE key = 'schema'")
    conn.close()
    with pytest.raises(InboxError, match="unknown schema version '99'"):
        SqliteInbox(path, LIMITS)


def test_a_plain_append_writes_no_users_row(tmp_path: Path) -> None:
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)

    async def body() -> None:
        await store.append([(1, 1000, b"a", 0), (2, 1000, b"b", 0)])
        await store.append([(1, 1000, b"c", 0)])
        assert [s for s in statements if "users" in s and "INSERT" in s] == []  # one page per message
        await store.close()

    run(body)


def test_reopening_derives_each_stream_from_its_messages(tmp_path: Path) -> None:
    """Count trims, a trim by age that empties a stream and a seq wrap all survive a reopen,
    though plain appends never wrote the users row."""
    path = tmp_path / "inbox.sqlite3"
    clock = FakeClock()
    limits = InboxLimits(max_count=3, max_age=10.0)

    async def first() -> str:
        store = SqliteInbox(path, limits, clock)
        await store.append([(2, 1000, b"old", 0), (2, 1000, b"old", 0)])
        clock.now += 11
        await store.append([(1, 1000, str(n).encode(), 0) for n in range(1, 8)])  # 1-4 trimmed by count
        await store.append([(1, 1000, b"8", 0)])
        assert await store.trim(clock.now) == 2  # user 2's whole stream: only the floor is left
        await store.force_seq(3, SEQ_MAX)
        (wrapped,) = await store.append([(3, 1000, b"w", 0)])
        await store.close()
        return wrapped.epoch

    async def second(wrapped_epoch: str) -> None:
        store = SqliteInbox(path, limits, clock)
        page = await store.read(1, 0, 10)
        assert [m.seq for m in page.messages] == [6, 7, 8] and not page.complete
        assert (await store.read(1, 5, 10)).complete
        assert [p.seq for p in await store.append([(1, 1000, b"9", 0)])] == [9]
        page = await store.read(2, 0, 10)
        assert page.messages == [] and page.top.seq == 2 and not page.complete
        assert [p.seq for p in await store.append([(2, 1000, b"new", 0)])] == [3]
        assert await store.top(3) == Position(wrapped_epoch, 1)
        assert (await store.append([(3, 1000, b"x", 0)]))[0] == Position(wrapped_epoch, 2)
        await store.close()

    wrapped_epoch = run(first)
    run(lambda: second(wrapped_epoch))


def test_a_version_1_file_is_read_as_is_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    run(SqliteInbox(path, LIMITS).close)
    with sqlite3.connect(path) as conn:  # what version 1 wrote: every user's exact row, no chats
        epoch = conn.execute("SELECT value FROM inbox_meta WHERE key = 'epoch'").fetchone()[0]
        conn.execute("UPDATE inbox_meta SET value = '1' WHERE key = 'schema'")
        conn.execute("DROP TABLE chats")
        conn.execute("INSERT INTO users VALUES (1, ?, 5, 3)", (epoch,))
        conn.executemany(
            "INSERT INTO messages VALUES (1, ?, 1000, ?, ?, 0)",
            [(seq, b"m%d" % seq, time.time()) for seq in (4, 5)],
        )
    conn.close()

    async def body() -> None:
        store = SqliteInbox(path, LIMITS)
        page = await store.read(1, 0, 10)
        assert [m.seq for m in page.messages] == [4, 5] and page.top == Position(epoch, 5)
        assert not page.complete and (await store.read(1, 3, 10)).complete
        assert await store.append([(1, 1000, b"m6", 0)]) == [Position(epoch, 6)]
        await store.close()

    run(body)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM inbox_meta WHERE key = 'schema'").fetchone()[0] == "3"
    conn.close()


async def _checkpoints_settle(store: SqliteInbox) -> Checkpointer:
    checkpointer = store._checkpointer
    assert checkpointer is not None
    while checkpointer._running is not None:
        await asyncio.sleep(0.01)
    return checkpointer


def test_checkpoints_run_on_their_own_thread_not_in_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "inbox.sqlite3"
    threads: list[int] = []
    real = Checkpointer._checkpoint

    def spy(self: Checkpointer) -> None:
        threads.append(threading.get_ident())
        real(self)

    monkeypatch.setattr(Checkpointer, "_checkpoint", spy)
    store = SqliteInbox(path, LIMITS, checkpoint_every=10)

    async def body() -> None:
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        for n in range(30):
            await store.append([(1 + n % 3, 1000, b"m%d" % n, 0)])
        checkpointer = await _checkpoints_settle(store)
        assert checkpointer.stats["checkpoints"] >= 1 and store.stats["checkpoints"] >= 1
        assert threads and threading.get_ident() not in threads
        await store.close()

    run(body)
    assert not Path(f"{path}-wal").exists()  # (closed: the log is copied in and removed)
    reopened = SqliteInbox(path, LIMITS)
    assert [len(run(lambda mid=mid: reopened.read(mid, 0, 100)).messages) for mid in (1, 2, 3)] == [
        10,
        10,
        10,
    ]
    run(reopened.close)


def test_a_failed_checkpoint_is_logged_and_writes_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing(self: Checkpointer) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Checkpointer, "_checkpoint", failing)
    store = SqliteInbox(tmp_path / "inbox.sqlite3", LIMITS, checkpoint_every=1)

    async def body() -> None:
        await store.append([(1, 1000, b"a", 0), (1, 1000, b"b", 0)])
        checkpointer = await _checkpoints_settle(store)
        assert checkpointer.stats["failed"] == 1 and store.stats["checkpoint_failures"] == 1
        assert [p.seq for p in await store.append([(1, 1000, b"c", 0)])] == [3]
        await store.close()

    run(body)
    assert "checkpoint failed" in caplog.text and "disk I/O error" in caplog.text


def test_the_log_stays_bounded_under_a_steady_stream_of_writes(tmp_path: Path) -> None:
    """Commits made while the thread copies are copied by the loop afterwards, so the log
    restarts; without that it grew by every write (2 GB in 12 s of appends)."""
    path = tmp_path / "inbox.sqlite3"
    store = SqliteInbox(path, LIMITS, checkpoint_every=200)

    async def body() -> int:
        largest = 0
        for turn in range(1500):  # 15,000 messages, never a pause for the checkpoints
            await asyncio.gather(
                *[store.append([(1 + (turn * 10 + n) % 500, 1000, b"x" * 32, 0)]) for n in range(10)]
            )
            if turn % 50 == 0:
                largest = max(largest, os.path.getsize(f"{path}-wal"))
        checkpointer = await _checkpoints_settle(store)
        assert checkpointer.stats["checkpoints"] >= 5
        await store.close()
        return largest

    largest = run(body)
    assert largest < 4 << 20, f"the log reached {largest:,} bytes"  # unbounded: ~37 MB here


def test_a_version_2_file_is_upgraded_in_place_with_the_chat_ids_table(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"

    async def older() -> None:
        store = SqliteInbox(path, LIMITS)
        await store.append([(1, 1000, b"a", 0), (2, 1000, b"b", 0)])
        await store.close()

    run(older)
    with sqlite3.connect(path) as conn:  # what version 2 wrote: the same, without chats
        conn.execute("DROP TABLE chats")
        conn.execute("UPDATE inbox_meta SET value = '2' WHERE key = 'schema'")
    conn.close()

    async def body() -> None:
        store = SqliteInbox(path, LIMITS)
        assert [m.body for m in (await store.read(1, 0, 10)).messages] == [b"a"]
        first = await store.append_chat(1, "m1", [(2, 1000, b"hi", 1), (1, 1000, b"hi", 1)], 300.0)
        assert [p.seq for p in first.positions] == [2, 2] and not first.duplicate
        await store.close()
        store = SqliteInbox(path, LIMITS)
        again = await store.append_chat(1, "m1", [(2, 1000, b"hi", 1), (1, 1000, b"hi", 1)], 300.0)
        assert again == (first.positions, True)
        await store.close()

    run(body)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM inbox_meta WHERE key = 'schema'").fetchone()[0] == "3"
        assert conn.execute("SELECT sender, id FROM chats").fetchall() == [(1, "m1")]
    conn.close()


def test_a_chat_id_is_in_the_messages_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both or neither: a batch that fails leaves no id behind (the retry is appended), and one
    that commits has both (the retry is not)."""
    path = tmp_path / "inbox.sqlite3"
    store = SqliteInbox(path, LIMITS)
    real = sqlwrite._Batch.write
    items = [(2, 1000, b"hi", 1), (1, 1000, b"hi", 1)]

    def failing(batch: sqlwrite._Batch) -> None:
        real(batch)  # every row written, then the commit does not happen
        raise sqlite3.OperationalError("disk full")

    async def body() -> list[Position]:
        monkeypatch.setattr(sqlwrite._Batch, "write", failing)
        with pytest.raises(InboxError, match="disk full"):
            await store.append_chat(1, "m1", items, 300.0)
        monkeypatch.setattr(sqlwrite._Batch, "write", real)
        assert await store.find_chat(1, "m1") is None
        assert (await store.read(2, 0, 10)).messages == []
        first = await store.append_chat(1, "m1", items, 300.0)
        assert [p.seq for p in first.positions] == [1, 1] and not first.duplicate
        await store.close()
        return first.positions

    positions = run(body)
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT sender, id, positions FROM chats").fetchall()
        assert rows == [(1, "m1", " ".join(f"{p.epoch} {p.seq}" for p in positions))]
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 2
    conn.close()


def test_trim_drops_chat_ids_whose_window_is_over_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "TRIM_CHUNK", 3)
    path = tmp_path / "inbox.sqlite3"
    clock = FakeClock()
    store = SqliteInbox(path, LIMITS, clock)

    def ids() -> list[str]:
        return [row[0] for row in store._conn.execute("SELECT id FROM chats ORDER BY id")]

    async def body() -> None:
        for i in range(8):
            await store.append_chat(1, f"short-{i}", [(2, 1000, b"x", 1)], 10.0)
        await store.append_chat(1, "long", [(2, 1000, b"x", 1)], 100.0)
        await store.trim(clock.now + 10)  # (a window's last moment still counts)
        assert len(ids()) == 9
        await store.trim(clock.now + 11)
        assert ids() == ["long"]
        await store.close()

    run(body)


def test_a_lowered_max_count_holds_for_reads_of_a_reopened_file(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"

    async def body() -> None:
        store = SqliteInbox(path, InboxLimits(max_count=10))
        await store.append([(1, 1000, b"%d" % i, 0) for i in range(1, 11)])
        await store.close()
        store = SqliteInbox(path, InboxLimits(max_count=3))  # (a config change, then a restart)
        page = await store.read(1, 0, 100)
        assert [m.seq for m in page.messages] == [8, 9, 10] and not page.complete
        assert page.top.seq == 10
        assert (await store.read(1, 7, 100)).complete
        assert not (await store.read(1, 6, 1)).complete
        await store.append([(1, 1000, b"11", 0)])  # the append trims the file down
        assert [m.seq for m in (await store.read(1, 0, 100)).messages] == [9, 10, 11]
        await store.close()

    run(body)


def test_two_shared_writers_of_one_file_append_to_the_same_users_without_losing_a_seq(
    tmp_path: Path,
) -> None:
    """Router shards: any shard may append to any user (a push names users of several shards,
    a private message has two copies), so the writers share the file without a user cache."""
    path = tmp_path / "inbox.sqlite3"

    async def body() -> list[list[Position]]:
        first = SqliteInbox(path, InboxLimits(), shared=True)
        second = SqliteInbox(path, InboxLimits(), shared=True)
        try:
            got = []
            for i in range(20):
                writer = first if i % 3 else second
                got.append(await writer.append([(7, 1, b"%d" % i, 0), (8, 1, b"%d" % i, 0)]))
            assert [m.body for m in (await first.read(7, 0, 100)).messages] == [b"%d" % i for i in range(20)]
            return got
        finally:
            await first.close()
            await second.close()

    positions = run(body)
    assert [p[0].seq for p in positions] == list(range(1, 21))
    assert [p[1].seq for p in positions] == list(range(1, 21))


def test_a_shared_writer_acks_up_to_what_another_writer_appended(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"

    async def body() -> int:
        owner = SqliteInbox(path, InboxLimits(), shared=True)
        other = SqliteInbox(path, InboxLimits(), shared=True)
        try:
            await owner.append([(7, 1, b"a", 0)])  # (cached: top 1)
            await other.append([(7, 1, b"b", 0)])  # the other copy of a private message: top 2
            return await owner.ack(7, "d", 2)
        finally:
            await owner.close()
            await other.close()

    assert run(body) == 2
