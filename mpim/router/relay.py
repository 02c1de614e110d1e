"""Room and broadcast pushes from other hosts (through Redis), onto this host's bus.

With several hosts a room or broadcast push is answered once Redis took it, and every
host (the ingress one too) publishes it on its own bus from there. While this host's bus
is being restarted, or a worker's place on it is not back (its fence has not come
through), such a push would be published into nothing (ZeroMQ drops what no subscriber
takes): :class:`Relay` holds it instead, in order, and publishes everything held once the
bus and every worker are back. What the dying bus itself had taken is lost: room pushes
are at most once.
"""

from __future__ import annotations

import collections
import logging

from mpim.router.peers import Workers
from mpim.router.pushes import BusPort

log = logging.getLogger("mpim.router")

RELAY_MAX = 10_000  # pushes held at most while the bus is not back (the oldest go first)


class Relay:
    def __init__(self, bus_port: BusPort, workers: Workers, stats: collections.Counter[str]) -> None:
        self.bus = bus_port
        self.workers = workers
        self.stats = stats
        self._held: collections.deque[tuple[bytes, bytes]] = collections.deque()

    def publish(self, topic: bytes, record: bytes) -> None:
        """Publish now, or hold while the bus is not whole (and behind anything held)."""
        if self._held or not self._bus_whole():
            if len(self._held) >= RELAY_MAX:
                self._held.popleft()
                self.stats["relay_dropped"] += 1
                if self.stats["relay_dropped"] % RELAY_MAX == 1:
                    log.error(
                        "the bus has been down too long: dropped %d room/broadcast pushes from other hosts",
                        self.stats["relay_dropped"],
                    )
            self._held.append((topic, record))
            return
        self.bus.publish(topic, record)

    def flush(self) -> None:
        """The bus (or a worker's fence) came back: publish what was held, in order."""
        if self._held and self._bus_whole():
            n = len(self._held)
            while self._held:
                topic, record = self._held.popleft()
                self.bus.publish(topic, record)
            log.info("bus back: published %d room/broadcast pushes from other hosts held meanwhile", n)

    def _bus_whole(self) -> bool:
        return self.bus.connected and all(
            p.bus_ready for p in self.workers.peers.values() if p.info is not None and not p.draining
        )


__all__ = ["RELAY_MAX", "Relay"]
