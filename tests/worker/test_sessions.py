"""A real worker on loopback ports, driven by real TCP and WebSocket clients:
auth, heartbeat, rooms, kicks, watch sets and upstream messages."""

from __future__ import annotations

import asyncio
import logging

import pytest
from websockets.exceptions import InvalidHandshake

from mpim.auth import mint
from mpim.client import ConnectionClosedError
from mpim.proto import Op, encode
from tests.worker.harness import Running, run, serving

KINDS = ["tcp", "ws"]
SECRET = "integration-secret-" + "k" * 40


@pytest.mark.parametrize("kind", KINDS)
def test_auth_ok_json(kind: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.client(kind)
            reply = await client.auth({"mid": 7, "key": "k7", "room_id": "live://1", "accepts": [1000]})
            assert reply.op == Op.AUTH_REPLY and reply.body == b""
            channel = srv.hub.buckets.get("k7")
            assert channel is not None and channel.mid == 7 and channel.room is not None
            assert channel.accepts == frozenset({1000})

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_auth_reply_echoes_ver_and_seq(kind: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.client(kind)
            await client.send(Op.AUTH, b'{"mid":1}', seq=4242, ver=3)
            reply = await client.recv()
            assert (reply.op, reply.ver, reply.seq, reply.body) == (Op.AUTH_REPLY, 3, 4242, b"")

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_auth_jwt_ok_and_refused(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(auth={"mode": "jwt", "secret": SECRET}) as srv:
            good = await srv.client(kind)
            await good.auth(mint(SECRET, 55, room="live://9", accepts=(1000,)))
            assert srv.hub.online == 1
            bad = await srv.client(kind)
            await bad.send(Op.AUTH, mint("wrong-secret-" + "x" * 40, 56).encode())
            assert await bad.expect_closed() == []
            plain = await srv.client(kind)
            await plain.send(Op.AUTH, b'{"mid":57}')
            assert await plain.expect_closed() == []
            assert srv.hub.online == 1
            assert await good.heartbeat() == 1

    with caplog.at_level(logging.INFO, logger="mpim.worker"):
        run(scenario)
    refused = [r for r in caplog.records if "auth refused" in r.getMessage()]
    assert len(refused) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_handshake_timeout_closes(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(protocol={"handshake_timeout": 0.3}) as srv:
            client = await srv.client(kind)
            await client.send(Op.HEARTBEAT)  # ignored before auth
            started = asyncio.get_running_loop().time()
            assert await client.expect_closed(timeout=5) == []
            assert asyncio.get_running_loop().time() - started >= 0.2
            assert srv.hub.connections == 0

    with caplog.at_level(logging.INFO, logger="mpim.worker"):
        run(scenario)
    assert any("no auth within 0.3s" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", KINDS)
def test_frames_before_auth_are_ignored(kind: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.client(kind)
            await client.send(Op.HEARTBEAT)
            await client.send(Op.CHANGE_ROOM, b"live://1")
            await client.send(Op.SEND_MSG, b"hi")
            reply = await client.auth({"mid": 1})
            assert reply.op == Op.AUTH_REPLY  # nothing was answered before it

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_heartbeat_reply_carries_room_online(kind: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            a = await srv.authed(kind, mid=1, room_id="live://1")
            assert await a.heartbeat() == 1
            b = await srv.authed("tcp", mid=2, room_id="live://1")
            await srv.authed("ws", mid=3, room_id="live://2")
            assert await a.heartbeat() == 2
            assert await b.heartbeat() == 2
            lonely = await srv.authed(kind, mid=4)
            assert await lonely.heartbeat() == 0
            await client_seq_echo(a)

    run(scenario)


async def client_seq_echo(client: object) -> None:
    from mpim.client import Client

    assert isinstance(client, Client)
    await client.send(Op.HEARTBEAT, seq=99, ver=2)
    reply = await client.recv()
    assert (reply.op, reply.seq, reply.ver, len(reply.body)) == (Op.HEARTBEAT_REPLY, 99, 2, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_silent_connection_is_evicted_and_heartbeats_keep_alive(kind: str) -> None:
    async def scenario() -> None:
        async with serving(protocol={"heartbeat": 0.3, "heartbeat_max": 2}) as srv:
            silent = await srv.authed(kind, mid=1)
            alive = await srv.authed(kind, mid=2)
            loop = asyncio.get_running_loop()
            end = loop.time() + 1.5
            while loop.time() < end:
                await alive.heartbeat()
                await asyncio.sleep(0.15)
            assert await silent.expect_closed(timeout=3) == []
            assert srv.hub.online == 1
            assert await alive.heartbeat() == 0

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_change_room_and_exact_counts(kind: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            clients = [await srv.authed(kind, mid=i, room_id="live://a") for i in range(5)]
            assert srv.hub.rooms.get("live://a") is not None
            assert len(srv.hub.rooms.get("live://a").members) == 5  # type: ignore[union-attr]
            for client in clients[:2]:
                seq = await client.send(Op.CHANGE_ROOM, b"live://b")
                reply = await client.recv()
                assert (reply.op, reply.seq, reply.body) == (Op.CHANGE_ROOM_REPLY, seq, b"live://b")
            assert await clients[0].heartbeat() == 2
            assert await clients[4].heartbeat() == 3
            await clients[0].send(Op.CHANGE_ROOM, b"")  # leave every room
            assert (await clients[0].recv()).op == Op.CHANGE_ROOM_REPLY
            assert await clients[0].heartbeat() == 0
            assert await clients[1].heartbeat() == 1
            await clients[1].close()
            await srv.settle(lambda: srv.hub.rooms.get("live://b") is None)
            assert await clients[4].heartbeat() == 3

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_same_key_kicks_older_connection(kind: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            old = await srv.authed(kind, mid=1, key="same", room_id="live://k")
            new = await srv.authed("ws" if kind == "tcp" else "tcp", mid=1, key="same", room_id="live://k")
            got = await old.expect_closed()
            assert [f.op for f in got] == [Op.DISCONNECT_REPLY]
            assert srv.hub.buckets.get("same") is not None
            assert await new.heartbeat() == 1
            assert srv.hub.online == 1

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_key_gets_unique_generated_key(kind: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            for _ in range(3):
                await srv.authed(kind, mid=1, key="")
            keys = [ch.key for bucket in srv.hub.buckets for ch in bucket]
            assert len(keys) == 3 and len(set(keys)) == 3 and all(keys)

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_sub_unsub_watch_set(kind: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.authed(kind, mid=1, key="w", accepts=[1000])
            seq = await client.send(Op.SUB, b"1001,1002")
            reply = await client.recv()
            assert (reply.op, reply.seq, reply.body) == (Op.SUB_REPLY, seq, b"1001,1002")
            channel = srv.hub.buckets.get("w")
            assert channel is not None and channel.accepts == frozenset({1000, 1001, 1002})
            await client.send(Op.UNSUB, b"1000,1002")
            assert (await client.recv()).op == Op.UNSUB_REPLY
            assert channel.accepts == frozenset({1001})
            await client.send(Op.SUB, b"12,abc")  # malformed: ignored as a whole, still answered
            assert (await client.recv()).body == b"12,abc"
            assert channel.accepts == frozenset({1001})
            assert srv.hub.push_keys(1000, ["w"], b"no") == 0
            assert srv.hub.push_keys(1001, ["w"], b"yes") == 1
            frame = await client.recv()
            assert (frame.op, frame.body) == (1001, b"yes")

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_upstream_ops_are_echoed_and_reported(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.authed(kind, mid=9, key="up")
            seq = await client.send(Op.SEND_MSG, b"hello server")
            reply = await client.recv()
            assert (reply.op, reply.seq, reply.body) == (Op.SEND_MSG, seq, b"")
            await client.send(5000, b"custom")
            assert (await client.recv()).op == 5000

    with caplog.at_level(logging.INFO, logger="mpim.upstream"):
        run(scenario)
    lines = [r.getMessage() for r in caplog.records if r.name == "mpim.upstream"]
    assert lines == [
        "upstream mid=9 key=up op=4 body=12 bytes",
        "upstream mid=9 key=up op=5000 body=6 bytes",
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_room_id_closes_cleanly(kind: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            other = await srv.authed("tcp", mid=2, room_id="live://x")
            client = await srv.authed(kind, mid=1)
            await client.send(Op.CHANGE_ROOM, b"bad\x00room")
            assert await client.expect_closed() == []
            await client_close_ok(srv, other)

    run(scenario)


async def client_close_ok(srv: Running, other: object) -> None:
    from mpim.client import Client

    assert isinstance(other, Client)
    assert await other.heartbeat() == 1
    assert srv.hub.online == 1


def test_many_frames_in_one_write_and_split_writes() -> None:
    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.tcp_client()
            stream = encode(Op.AUTH, b'{"mid":1,"room_id":"r"}', seq=1)
            stream += b"".join(encode(Op.HEARTBEAT, seq=i) for i in range(2, 12))
            for i in range(0, len(stream), 7):
                await client.send_raw(stream[i : i + 7])
            frames = [await client.recv() for _ in range(11)]
            assert [f.op for f in frames] == [Op.AUTH_REPLY] + [Op.HEARTBEAT_REPLY] * 10
            assert [f.seq for f in frames] == list(range(1, 12))

    run(scenario)


def test_closed_client_leaves_every_table() -> None:
    async def scenario() -> None:
        async with serving() as srv:
            clients = [await srv.authed(k, mid=i, room_id="live://z") for i, k in enumerate(KINDS * 5)]
            assert srv.hub.online == 10 and srv.hub.connections == 10
            for client in clients:
                await client.close()
            await srv.settle(lambda: srv.hub.connections == 0)
            assert srv.hub.online == 0 and len(srv.hub.rooms) == 0
            with pytest.raises(ConnectionClosedError):
                await clients[0].recv(timeout=1)

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_connections_over_the_limit_are_refused(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(server={"max_connections": 3}) as srv:
            kept = [await srv.authed(kind, mid=i, room_id="live://cap") for i in range(3)]
            for _ in range(2):
                refused = (ConnectionClosedError, ConnectionError, OSError, TimeoutError, InvalidHandshake)
                with pytest.raises(refused):
                    extra = await srv.client(kind)
                    await extra.auth({"mid": 99}, timeout=3)
            assert srv.hub.connections == 3 and srv.hub.stats["refused"] == 2
            await kept[0].close()
            await srv.settle(lambda: srv.hub.connections == 2)
            again = await srv.authed(kind, mid=50, room_id="live://cap")  # room for one more
            assert await again.heartbeat() == 3

    with caplog.at_level(logging.WARNING, logger="mpim.worker"):
        run(scenario)
    refused = [r.getMessage() for r in caplog.records if "connection limit 3 reached" in r.getMessage()]
    assert len(refused) == 1  # rate-limited


def test_default_connection_limit_follows_the_open_file_limit() -> None:
    import resource

    from mpim import config
    from mpim.worker.connections import connection_limit

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_limit(config.Config()) == max(1, soft - 64)
    assert connection_limit(config.replace(config.Config(), server={"max_connections": 7})) == 7


@pytest.mark.parametrize("kind", KINDS)
def test_frames_pipelined_after_auth_are_answered_in_order_after_the_auth_reply(kind: str) -> None:
    """Frames sent while the session is being registered are held, then processed in order."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.client(kind)
            await client.send_raw(
                encode(Op.AUTH, b'{"mid":1,"key":"pipe"}', seq=1)
                + encode(Op.CHANGE_ROOM, b"live://p", seq=2)
                + encode(Op.HEARTBEAT, seq=3)
            )
            frames = [await client.recv() for _ in range(3)]
            assert [(f.op, f.seq) for f in frames] == [
                (Op.AUTH_REPLY, 1),
                (Op.CHANGE_ROOM_REPLY, 2),
                (Op.HEARTBEAT_REPLY, 3),
            ]
            assert int.from_bytes(frames[2].body, "big") == 1  # already in the room it asked for

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_an_anonymous_connection_is_served_but_cannot_ask_for_acks(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """json mode: mid 0 (or none) is goim's anonymous connection; it has no user stream, so an Auth
    asking for the ack cap is refused like a bad token (logged, counted towards a ban), as is a
    negative mid."""

    async def scenario() -> None:
        async with serving(limits={"exempt": [], "auth_failures": 3}) as srv:
            anonymous = await srv.authed(kind, key="anon", room_id="live://1", accepts=[1000])
            channel = srv.hub.buckets.get("anon")
            assert channel is not None and channel.mid == 0 and channel.room is not None
            for token in (b'{"caps":["ack"]}', b'{"mid":0,"key":"a2","caps":["seq","ack"]}', b'{"mid":-3}'):
                refused = await srv.client(kind)
                await refused.send(Op.AUTH, token)
                assert await refused.expect_closed() == []  # no Auth reply
            assert srv.hub.stats["auth_fail"] == 3 and srv.hub.stats["bans"] == 1
            assert srv.hub.online == 1 and await anonymous.heartbeat() == 1

    with caplog.at_level(logging.WARNING, logger="mpim.worker"):
        run(scenario)
    refused = [r.getMessage() for r in caplog.records if "auth refused" in r.getMessage()]
    assert len(refused) == 3
    assert 'the "ack" cap needs a user id (mid > 0)' in refused[0]
    assert "mid -3 is negative" in refused[2]
