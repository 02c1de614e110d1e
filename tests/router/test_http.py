"""The HTTP adapter driven with a mock transport: no sockets."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from mpim import bus, config
from mpim.records import PushAll, PushRoom
from mpim.router.api import PushApi
from mpim.router.http import HttpProtocol, HttpState
from tests.router.fakes import Harness, MockTransport, RecordingInbox


class FakeClock:
    """Stands in for the loop in HttpState, which reads only ``time()``. It starts at 0, as the
    monotonic clock of a machine that just booted: no test may assume that clock is large."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def time(self) -> float:
        return self.t


class Conn:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: FakeClock | None = None,
        router: dict[str, Any] | None = None,
        **http: Any,
    ) -> None:
        """``clock``: the HttpState reads its time from it from the start (the connection included)."""
        cfg = config.replace(
            config.Config(), http={"max_body": 100, "max_header": 512, **http}, router=router or {}
        )
        self.harness = Harness(cfg)
        self.sent = self.harness.bus.published
        self.state = HttpState(cfg, PushApi(cfg, self.harness.router), clock or loop)  # type: ignore[arg-type]
        self.proto = HttpProtocol(self.state)
        self.transport = MockTransport()
        self.proto.connection_made(self.transport)

    def feed(self, data: bytes, step: int = 0) -> None:
        if step:
            for i in range(0, len(data), step):
                self.proto.data_received(data[i : i + step])
        else:
            self.proto.data_received(data)

    def responses(self) -> list[tuple[int, dict[str, str], Any]]:
        out = []
        buf = bytes(self.transport.data)
        while buf:
            head, _, rest = buf.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
            size = int(headers["content-length"])
            out.append((status, headers, json.loads(rest[:size])))
            buf = rest[size:]
        return out


GOIM_ROOM = (
    b"POST /goim/push/room?operation=1000&type=test&room=1 HTTP/1.1\r\n"
    b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"
    b'{"test":1}'
)


@pytest.mark.parametrize("step", [0, 1, 7])
def test_goim_request_whole_and_byte_at_a_time(loop: asyncio.AbstractEventLoop, step: int) -> None:
    c = Conn(loop)
    c.feed(GOIM_ROOM, step)
    [(status, headers, body)] = c.responses()
    assert status == 200 and body == {"code": 0, "message": "", "data": None}
    assert headers["content-type"] == "application/json" and "date" in headers
    assert c.sent == [(bus.room_topic("test://1"), PushRoom(1000, b'{"test":1}'))]
    assert not c.transport.closed


