"""The worker's delivery API (used by the bus): push to keys, to a room, to all;
room batching on both transports; slow consumers."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

from mpim.client import Client
from mpim.proto import Op, decode, encode, encode_header
from mpim.worker.tcp import TcpChannel
from mpim.worker.ws import WsChannel
from mpim.worker.wsframe import binary_frame
from tests.worker.harness import run, serving

KINDS = ["tcp", "ws"]


async def drain_pushes(client: Client, count: int) -> list[tuple[int, bytes]]:
    return [(f.op, f.body) for f in [await client.recv_push() for _ in range(count)]]


@pytest.mark.parametrize("kind", KINDS)
def test_push_keys_honours_watch_set(kind: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            a = await srv.authed(kind, mid=1, key="a", accepts=[1000])
            b = await srv.authed(kind, mid=2, key="b", accepts=[1001])
            assert srv.hub.push_keys(1000, ["a", "b", "nobody"], b"to-a") == 1
            assert srv.hub.push_keys(1001, ["a", "b"], b"to-b") == 1
            assert await drain_pushes(a, 1) == [(1000, b"to-a")]
            assert await drain_pushes(b, 1) == [(1001, b"to-b")]
            frame = await a.heartbeat()  # nothing else queued for a
            assert frame == 0

    run(scenario)


def test_one_push_by_mid_record_reaches_every_user_it_names() -> None:
    """A stored push by mid names many users in one record: goim clients (TCP and WebSocket,
    no ``ack`` cap) each get goim's frame with seq 0; a key named twice gets it twice."""

    async def scenario() -> None:
        async with serving() as srv:
            tcp = await srv.authed("tcp", mid=1, key="t", accepts=[1000])
            ws = await srv.authed("ws", mid=2, key="w", accepts=[1000])
            raw = srv.clients[0]
            delivery = srv.hub.delivery
            assert delivery.push_mids(1000, ["t", "w", "gone", "t"], [4, 9, 2, 5], b"m") == 3
            frames = [await raw.recv(), await raw.recv()]
            assert [(f.op, f.seq, f.body) for f in frames] == [(1000, 0, b"m"), (1000, 0, b"m")]
            assert await drain_pushes(ws, 1) == [(1000, b"m")]
            counts = srv.hub.counters()
            assert (counts["keys_pushes"], counts["keys_deliveries"], counts["keys_offline"]) == (1, 3, 1)
            assert await tcp.heartbeat() == 0

    run(scenario)


