"""Log a dependency's outage as a person running the server wants it: once, then a summary.

While a store or a peer fails, every push that needs it fails too: one ERROR line per
push would bury the log (142 lines in 5 s of a Redis outage). :class:`OutageLog` logs
the first failure, then at most one summary per ``every`` seconds with the count and
the last reason, and one line when it works again; ``failures`` counts them all for
the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class OutageLog:
    def __init__(
        self,
        log: logging.Logger,
        what: str,
        consequence: str,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.what = what
        self.consequence = consequence
        self.every = every
        self.clock = clock
        self.failures = 0  # since start (the metrics)
        self.down_since: float | None = None
        self._unreported = 0
        self._in_outage = 0
        self._reported_at = 0.0
        self._last = ""

    def failed(self, reason: object) -> None:
        self.failures += 1
        self._in_outage += 1
        self._last = str(reason)
        now = self.clock()
        if self.down_since is None:
            self.down_since = self._reported_at = now
            self.log.error(
                "%s failed: %s; %s (logged once, then every %gs while it lasts)",
                self.what,
                reason,
                self.consequence,
                self.every,
            )
            return
        self._unreported += 1
        if now - self._reported_at >= self.every:
            self.log.warning(
                "%s still failing: %d more failures in the last %.0fs (last: %s)",
                self.what,
                self._unreported,
                now - self._reported_at,
                self._last,
            )
            self._unreported = 0
            self._reported_at = now

    def ok(self) -> None:
        if self.down_since is not None:
            self.log.info(
                "%s works again after %.1fs (%d failures)",
                self.what,
                self.clock() - self.down_since,
                self._in_outage,
            )
        self.down_since = None
        self._unreported = self._in_outage = 0
