"""One ack client's reliable stream on a worker, as plain state: no sockets, no timers.

An :class:`Outbox` is what one connection was sent of its user's stream, what waits to be
sent, and what the client acked. The stream's truth is the inbox (on the router); the
outbox is a bounded window onto it:

- **Window.** At most ``window`` (``[delivery] max_unacked``) pushes are written and not
  yet acked; the rest wait in ``queued`` and leave as acks come in. A replay is paced the
  same way, so a backlog larger than the window is never a reason to close the client.
- **Reads.** The resume (op 20) asks the router for the stream after the client's
  position; its answer (:meth:`answered`) fills ``queued`` and names the position op 21
  will report. Live pushes that arrive while a read is in flight are ``held``.
- **Gap.** Memory is bounded: a live push that finds ``queued`` (or ``held``) full, or
  that does not follow the last seq covered (reordered, or an earlier one was dropped),
  is dropped and the outbox marks a gap. Once ``queued`` is empty, the service reads the
  stream again after ``last`` (a catch-up read, paged) and carries on. Nothing is skipped:
  every stored push is written once, in seq order.
- **Acks.** An ack is clamped to the highest seq this connection was sent (or told of by
  op 21); one that arrives before anything was sent changes nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

Item = tuple[int, int, bytes]  # (seq, op, body)


class Answer(NamedTuple):
    """The op 21 a resume owes, sent once everything up to ``top`` was written."""

    epoch: str
    top: int
    recovered: bool


class Outbox:
    __slots__ = (
        "ack_at",
        "ack_quota",
        "acked",
        "answer",
        "dropped",
        "epoch",
        "fetching",
        "held",
        "last",
        "noted",
        "queued",
        "reply",
        "requested",
        "resumed",
        "unacked",
        "written",
    )

    def __init__(self) -> None:
        self.requested = False  # op 20 arrived
        self.fetching = False  # a read of the stream is in flight
        self.resumed = False  # op 21 was sent
        self.answer: Answer | None = None  # op 21, owed until `written` reaches its top
        self.reply = (1, 0)  # ver and seq of the op-20 frame, echoed by op 21
        self.epoch = ""  # the stream's epoch, from the first read
        self.queued: deque[Item] = deque()  # to write, ascending, following `written`
        self.held: list[Item] = []  # live pushes that came while a read was in flight
        self.last = 0  # highest seq queued or written: how far the stream is covered
        self.written = 0  # highest seq the client was sent (or told of): acks stop here
        self.dropped = 0  # highest seq known stored but not queued: above `last`, a read is due
        self.unacked: deque[tuple[int, float]] = deque()  # (seq, written at)
        self.acked = 0
        self.ack_quota = 0.0  # the ack token bucket (acks are admitted apart from messages)
        self.ack_at = 0.0
        self.noted = False  # one log line per connection for acks that were ignored or clamped

    # -- what comes in --------------------------------------------------------------------------
    @property
    def gap(self) -> bool:
        """Some stored seq after ``last`` is not queued: the stream must be read again."""
        return self.dropped > self.last

    def offer(self, item: Item, bound: int) -> None:
        """A live push (stored, with its seq)."""
        if self.fetching or (self.answer is None and not self.resumed):
            if len(self.held) >= bound:
                self.dropped = max(self.dropped, item[0])
            else:
                self.held.append(item)
            return
        self._follow(item, bound)

    def _follow(self, item: Item, bound: int) -> None:
        seq = item[0]
        if seq <= self.last:
            return  # covered already (a read brought it)
        if self.gap or seq != self.last + 1 or len(self.queued) >= bound:
            self.dropped = max(self.dropped, seq)  # (the catch-up read brings it)
            return
        self.queued.append(item)
        self.last = seq

    def answered(self, items: Iterable[Item], epoch: str, top: int, recovered: bool, bound: int) -> str:
        """A read of the stream came back. Returns why the connection must close ("" = it need not)."""
        self.fetching = False
        items = list(items)
        if self.answer is None and not self.resumed:  # the resume's own read
            self.epoch = epoch
            self.answer = Answer(epoch, top, recovered)
            self.last = self.written = items[0][0] - 1 if items else top
        elif epoch != self.epoch or not recovered:
            return "its stream lost messages while it caught up; it resumes to hear of it"
        for item in items:
            if item[0] > self.last:
                self.queued.append(item)
                self.last = item[0]
        self.dropped = max(self.dropped, top)  # (a page shorter than the stream: read on after it)
        held, self.held = self.held, []
        for item in held:
            self._follow(item, bound)
        return ""

    # -- what goes out --------------------------------------------------------------------------
    def take(self, window: int) -> list[Item]:
        """What may be written now: queued items, up to the window of unacked ones (and, while
        op 21 is owed, up to its top: what follows goes after it)."""
        room = min(window - len(self.unacked), len(self.queued))
        queued = self.queued
        answer = self.answer
        items: list[Item] = []
        while room > 0 and (answer is None or queued[0][0] <= answer.top):
            items.append(queued.popleft())
            room -= 1
        if items:
            self.written = items[-1][0]
        return items

    def owed(self) -> Answer | None:
        """The op 21 to send now (everything up to its top was written), once."""
        answer = self.answer
        if answer is None or self.written < answer.top:
            return None
        self.answer = None
        self.resumed = True
        return answer

    def wants_read(self) -> bool:
        """A catch-up read is due: a gap, and nothing left to write before it."""
        return (
            self.gap and not self.fetching and not self.queued and (self.resumed or self.answer is not None)
        )

    # -- acks -----------------------------------------------------------------------------------
    def ack(self, seq: int) -> int:
        """The client processed up to ``seq``: the new cumulative ack (clamped to what it was
        sent), or 0 when it changes nothing."""
        seq = min(seq, self.written)
        if seq <= self.acked:
            return 0
        self.acked = seq
        unacked = self.unacked
        while unacked and unacked[0][0] <= seq:
            unacked.popleft()
        return seq
