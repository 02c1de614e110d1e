"""Server-Sent Events: a long-lived ``text/event-stream`` answer on the push API's HTTP port.

A route answers with an :class:`EventStream` instead of a reply. The HTTP
protocol (:mod:`mpim.router.http`) then writes a head without a length
(``Connection: close``: the body lasts as long as the connection), attaches
itself as the stream's :class:`Sink` and reads nothing more from that client.
Whoever owns the stream (the console) calls :meth:`EventStream.send`; when the
client goes away, or reads so slowly that :data:`MAX_BUFFER` bytes wait for it,
the connection closes and the owner's ``on_close`` runs once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

MAX_BUFFER = 1 << 20  # bytes waiting for a stream's client before we give up on it

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n"
)


def encode_event(event: str, data: str, event_id: int | None = None) -> bytes:
    """One event: ``event:``, optional ``id:``, one ``data:`` line per line of ``data``, a blank line."""
    if "\n" in event or "\r" in event:
        raise ValueError("an event name cannot hold a line break")
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


class Sink(Protocol):
    """The connection a stream writes to (the HTTP protocol)."""

    def write_stream(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class EventStream:
    def __init__(
        self,
        on_open: Callable[[EventStream], None] | None = None,
        on_close: Callable[[EventStream], None] | None = None,
    ) -> None:
        self.sink: Sink | None = None
        self.closed = False
        self._on_open = on_open
        self._on_close = on_close

    def attach(self, sink: Sink) -> None:
        """The head is written: events may flow."""
        if self.closed:
            sink.close()
            return
        self.sink = sink
        if self._on_open is not None:
            self._on_open(self)

    def send(self, event: str, data: str) -> None:
        if self.sink is not None and not self.closed:
            self.sink.write_stream(encode_event(event, data))

    def detached(self) -> None:
        """The connection is gone (called by the sink, once)."""
        if self.closed:
            return
        self.closed = True
        self.sink = None
        if self._on_close is not None:
            self._on_close(self)

    def close(self) -> None:
        """End the stream from our side."""
        sink = self.sink
        if sink is not None:
            sink.close()  # calls detached()
        self.detached()