def test_pipelined_requests_answered_in_order(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    get = b"GET /goim/online/total HTTP/1.1\r\nHost: x\r\n\r\n"
    bad = b"GET /goim/online/top?type=live HTTP/1.1\r\nHost: x\r\n\r\n"
    c.feed(GOIM_ROOM + get + bad + GOIM_ROOM)
    codes = [(s, b["code"]) for s, _, b in c.responses()]
    assert codes == [(200, 0), (200, 0), (200, -400), (200, 0)]
    assert len(c.sent) == 2 and not c.transport.closed


def test_chunked_body(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(
        b"POST /goim/push/all?operation=7 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert c.responses()[0][2]["code"] == 0
    assert c.sent == [(bus.BROADCAST, PushAll(7, 0, b"abcde"))]


def test_http10_closes_unless_keep_alive(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"GET /goim/online/total HTTP/1.0\r\n\r\n")
    assert c.responses()[0][1]["connection"] == "close" and c.transport.closed
    c = Conn(loop)
    c.feed(b"GET /goim/online/total HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert c.responses()[0][1]["connection"] == "keep-alive" and not c.transport.closed


def test_connection_close_header(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    total = b"GET /goim/online/total HTTP/1.1\r\n"
    c.feed(total + b"Connection: close\r\n\r\n" + total + b"\r\n")
    assert len(c.responses()) == 1 and c.transport.closed


def test_body_over_limit_by_content_length_is_413_then_close(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"POST /goim/push/all?operation=7 HTTP/1.1\r\nContent-Length: 101\r\n\r\n")
    [(status, headers, body)] = c.responses()
    assert status == 413 and body["code"] == -413 and "over the 100-byte limit" in body["message"]
    assert headers["connection"] == "close" and c.transport.closed and c.sent == []
    c.feed(b"x" * 101)  # ignored after the refusal
    assert len(c.responses()) == 1


def test_chunked_body_over_limit_is_413(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"POST /goim/push/all?operation=7 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.feed(b"40\r\n" + b"x" * 64 + b"\r\n" + b"40\r\n" + b"x" * 64 + b"\r\n")
    assert c.responses()[0][0] == 413 and c.transport.closed and c.sent == []


def test_body_at_the_limit_is_accepted(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"POST /goim/push/all?operation=7 HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)
    assert c.responses()[0][2]["code"] == 0


def test_headers_over_limit_are_431(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"GET /goim/online/total HTTP/1.1\r\nX-Big: " + b"a" * 600 + b"\r\n\r\n")
    assert c.responses()[0][0] == 431 and c.transport.closed
    c = Conn(loop)
    c.feed(b"GET /goim/online/total?" + b"a" * 600 + b" HTTP/1.1\r\n\r\n")
    assert c.responses()[0][0] == 431


def test_endless_header_line_is_cut(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"GET / HTTP/1.1\r\nX-Slow: ")
    for _ in range(100):
        if c.transport.closed:
            break
        c.feed(b"a" * 4096)
    assert c.transport.closed and c.responses()[0][0] == 431


@pytest.mark.parametrize(
    "garbage",
    [b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"\x00\x01\x02\r\n\r\n"],
)
def test_malformed_request_is_400_then_close(loop: asyncio.AbstractEventLoop, garbage: bytes) -> None:
    c = Conn(loop)
    c.feed(garbage)
    [(status, _, body)] = c.responses()
    assert status == 400 and body["code"] == -400 and c.transport.closed


def test_upgrade_is_refused(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"GET /sub HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert c.responses()[0][0] == 400 and c.transport.closed


def test_404_and_405_keep_the_connection(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(
        b"GET /nope HTTP/1.1\r\n\r\n"
        b"GET /goim/push/keys HTTP/1.1\r\n\r\n"
        b"GET /goim/online/total HTTP/1.1\r\n\r\n"
    )
    (s1, _, b1), (s2, h2, b2), (s3, _, _) = c.responses()
    assert (s1, b1["code"], s2, b2["code"], h2["allow"], s3) == (404, -404, 405, -405, "POST", 200)
    assert not c.transport.closed


def test_absolute_form_and_percent_encoded_path(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"GET http://h:1/goim/online/total?x=1 HTTP/1.1\r\n\r\nGET /goim/online/%74otal HTTP/1.1\r\n\r\n")
    assert [s for s, _, _ in c.responses()] == [200, 200]


def test_back_pressure_pauses_reading(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.proto.pause_writing()
    assert not c.transport.reading
    c.proto.resume_writing()
    assert c.transport.reading


def test_idle_connections_are_closed(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop, idle_timeout=0.1)
    c.proto.last_active -= 1.0
    c.state.tick()
    assert c.transport.closed and not c.state.connections


def test_expect_100_continue_gets_the_go_ahead(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"POST /goim/push/all?operation=7 HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert bytes(c.transport.data) == b"HTTP/1.1 100 Continue\r\n\r\n"
    c.transport.data.clear()
    c.feed(b"abc")
    assert c.responses()[0][2]["code"] == 0
    c = Conn(loop)
    c.feed(b"POST /goim/push/all?operation=7 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 500\r\n\r\n")
    assert c.responses()[0][0] == 413  # refused before the client sends the body


def clocked(loop: asyncio.AbstractEventLoop, **http: Any) -> tuple[Conn, FakeClock]:
    clock = FakeClock()
    return Conn(loop, clock, **http), clock


def advance(c: Conn, clock: FakeClock, seconds: float) -> None:
    clock.t += seconds
    c.state.tick()


@pytest.mark.parametrize(
    ("head", "trickle"),
    [
        (b"GET /goim/online/total HTTP/1.1\r\n", b"X-Slow: a\r\n"),  # slowloris headers
        (b"POST /goim/push/all?operation=7 HTTP/1.1\r\nContent-Length: 100\r\n\r\n", b"x"),  # slow body
    ],
    ids=["headers", "body"],
)
def test_request_trickling_past_request_timeout_gets_408(
    loop: asyncio.AbstractEventLoop, head: bytes, trickle: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mpim.http")
    c, clock = clocked(loop, request_timeout=10.0, idle_timeout=60.0)
    c.feed(head)
    for _ in range(5):  # 9 s: still within the limit, although idle never
        advance(c, clock, 1.8)
        c.feed(trickle)
    assert not c.transport.closed and c.transport.data == b""
    advance(c, clock, 1.8)  # 10.8 s after the first byte
    [(status, headers, body)] = c.responses()
    assert (status, body["code"], headers["connection"]) == (408, -408, "close")
    assert body["message"] == "request not complete within 10s"
    assert c.transport.closed and not c.state.connections and c.sent == []
    advance(c, clock, 1.0)
    lines = [r.getMessage() for r in caplog.records if "not complete" in r.getMessage()]
    assert lines == ["closing 127.0.0.1:5555: HTTP request not complete after 11s (limit 10s)"]


def test_request_timeout_counts_from_each_request(loop: asyncio.AbstractEventLoop) -> None:
    c, clock = clocked(loop, request_timeout=10.0, idle_timeout=60.0)
    total = b"GET /goim/online/total HTTP/1.1\r\n\r\n"
    c.feed(total)
    advance(c, clock, 30.0)  # an idle keep-alive connection between requests: no request timeout
    c.feed(total)
    c.feed(b"GET /goim/online/total HTTP/1.1\r\n")
    advance(c, clock, 9.0)
    assert not c.transport.closed and [s for s, _, _ in c.responses()] == [200, 200]
    c.feed(b"\r\n")  # completed in time
    advance(c, clock, 9.0)
    assert not c.transport.closed and [s for s, _, _ in c.responses()] == [200, 200, 200]


def test_request_timeout_over_a_real_socket() -> None:
    async def scenario() -> bytes:
        loop = asyncio.get_running_loop()
        cfg = config.replace(config.Config(), http={"request_timeout": 10.0})
        harness = Harness(cfg)
        state = HttpState(cfg, PushApi(cfg, harness.router), loop)
        clock = FakeClock()
        state.loop = clock  # type: ignore[assignment]
        state.tick()
        server = await loop.create_server(lambda: HttpProtocol(state), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /goim/online/total HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        while not any(c.request_started < clock.t + 1 for c in state.connections):
            await asyncio.sleep(0.01)  # until the server has read the first bytes
        clock.t += 10.5
        state.tick()
        answer = await asyncio.wait_for(reader.read(), 5)  # read() returns at EOF: the server closed
        writer.close()
        server.close()
        return answer

    answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"Connection: close\r\n" in answer
    assert answer.endswith(b'{"code":-408,"message":"request not complete within 10s"}')


def test_a_room_push_waiting_for_the_workers_keeps_later_answers_in_order(
    loop: asyncio.AbstractEventLoop,
) -> None:
    from mpim.records import BusSeen

    c = Conn(loop)
    link = c.harness.worker("w1")
    c.harness.connect(link, "k", 5, "test://1")
    c.feed(GOIM_ROOM + b"GET /goim/online/total HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.responses() == []  # the room push waits for its mark; the next answer waits behind it
    c.harness.send(link, BusSeen(c.harness.bus.end_turn()))
    c.harness.settle()  # (the router's futures live on the harness's loop)
    c.harness.settle()
    (s1, _, a1), (s2, _, a2) = c.responses()
    assert (s1, a1["code"], s2, a2["data"]["conn_count"]) == (200, 0, 200, 1)


def test_answers_ready_in_one_loop_turn_leave_in_one_write(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    link = c.harness.worker("w1")
    c.harness.connect(link, "k", 5)
    push = b"POST /goim/push/mids?operation=1000&mids=5 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"
    c.feed(push * 3)  # pipelined: stored in one batch, answered in the same turn
    for _ in range(6):
        c.harness.settle()
    answers = c.responses()
    assert [a["data"]["seqs"] for _, _, a in answers] == [{"5": 1}, {"5": 2}, {"5": 3}]
    assert c.transport.writes == 1


def test_refused_pushes_carry_http_503(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.harness.router.push.stop()
    c.feed(GOIM_ROOM)
    ((status, _, answer),) = c.responses()
    assert status == 503 and answer["code"] == -503 and "stopping" in answer["message"]
    assert not c.transport.closed


# -- the API key -------------------------------------------------------------------------------------

KEY = "0123456789abcdef-api-key"
GET_TOTAL = b"GET /goim/online/total HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    "header",
    [
        f"Authorization: Bearer {KEY}",
        f"authorization: bearer {KEY}",
        f"X-API-Key: {KEY}",
        f"x-api-key:   {KEY}  ",
    ],
)
def test_the_right_key_in_either_header_is_served(loop: asyncio.AbstractEventLoop, header: str) -> None:
    c = Conn(loop, api_key=KEY)
    c.feed(GET_TOTAL + header.encode() + b"\r\n\r\n", step=3)
    [(status, _, body)] = c.responses()
    assert status == 200 and body["code"] == 0 and not c.transport.closed


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"Authorization: Bearer wrong-key-wrong-key\r\n",
        b"Authorization: Basic " + KEY.encode() + b"\r\n",  # not a bearer token
        b"Authorization: " + KEY.encode() + b"\r\n",
        b"X-API-Key: " + KEY.encode()[:-1] + b"\r\n",  # a prefix is not the key
        b"X-API-Key: " + KEY.encode() + b"x\r\n",
        b"X-Api-Token: " + KEY.encode() + b"\r\n",
    ],
)
def test_a_missing_or_wrong_key_is_401_in_goims_shape_then_close(
    loop: asyncio.AbstractEventLoop, header: bytes
) -> None:
    c = Conn(loop, api_key=KEY)
    c.feed(GOIM_ROOM.replace(b"Host: x\r\n", b"Host: x\r\n" + header))
    [(status, headers, body)] = c.responses()
    assert status == 401 and body["code"] == -401 and "API key" in body["message"]
    assert headers["www-authenticate"] == 'Bearer realm="mpim"'
    assert c.transport.closed and c.sent == []  # nothing was pushed


def test_every_route_and_unknown_paths_need_the_key(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop, api_key=KEY)
    paths = [*c.state.api.routes, "/nowhere"]
    assert "/mpim/workers" in paths and "/goim/nodes/weighted" in paths
    for path in paths:
        c = Conn(loop, api_key=KEY)
        c.feed(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert c.responses()[0][0] == 401, path


def test_a_wrong_key_gets_no_100_continue_and_the_body_is_never_read(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop, api_key=KEY)
    c.feed(b"POST /goim/push/all?operation=7 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert c.responses()[0][0] == 401 and b"100 Continue" not in bytes(c.transport.data)
    assert c.transport.closed


def test_without_a_key_configured_no_header_is_needed(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(GET_TOTAL + b"Authorization: Bearer anything\r\n\r\n")
    assert c.responses()[0][0] == 200


# -- who a push names ------------------------------------------------------------------------------

MID_RULE = "is not a user id (a mid is an integer from 1 to 9223372036854775807)"


def push(target: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (target, len(body), body)


def test_a_push_to_a_mid_that_is_not_a_user_id_is_400_and_stores_nothing(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mpim.http")
    c = Conn(loop)
    inbox = RecordingInbox()
    c.harness.router.streams.inbox = inbox
    c.feed(
        push(b"/goim/push/mids?operation=1000&mids=7&mids=0", b"m")
        + push(b"/goim/push/mids?operation=1000&mids=-3", b"m")
        + push(b"/mpim/push", b'[{"kind":"mids","op":1000,"mids":[0],"body":"m"}]')
        + GOIM_ROOM
    )
    for _ in range(3):  # the batch runs as a task on the router's loop
        c.harness.settle()
    answers = [(status, body) for status, _, body in c.responses()]
    assert answers[:2] == [
        (200, {"code": -400, "message": f"mids: 0 {MID_RULE}"}),
        (200, {"code": -400, "message": f"mids: -3 {MID_RULE}"}),
    ]
    assert answers[2] == (
        200,
        {"code": 0, "message": "", "data": [{"code": -400, "message": f"mids: 0 {MID_RULE}"}]},
    )
    assert answers[3] == (200, {"code": 0, "message": "", "data": None})  # the connection is still served
    assert not c.transport.closed and inbox.appended == []
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refusing")]
    assert lines == [
        f"refusing POST /goim/push/mids: mids: 0 {MID_RULE}",
        f"refusing POST /goim/push/mids: mids: -3 {MID_RULE}",
        f"refusing 1 of 1 items of POST /mpim/push: item 0: mids: 0 {MID_RULE}",
    ]


def test_a_batch_naming_100000_users_is_refused_before_anything_is_stored(
    loop: asyncio.AbstractEventLoop,
) -> None:
    c = Conn(loop, max_body=1 << 20)
    inbox = RecordingInbox()
    c.harness.router.streams.inbox = inbox
    mids = ",".join(str(mid) for mid in range(1, 100_001)).encode()
    c.feed(push(b"/mpim/push", b'[{"kind":"mids","op":1000,"mids":[%s],"body":"x"}]' % mids) + GOIM_ROOM)
    [(status, _, refused), (_, _, served)] = c.responses()
    assert (status, refused) == (
        200,
        {
            "code": -400,
            "message": "item 0: 100000 mids in one push; the limit is 10000 ([router] max_targets)",
        },
    )
    assert served["code"] == 0 and not c.transport.closed and inbox.appended == []


def test_max_targets_bounds_pushes_by_key_and_by_mid(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop, router={"max_targets": 2})
    c.feed(
        push(b"/goim/push/keys?operation=1&keys=a&keys=b&keys=c", b"m")
        + push(b"/goim/push/mids?operation=1&mids=1&mids=2&mids=3", b"m")
        + push(b"/goim/push/keys?operation=1&keys=a&keys=b&keys=a", b"m")
    )
    assert [body for _, _, body in c.responses()] == [
        {"code": -400, "message": "3 keys in one push; the limit is 2 ([router] max_targets)"},
        {"code": -400, "message": "3 mids in one push; the limit is 2 ([router] max_targets)"},
        {"code": 0, "message": "", "data": {"connections": 0}},
    ]
