"""A histogram of integers with fixed bucket bounds, cheap enough for the delivery paths.

``observe`` is one ``bisect`` and two integer adds. The counts travel to the
router inside a worker's ``Alive.stats`` as flat integer entries
(``name:0`` .. ``name:N`` per bucket, not cumulative, then ``name:sum``), and
:func:`read` turns them back into cumulative Prometheus buckets.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence

# Room batch sizes (frames per flush) and push -> write latency (microseconds).
BATCH_BOUNDS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
LATENCY_US_BOUNDS = (
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
)


class IntHistogram:
    """Counts of observations ``<= bounds[i]``, plus one for everything above the last bound."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[int]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0

    def observe(self, value: int) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def export(self, name: str, into: dict[str, int]) -> None:
        """Write ``name:i`` for each bucket and ``name:sum`` into a stats dict."""
        for i, n in enumerate(self.counts):
            into[f"{name}:{i}"] = n
        into[f"{name}:sum"] = self.total


def read(stats: Mapping[str, int], name: str, bounds: Sequence[int]) -> tuple[list[int], int]:
    """Cumulative bucket counts (``len(bounds) + 1``, the last one is +Inf) and the sum."""
    cumulative = []
    running = 0
    for i in range(len(bounds) + 1):
        running += stats.get(f"{name}:{i}", 0)
        cumulative.append(running)
    return cumulative, stats.get(f"{name}:sum", 0)
