"""The adaptive room window: how busy the worker's loop is with room writes -> how long rooms may wait.

Sans-I/O: the batcher reports each flush (when it started and ended, in loop
time) and reads :attr:`Window.value`, the shortest spacing it keeps between two
flushes of one room. Every :data:`PERIOD` of loop time the window takes the
share of that time the loop spent writing room flushes (wall time, so a worker
starved of CPU by other processes counts as busy too) into a smoothed *load*
(half the last period, half what came before: one busy period is noise, two in
a row are not), then:

- above :data:`HIGH` the worker is close to falling behind (one more message
  would queue): the window doubles, up to ``ceiling`` (``[room] max_delay``), so
  each write carries more messages and the writes per message drop;
- below :data:`LOW` it halves (once per period that passed), down to ``floor``
  (``[room] batch_delay``);
- in between it holds, so it settles instead of swinging.

Doubling matters: a wider window only saves writes once it exceeds the time
between two messages of a room, so a proportional step would stop short.
"""

from __future__ import annotations

PERIOD = 0.1  # seconds of loop time between two decisions
SMOOTHING = 0.5  # weight of the last period in the smoothed load
HIGH = 0.8  # smoothed share of the time spent writing above which the window widens
LOW = 0.4  # ...and below which it narrows
FIRST_STEP = 0.005  # the first widening from a zero floor, seconds


class Window:
    __slots__ = ("busy", "ceiling", "floor", "load", "since", "value")

    def __init__(self, floor: float, ceiling: float, now: float = 0.0) -> None:
        self.floor = floor
        self.ceiling = max(floor, ceiling)
        self.value = floor
        self.busy = 0.0  # seconds spent in flushes since ``since``
        self.since = now
        self.load = 0.0  # the smoothed share of the time spent in flushes

    def retune(self, floor: float, ceiling: float) -> None:
        self.floor = floor
        self.ceiling = max(floor, ceiling)
        self.value = min(self.ceiling, max(self.floor, self.value))

    def flushed(self, started: float, now: float) -> None:
        """A flush kept the loop busy from ``started`` to ``now`` (loop time)."""
        self.busy += now - started
        elapsed = now - self.since
        periods = int(elapsed / PERIOD + 1e-9)  # (no float drift below a whole period)
        if periods < 1:
            return
        weight = 1.0 - (1.0 - SMOOTHING) ** min(periods, 64)  # several idle periods weigh as several
        load = self.load = self.load + weight * (min(1.0, self.busy / elapsed) - self.load)
        self.busy = 0.0
        self.since = now
        if load > HIGH:
            self.value = min(self.ceiling, max(2 * self.value, 2 * self.floor, FIRST_STEP))
        elif load < LOW and self.value > self.floor:
            narrowed = self.value / 2 ** min(16, periods)
            self.value = narrowed if narrowed >= max(2 * self.floor, 0.001) else self.floor
