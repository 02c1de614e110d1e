"""Reliable delivery at its limits, against a real master and raw goim clients written from the
wire contract (and the SDK): a backlog larger than the window, a position older than the trim,
acks that come too early, too high or too often, and private chat while the router is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpim.client import Client, connect_tcp
from mpim.proto import Frame, Op
from mpim.sdk import Message, SendError, Session
from tests.integration.cluster import Cluster, start_master, until
from tests.support import ServerProcess, http_json, run

ACK, RESUME, RESUMED = 18, 20, 21


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The default [delivery] and [inbox] limits (max_unacked 512, replay_max and max_count 1000)."""
    server = start_master(tmp_path_factory.mktemp("edges"), 2)
    try:
        run(Cluster(server).wait_workers(2))
        yield server
    finally:
        server.stop()


async def push_many(c: Cluster, mid: int, n: int, start: int = 0) -> None:
    """``n`` pushes by mid (bodies ``start``..), several requests in flight (kept in order per mid)."""
    for i in range(start, start + n):
        await c.post(f"/goim/push/mids?operation=1000&mids={mid}", b"%d" % i)


async def reliable(srv: ServerProcess, mid: int, key: str) -> Client:
    client = await connect_tcp("127.0.0.1", srv.tcp_port)
    await client.auth({"mid": mid, "key": key, "accepts": [1000], "caps": ["ack"]})
    return client


async def read_replay(client: Client, ack_every: int = 100, timeout: float = 10.0) -> tuple[list[Frame], Any]:
    """Frames up to op 21, acking cumulatively every ``ack_every`` pushes (a client that keeps up)."""
    pushed: list[Frame] = []
    while True:
        frame = await client.recv_push(timeout)
        assert frame.op != Op.DISCONNECT_REPLY, f"cut after {len(pushed)} pushes"
        if frame.op == RESUMED:
            return pushed, json.loads(frame.body)
        pushed.append(frame)
        if len(pushed) % ack_every == 0:
            await client.send(ACK, b"", seq=frame.seq)


def test_a_backlog_larger_than_max_unacked_replays_whole_and_ends_in_op_21(srv: ServerProcess) -> None:
    async def main() -> None:
        c = Cluster(srv)
        await push_many(c, 2101, 600)  # offline: 600 > max_unacked (512)
        client = await reliable(srv, 2101, "backlog")
        await client.send(RESUME, b"{}")
        pushed, answer = await read_replay(client)
        assert [f.seq for f in pushed] == list(range(1, 601))
        assert [f.body for f in pushed] == [b"%d" % i for i in range(600)]
        assert answer["seq"] == 600 and answer["recovered"] is True
        await client.send(ACK, b"", seq=600)
        await push_many(c, 2101, 1, start=600)  # and it goes on live
        live = await client.recv_push()
        assert (live.seq, live.body) == (601, b"600")
        await client.close()

        box: list[Message] = []  # the SDK, from a fresh Session (no position): each message once
        await push_many(c, 2102, 600)
        session = Session(
            f"127.0.0.1:{srv.tcp_port}", {"mid": 2102, "key": "sdk", "accepts": [1000]}, box.append
        )
        task = asyncio.get_running_loop().create_task(session.run())
        await asyncio.wait_for(session.ready.wait(), 20)
        assert [m.seq for m in box] == list(range(1, 601)) and session.connections == 1
        await session.close()
        await asyncio.wait_for(task, 10)

    run(main())


def test_a_position_older_than_the_trim_hears_not_recovered(tmp_path: Path) -> None:
    server = start_master(tmp_path, 1, inbox={"max_count": 600})

    async def main() -> None:
        c = Cluster(server)
        await c.wait_workers(1)
        await push_many(c, 2103, 700)  # seqs 1..100 are trimmed
        epoch = (await c.get("/mpim/inbox?mid=2103&limit=1"))["epoch"]
        for position in ({}, {"epoch": epoch, "seq": 5}):
            client = await reliable(server, 2103, "old")
            await client.send(RESUME, json.dumps(position).encode())
            pushed, answer = await read_replay(client)
            assert [f.seq for f in pushed] == list(range(101, 701))
            assert answer["seq"] == 700 and answer["recovered"] is False
            await client.close()

    try:
        run(main())
    finally:
        server.stop()


async def cursor(c: Cluster, mid: int, key: str) -> int:
    return int((await c.get(f"/mpim/cursors?mid={mid}")).get(key, 0))