def test_push_key_frame_layout_is_goim() -> None:
    async def scenario() -> None:
        async with serving() as srv:
            await srv.authed("tcp", mid=1, key="t", accepts=[1000])
            sock_client = srv.clients[-1]
            srv.hub.push_keys(1000, ["t"], b'{"hello":1}')
            frame = await sock_client.recv()
            assert (frame.ver, frame.op, frame.seq, frame.body) == (1, 1000, 0, b'{"hello":1}')

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_push_room_ignores_watch_set_and_reaches_only_members(kind: str) -> None:
    async def scenario() -> None:
        async with serving(room={"batch_delay": 0.0}) as srv:
            members = [
                await srv.authed(k, mid=i, room_id="live://r", accepts=[]) for i, k in enumerate(KINDS)
            ]
            outsider = await srv.authed(kind, mid=9, room_id="live://other", accepts=[1000])
            assert srv.hub.push_room(1000, "live://r", b"room-msg")
            assert not srv.hub.push_room(1000, "live://empty", b"x")
            for member in members:
                assert await drain_pushes(member, 1) == [(1000, b"room-msg")]
            assert await outsider.heartbeat() == 1  # the outsider got nothing before its reply

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_push_all_honours_watch_set(kind: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            watchers = [await srv.authed(k, mid=i, accepts=[1002]) for i, k in enumerate(KINDS * 2)]
            other = await srv.authed(kind, mid=99, accepts=[1000])
            srv.hub.push_all(1002, 0, b"everyone")
            for watcher in watchers:
                assert await drain_pushes(watcher, 1) == [(1002, b"everyone")]
            assert await other.heartbeat() == 0

    run(scenario)


def test_push_all_paced_keeps_order_and_speed() -> None:
    async def scenario() -> None:
        async with serving() as srv:
            clients = [await srv.authed(k, mid=i, accepts=[1000]) for i, k in enumerate(KINDS * 5)]
            loop = asyncio.get_running_loop()
            start = loop.time()
            srv.hub.push_all(1000, 20, b"first")  # 10 connections at 20/s: ~0.5 s
            srv.hub.push_all(1000, 0, b"second")  # unpaced, but queued behind the first
            for client in clients:
                assert await drain_pushes(client, 2) == [(1000, b"first"), (1000, b"second")]
            assert loop.time() - start >= 0.4  # paced: not all at once

    run(scenario)


def test_room_batch_format_tcp_is_concatenated_frames() -> None:
    async def scenario() -> None:
        async with serving(room={"batch": 20, "batch_delay": 0.2}) as srv:
            client = await srv.authed("tcp", mid=1, room_id="live://b")
            bodies = [b"m%d" % i for i in range(3)]
            for body in bodies:
                srv.hub.push_room(1000, "live://b", body)
            expected = b"".join(encode(1000, body) for body in bodies)
            reader: Any = client._reader  # type: ignore[attr-defined]
            data = await asyncio.wait_for(reader.readexactly(len(expected)), 5)
            assert data == expected  # no outer op-9 header on TCP

    run(scenario)


def test_room_batch_format_websocket_is_one_op9_message() -> None:
    async def scenario() -> None:
        async with serving(room={"batch": 20, "batch_delay": 0.1}) as srv:
            conn = await ws_connect(srv.ws_url)
            await conn.send(encode(Op.AUTH, b'{"mid":1,"room_id":"live://b"}', seq=1))
            await asyncio.wait_for(conn.recv(), 5)
            bodies = [b"m%d" % i for i in range(3)]
            for body in bodies:
                srv.hub.push_room(1000, "live://b", body)
            message = await asyncio.wait_for(conn.recv(), 5)
            inner = b"".join(encode(1000, body) for body in bodies)
            assert message == encode_header(Op.RAW, len(inner)) + inner
            assert [f.body for f in decode(message[16:])[0]] == bodies
            await conn.close()

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_room_flushes_at_batch_count(kind: str) -> None:
    async def scenario() -> None:
        async with serving(room={"batch": 3, "batch_delay": 10.0}) as srv:
            client = await srv.authed(kind, mid=1, room_id="live://n")
            for i in range(4):
                srv.hub.push_room(1000, "live://n", b"%d" % i)
            first = await client.recv(timeout=5)
            if kind == "ws":
                assert first.op == Op.RAW and len(decode(first.body)[0]) == 3
            else:
                assert first.body == b"0"
            room = srv.hub.rooms.get("live://n")
            assert room is not None and room.pending == [encode(1000, b"3")]  # waits for the delay

    run(scenario)


def test_room_frame_is_encoded_once_for_all_members(monkeypatch: pytest.MonkeyPatch) -> None:
    writes = _spy_writes(monkeypatch)

    async def scenario() -> None:
        async with serving(room={"batch_delay": 0.0}) as srv:
            clients = [await srv.authed(k, mid=i, room_id="live://once") for i, k in enumerate(KINDS * 3)]
            writes.clear()
            srv.hub.push_room(1000, "live://once", b"same bytes")
            for client in clients:
                await drain_pushes(client, 1)
            tcp = [data for is_ws, data in writes if not is_ws]
            ws = [data for is_ws, data in writes if is_ws]
            assert len(tcp) == 3 and len(ws) == 3
            assert all(data is tcp[0] for data in tcp) and all(data is ws[0] for data in ws)
            inner = encode(1000, b"same bytes")
            assert tcp[0] == inner and ws[0] == binary_frame(encode_header(Op.RAW, len(inner)) + inner)

    run(scenario)


def _spy_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, bytes]]:
    writes: list[tuple[bool, bytes]] = []
    for cls in (TcpChannel, WsChannel):
        original = cls.write

        def spy(self: Any, data: bytes, _original: Any = original) -> None:
            writes.append((self.is_ws, data))
            _original(self, data)

        monkeypatch.setattr(cls, "write", spy)
    return writes


def test_default_config_writes_a_quiet_rooms_message_in_the_same_loop_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes = _spy_writes(monkeypatch)

    async def scenario() -> None:
        async with serving() as srv:  # mpim's defaults: adaptive, batch_delay 10 ms
            clients = [await srv.authed(k, mid=i, room_id="live://q") for i, k in enumerate(KINDS)]
            writes.clear()
            srv.hub.push_room(1000, "live://q", b"at once")
            assert writes == []  # not inside the bus callback...
            await asyncio.sleep(0)  # ...but before this task runs again: no window, no timer
            inner = encode(1000, b"at once")
            assert sorted(writes) == [
                (False, inner),
                (True, binary_frame(encode_header(Op.RAW, len(inner)) + inner)),
            ]
            for client in clients:
                assert await drain_pushes(client, 1) == [(1000, b"at once")]

    run(scenario)


