"""One HTTP connection's answers: encoded and written in request order, or the event stream it became.

The parser side (:class:`~mpim.router.http.HttpProtocol`) hands each request's answer
to :meth:`Responder.respond`: a ready :class:`~mpim.router.api.Reply` is written at
once unless earlier answers still wait for the workers; a future queues behind them;
an :class:`~mpim.router.sse.EventStream` takes over the connection once the answers
before it are out. Refusals (400, 401, 408, 413, 431) are answered and the
connection closed. One responder per connection, made with it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any

from mpim.listen import peer_name
from mpim.router import sse
from mpim.router.api import JSON, OK_NULL, Answer, Reply, error
from mpim.router.sse import EventStream

if TYPE_CHECKING:
    from mpim.router.http import HttpProtocol, HttpState

log = logging.getLogger("mpim.http")

_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found"}
_REASONS[405] = b"Method Not Allowed"
_REASONS.update({408: b"Request Timeout", 413: b"Content Too Large", 431: b"Request Header Fields Too Large"})
_REASONS.update({503: b"Service Unavailable", 504: b"Gateway Timeout"})
MAX_WAITING = 256  # answers a pipelining client may have outstanding before we stop reading


def encode_head(reply: Reply, date: bytes) -> bytes:
    if reply.content_type is JSON:  # the push API's answers (the hot path): no encoding
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nDate: %s\r\n" % (
            reply.status,
            _REASONS.get(reply.status, b"Error"),
            len(reply.body),
            date,
        )
    else:
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\n" % (
            reply.status,
            _REASONS.get(reply.status, b"Error"),
            reply.content_type.encode(),
            len(reply.body),
            date,
        )
    if reply.allow:
        head += b"Allow: " + reply.allow.encode() + b"\r\n"
    if reply.status == 401:
        head += b'WWW-Authenticate: Bearer realm="mpim"\r\n'
    return head


class Responder:
    __slots__ = ("closing", "conn", "state", "stream", "transport", "waiting")

    def __init__(self, state: HttpState, conn: HttpProtocol) -> None:
        self.state = state
        self.conn = conn
        self.transport: Any = None
        self.closing = False
        self.waiting: collections.deque[tuple[Answer, bool, bool, bool]] = collections.deque()
        self.stream: EventStream | None = None  # once set, this connection only carries the stream

    def respond(
        self, path: str, answer: Answer | EventStream, keep: bool, http10: bool, head_only: bool
    ) -> None:
        """One request's answer, in request order."""
        state = self.state
        if isinstance(answer, Reply):
            try:  # the common case, cheaply (nested plain dicts: no tuple to hash, no Counter)
                state.counts[path][answer.status] += 1
            except KeyError:
                state.count(path, answer.status)
            if not self.waiting:
                self.write(answer, keep, http10, head_only)
                if not keep:
                    self.close()
                return
        elif isinstance(answer, EventStream):
            state.count(path, 200)
            self.stream = answer  # from now on nothing more is read from this client
            if not self.waiting:
                self._start_stream(answer)
                return
        else:
            answer.add_done_callback(lambda f: self._counted(path, f))
        # An answer that waits for the workers: later answers queue behind it, in request order.
        self.waiting.append((answer, keep, http10, head_only))
        if not isinstance(answer, (Reply, EventStream)):
            answer.add_done_callback(self._answered)
        if len(self.waiting) >= MAX_WAITING and self.transport is not None:
            self.transport.pause_reading()

    def _answered(self, _: object) -> None:
        """Write every answer that is ready, in request order: those of one loop turn in one write."""
        waiting = self.waiting
        ready: list[bytes] = []
        while waiting:
            answer, keep, http10, head_only = waiting[0]
            if isinstance(answer, EventStream):
                waiting.popleft()
                if not self.closing:
                    self._send(ready)
                    self._start_stream(answer)
                return
            if not isinstance(answer, Reply):
                if not answer.done():
                    self._send(ready)
                    return
                answer = answer.result()
            waiting.popleft()
            if self.closing:
                continue
            ready.append(self._encode(answer, keep, http10, head_only))
            if not keep:
                self._send(ready)
                self.close()
        self._send(ready)
        if not self.closing and self.transport is not None:
            self.transport.resume_reading()

    def _send(self, ready: list[bytes]) -> None:
        if ready and not self.closing:
            self.transport.write(ready[0] if len(ready) == 1 else b"".join(ready))
        ready.clear()

    def _counted(self, path: str, future: asyncio.Future[Reply]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.state.count(path, future.result().status)

    def write(self, reply: Reply, keep: bool, http10: bool = False, head_only: bool = False) -> None:
        self.transport.write(self._encode(reply, keep, http10, head_only))

    def _encode(self, reply: Reply, keep: bool, http10: bool = False, head_only: bool = False) -> bytes:
        """The answer's bytes; ``head_only``: the answer to HEAD has the headers of the body but not
        the body."""
        if reply is OK_NULL and keep and not http10 and not head_only:
            return self.state.ok_null
        text = encode_head(reply, self.state.date)
        if not keep:
            text += b"Connection: close\r\n"
        elif http10:
            text += b"Connection: keep-alive\r\n"
        return text + b"\r\n" + (b"" if head_only else reply.body)

    # -- event streams (console) -----------------------------------------------------------------
    def _start_stream(self, stream: EventStream) -> None:
        self.transport.write(sse.HEAD + b"Date: " + self.state.date + b"\r\n\r\n")
        stream.attach(self)

    def write_stream(self, data: bytes) -> None:
        """:class:`~mpim.router.sse.Sink`: one event; a client that stops reading is let go."""
        transport = self.transport
        if self.closing or transport is None:
            return
        self.conn.last_active = self.state.now
        transport.write(data)
        if transport.get_write_buffer_size() > sse.MAX_BUFFER:
            log.info("closing an event stream to %s: the client is not reading", peer_name(transport))
            self.close()

    def end_stream(self) -> None:
        stream = self.stream
        if stream is not None:
            self.stream = None
            stream.detached()

    # -- refusals and closing --------------------------------------------------------------------
    def refuse(self, reply: Reply) -> None:
        """Answer a request we will not serve, then close the connection."""
        if self.closing:
            return
        self.state.refused += 1
        self.state.count("-", reply.status)
        log.info("refusing an HTTP request from %s: %d", peer_name(self.transport), reply.status)
        self.write(reply, keep=False)
        self.close()

    def time_out(self, waited: float) -> None:
        """The request started ``waited`` seconds ago and is still not complete: 408, close."""
        if self.closing:
            return
        self.state.refused += 1
        self.state.count("-", 408)
        limit = self.state.request_timeout
        log.info(
            "closing %s: HTTP request not complete after %.0fs (limit %gs)",
            peer_name(self.transport),
            waited,
            limit,
        )
        self.write(error(-408, f"request not complete within {limit:g}s", 408), keep=False)
        self.close()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.state.connections.discard(self.conn)
            if self.transport is not None:
                self.transport.close()
        self.end_stream()
