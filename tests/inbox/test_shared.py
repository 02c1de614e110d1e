"""An inbox shared by the router shards of a host: several processes on one SQLite file, and
the slot count recorded in the store (SQLite and Redis), checked at every open."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from mpim.inbox import InboxError, InboxLimits, SqliteInbox
from mpim.slots import SLOTS
from tests.inbox.shard_writer import USERS, users
from tests.inbox.test_redis import opened
from tests.inbox.test_sqlite import run
from tests.support import ROOT
from tests.support import run as run_async

LIMITS = InboxLimits(max_count=1_000_000, max_age=3600.0)
WRITER = Path(__file__).with_name("shard_writer.py")


def meta(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        rows = dict(conn.execute("SELECT key, value FROM inbox_meta").fetchall())
    conn.close()
    return rows


@pytest.mark.parametrize("rounds", [3])
def test_two_processes_write_different_users_into_one_file_and_lose_nothing(
    tmp_path: Path, rounds: int
) -> None:
    count = 600
    for attempt in range(rounds):  # (each round opens a fresh file from both processes at once)
        path, go = tmp_path / f"inbox-{attempt}.sqlite3", tmp_path / f"go-{attempt}"
        procs = [
            subprocess.Popen(
                [sys.executable, str(WRITER), str(path), str(shard), str(count), str(go)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for shard in (0, 1)
        ]
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-2000:]

        async def check(path: Path = path) -> None:
            store = SqliteInbox(path, LIMITS)
            try:
                for shard in (0, 1):
                    for index, mid in enumerate(users(shard)):
                        page = await store.read(mid, 0, count)
                        bodies = [int(m.body) for m in page.messages]
                        assert bodies == list(range(index, count, USERS)), (shard, mid)
                        assert [m.seq for m in page.messages] == list(range(1, len(bodies) + 1))
            finally:
                await store.close()

        run(check)


def test_the_slot_count_is_recorded_at_creation(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    run(SqliteInbox(path, LIMITS).close)
    assert meta(path)["slots"] == str(SLOTS)


def test_a_file_without_a_slot_count_gets_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "inbox.sqlite3"
    run(SqliteInbox(path, LIMITS).close)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM inbox_meta WHERE key = 'slots'")  # made before slots existed
    conn.close()
    assert "slots" not in meta(path)
    caplog.set_level("INFO")
    run(SqliteInbox(path, LIMITS).close)
    assert meta(path)["slots"] == str(SLOTS)
    assert f"records its slot count ({SLOTS})" in caplog.text


def test_a_file_made_with_another_slot_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    run(SqliteInbox(path, LIMITS).close)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE inbox_meta SET value = '1024' WHERE key = 'slots'")
    conn.close()
    with pytest.raises(InboxError, match=f"made with 1024 slots, this mpim places users in {SLOTS}"):
        SqliteInbox(path, LIMITS)


def test_redis_records_the_slot_count_and_refuses_another(redis_url: str) -> None:
    async def check() -> None:
        await (await opened(redis_url)).close()
        with redis.Redis.from_url(redis_url) as conn:
            assert conn.get("inbox:slots") == str(SLOTS).encode()
            conn.delete("inbox:slots")  # a store made before slots existed: given them at open
        await (await opened(redis_url)).close()
        with redis.Redis.from_url(redis_url) as conn:
            assert conn.get("inbox:slots") == str(SLOTS).encode()
            conn.set("inbox:slots", "1024")
        with pytest.raises(InboxError, match=f"made with 1024 slots .*places users in {SLOTS}"):
            await opened(redis_url)
        other = await opened(redis_url, prefix="other:")  # (per key prefix)
        await other.close()

    run_async(check())