def test_default_config_batches_a_burst_into_one_write_per_member(monkeypatch: pytest.MonkeyPatch) -> None:
    writes = _spy_writes(monkeypatch)

    async def scenario() -> None:
        async with serving() as srv:
            clients = [await srv.authed(k, mid=i, room_id="live://burst") for i, k in enumerate(KINDS)]
            writes.clear()
            bodies = [b"b%d" % i for i in range(10)]
            for body in bodies:  # one bus read's worth
                srv.hub.push_room(1000, "live://burst", body)
            await asyncio.sleep(0)
            inner = b"".join(encode(1000, body) for body in bodies)
            assert sorted(writes) == [
                (False, inner),
                (True, binary_frame(encode_header(Op.RAW, len(inner)) + inner)),
            ]
            for client in clients:
                assert await drain_pushes(client, 10) == [(1000, body) for body in bodies]

    run(scenario)


def test_room_order_is_kept_across_batches() -> None:
    async def scenario() -> None:
        async with serving(room={"batch": 7, "batch_delay": 0.001}) as srv:
            clients = [await srv.authed(k, mid=i, room_id="live://o") for i, k in enumerate(KINDS)]
            for i in range(100):
                srv.hub.push_room(1000, "live://o", b"%d" % i)
                if i % 13 == 0:
                    await asyncio.sleep(0.002)
            for client in clients:
                got = await drain_pushes(client, 100)
                assert [int(body) for _, body in got] == list(range(100))

    run(scenario)


async def _stalled_socket(addr: tuple[str, int]) -> socket.socket:
    """A client that authenticates, then never reads again (tiny receive buffer)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, addr)
    await loop.sock_sendall(sock, encode(Op.AUTH, b'{"mid":5,"key":"slow","accepts":[1000]}', seq=1))
    reply = await asyncio.wait_for(loop.sock_recv(sock, 16), 5)
    assert reply == encode(Op.AUTH_REPLY, seq=1)
    return sock


SLOW = {"channel": {"max_pending_bytes": 65536, "high_water": 8192, "slow_timeout": 30.0}}


def test_slow_consumer_over_buffer_limit_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(tcp={"sndbuf": 4096}, **SLOW) as srv:
            fast = await srv.authed("ws", mid=1, key="fast", accepts=[1000])
            sock = await _stalled_socket(srv.tcp)
            await srv.settle(lambda: srv.hub.buckets.get("slow") is not None)
            body = b"x" * 1024
            for _ in range(400):
                srv.hub.push_keys(1000, ["slow", "fast"], body)
                await asyncio.sleep(0)
            await srv.settle(lambda: srv.hub.buckets.get("slow") is None)
            assert srv.hub.stats["slow_cut"] == 1
            assert len(await drain_pushes(fast, 400)) == 400  # the fast one got everything
            sock.close()

    with caplog.at_level(logging.WARNING, logger="mpim.worker"):
        run(scenario)
    cuts = [r.getMessage() for r in caplog.records if "slow consumer" in r.getMessage()]
    assert len(cuts) == 1 and "key=slow" in cuts[0] and "over the limit" in cuts[0]


def test_slow_consumer_paused_too_long_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        slow = {"channel": {"max_pending_bytes": 1 << 20, "high_water": 4096, "slow_timeout": 0.3}}
        async with serving(tcp={"sndbuf": 4096}, **slow) as srv:
            sock = await _stalled_socket(srv.tcp)
            await srv.settle(lambda: srv.hub.buckets.get("slow") is not None)
            for _ in range(200):
                srv.hub.push_keys(1000, ["slow"], b"y" * 1024)
            await srv.settle(lambda: srv.hub.buckets.get("slow") is None, timeout=10)
            sock.close()

    with caplog.at_level(logging.WARNING, logger="mpim.worker"):
        run(scenario)
    assert any("paused over 0.3s" in r.getMessage() for r in caplog.records)


def test_slow_websocket_consumer_is_cut() -> None:
    async def scenario() -> None:
        async with serving(**SLOW) as srv, ws_connect(srv.ws_url, max_queue=1, close_timeout=0.5) as conn:
            await conn.send(encode(Op.AUTH, b'{"mid":5,"key":"slowws","accepts":[1000]}', seq=1))
            await asyncio.wait_for(conn.recv(), 5)
            for _ in range(20000):
                srv.hub.push_keys(1000, ["slowws"], b"z" * 4000)
                await asyncio.sleep(0)
                if srv.hub.buckets.get("slowws") is None:
                    break
            await srv.settle(lambda: srv.hub.buckets.get("slowws") is None)
            assert srv.hub.stats["slow_cut"] == 1

    run(scenario)
