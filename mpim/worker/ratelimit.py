"""Rate limits per connection: the token buckets every frame a client sends after Auth passes.

- **Upstream** (``[upstream] rate``/``burst`` frames, ``bytes_rate``/``bytes_burst`` bytes
  per second): every frame of an authenticated client (goim or go-zero), acks excepted.
- **Acks** (``[delivery] ack_rate``/``ack_burst``): an ack client's acks (op 18, go-zero
  ack frames) have a bucket of their own, so a client acking a fast stream is not cut for
  its message rate.

A client over a bucket is told op 6 and closed, with one log line (``rate_cut``). The
buckets' state lives on the connection (``Channel.quota*``) and its outbox
(``Outbox.ack_quota``/``ack_at``). Elsewhere: limits per client address (connections,
new connections per second, Auth failures) are :mod:`mpim.worker.iplimits`; the integer
bounds of the wire's fields are :mod:`mpim.limits`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from mpim.config import Config
    from mpim.worker.channel import Channel, Registry
    from mpim.worker.outbox import Outbox

log = logging.getLogger("mpim.worker")


class RateLimits:
    def __init__(
        self, cfg: Config, loop: asyncio.AbstractEventLoop, registry: Registry, stats: dict[str, int]
    ) -> None:
        self.loop = loop
        self.registry = registry
        self.stats = stats
        self.reconfigure(cfg)

    def reconfigure(self, cfg: Config) -> None:
        up = cfg.upstream
        self.rate, self.burst = up.rate, float(up.burst)
        self.bytes_rate, self.bytes_burst = up.bytes_rate, float(up.bytes_burst)
        self.ack_rate = cfg.delivery.ack_rate
        self.ack_burst = float(cfg.delivery.ack_burst)

    # -- upstream frames -------------------------------------------------------------------------
    def fill(self, channel: Channel) -> None:
        """A confirmed session starts with full upstream buckets."""
        channel.quota = self.burst
        channel.quota_bytes = self.bytes_burst
        channel.quota_at = self.loop.time()

    def take(self, channel: Channel, size: int) -> bool:
        """One frame of ``size`` bytes from the client's buckets; over them: op 6, close, False."""
        now = self.loop.time()
        elapsed = now - channel.quota_at
        channel.quota_at = now
        quota = min(self.burst, channel.quota + elapsed * self.rate) - 1.0
        quota_bytes = min(self.bytes_burst, channel.quota_bytes + elapsed * self.bytes_rate) - size
        channel.quota, channel.quota_bytes = quota, quota_bytes
        if quota < 0 or quota_bytes < 0:
            self.stats["rate_cut"] += 1
            log.warning(
                "closing %s key=%s: over the upstream rate (%g frames/s, %g bytes/s)",
                channel.peer(), channel.key, self.rate, self.bytes_rate,
            )  # fmt: skip
            self.registry.close(channel, notify=True)
            return False
        return True

    # -- acks -------------------------------------------------------------------------------------
    def take_ack(self, channel: Channel) -> bool:
        """One ack from the client's ack bucket; over it: op 6, close, False."""
        rel: Outbox = channel.rel
        now = self.loop.time()
        if rel.ack_at == 0.0:
            rel.ack_quota, rel.ack_at = self.ack_burst, now
        rel.ack_quota = min(self.ack_burst, rel.ack_quota + (now - rel.ack_at) * self.ack_rate) - 1.0
        rel.ack_at = now
        if rel.ack_quota < 0:
            self.stats["rate_cut"] += 1
            log.warning(
                "closing %s key=%s: over the ack rate (%g acks/s)", channel.peer(), channel.key, self.ack_rate
            )
            self.registry.close(channel, notify=True)
            return False
        return True
