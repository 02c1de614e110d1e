"""Push end to end: a real ``mpim master`` (3 workers), real TCP / WebSocket clients, real HTTP and ZeroMQ."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from mpim.client import connect_tcp, connect_ws
from mpim.proto import Op
from mpim.push import Pusher, PushError
from tests.integration.cluster import Cluster, nothing_more, pushes, start_master, until, with_cluster
from tests.support import ROOT, ServerProcess, http_json, run

WORKERS = 3


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("push")
    hook_file = tmp / "upstream.jsonl"
    os.environ["MPIM_TEST_HOOK_FILE"] = str(hook_file)
    try:
        server = start_master(
            tmp,
            WORKERS,
            router={"receive_hook": "tests.integration.hook_sink:record"},
            http={"max_body": 4096},
        )
    finally:
        del os.environ["MPIM_TEST_HOOK_FILE"]
    try:
        run(Cluster(server).wait_workers(WORKERS))
        yield server
    finally:
        server.stop()


def test_push_keys_and_mids_reach_exactly_the_right_connections(srv: ServerProcess) -> None:
    async def body(c: Cluster) -> None:
        spread = await c.spread("km-a", 1, "", 3, WORKERS)  # mid 1 on every worker
        b, _ = await c.join("km-b", 2, ws=True)
        d, _ = await c.join("km-d", 2, accepts=(2000,))  # does not watch op 1000
        e, _ = await c.join("km-e", 3)
        clients = {key: client for client, key, _ in spread} | {"km-b": b, "km-d": d, "km-e": e}
        first = spread[0][1]
        data = await c.post(f"/goim/push/keys?operation=1000&keys={first}&keys=km-e&keys=nobody", b"by-key")
        assert data == {"connections": 2}
        assert [f.body for f in await pushes(clients[first], 1)] == [b"by-key"]
        assert [(f.op, f.body) for f in await pushes(e, 1)] == [(1000, b"by-key")]
        data = await c.post("/goim/push/mids?operation=1000&mids=1&mids=2", b"by-mid")
        assert data["connections"] == 5  # found in the tables; km-d's watch set filters it out
        for key in [k for _, k, _ in spread] + ["km-b"]:
            assert [f.body for f in await pushes(clients[key], 1)] == [b"by-mid"]
        await c.post("/goim/push/keys?operation=2000&keys=km-d", b"watched")
        assert [f.body for f in await pushes(d, 1)] == [b"watched"]  # only the op it watches
        for client in clients.values():
            await nothing_more(client)

    with_cluster(srv, body)


def test_a_user_on_three_workers_gets_three_copies(srv: ServerProcess) -> None:
    async def body(c: Cluster) -> None:
        spread = await c.spread("three", 77, "", 3, WORKERS)
        assert len({w for _, _, w in spread}) == 3
        assert (await c.post("/goim/push/mids?operation=1000&mids=77", b"copy"))["connections"] == 3
        for client, _, _ in spread:
            assert [f.body for f in await pushes(client, 1)] == [b"copy"]
            await nothing_more(client)

    with_cluster(srv, body)


def test_room_push_reaches_every_member_on_every_worker_and_no_one_else(srv: ServerProcess) -> None:
    async def body(c: Cluster) -> None:
        members = await c.spread("room-in", None, "test://1", 6, WORKERS)
        others = await c.spread("room-out", None, "test://10", 3, 2)
        loner, _ = await c.join("room-none", 5000)
        # goim's own push tool's request, byte for byte
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.http_port)
        writer.write(
            b"POST /goim/push/room?operation=1000&type=test&room=1 HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n"
            b'{"test":1}'
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        assert json.loads(await reader.readexactly(length)) == {"code": 0, "message": "", "data": None}
        writer.close()
        for client, _, _ in members:
            frames = await pushes(client, 1)
            assert [(f.op, f.body) for f in frames] == [(1000, b'{"test":1}')]
        # A later push to the outsiders' room is flushed after the first: if they had got it,
        # it would come first.
        await c.post("/goim/push/room?operation=1000&type=test&room=10", b"second")
        for client, _, _ in others:
            assert [f.body for f in await pushes(client, 1)] == [b"second"]
        for client in [m[0] for m in members] + [o[0] for o in others] + [loner]:
            await nothing_more(client)

    with_cluster(srv, body)


def test_push_all_reaches_everyone_watching_the_op_paced_when_asked(srv: ServerProcess) -> None:
    async def body(c: Cluster) -> None:
        watching = await c.spread("all-w", None, "", 9, WORKERS)
        deaf, _ = await c.join("all-deaf", 9999, accepts=(2000,))
        await c.post("/goim/push/all?operation=1000", b"everyone")
        for client, _, _ in watching:
            assert [f.body for f in await pushes(client, 1)] == [b"everyone"]
        # 6 connections/s for the cluster: each of 3 workers writes 2 per second, and one of
        # them holds at least 3 watchers, so the last copy leaves a second after the first.
        start = time.monotonic()
        await c.post("/goim/push/all?operation=1000&speed=6", b"paced")
        arrivals = []
        for client, _, _ in watching:
            assert [f.body for f in await pushes(client, 1)] == [b"paced"]
            arrivals.append(time.monotonic() - start)
        assert max(arrivals) >= 0.9
        await nothing_more(deaf)

    with_cluster(srv, body)


def test_online_endpoints_and_heartbeat_counts_are_exact_and_cluster_wide(srv: ServerProcess) -> None:
    async def body(c: Cluster) -> None:
        one = await c.spread("on-1", None, "ot://1", 3, WORKERS)
        two = await c.spread("on-2", None, "ot://2", 2, 2)
        await c.join("on-x", 4000)  # in no room

        async def rooms() -> dict[str, int]:
            return dict(await c.get("/goim/online/room?type=ot&rooms=1&rooms=2&rooms=3"))

        assert await rooms() == {"1": 3, "2": 2, "3": 0}
        assert await c.get("/goim/online/top?type=ot&limit=10") == [
            {"room_id": "1", "count": 3},
            {"room_id": "2", "count": 2},
        ]
        assert await c.get("/goim/online/top?type=ot&limit=1") == [{"room_id": "1", "count": 3}]

        async def total() -> bool:
            return bool(await c.get("/goim/online/total") == {"ip_count": 1, "conn_count": 6})

        await until(total, what="exact online total")
        # The heartbeat reply carries the room's count across workers (refreshed every 0.5 s here).
        client = one[0][0]

        async def beat_is(n: int) -> bool:
            return await client.heartbeat() == n

        await until(lambda: beat_is(3), what="cluster-wide room count in a heartbeat reply")
        await c.leave(one[1][0], one[1][1])
        assert (await rooms())["1"] == 2
        await until(lambda: beat_is(2), what="the count after a member left")
        assert two  # still connected: counted above

    with_cluster(srv, body)


def test_room_order_holds_under_concurrent_pushes(srv: ServerProcess) -> None:
    async def body(c: Cluster) -> None:
        members = await c.spread("order", None, "order://1", 6, WORKERS)
        per, http_pushers = 40, 3

        async def http_pusher(p: int) -> None:
            for n in range(per):
                status, answer = await http_json(
                    srv.http_port,
                    "POST",
                    "/goim/push/room?operation=1000&type=order&room=1",
                    f"h{p}-{n}".encode(),
                )
                assert status == 200 and answer["code"] == 0

        def zmq_pusher() -> None:
            with Pusher(srv.ingress) as pusher:
                for n in range(per):
                    pusher.room(1000, "order://1", f"z-{n}")

        await asyncio.gather(*(http_pusher(p) for p in range(http_pushers)), asyncio.to_thread(zmq_pusher))
        total = per * (http_pushers + 1)
        sequences = []
        for client, _, _ in members:
            sequences.append([f.body.decode() for f in await pushes(client, total)])
        assert all(seq == sequences[0] for seq in sequences), "members saw different orders"
        for source in [f"h{p}" for p in range(http_pushers)] + ["z"]:
            mine = [s for s in sequences[0] if s.split("-")[0] == source]
            assert mine == [f"{source}-{n}" for n in range(per)]

    with_cluster(srv, body)


def test_zeromq_ingress_helper_cli_and_bad_requests(srv: ServerProcess) -> None:
    async def body(c: Cluster) -> None:
        client, _ = await c.join("zq-1", 31, "zq://1")
        with Pusher(srv.ingress) as pusher:
            assert await asyncio.to_thread(pusher.keys, 1000, ["zq-1", "nobody"], b"k") == {"connections": 1}
            assert (await asyncio.to_thread(pusher.mids, 1000, [31], "m"))["connections"] == 1
            assert await asyncio.to_thread(pusher.room, 1000, "zq://1", b"r") is None
            await asyncio.to_thread(pusher.all, 1000, b"a", 0, False)
            with pytest.raises(PushError) as info:
                await asyncio.to_thread(pusher.request, {"kind": "fax", "op": 1})
            assert info.value.code == -400 and "kind" in info.value.message
            with pytest.raises(PushError) as info:
                await asyncio.to_thread(pusher.room, 1000, "zq://1", b"x" * 5000)
            assert info.value.code == -413
        # (a room push waits for its batch; the others are written at once)
        assert sorted(f.body for f in await pushes(client, 4)) == [b"a", b"k", b"m", b"r"]
        # raw garbage on the socket: a clear answer, and the ingress keeps serving
        ctx = zmq.Context()
        try:
            sock = ctx.socket(zmq.DEALER)
            sock.connect(srv.ingress)
            sock.send(b"\xc1 not msgpack")
            assert sock.poll(5000)
            answer = msgpack.unpackb(sock.recv())
            assert answer["code"] == -400 and "malformed msgpack" in answer["message"]
            sock.send(msgpack.packb({"kind": "room", "op": 1000, "room": "zq://1", "body": b"after"}))
            assert sock.poll(5000) and msgpack.unpackb(sock.recv())["code"] == 0
        finally:
            ctx.destroy(linger=0)
        assert [f.body for f in await pushes(client, 1)] == [b"after"]
        cli = [sys.executable, "-m", "mpim", "push", "--endpoint", srv.ingress]
        done = await asyncio.to_thread(
            subprocess.run,
            [*cli, "room", "--op", "1000", "--room", "zq://1", "--body", "from-cli"],
            capture_output=True,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"code": 0, "message": "", "data": None}
        assert [f.body for f in await pushes(client, 1)] == [b"from-cli"]
        done = await asyncio.to_thread(
            subprocess.run, [*cli, "keys", "--op", "1000"], capture_output=True, cwd=ROOT
        )
        assert done.returncode == 2 and b"--key is required" in done.stderr

    with_cluster(srv, body)


def test_http_bad_input_gets_clear_answers_and_the_server_keeps_serving(srv: ServerProcess) -> None:
    async def body(c: Cluster) -> None:
        port = srv.http_port
        status, answer = await http_json(
            port, "POST", "/goim/push/room?operation=1000&type=t&room=1", b"x" * 5000
        )
        assert status == 413 and answer["code"] == -413 and "4096-byte limit" in answer["message"]
        status, answer = await http_json(port, "POST", "/goim/push/room?operation=x&type=t&room=1", b"x")
        assert status == 200 and answer == {"code": -400, "message": "operation: 'x' is not an integer"}
        status, answer = await http_json(port, "GET", "/goim/nothing")
        assert status == 404 and answer["code"] == -404
        status, answer = await http_json(port, "GET", "/goim/push/all?operation=1")
        assert status == 405 and answer["code"] == -405
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01 this is not http\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
        writer.close()
        nodes = await c.get("/goim/nodes/weighted?platform=web")
        assert nodes["tcp_port"] == srv.tcp_port and nodes["ws_port"] == srv.ws_port

    with_cluster(srv, body)


def test_client_messages_reach_the_receive_hook(srv: ServerProcess) -> None:
    hook_file = Path(srv.tmp) / "upstream.jsonl"

    async def body(c: Cluster) -> None:
        client, _ = await c.join("up-1", 55, ws=True)
        seq = await client.send(Op.SEND_MSG, b"hello router")
        reply = await client.recv()
        assert (reply.op, reply.seq, reply.body) == (Op.SEND_MSG, seq, b"")

        async def recorded() -> bool:
            lines = hook_file.read_text().splitlines() if hook_file.exists() else []
            return {"mid": 55, "key": "up-1", "op": 4, "body": "hello router"} in map(json.loads, lines)

        await until(recorded, what="the upstream message in the hook's file")

    with_cluster(srv, body)


def test_a_key_connecting_again_on_any_worker_kicks_the_older_connection(srv: ServerProcess) -> None:
    """The same user (a key names one user's connection: another mid is denied, see test_security)."""

    async def body(c: Cluster) -> None:
        async def holder() -> str:
            # The older connection got op 6 only after the router filed the newer one.
            [conn] = await c.get("/mpim/session?key=dup")
            return str(conn["worker"])

        older = await connect_tcp("127.0.0.1", srv.tcp_port)
        await older.auth({"mid": 600, "key": "dup", "accepts": [1000]})
        older_worker = await c.worker_of("dup")
        crossed = 0
        for i in range(40):
            newer = await (connect_ws(srv.ws_url) if i % 2 else connect_tcp("127.0.0.1", srv.tcp_port))
            await newer.auth({"mid": 600, "key": "dup", "accepts": [1000]})
            frames = await older.expect_closed()
            assert [f.op for f in frames] == [Op.DISCONNECT_REPLY]
            worker = await holder()
            crossed += worker != older_worker
            older, older_worker = newer, worker
            if crossed >= 2:
                break
        assert crossed >= 2, "the kernel never put the same key on two workers in a row"
        assert await c.post("/goim/push/keys?operation=1000&keys=dup", b"one") == {"connections": 1}
        assert [f.body for f in await pushes(older, 1)] == [b"one"]
        await older.close()

    with_cluster(srv, body)


def test_anonymous_connections_get_pushes_by_key_and_room_and_a_push_to_mid_0_is_refused(
    srv: ServerProcess,
) -> None:
    """goim's json token without a mid (or mid 0): an anonymous connection, reached by key, room and
    broadcast; no push by mid names it (mids are user ids), and it cannot ask for acks."""

    async def body(c: Cluster) -> None:
        anonymous, _ = await c.join("anon-1", 0, "anon://1")
        user, _ = await c.join("anon-user", 62, "anon://1")
        for target in (
            "/goim/push/mids?operation=1000&mids=0",
            "/goim/push/mids?operation=1000&mids=62&mids=-3",
        ):
            status, answer = await http_json(srv.http_port, "POST", target, b"to-nobody")
            assert status == 200 and answer["code"] == -400 and "is not a user id" in answer["message"]
        with Pusher(srv.ingress) as pusher:
            with pytest.raises(PushError) as info:
                await asyncio.to_thread(pusher.mids, 1000, [0], b"to-nobody")
            assert info.value.code == -400 and info.value.message.startswith("mids: 0 is not a user id")
        assert await c.post("/goim/push/keys?operation=1000&keys=anon-1", b"by-key") == {"connections": 1}
        await c.post("/goim/push/room?operation=1000&type=anon&room=1", b"to-room")
        assert sorted(f.body for f in await pushes(anonymous, 2)) == [b"by-key", b"to-room"]
        assert [f.body for f in await pushes(user, 1)] == [b"to-room"]
        assert (await c.get("/mpim/inbox?mid=62"))["top"] == 0  # the refused push stored nothing
        for client in (anonymous, user):
            await nothing_more(client)
        refused = await connect_tcp("127.0.0.1", srv.tcp_port)
        await refused.send(Op.AUTH, b'{"caps":["ack"]}')
        assert await refused.expect_closed() == []

    with_cluster(srv, body)
