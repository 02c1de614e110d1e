"""Every malformed input closes only the offending connection, cleanly, with one log
line; the worker keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mpim.proto import Op, encode
from tests.worker.harness import Running, run, serving


def header(pack_len: int, header_len: int = 16, op: int = Op.HEARTBEAT) -> bytes:
    return struct.pack(">ihhii", pack_len, header_len, 1, op, 1)


AUTH = encode(Op.AUTH, b'{"mid":1}', seq=1)
BAD_FRAMES = {
    "packLen below 16": (header(15), "packLen 15 < 16"),
    "packLen negative": (header(-5), "packLen -5 < 16"),
    "packLen over max body": (header(16 + 4097) + b"x" * 4097, "packLen 4113 > 16 + max body 4096"),
    "packLen huge": (header(0x7FFFFFF0), "> 16 + max body"),
    "headerLen short": (header(20, header_len=12) + b"abcd", "headerLen 12 != 16"),
    "headerLen long": (header(20, header_len=18) + b"abcd", "headerLen 18 != 16"),
}


async def bystander(srv: Running) -> object:
    return await srv.authed("tcp", mid=100, room_id="live://calm")


async def still_served(srv: Running, client: object) -> None:
    from mpim.client import Client

    assert isinstance(client, Client)
    assert await client.heartbeat() == 1
    assert srv.hub.push_room(1000, "live://calm", b"fine")
    frame = await client.recv_push()
    assert frame.body == b"fine"


def closing_lines(caplog: pytest.LogCaptureFixture, reason: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if reason in r.getMessage()]


@pytest.mark.parametrize("case", list(BAD_FRAMES))
@pytest.mark.parametrize("authed", [False, True])
@pytest.mark.parametrize("kind", ["tcp", "ws"])
def test_bad_frame(kind: str, case: str, authed: bool, caplog: pytest.LogCaptureFixture) -> None:
    data, reason = BAD_FRAMES[case]

    async def scenario() -> None:
        async with serving() as srv:
            calm = await bystander(srv)
            client = await srv.client(kind)
            if authed:
                await client.auth({"mid": 2})
            await client.send_raw(data)
            assert await client.expect_closed() == []
            await still_served(srv, calm)

    with caplog.at_level(logging.INFO, logger="mpim.worker"):
        run(scenario)
    assert len(closing_lines(caplog, reason)) == 1


def test_tcp_stream_truncated_at_close(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            calm = await bystander(srv)
            loop = asyncio.get_running_loop()
            sock = socket.create_connection(srv.tcp)
            sock.setblocking(False)
            await loop.sock_sendall(sock, AUTH + encode(Op.HEARTBEAT, b"")[:9])
            await asyncio.sleep(0.1)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := await asyncio.wait_for(loop.sock_recv(sock, 4096), 5):
                data += chunk
            sock.close()
            assert data == encode(Op.AUTH_REPLY, seq=1)
            await still_served(srv, calm)

    with caplog.at_level(logging.INFO, logger="mpim.worker"):
        run(scenario)
    assert len(closing_lines(caplog, "stream closed inside a frame (9 bytes pending)")) == 1


def test_websocket_message_ending_inside_a_frame(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            calm = await bystander(srv)
            client = await srv.ws_client()
            await client.auth({"mid": 2})
            await client.send_raw(encode(Op.HEARTBEAT) + encode(Op.SEND_MSG, b"abc")[:18])
            got = await client.expect_closed()
            assert got == []  # the whole message is refused before any frame of it is served
            await still_served(srv, calm)

    with caplog.at_level(logging.INFO, logger="mpim.worker"):
        run(scenario)
    assert len(closing_lines(caplog, "message ends inside a frame")) == 1


def test_websocket_several_frames_in_one_message_and_fragments() -> None:
    async def scenario() -> None:
        async with serving() as srv, ws_connect(srv.ws_url) as conn:
            await conn.send(encode(Op.AUTH, b'{"mid":3}', seq=1) + encode(Op.HEARTBEAT, seq=2))
            replies = [await asyncio.wait_for(conn.recv(), 5) for _ in range(2)]
            assert [r[8:12] for r in replies] == [b"\x00\x00\x00\x08", b"\x00\x00\x00\x03"]
            frame = encode(Op.HEARTBEAT, seq=3)
            await conn.send([frame[:5], frame[5:11], frame[11:]])  # one fragmented message
            reply = await asyncio.wait_for(conn.recv(), 5)
            assert isinstance(reply, bytes) and reply[8:16] == b"\x00\x00\x00\x03\x00\x00\x00\x03"

    run(scenario)


def test_websocket_message_over_limit_closes_1009() -> None:
    async def scenario() -> None:
        async with serving(websocket={"max_message": 1024}) as srv:
            calm = await bystander(srv)
            async with ws_connect(srv.ws_url, max_size=None) as conn:
                await conn.send(encode(Op.AUTH, b'{"mid":3}', seq=1))
                await asyncio.wait_for(conn.recv(), 5)
                await conn.send(b"\x00" * 2000)
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(conn.recv(), 5)
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009
            await still_served(srv, calm)

    run(scenario)


@pytest.mark.parametrize("path", ["/", "/other", "/sub/more"])
def test_websocket_unknown_path_is_404(path: str) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            calm = await bystander(srv)
            url = srv.ws_url.rsplit("/", 1)[0] + path
            with pytest.raises(InvalidStatus) as info:
                await ws_connect(url)
            assert info.value.response.status_code == 404
            await still_served(srv, calm)

    run(scenario)


def test_plain_http_on_websocket_port_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            calm = await bystander(srv)
            host, port = srv.ws_url.split("/")[2].split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /sub HTTP/1.1\r\nHost: x\r\n\r\n")
            response = await asyncio.wait_for(reader.read(), 5)
            assert response.startswith((b"HTTP/1.1 426", b"HTTP/1.1 400"))
            writer.close()
            reader2, writer2 = await asyncio.open_connection(host, int(port))
            writer2.write(b"GARBAGE-not-http\r\n\r\n")
            assert await asyncio.wait_for(reader2.read(), 5) == b""  # closed without a reply
            writer2.close()
            await still_served(srv, calm)

    with caplog.at_level(logging.INFO, logger="mpim.worker"):
        run(scenario)
    assert len(closing_lines(caplog, "websocket handshake failed: missing Connection")) == 1
    assert len(closing_lines(caplog, "handshake failed: did not receive a valid HTTP")) == 1


@pytest.mark.parametrize(
    "first", [AUTH, b"\x16\x03\x01 TLS hello", b"get /sub HTTP/1.1\r\n"], ids=["goim", "tls", "lowercase"]
)
def test_websocket_port_refuses_at_once_what_cannot_be_http(
    first: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A goim TCP client (or TLS) on the WebSocket port gets 400 and a close at once, not after the
    handshake timeout (an hour here, far beyond the test's read guard)."""

    async def scenario() -> None:
        async with serving(protocol={"handshake_timeout": 3600.0}) as srv:
            calm = await bystander(srv)
            host, port = srv.ws_url.split("/")[2].split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(first)
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            assert answer.endswith(b"\r\n\r\nBad Request: this is a WebSocket port\n")
            writer.close()
            await still_served(srv, calm)

    with caplog.at_level(logging.INFO, logger="mpim.worker"):
        run(scenario)
    reason = f"not an HTTP request (first byte 0x{first[0]:02x}) on the WebSocket port"
    assert len(closing_lines(caplog, reason)) == 1


