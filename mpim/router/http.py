"""HTTP/1.1 adapter for the push API: httptools (llhttp) on an ``asyncio.Protocol``.

Keep-alive and pipelining come for free: requests are handled synchronously in
the order llhttp completes them, so responses go out in request order. Limits:
request line + headers over ``[http] max_header`` -> 431, a body over
``[http] max_body`` -> 413 (refused as soon as ``Content-Length`` says so), a
malformed request -> 400; each of these closes the connection after the answer.
Unknown paths get 404 and wrong methods 405 (with ``Allow``) from the API, on a
connection that stays open. Idle keep-alive connections close after
``[http] idle_timeout``; a request that is not complete (headers and body)
``[http] request_timeout`` after its first byte gets 408 and a close, so a client
that trickles bytes cannot hold a connection forever. Both are checked by
:meth:`HttpState.tick`, once a second, with no per-request timer. When the client
stops reading, we stop reading too.

With ``[http] api_key`` set, every request (every path) must carry the key in
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, compared in constant
time; without it the answer is 401 (goim's JSON shape, code -401) as soon as the
headers are complete, before any body is read, and the connection is closed.

A route may answer with an :class:`~mpim.router.sse.EventStream` (the console's
live feed): the connection then carries that stream until the client leaves,
and anything more the client sends is ignored. Every answer is counted by route
and status for the metrics (:attr:`HttpState.counts`). The console's page
(``GET /console``: static HTML and script, no data) is served without the key, so a
browser can open it; the page asks for the key and sends it on everything it fetches.
"""

from __future__ import annotations

import asyncio
import email.utils
import hmac
import logging
import math
from typing import Any
from urllib.parse import unquote

import httptools

from mpim.config import Config
from mpim.router.api import OK_NULL, PushApi, Reply, error
from mpim.router.responder import Responder, encode_head

log = logging.getLogger("mpim.http")

_READ_SLACK = 65536  # a read may carry the end of earlier pipelined requests


UNAUTHORIZED = error(
    -401, "missing or wrong API key: send Authorization: Bearer <key> or X-API-Key: <key>", 401
)
# Served without the key: the console's page is static (HTML and script, no data) and asks for the
# key, which it then sends on everything it fetches (its event stream, the pushes it makes).
PUBLIC = frozenset({b"/console"})


