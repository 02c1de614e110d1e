"""The go-zero endpoint on an in-process worker (no router): the upgrade, the frames, pushes, errors."""

from __future__ import annotations

import asyncio
import logging

import pytest
from websockets.exceptions import InvalidMessage, InvalidStatus

from mpim.auth import mint
from mpim.worker.channel import AUTHED
from tests.gzclient import GzClient
from tests.worker.harness import Running, run, serving

SECRET = "gozero-secret-" + "x" * 40
GZ = {"gozero": {"path": "/ws"}}


def gz_url(srv: Running) -> str:
    return srv.ws_url.rsplit("/", 1)[0] + "/ws"


async def gz(srv: Running, token: str | dict[str, object], via: str = "query") -> GzClient:
    client = await GzClient.connect(gz_url(srv), token, via)
    await srv.settle(lambda: any(ch.is_gozero and ch.state == AUTHED for ch in srv.hub))
    return client


def test_the_endpoint_is_off_unless_configured() -> None:
    async def scenario() -> None:
        async with serving() as srv:
            with pytest.raises(InvalidStatus) as info:
                await GzClient.connect(gz_url(srv), {"mid": 1})
            assert info.value.response.status_code == 404

    run(scenario())


@pytest.mark.parametrize("via", ["query", "bearer", "subprotocol"])
def test_a_jwt_in_each_place_and_the_subprotocol_is_echoed(via: str) -> None:
    async def scenario() -> None:
        async with serving(auth={"mode": "jwt", "secret": SECRET}, **GZ) as srv:
            token = mint(SECRET, 42)
            client = await GzClient.connect(gz_url(srv), token, via)
            assert client.conn.subprotocol == (token if via == "subprotocol" else None)
            await client.send(frameType=1)
            assert (await client.recv())["frameType"] == 1
            (channel,) = [ch for ch in srv.hub if ch.is_gozero]
            assert (channel.mid, channel.key) == (42, "gozero-42")
            sub = await GzClient.connect(gz_url(srv), jwt_sub(), via)  # go-zero's tokens: the user in sub
            await sub.send(frameType=1)
            assert (await sub.recv())["frameType"] == 1
            await client.close()
            await sub.close()

    run(scenario())


def jwt_sub() -> str:
    import time

    import jwt

    return jwt.encode({"sub": "43", "exp": time.time() + 60}, SECRET, algorithm="HS256")


