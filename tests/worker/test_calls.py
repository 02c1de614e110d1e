"""The worker's table of calls in flight to a router: kinds, cancel, deadlines, a dropped link."""

from __future__ import annotations

import asyncio
from typing import Any

from mpim.worker.calls import Call, CallTable, DrainCall, MessageCall, Registration, ResumeCall


class FakeLoop:
    """A clock the test moves, and the timers it would run."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Any]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> Timer:
        self.timers.append((self.now + delay, callback))
        return Timer()


class Timer:
    def cancel(self) -> None:
        pass


def table() -> tuple[CallTable, FakeLoop, list[Call]]:
    expired: list[Call] = []
    calls = CallTable(5.0, expired.append)
    loop = FakeLoop()
    calls.start(loop)  # type: ignore[arg-type]
    return calls, loop, expired


def test_an_answer_takes_its_call_once_and_only_of_its_kind() -> None:
    calls, _, _ = table()
    done: list[Any] = []
    calls.add(MessageCall(calls.next_id(), "ch", done.append))  # type: ignore[arg-type]
    assert calls.pop(1, ResumeCall) is None  # a Replayed naming a message's id: not a resume
    call = calls.pop(1, MessageCall)
    assert call is not None and call.req == 1
    assert calls.pop(1, MessageCall) is None and len(calls) == 0


def test_a_cancelled_registration_is_gone_and_the_rest_are_resent_in_order() -> None:
    calls, _, _ = table()
    for key in ("a", "b", "c"):
        calls.add(Registration(calls.next_id(), key, key.encode(), 0))  # type: ignore[arg-type]
    calls.cancel("b")  # type: ignore[arg-type]
    assert [c.record for c in calls.registrations()] == [b"a", b"c"]
    assert calls.pop(2, Registration) is None


def test_a_dropped_link_takes_resumes_and_messages_but_keeps_registrations_and_drains() -> None:
    calls, _, _ = table()
    calls.add(Registration(calls.next_id(), "r", b"r", 0))  # type: ignore[arg-type]
    calls.add(ResumeCall(calls.next_id(), "s", lambda rec: None))  # type: ignore[arg-type]
    calls.add(MessageCall(calls.next_id(), "m", lambda ack: None))  # type: ignore[arg-type]
    real = asyncio.new_event_loop()
    try:
        calls.add(DrainCall(calls.next_id(), real.create_future()))
        assert [c.req for c in calls.unanswerable()] == [2, 3]
        assert [c.req for c in calls.registrations()] == [1] and calls.get(4, DrainCall) is not None
    finally:
        real.close()


def test_deadlines_expire_in_order_and_skip_what_was_answered() -> None:
    calls, loop, expired = table()
    calls.add(ResumeCall(calls.next_id(), "s", lambda rec: None))  # type: ignore[arg-type]
    loop.now = 1.0
    calls.add(MessageCall(calls.next_id(), "m1", lambda ack: None))  # type: ignore[arg-type]
    calls.add(MessageCall(calls.next_id(), "m2", lambda ack: None))  # type: ignore[arg-type]
    calls.add(Registration(calls.next_id(), "r", b"r", 0))  # type: ignore[arg-type]  # (no deadline)
    assert calls.pop(2, MessageCall) is not None  # answered in time
    assert len(loop.timers) == 1  # one timer for the earliest deadline
    loop.now = 5.0
    calls.expire()
    assert [c.req for c in expired] == [1]
    assert loop.timers[-1][0] == 6.0  # the next deadline still owed (m2's)
    loop.now = 6.0
    calls.expire()
    assert [c.req for c in expired] == [1, 3]
    assert len(calls) == 1 and calls.registrations()[0].req == 4
