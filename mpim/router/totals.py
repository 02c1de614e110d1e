"""The workers' counters added up per worker slot, so that nothing goes back or counts twice.

A worker reports its totals since it started with every liveness report; the
router keeps the last report per link (``Peer.stats``). Here those are added up
per *slot* (host and slot number: the ``host`` and ``worker`` labels): the live
incarnations of a slot (two overlap during a reload) plus what earlier ones had
counted when they left (their link closed, or they said goodbye after sending
their last counts). :meth:`WorkerTotals.sync` folds the leavers in; call it
before reading.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from mpim.metrics.names import GAUGE_KEYS

if TYPE_CHECKING:
    from mpim.router.core import Peer, Router

Slot = tuple[str, str]  # (host, worker slot): the labels of a worker's numbers


class WorkerTotals:
    """The workers' counters added up per slot, across restarts and reloads (see the module doc)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._live: dict[Peer, Slot] = {}
        self.retired: dict[Slot, Counter[str]] = {}

    def sync(self) -> None:
        """Fold the last counts of every worker that left since the last call."""
        live = {p for p in self.router.workers.peers.values() if p.info is not None}
        for peer, slot in list(self._live.items()):
            if peer not in live:
                del self._live[peer]
                kept = self.retired.setdefault(slot, Counter())
                for key, value in peer.stats.items():
                    if key not in GAUGE_KEYS:
                        kept[key] += value
        for peer in live:
            if peer not in self._live:
                info = peer.info
                assert info is not None
                self._live[peer] = (info.host, info.name)

    def live(self) -> list[tuple[Slot, Peer]]:
        return [(slot, peer) for peer, slot in self._live.items()]

    def counters(self) -> dict[Slot, Counter[str]]:
        """Per slot: retired + live counters (call :meth:`sync` first)."""
        out: dict[Slot, Counter[str]] = {slot: Counter(kept) for slot, kept in self.retired.items()}
        for peer, slot in self._live.items():
            total = out.setdefault(slot, Counter())
            for key, value in peer.stats.items():
                if key not in GAUGE_KEYS:
                    total[key] += value
        return out

    def gauges(self) -> dict[Slot, Counter[str]]:
        """Per slot: the live workers' levels (0 for a slot whose worker is gone, until it is back)."""
        out: dict[Slot, Counter[str]] = {slot: Counter() for slot in self.retired}
        for peer, slot in self._live.items():
            total = out.setdefault(slot, Counter())
            for key in GAUGE_KEYS:
                total[key] += peer.stats.get(key, 0)
        return out

    def total(self, key: str) -> int:
        """One counter over every slot (the console's rates)."""
        return sum(c[key] for c in self.counters().values())
