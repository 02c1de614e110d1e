"""The push API's HTTP adapter fed arbitrary and near-valid requests, pipelined and split.

Whatever arrives, the server writes only well-formed HTTP/1.1 responses with
goim's JSON body ``{"code":...,"message":...}`` and an expected status, logs
nothing at ERROR, never writes after closing, and closes only right after a
response saying ``Connection: close``. When every request was complete and the
connection stays open, each got exactly one answer and the next request is
still served.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, NamedTuple
from urllib.parse import quote, quote_plus

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mpim import config
from mpim.router.api import PushApi, Reply
from mpim.router.http import HttpProtocol, HttpState
from tests.fuzz.strategies import CUTS, chunks
from tests.fuzz.stub_router import fuzz_router
from tests.fuzz.traps import assert_no_errors, trapped
from tests.router.fakes import MockTransport

FAST = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STATUSES = {200, 400, 404, 405, 408, 413, 431, 503}
CODES = {
    200: {0, -400},
    400: {-400},
    404: {-404},
    405: {-405},
    408: {-408},
    413: {-413},
    431: {-431},
    503: {-503},
}
CFG = config.replace(config.Config(), http={"max_body": 100, "max_header": 512})
_LOOP = asyncio.new_event_loop()  # HttpState only reads loop.time(); nothing runs on it


class RecordingApi:
    """The real PushApi (on the stub router), noting the method of each request it answers."""

    def __init__(self) -> None:
        self.api = PushApi(CFG, fuzz_router(CFG))
        self.routes = self.api.routes
        self.methods: list[str] = []

    def handle(self, method: str, path: str, query: bytes, body: bytes, accept: bytes = b"") -> Reply:
        self.methods.append(method)
        return self.api.handle(method, path, query, body, accept)  # type: ignore[return-value]


class Connection:
    def __init__(self) -> None:
        self.api = RecordingApi()
        self.state = HttpState(CFG, self.api, _LOOP)  # type: ignore[arg-type]
        self.proto = HttpProtocol(self.state)
        self.transport = MockTransport(strict=False)
        self.proto.connection_made(self.transport)

    def feed(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.proto.data_received(piece)


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: Any


_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [A-Za-z][A-Za-z ]*\Z")


def parse_responses(data: bytes, methods: list[str]) -> list[Response]:
    """Every response in ``data``; the i-th final one answers ``methods[i]`` when there is one."""
    out: list[Response] = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"response head without an end: {head[:200]!r}"
        status_line, *lines = head.split(b"\r\n")
        match = _STATUS_LINE.match(status_line)
        assert match, f"bad status line {status_line!r}"
        status = int(match[1])
        if status == 100:
            assert not lines
            continue
        assert status in STATUSES, status
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.decode("latin-1").partition(": ")
            assert colon and name.lower() not in headers, line
            headers[name.lower()] = value
        assert headers["content-type"] == "application/json" and headers["date"]
        size = int(headers["content-length"])
        index = len(out)
        if index < len(methods) and methods[index] == "HEAD":
            body: Any = None  # a HEAD answer has a Content-Length but no body
        else:
            raw, data = data[:size], data[size:]
            assert len(raw) == size, "body shorter than Content-Length"
            body = json.loads(raw)
            assert isinstance(body, dict) and set(body) <= {"code", "message", "data"}, body
            assert isinstance(body["code"], int) and isinstance(body["message"], str), body
            assert body["code"] in CODES[status], (status, body)
        if status == 405:
            assert headers["allow"] in ("GET", "POST")
        out.append(Response(status, headers, body))
    return out


def check_exchange(conn: Connection, pieces: list[bytes], requests: int, complete: bool) -> list[Response]:
    with trapped() as trap:
        conn.feed(pieces)
        assert_no_errors(trap)
    transport = conn.transport
    assert not transport.late_writes, f"written after close: {transport.late_writes}"
    responses = parse_responses(bytes(transport.data), conn.api.methods)
    closes = [r.headers.get("connection") == "close" for r in responses]
    assert not any(closes[:-1]), "a response after Connection: close"
    assert transport.closed == bool(closes and closes[-1]), (transport.closed, closes)
    assert conn.proto.responder.closing == transport.closed
    assert (conn.proto in conn.state.connections) == (not transport.closed)
    assert len(responses) <= requests + 1
    if complete and not transport.closed:
        assert len(responses) == requests, (len(responses), requests)
        transport.data.clear()
        conn.api.methods.clear()
        conn.feed([b"GET /goim/online/total HTTP/1.1\r\nHost: x\r\n\r\n"])
        [after] = parse_responses(bytes(transport.data), conn.api.methods)
        assert after.status == 200 and after.body["code"] == 0
    return responses


# -- strategies -------------------------------------------------------------------------------------

ROUTES = [
    "/goim/push/keys",
    "/goim/push/mids",
    "/goim/push/room",
    "/goim/push/all",
    "/goim/online/top",
    "/goim/online/room",
    "/goim/online/total",
    "/goim/nodes/weighted",
    "/mpim/session",
    "/mpim/workers",
]
PATHS = st.one_of(
    st.sampled_from(ROUTES),
    st.sampled_from(
        ["/", "/goim/push", "/goim/push/keys/", "//goim/push/all", "/goim/online/%74otal", "/%ff", "/%", "*"]
    ),
    st.sampled_from(
        ["http://h:1/goim/online/total", "http://[::1", "http://h/%zz", "https://a@b:99999/goim/push/all"]
    ),
    st.text(max_size=16).map(lambda t: "/" + quote(t, safe="/%")),
)
PARAM_NAMES = st.one_of(
    st.sampled_from(
        ["operation", "keys", "mids", "type", "room", "speed", "limit", "rooms", "platform", "mid", "key"]
    ),
    st.text(max_size=6),
)
PARAM_VALUES = st.one_of(
    st.integers(-(1 << 64), 1 << 64).map(str),
    st.sampled_from(["", "live", "1000", "1", "k1", "%", "%zz", "%ff", "%ed%a0%80", "+", "٣", "1_0", " 7"]),
    st.text(max_size=12),
)


@st.composite
def queries(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(PARAM_NAMES, PARAM_VALUES), max_size=5))
    if draw(st.booleans()):
        return "&".join(f"{quote_plus(n)}={quote_plus(v)}" for n, v in pairs)
    return "&".join(quote(f"{n}={v}", safe="=%+&") for n, v in pairs)


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10)
FREE_HEADERS = st.one_of(
    st.sampled_from(
        [
            ("Host", "x"),
            ("Content-Type", "application/json"),
            ("Connection", "close"),
            ("Connection", "keep-alive"),
            ("Expect", "100-continue"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("X-Big", "a" * 600),
        ]
    ),
    st.tuples(TOKEN.filter(lambda n: n not in ("content-length", "transfer-encoding")), st.text(max_size=20)),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One request whose framing is right (Content-Length or chunked), other parts free."""
    method = draw(
        st.one_of(st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"]), TOKEN.map(str.upper))
    )
    path = draw(PATHS)
    query = draw(queries())
    target = path + ("?" + query if query or draw(st.booleans()) else "")
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    lines = [f"{method} {target} {version}"]
    lines += [f"{name}: {value}" for name, value in draw(st.lists(FREE_HEADERS, max_size=4))]
    body = draw(st.one_of(st.just(b""), st.binary(max_size=40), st.binary(min_size=90, max_size=130)))
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    if framing == "chunked" and version == "HTTP/1.1":
        lines.append("Transfer-Encoding: chunked")
        cuts = draw(st.lists(st.integers(0, len(body)), max_size=3))
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in chunks(body, cuts) if p) + b"0\r\n\r\n"
    elif framing == "length" or body:
        lines.append(f"Content-Length: {len(body)}")
        encoded = body
    else:
        encoded = b""
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8", "surrogatepass") + encoded


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        if draw(st.booleans()) and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