def test_abrupt_disconnects_leave_no_trace() -> None:
    async def scenario() -> None:
        async with serving() as srv:
            calm = await bystander(srv)
            loop = asyncio.get_running_loop()
            for payload in (b"", AUTH, AUTH + b"\x00\x00"):
                sock = socket.create_connection(srv.tcp)
                sock.setblocking(False)
                if payload:
                    await loop.sock_sendall(sock, payload)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # RST
            await srv.settle(lambda: srv.hub.connections == 1)
            await still_served(srv, calm)

    run(scenario)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"live://\xff\xfe", "invalid start byte"), (b"live://\xed\xa0\x80", "invalid continuation byte")],
    ids=["not-utf8", "utf8-encoded-surrogate"],
)
@pytest.mark.parametrize("kind", ["tcp", "ws"])
def test_change_room_with_invalid_utf8_closes(
    kind: str, body: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            calm = await bystander(srv)
            client = await srv.authed(kind, mid=2, room_id="live://calm")
            await client.send(Op.CHANGE_ROOM, body)
            assert await client.expect_closed() == []
            await still_served(srv, calm)  # live://calm counts 1 again: the closed client left it

    with caplog.at_level(logging.INFO, logger="mpim.worker"):
        run(scenario)
    assert len(closing_lines(caplog, f"bad room id: 'utf-8' codec can't decode byte 0x{body[7]:x}")) == 1
    assert reason in closing_lines(caplog, "bad room id")[0]


@pytest.mark.parametrize("field", ["key", "room_id", "platform"])
def test_token_with_a_lone_surrogate_is_refused(field: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving() as srv:
            calm = await bystander(srv)
            client = await srv.tcp_client()
            await client.send(Op.AUTH, b'{"mid":2,"%s":"x\\ud800"}' % field.encode())
            assert await client.expect_closed() == []
            await still_served(srv, calm)

    with caplog.at_level(logging.INFO, logger="mpim.worker"):
        run(scenario)
    assert len(closing_lines(caplog, f"{field} is not valid UTF-8")) == 1


BAD_RELIABLE = {
    "confirm without id": (22, b"{}", "confirm (op 22) body must be"),
    "confirm not JSON": (22, b"{", "confirm (op 22) body must be"),
    "confirm id not text": (22, b'{"id": 5}', "confirm (op 22) body must be"),
    "confirm id surrogate": (22, b'{"id": "\\ud800"}', "confirm (op 22) body must be"),
    "resume epoch surrogate": (20, b'{"epoch": "\\ud800", "seq": 1}', "is not one the server gave"),
    "resume epoch too long": (20, b'{"epoch": "%s", "seq": 1}' % (b"a" * 65), "is not one the server gave"),
    "resume seq negative": (20, b'{"epoch": "ab", "seq": -1}', "resume (op 20) body must be"),
    "resume not an object": (20, b"[1]", "resume (op 20) body must be a JSON object"),
    "ack with a body": (18, b"7", "ack (op 18) must have an empty body"),
}


@pytest.mark.parametrize("case", list(BAD_RELIABLE))
@pytest.mark.parametrize("kind", ["tcp", "ws"])
def test_a_bad_reliable_frame_gets_op_6_a_close_and_one_line(
    kind: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every field of ops 18, 20 and 22 is checked at the edge: no traceback, no hang."""
    op, body, reason = BAD_RELIABLE[case]

    async def scenario() -> None:
        async with serving(upstream={"ack": "rigor"}) as srv:
            calm = await bystander(srv)
            client = await srv.authed(kind, mid=2, key="bad", caps=["ack"])
            await client.send(op, body)
            assert [f.op for f in await client.expect_closed()] == [Op.DISCONNECT_REPLY]
            await still_served(srv, calm)

    with caplog.at_level(logging.INFO, logger="mpim.worker"):
        run(scenario)
    assert len(closing_lines(caplog, reason)) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"id": "a", "to": 5, "op": 1000, "body": "\\ud800"}', "body is not valid UTF-8"),
        (b'{"id": "\\ud800", "op": 1000}', "id is not valid UTF-8"),
    ],
)
def test_a_bad_message_body_is_answered_400_and_the_connection_stays(
    body: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with serving(upstream={"ack": "only"}) as srv:
            client = await srv.authed("tcp", mid=2, key="msg", caps=["ack"])
            await client.send(Op.SEND_MSG, body)
            answer = await client.recv()
            assert answer.op == Op.SEND_MSG_REPLY
            assert json.loads(answer.body)["code"] == -400 and why in json.loads(answer.body)["message"]
            assert await client.heartbeat() == 0

    with caplog.at_level(logging.INFO, logger="mpim.worker"):
        run(scenario)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
