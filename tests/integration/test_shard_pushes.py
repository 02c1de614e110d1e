"""Router shards end to end: a real ``mpim master`` with ``[router] shards = 2`` (two workers), real
clients of users owned by each shard, pushes of every kind through the HTTP API and the ZeroMQ
ingress (each request may land on either shard), private chat across shards, the host's numbers,
and one shard killed with kill -9 while the other serves its users."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from mpim.push import Pusher
from mpim.sdk import Session
from mpim.slots import owner_of_mid
from tests.integration.cluster import Cluster, nothing_more, pushes, start_master, until, with_cluster
from tests.integration.test_chat import Box
from tests.support import ServerProcess, http_json, run

WORKERS = 2
OWN = {k: [m for m in range(1, 400) if owner_of_mid(m, 2) == k][:6] for k in (0, 1)}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_master(
        tmp_path_factory.mktemp("shards"), WORKERS, router={"shards": 2}, upstream={"ack": "only"}
    )
    try:
        run(linked(server))
        yield server
    finally:
        server.stop()


async def linked(srv: ServerProcess) -> None:
    """Until the workers reported and the shards are linked to each other (a push by key asks
    every shard: -503 until then)."""
    c = Cluster(srv)
    await c.wait_workers(WORKERS)

    async def everyone() -> bool:
        status, answer = await http_json(srv.http_port, "POST", "/goim/push/keys?operation=1&keys=none", b"")
        return status == 200 and answer["code"] == 0

    for _ in range(16):  # (each request lands on either shard: 16 in a row miss one with p = 2^-15)
        await until(everyone, what="the shards linked to each other")


def routers(srv: ServerProcess) -> dict[int, str]:
    return {pid: t for pid, t in srv.children().items() if "mpim: router" in t}


def test_two_router_processes_and_every_push_reaches_the_users_of_both(srv: ServerProcess) -> None:
    assert sorted(routers(srv).values()) == ["mpim: router 0", "mpim: router 1"]

    async def body(c: Cluster) -> None:
        a, b = OWN[0][0], OWN[1][0]
        ca, _ = await c.join("sh-a", a, "live://sh")
        cb, _ = await c.join("sh-b", b, "live://sh", ws=True)
        for i in range(4):  # several requests: the kernel spreads them over both shards
            data = await c.post(f"/goim/push/mids?operation=1000&mids={a}&mids={b}", b"m%d" % i)
            assert data["connections"] == 2
            assert [f.body for f in await pushes(ca, 1)] == [b"m%d" % i]
            assert [f.body for f in await pushes(cb, 1)] == [b"m%d" % i]
            assert (await c.post("/goim/push/keys?operation=1000&keys=sh-b&keys=nobody", b"k"))[
                "connections"
            ] == 1
            assert [f.body for f in await pushes(cb, 1)] == [b"k"]
            await c.post("/goim/push/room?operation=1000&type=live&room=sh", b"r")
            assert [f.body for f in await pushes(ca, 1)] == [b"r"]
            assert [f.body for f in await pushes(cb, 1)] == [b"r"]
        with Pusher(srv.ingress) as pusher:  # the ZeroMQ ingress, either shard
            for _ in range(3):
                assert pusher.mids(1000, [b, a], b"z")["connections"] == 2
        for client in (ca, cb):
            assert [f.body for f in await pushes(client, 3)] == [b"z"] * 3
        for _ in range(4):
            online = await c.get("/goim/online/room?type=live&rooms=sh")
            assert online == {"sh": 2}
            assert (await c.get("/goim/online/total"))["conn_count"] >= 2
            sessions = await c.get(f"/mpim/session?mid={b}")
            assert [s["key"] for s in sessions] == ["sh-b"]
            workers = await c.get("/mpim/workers")
            assert sum(w["conns"] for w in workers) >= 2
        for _ in range(6):  # /metrics from either shard: the host's, each shard's labelled
            text = await _metrics(srv.http_port)
            assert text.count("# TYPE mpim_build_info gauge") == 1
            assert 'mpim_sessions{shard="0"}' in text and 'mpim_sessions{shard="1"}' in text
            assert 'mpim_pushes_total{kind="mids",shard="0"}' in text
            assert "mpim_connects_total{" in text  # (the workers' counters, reported to shard 0)
        for client in (ca, cb):
            await nothing_more(client)

    with_cluster(srv, body)


async def _metrics(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = await reader.read()
    finally:
        writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.split()[1] == b"200", head
    return payload.decode()


def test_private_chat_between_users_of_two_shards_is_stored_once_and_delivered(srv: ServerProcess) -> None:
    async def body() -> None:
        a, b = OWN[0][1], OWN[1][1]
        boxes = Box(), Box()
        sa = Session(f"127.0.0.1:{srv.tcp_port}", {"mid": a, "key": "chat-a", "accepts": [1000]}, boxes[0])
        sb = Session(f"127.0.0.1:{srv.tcp_port}", {"mid": b, "key": "chat-b", "accepts": [1000]}, boxes[1])
        tasks = [asyncio.get_running_loop().create_task(s.run()) for s in (sa, sb)]
        try:
            for s in (sa, sb):
                await asyncio.wait_for(s.connected.wait(), 10)
            for i in range(5):
                ack = await sa.send(b, body={"n": i}, id=f"a{i}")
                assert ack.seq > 0
                await sb.send(a, body={"n": i}, id=f"b{i}")
            await sa.send(b, body={"n": 0}, id="a0")  # a retry: stored once
            await boxes[0].wait(10)  # five from b, and its own five
            await boxes[1].wait(10)
            got = [m for m in boxes[1].chats() if m["from"] == a]
            assert [m["body"]["n"] for m in got] == list(range(5))
        finally:
            for s in (sa, sb):
                await s.close()
            for t in tasks:
                await asyncio.wait_for(t, 10)

    run(body())


def test_a_killed_shard_leaves_the_other_shards_users_served_and_comes_back(srv: ServerProcess) -> None:
    async def body(c: Cluster) -> None:
        a, b = OWN[0][2], OWN[1][2]
        ca, _ = await c.join("kill-a", a)
        cb, _ = await c.join("kill-b", b)
        victim = next(pid for pid, t in routers(srv).items() if t == "mpim: router 1")
        os.kill(victim, signal.SIGKILL)

        async def served() -> bool:  # shard 0's users, through whichever shard is up
            try:
                data = await c.post(f"/goim/push/mids?operation=1000&mids={a}", b"alive")
            except (AssertionError, OSError):  # (a request queued on the dead shard is reset)
                return False
            return bool(data["connections"] == 1)

        await until(served, what="shard 0's users served while shard 1 is down")
        assert [f.body for f in (await pushes(ca, 1))] == [b"alive"]

        async def back() -> bool:  # shard 1 restarted by the master, its tables rebuilt
            try:
                data = await c.post(f"/goim/push/mids?operation=1000&mids={a}&mids={b}", b"both")
            except (AssertionError, OSError):  # (a request queued on the dead shard is reset)
                return False
            return bool(data["connections"] == 2)

        await until(back, timeout=30, what="shard 1 back with its users")
        assert routers(srv).keys() != {victim}
        got = [f.body for f in await pushes(cb, 1)]
        assert got == [b"both"]

    with_cluster(srv, body)


def test_changing_the_number_of_shards_by_restart_keeps_messages_cursors_and_chat_ids(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The inbox is one file every shard reads and writes: a restart with another number of
    shards moves users between shards without moving (or losing, or doubling) their data:
    each user's seqs go on, a device resumes from its cursor, a retried chat id is stored once."""
    tmp = tmp_path_factory.mktemp("reshard")
    a, b = OWN[0][3], OWN[1][3]
    top = {a: 0, b: 0}
    first_chat: list[int] = []

    async def phase(srv: ServerProcess, n: int) -> None:
        c = Cluster(srv)
        await linked(srv)
        for i in range(3):
            got = await c.post(f"/goim/push/mids?operation=1000&mids={a}&mids={b}", b"p%d-%d" % (n, i))
            assert got["seqs"] == {str(a): top[a] + 1, str(b): top[b] + 1}  # (the streams go on)
            top[a], top[b] = top[a] + 1, top[b] + 1
        box = Box()
        sa = Session(f"127.0.0.1:{srv.tcp_port}", {"mid": a, "key": "re-a", "accepts": [1000]}, Box())
        sb = Session(f"127.0.0.1:{srv.tcp_port}", {"mid": b, "key": "re-b", "accepts": [1000]}, box)
        tasks = [asyncio.get_running_loop().create_task(s.run()) for s in (sa, sb)]
        try:
            for s in (sa, sb):
                await asyncio.wait_for(s.ready.wait(), 10)
            ack = await sa.send(b, body={"n": 1}, id="first")  # the same id in every phase
            if not first_chat:
                first_chat.append(ack.seq)
                top[a], top[b] = top[a] + 1, top[b] + 1
            assert ack.seq == first_chat[0]  # stored once, whichever shard stores it now
            wanted = [b"p%d-%d" % (n, i) for i in range(3)]

            async def all_in() -> bool:
                return [m.body for m in box.messages if m.body.startswith(b"p")] == wanted

            await until(all_in, what=f"phase {n}: b's messages since its cursor, and no other push")
            chats = [m.json()["id"] for m in box.messages if not m.body.startswith(b"p")]
            assert chats == (["first"] if n == 0 else [])  # (a retry is not delivered again)

            async def acked() -> bool:
                return bool((await c.get(f"/mpim/cursors?mid={b}")).get("re-b") == top[b])

            await until(acked, what="b's device cursor at its top")
        finally:
            for s in (sa, sb):
                await s.close()
            for t in tasks:
                await asyncio.wait_for(t, 10)
            await c.close()

    for n, shards in enumerate((1, 2, 1)):
        srv = start_master(tmp, WORKERS, router={"shards": shards}, upstream={"ack": "only"})
        try:
            run(phase(srv, n))
        finally:
            srv.stop()