@pytest.mark.parametrize("token", ["", "not-a-jwt", "wrong"])
def test_auth_is_refused_with_401_and_counted(token: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(auth={"mode": "jwt", "secret": SECRET}, **GZ) as srv:
            bad = mint("another-secret-" + "y" * 40, 1) if token == "wrong" else token
            with pytest.raises(InvalidStatus) as info:
                await GzClient.connect(gz_url(srv), bad)
            assert info.value.response.status_code == 401
            await srv.settle(lambda: srv.hub.connections == 0)
            assert srv.hub.stats["auth_fail"] == 1 and srv.hub.stats["opened_gozero"] == 0

    with caplog.at_level(logging.INFO, "mpim.worker"):
        run(scenario())
    refused = [r for r in caplog.records if "auth refused" in r.getMessage()]
    assert len(refused) == 1 and "on the go-zero path" in refused[0].getMessage()


def test_an_anonymous_json_token_is_refused() -> None:
    async def scenario() -> None:
        async with serving(**GZ) as srv:
            with pytest.raises(InvalidStatus) as info:
                await GzClient.connect(gz_url(srv), {"key": "anon"})
            assert info.value.response.status_code == 401

    run(scenario())


def test_ping_unknown_method_and_frame_types() -> None:
    async def scenario() -> None:
        async with serving(**GZ) as srv:
            client = await gz(srv, {"mid": 5})
            await client.send(frameType=1, id="p")
            assert await client.recv() == {
                "frameType": 1, "id": "", "ackSeq": 0, "method": "", "formId": "", "data": None,
            }  # fmt: skip
            await client.send(frameType=0, id="u1", method="friend.list", data={})
            unknown = await client.recv()
            assert (unknown["frameType"], unknown["id"], unknown["method"]) == (0, "u1", "friend.list")
            assert unknown["data"] == "unknown method: friend.list"
            await client.send(frameType=6, transpondUid="7", data="x")
            assert "transpond" in (await client.recv())["data"]
            await client.send(frameType=5)
            assert (await client.recv())["data"] == "unknown frameType 5"
            await client.send(frameType=9, data="the client's error")  # ignored
            await client.send(frameType=0, id="c1", method="conversation.chat", data={"recvId": 6, "msg": {}})
            refused = await client.recv()  # no router here: private chat cannot be stored
            assert (refused["frameType"], refused["id"], refused["code"]) == (9, "c1", -501)
            await client.send(method="user.online", id="o1")
            assert (await client.recv())["code"] == -501
            assert srv.hub.stats["gozero_data"] == 3 and srv.hub.stats["gozero_pings"] == 1

    run(scenario())


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("not json", "the frame is not JSON"),
        ("[1, 2]", "a frame must be a JSON object"),
        ('{"frameType": "0"}', "frameType must be an integer"),
        ('{"id": 5}', "id must be a string"),
        ('{"ackSeq": 1.5}', "ackSeq must be an int64"),
        (b"\xff\xfe", "not UTF-8"),
        ('{"data": "' + "x" * 5000 + '"}', "over [protocol] max_body"),
    ],
)
def test_a_bad_frame_gets_an_error_frame_one_log_line_and_a_close(
    message: str | bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with serving(**GZ) as srv:
            client = await gz(srv, {"mid": 5})
            await client.send_raw(message)
            got = await client.closed()
            assert len(got) == 1 and got[0]["frameType"] == 9 and why in got[0]["data"], got
            assert got[0]["code"] == -400
            await srv.settle(lambda: srv.hub.connections == 0)
            assert srv.hub.stats["gozero_bad"] == 1 and srv.hub.stats["rejected"] == 1
            survivor = await gz(srv, {"mid": 6})  # the worker goes on
            await survivor.send(frameType=1)
            assert (await survivor.recv())["frameType"] == 1

    with caplog.at_level(logging.DEBUG, "mpim"):
        run(scenario())
    lines = [r.getMessage() for r in caplog.records if "go-zero frame" in r.getMessage()]
    assert len(lines) == 1 and why in lines[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_one_connection_per_user_and_goim_devices_are_not_kicked() -> None:
    async def scenario() -> None:
        async with serving(**GZ) as srv:
            phone = await srv.authed("tcp", mid=5, key="phone", accepts=[1000])
            first = await gz(srv, {"mid": 5})
            second = await GzClient.connect(gz_url(srv), {"mid": 5})
            assert await first.closed() == []  # go-zero closes the older one, without a word
            await second.send(frameType=1)
            assert (await second.recv())["frameType"] == 1
            assert srv.hub.stats["kicked"] == 1
            assert await phone.heartbeat() == 0  # the goim device of the same user stays
            counters = srv.hub.counters()
            assert (counters["conns_gozero"], counters["conns_tcp"], counters["conns_ws"]) == (1, 1, 0)
            assert (counters["opened_gozero"], counters["closed_gozero"]) == (2, 1)

    run(scenario())


def test_pushes_of_every_kind_reach_go_zero_clients() -> None:
    async def scenario() -> None:
        async with serving(**GZ) as srv:
            client = await gz(srv, {"mid": 5, "room_id": "live://9"})
            goim = await srv.authed("ws", mid=6, key="k6", room_id="live://9", accepts=[1000])
            hub = srv.hub
            assert hub.push_keys(1000, ["gozero-5"], b'{"k":1}') == 1
            assert (await client.push())["data"] == {"k": 1}
            hub.push_room(1001, "live://9", b"room text")
            room = await client.push()
            assert (room["data"], room["op"], room["formId"]) == ("room text", 1001, "root")
            assert room["ackSeq"] == 0  # (not stored: nothing to ack)
            assert (await goim.recv_push()).body == b"room text"  # (goim's bytes, unchanged)
            hub.push_all(7, 0, b"\x00\xff")
            everyone = await client.push()
            assert everyone["base64"] is True and everyone["op"] == 7  # every op reaches go-zero clients
            hub.delivery.push_mids(1000, ["gozero-5"], [1], b'{"id":"m","from":6,"to":5,"body":"hi"}')
            chat = await client.push()
            assert (chat["formId"], chat["id"], chat["ackSeq"]) == ("6", "m", 1)
            assert chat["data"]["msg"]["content"] == "hi"
            (channel,) = [ch for ch in hub if ch.is_gozero]
            assert channel.rel.unacked
            await client.ack_pushes(1)
            await srv.settle(lambda: not channel.rel.unacked and channel.rel.acked == 1)

    run(scenario())


def test_frames_sent_before_the_session_is_filed_are_held_in_order() -> None:
    async def scenario() -> None:
        async with serving(**GZ) as srv:
            client = await GzClient.connect(gz_url(srv), {"mid": 5})
            for i in range(3):
                await client.send(frameType=0, id=f"u{i}", method="x")
            assert [(await client.recv())["id"] for _ in range(3)] == ["u0", "u1", "u2"]

    run(scenario())


def test_the_upstream_rate_limit_applies() -> None:
    async def scenario() -> None:
        async with serving(upstream={"rate": 1.0, "burst": 3}, **GZ) as srv:
            client = await gz(srv, {"mid": 5})
            for _ in range(5):
                await client.send(frameType=1)
            got = await client.closed()
            assert [f["frameType"] for f in got] == [1, 1, 1]
            assert srv.hub.stats["rate_cut"] == 1

    run(scenario())


@pytest.mark.parametrize(
    "headers",
    [
        b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n",  # two: refused, not a crash
        b"Authorization: Bearer \xe9\xff\r\n",
        b"Authorization: Basic eDp5\r\n",  # not a bearer token: no token at all
        b"Sec-WebSocket-Protocol: a, b.c.d, e\r\n",
    ],
)
def test_odd_upgrade_requests_are_refused_with_401(headers: bytes, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(auth={"mode": "jwt", "secret": SECRET}, **GZ) as srv:
            host, port = gz_url(srv).split("//")[1].split("/")[0].split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                + headers
                + b"\r\n"
            )
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 401 "), answer
            assert srv.hub.stats["auth_fail"] == 1

    with caplog.at_level(logging.INFO, "mpim"):
        run(scenario())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_failed_upgrades_count_towards_the_per_ip_ban() -> None:
    async def scenario() -> None:
        limits = {"auth_failures": 2, "exempt": [], "ban_time": 60.0}
        async with serving(limits=limits, **GZ) as srv:
            for _ in range(2):
                with pytest.raises(InvalidStatus):
                    await GzClient.connect(gz_url(srv), {"key": "anonymous"})
            with pytest.raises((OSError, InvalidMessage)):  # banned: closed at once, no HTTP answer
                await GzClient.connect(gz_url(srv), {"mid": 5})
            assert srv.hub.stats["bans"] == 1 and srv.hub.stats["opened_gozero"] == 0

    run(scenario())
