"""The calls a worker has in flight to one router, by request id: one table, typed entries.

Every record that the router answers carries a request id (``req``); the answer names it
again. A :class:`CallTable` holds what the worker needs to act on the answer, as one
:class:`Call` per id:

- :class:`Registration` — a ``Connect`` or ``RoomChange``, answered ``Confirmed`` or
  ``Denied``. It has no deadline (the client's own register deadline closes it) and is
  sent again, from its kept bytes, whenever the link comes back.
- :class:`ResumeCall` — a ``Resume``, answered ``Replayed``;
  :class:`MessageCall` — a ``Chat`` that wants an answer, or a ``Presence``, answered
  ``ChatAck``. Both must be answered within ``[upstream] timeout``: :meth:`CallTable.expire`
  is the one place that gives up on them, and :meth:`CallTable.unanswerable` takes them
  out when the link drops (their record is gone with the router's state).
- :class:`DrainCall` — a ``Draining``, answered ``Drained``; its waiter has its own timeout.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from mpim.worker.channel import Channel
    from mpim.worker.link import OnAck, OnReplayed


class Call:
    __slots__ = ("channel", "req")

    def __init__(self, req: int, channel: Channel | None) -> None:
        self.req = req
        self.channel = channel


class Registration(Call):
    """A ``Connect`` / ``RoomChange``: its encoded record (resent after a reconnect) and the
    bus fence the router must see before it confirms (0: none)."""

    __slots__ = ("fence", "record")
    channel: Channel

    def __init__(self, req: int, channel: Channel, record: bytes, fence: int) -> None:
        super().__init__(req, channel)
        self.record = record
        self.fence = fence


class ResumeCall(Call):
    __slots__ = ("done",)
    channel: Channel

    def __init__(self, req: int, channel: Channel, done: OnReplayed) -> None:
        super().__init__(req, channel)
        self.done = done


class MessageCall(Call):
    __slots__ = ("done",)
    channel: Channel

    def __init__(self, req: int, channel: Channel, done: OnAck) -> None:
        super().__init__(req, channel)
        self.done = done


class DrainCall(Call):
    __slots__ = ("future",)

    def __init__(self, req: int, future: asyncio.Future[int]) -> None:
        super().__init__(req, None)
        self.future = future


C = TypeVar("C", bound=Call)


class CallTable:
    """Calls in flight by request id, the deadlines of those that must be answered in time,
    and which channel has a registration waiting (so a closing client can cancel it)."""

    def __init__(self, timeout: float, on_expired: Callable[[Call], None]) -> None:
        self.loop: asyncio.AbstractEventLoop  # set by start(), in the running loop
        self.timeout = timeout  # [upstream] timeout
        self.on_expired = on_expired
        self._calls: dict[int, Call] = {}
        self._registered: dict[Channel, int] = {}  # channel -> its registration's req
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()  # (when, req), in order
        self._expiry: asyncio.TimerHandle | None = None
        self._ids = count(1)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __len__(self) -> int:
        return len(self._calls)

    def next_id(self) -> int:
        return next(self._ids)

    def add(self, call: Call) -> None:
        """File a call; a resume or a message is due within the timeout."""
        self._calls[call.req] = call
        if isinstance(call, Registration):
            self._registered[call.channel] = call.req
        elif isinstance(call, ResumeCall | MessageCall):
            self._deadlines.append((self.loop.time() + self.timeout, call.req))
            if self._expiry is None:
                self._expiry = self.loop.call_later(self.timeout, self.expire)

    def get(self, req: int, kind: type[C]) -> C | None:
        call = self._calls.get(req)
        return call if isinstance(call, kind) else None

    def pop(self, req: int, kind: type[C]) -> C | None:
        """The call ``req`` of this kind, out of the table (None: unknown, answered or cancelled)."""
        call = self._calls.get(req)
        if not isinstance(call, kind):
            return None
        del self._calls[req]
        if isinstance(call, Registration):
            self._registered.pop(call.channel, None)
        return call

    def cancel(self, channel: Channel) -> None:
        """The channel closed: its waiting registration will not be acted on."""
        req = self._registered.pop(channel, None)
        if req is not None:
            self._calls.pop(req, None)

    def registrations(self) -> list[Registration]:
        """The registrations still waiting, in the order they were made."""
        return sorted((c for c in self._calls.values() if isinstance(c, Registration)), key=lambda c: c.req)

    def unanswerable(self) -> list[ResumeCall | MessageCall]:
        """The link dropped: take out the calls whose answer cannot come any more."""
        gone = [c for c in self._calls.values() if isinstance(c, ResumeCall | MessageCall)]
        for call in gone:
            del self._calls[call.req]
        return gone

    def expire(self) -> None:
        """Hand the calls left unanswered past their deadline to ``on_expired``."""
        self._expiry = None
        now = self.loop.time()
        deadlines, calls = self._deadlines, self._calls
        while deadlines and deadlines[0][0] <= now:
            _, req = deadlines.popleft()
            call = calls.pop(req, None)
            if call is not None:
                self.on_expired(call)
        while deadlines and deadlines[0][1] not in calls:
            deadlines.popleft()  # (answered already)
        if deadlines:
            self._expiry = self.loop.call_later(max(0.0, deadlines[0][0] - now), self.expire)

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
