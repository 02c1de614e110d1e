"""Group commit: when a group of inbox writes commits, at the end of its loop turn or after a wait.

The store queues writes; the first write of a group schedules the end of the loop turn
it came in (``call_soon``), and by then every write the loop read in that turn has
joined the group. There :meth:`GroupCommit.delay` decides: commit now, or wait for the
rest of ``window`` after the last commit so that writes still on their way share the
commit (less CPU per write, more latency). While a commit runs the loop reads nothing
(the SQL runs on the loop thread), so what arrived meanwhile is read in the next poll
and forms the next group: under load, groups grow with the cost of a commit by
themselves.

A wait pays only for writes that arrive during it, and a backend that sends its next
push only when the previous one is answered never arrives during the wait of its own
push: its next write waits for the answer, the answer for the commit. So the arrival
rate that matters is measured during waits only (the writes that joined a waiting
group, per second waited, over the recent waits, each weighing ``KEEP`` times what the
next one does), and a group waits when that rate
says at least one more write will come before the window ends. Without such a rate a
lone write never waits: one sequential backend is answered one commit at a time, as
fast as the loop goes. A group that already holds several writes (several backends in
one turn) may wait a whole window once to measure the rate, at most once per
``PROBE_EVERY`` seconds while the rate is unknown or too low; a rate not measured for
that long is forgotten.
"""

from __future__ import annotations

PROBE_EVERY = 1.0  # seconds: how often a group of several writes may wait to measure the rate
KEEP = 0.5  # what an earlier wait counts in the rate, relative to the next one


class GroupCommit:
    """The decision of :meth:`delay` and what it learns from each commit (:meth:`committed`).

    ``now`` is the event loop's clock for both; ``window`` 0 commits every group at once.
    """

    __slots__ = ("_arrived", "_last", "_measured", "_probed", "_since", "_size", "_waited", "waits", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self.waits = 0  # groups that waited (for the stats)
        self._last: float | None = None  # when the last commit ran
        self._arrived = 0.0  # writes that joined waiting groups, decayed sum
        self._waited = 0.0  # seconds those groups waited, decayed sum
        self._measured: float | None = None  # when a wait last measured
        self._probed: float | None = None  # when a group last waited without a rate that said so
        self._since: float | None = None  # the waiting group: when it began to wait
        self._size = 0  # and how many writes it held then

    @property
    def rate(self) -> float:
        """Writes per second that arrived while groups waited (0 when unknown)."""
        return self._arrived / self._waited if self._waited > 0 else 0.0

    def delay(self, now: float, size: int) -> float:
        """At the end of the loop turn in which a group of ``size`` writes formed: 0 to commit it
        now, or how long it waits (then :meth:`committed` must follow)."""
        if self._last is None:
            return 0.0
        left = self._last + self.window - now
        if left <= 0:
            return 0.0  # quiet: nothing committed within the window
        if self._measured is not None and now - self._measured > PROBE_EVERY:
            self._arrived = self._waited = 0.0  # an old rate says nothing about now
            self._measured = None
        if self.rate * left < 1.0:  # no more writes expected in time
            if size < 2 or (self._probed is not None and now - self._probed < PROBE_EVERY):
                return 0.0
            # several writes in one turn: wait once to measure, a whole window (the rest of it
            # could end just before the next writes of a source that sends every so often)
            self._probed = now
            left = self.window
        self._since, self._size = now, size
        self.waits += 1
        return left

    def committed(self, now: float, size: int) -> None:
        """A group of ``size`` writes committed at ``now``; after a wait, what it gathered counts."""
        if self._since is not None:
            waited = now - self._since
            if waited > 0:  # (a wait cut short in the same tick tells nothing)
                self._arrived = self._arrived * KEEP + (size - self._size)
                self._waited = self._waited * KEEP + waited
                self._measured = now
            self._since = None
        self._last = now