def check_pipeline(reqs: list[bytes], trailing: bytes, cuts: list[int]) -> None:
    conn = Connection()
    extra = trailing.count(b"\n") + 1 if trailing else 0  # garbage may hold whole requests too
    check_exchange(conn, chunks(b"".join(reqs) + trailing, cuts), len(reqs) + extra, not trailing)


def check_bytes(data: bytes, cuts: list[int]) -> None:
    conn = Connection()
    check_exchange(conn, chunks(data, cuts), requests=data.count(b"\n") + 1, complete=False)


GARBAGE = st.one_of(
    st.binary(max_size=300),
    mutated(requests()),
    mutated(st.lists(requests(), min_size=1, max_size=3).map(b"".join)),
)
PIPELINES = st.tuples(st.lists(requests(), min_size=1, max_size=4), st.one_of(st.just(b""), GARBAGE), CUTS)

TARGETS = [
    ("http.pipeline", PIPELINES, lambda a: check_pipeline(*a)),
    ("http.bytes", st.tuples(GARBAGE, CUTS), lambda a: check_bytes(*a)),
]


@FAST
@given(st.lists(requests(), min_size=1, max_size=4), st.one_of(st.just(b""), GARBAGE), CUTS)
@example([b"HEAD /goim/push/all HTTP/1.1\r\n\r\n", b"GET /goim/online/total HTTP/1.1\r\n\r\n"], b"", [])
@example([b"GET http://[::1 HTTP/1.1\r\n\r\n"], b"", [])
def test_pipelined_requests(reqs: list[bytes], trailing: bytes, cuts: list[int]) -> None:
    check_pipeline(reqs, trailing, cuts)


@FAST
@given(GARBAGE, CUTS)
def test_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    check_bytes(data, cuts)