class _Refused(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class HttpState:
    """Shared by every connection of one server: the API, limits and a cached Date."""

    def __init__(self, cfg: Config, api: PushApi, loop: asyncio.AbstractEventLoop) -> None:
        self.api = api
        self.loop = loop
        self.reconfigure(cfg)
        self.connections: set[HttpProtocol] = set()
        self.now = loop.time()
        self.date = b""
        self.ok_null = b""  # the whole keep-alive answer to a room / all push, rebuilt each tick
        self.requests = 0
        self.refused = 0
        self.counts: dict[str, dict[int, int]] = {}  # route -> status -> answers, for the metrics
        self.tick()

    def reconfigure(self, cfg: Config) -> None:
        self.max_body = cfg.http.max_body
        self.max_header = cfg.http.max_header
        self.idle_timeout = cfg.http.idle_timeout
        self.request_timeout = cfg.http.request_timeout
        self.api_key = cfg.http.api_key.encode()

    def tick(self) -> None:
        """Refresh the Date header; close idle connections and requests that are too slow
        (call about once a second)."""
        self.now = now = self.loop.time()
        self.date = email.utils.formatdate(usegmt=True).encode()
        self.ok_null = encode_head(OK_NULL, self.date) + b"\r\n" + OK_NULL.body
        idle, late = now - self.idle_timeout, now - self.request_timeout
        slow = [c for c in self.connections if c.last_active < idle or c.request_started < late]
        for conn in [c for c in slow if c.responder.stream is None]:  # an event stream is never idle
            if conn.request_started < math.inf:
                conn.responder.time_out(now - conn.request_started)
            else:
                conn.responder.close()

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.responder.close()

    def count(self, path: str, status: int) -> None:
        """One answer: by route (``other`` for unknown paths, ``-`` before the path was read)."""
        route = path if path in self.api.routes or path == "-" else "other"
        by_status = self.counts.setdefault(route, {})
        by_status[status] = by_status.get(status, 0) + 1


class HttpProtocol(asyncio.Protocol):
    """The httptools parser's callbacks: limits, the API key, then the request to the API;
    its :class:`Responder` writes the answers."""

    __slots__ = (
        "accept",
        "authorized",
        "body",
        "body_len",
        "expect",
        "header_bytes",
        "in_headers",
        "last_active",
        "parser",
        "pending",
        "request_started",
        "responder",
        "state",
        "url",
    )

    def __init__(self, state: HttpState) -> None:
        self.state = state
        self.responder = Responder(state, self)
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.body_len = 0
        self.header_bytes = 0
        self.pending = 0
        self.in_headers = False
        self.expect = False
        self.authorized = False
        self.last_active = state.now
        self.request_started = math.inf  # state.now at the first byte of an incomplete request
        self.accept = b""

    # -- asyncio ------------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.responder.transport = transport
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.responder.closing = True
        self.responder.end_stream()

    def pause_writing(self) -> None:
        self.responder.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.responder.closing:
            self.responder.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        responder = self.responder
        if responder.closing or responder.stream is not None:
            return
        self.last_active = self.state.now
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                responder.refuse(refused.reply)
            else:
                log.error("HTTP handler failed", exc_info=refused)
                responder.refuse(error(-500, "internal error", 400))
        except httptools.HttpParserUpgrade:
            responder.refuse(error(-400, "protocol upgrade is not supported", 400))
        except httptools.HttpParserError as exc:
            responder.refuse(error(-400, f"malformed HTTP request: {exc}", 400))
        else:
            if self.in_headers and not responder.closing:
                self.pending += len(data)
                if self.pending > self.state.max_header + _READ_SLACK:
                    responder.refuse(self._too_large_headers())

    # -- httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.request_started = self.state.now
        self.url = b""
        self.expect = False
        self.accept = b""
        self.body = []
        self.body_len = 0
        self.header_bytes = 0
        self.pending = 0
        self.in_headers = True
        self.authorized = not self.state.api_key

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.header_bytes += len(url)
        if self.header_bytes > self.state.max_header:
            raise _Refused(self._too_large_headers())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.state.max_header:
            raise _Refused(self._too_large_headers())
        if len(name) == 14 and name.lower() == b"content-length" and value.strip().isdigit():
            size = int(value)
            if size > self.state.max_body:
                raise _Refused(self._too_large_body(size))
        elif len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self.expect = True  # curl sends this for bodies over 1 KiB and waits for the go-ahead
        elif len(name) == 6 and name.lower() == b"accept":
            self.accept = value  # (decoded only by the route that wants it: /metrics)
        elif not self.authorized and len(name) in (9, 13):
            self._check_key(name.lower(), value)

    def _check_key(self, name: bytes, value: bytes) -> None:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            value = value[7:]
        elif name != b"x-api-key":
            return
        self.authorized = hmac.compare_digest(value.strip(), self.state.api_key)

    def on_headers_complete(self) -> None:
        self.in_headers = False
        if not self.authorized and not self._public():
            raise _Refused(UNAUTHORIZED)
        if self.parser.should_upgrade():
            raise _Refused(error(-400, "protocol upgrade is not supported", 400))
        if self.expect:
            self.responder.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _public(self) -> bool:
        return self.url.partition(b"?")[0] in PUBLIC and self.parser.get_method() == b"GET"

    def on_body(self, body: bytes) -> None:
        self.body_len += len(body)
        if self.body_len > self.state.max_body:
            raise _Refused(self._too_large_body(self.body_len))
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.request_started = math.inf
        responder = self.responder
        if responder.closing or responder.stream is not None:  # (requests behind a stream are ignored)
            return
        state = self.state
        state.requests += 1
        url = self.url
        if url[:1] != b"/":
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise _Refused(error(-400, f"malformed request target {url[:64]!r}", 400)) from None
            path_b, query = parsed.path or b"/", parsed.query or b""
        else:
            path_b, _, query = url.partition(b"?")
        path = path_b.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        method = self.parser.get_method().decode("latin-1")
        answer = state.api.handle(method, path, query, body, self.accept)
        keep = self.parser.should_keep_alive()
        http10 = self.parser.get_http_version() == "1.0" if keep else False
        responder.respond(path, answer, keep, http10, method == "HEAD")

    # -- helpers ---------------------------------------------------------------------------------
    def _too_large_headers(self) -> Reply:
        limit = self.state.max_header
        return error(-431, f"request line and headers exceed {limit} bytes", 431)

    def _too_large_body(self, size: int) -> Reply:
        limit = self.state.max_body
        return error(-413, f"body of {size} bytes is over the {limit}-byte limit", 413)