def test_acks_too_high_or_before_the_resume_are_clamped_or_ignored(tmp_path: Path) -> None:
    server = start_master(tmp_path, 1, delivery={"ack_timeout": 1.0})

    async def main() -> None:
        c = Cluster(server)
        await c.wait_workers(1)
        await push_many(c, 2104, 10)
        early = await reliable(server, 2104, "early")
        await early.send(ACK, b"", seq=7)  # before op 20: nothing was sent yet
        await early.send(RESUME, b"{}")
        pushed, _ = await read_replay(early, ack_every=1000)
        assert [f.seq for f in pushed] == list(range(1, 11))  # not 8..10
        assert await cursor(c, 2104, "early") == 0
        await early.send(ACK, b"", seq=1000)  # above what was sent: taken as 10

        async def at(n: int) -> bool:
            return await cursor(c, 2104, "early") == n

        await until(lambda: at(10), 5, "the cursor at 10")
        await push_many(c, 2104, 10, start=10)
        more = [await early.recv_push() for _ in range(10)]
        await early.send(ACK, b"", seq=more[-1].seq)  # the later correct ack is not ignored
        await until(lambda: at(20), 5, "the cursor at 20")
        await asyncio.sleep(2.0)  # past ack_timeout: nothing is unacked, so it stays
        assert await early.heartbeat() == 0
        await early.close()

    try:
        run(main())
    finally:
        server.stop()


def test_acking_every_push_faster_than_the_upstream_rate_is_not_cut(tmp_path: Path) -> None:
    server = start_master(tmp_path, 1, upstream={"rate": 20.0, "burst": 20})

    async def main() -> None:
        c = Cluster(server)
        await c.wait_workers(1)
        client = await reliable(server, 2105, "eager")
        await client.send(RESUME, b"{}")
        await read_replay(client)

        async def publish() -> None:
            for i in range(300):  # far above 20 frames/s
                await c.post("/goim/push/mids?operation=1000&mids=2105", b"%d" % i)

        publisher = asyncio.get_running_loop().create_task(publish())
        for i in range(300):
            frame = await client.recv_push()
            assert frame.op == 1000, f"cut after {i} acks: {frame}"
            await client.send(ACK, b"", seq=frame.seq)
        await publisher
        assert await client.heartbeat() == 0
        await client.close()

    try:
        run(main())
    finally:
        server.stop()


def test_private_chat_across_a_router_kill_gets_an_answer_for_every_message(tmp_path: Path) -> None:
    """Every send() completes (done or a clear error) while the router is killed mid-stream, and
    each message is stored once in the recipient's inbox."""
    server = start_master(tmp_path, 2, upstream={"ack": "only", "timeout": 2.0})

    async def main() -> None:
        c = Cluster(server)
        await c.wait_workers(2)
        alice = Session(f"127.0.0.1:{server.tcp_port}", {"mid": 2106, "key": "a", "accepts": [1000]}, print)
        alice.backoff = (0.05, 0.5)
        alice.resend_after = 1.0
        task = asyncio.get_running_loop().create_task(alice.run())
        await asyncio.wait_for(alice.ready.wait(), 10)
        results: dict[str, Any] = {}

        async def send(i: int) -> None:
            try:
                results[f"c{i}"] = await alice.send(to=2107, op=1000, body={"n": i}, id=f"c{i}", timeout=30)
            except SendError as exc:
                results[f"c{i}"] = exc

        sends = []
        for i in range(100):  # 50 messages/s
            sends.append(asyncio.get_running_loop().create_task(send(i)))
            await asyncio.sleep(0.02)
            if i == 30:
                (router,) = [p for p, t in server.children().items() if t.startswith("mpim: router")]
                os.kill(router, signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*sends), 60)
        failed = {k: v for k, v in results.items() if isinstance(v, SendError)}
        assert not failed, failed
        stored: list[str] = []

        async def all_stored() -> bool:
            status, answer = await http_json(server.http_port, "GET", "/mpim/inbox?mid=2107&limit=1000")
            if status != 200 or answer["code"] != 0:
                return False
            stored[:] = [json.loads(m["body"])["id"] for m in answer["data"]["messages"]]
            return len(set(stored)) == 100

        await until(all_stored, 20, "every message in the recipient's inbox")
        assert sorted(stored) == sorted(results), "a message was stored twice"
        await alice.close()
        await asyncio.wait_for(task, 10)

    try:
        run(main(), timeout=120)
    finally:
        server.stop()
