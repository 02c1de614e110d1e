"""Deadlines and back-pressure: handshake and heartbeat timeouts, slow consumers.

One timing wheel holds every connection's deadline: the handshake deadline from
``connection_made`` until the router confirmed the session (the whole Auth,
registration included, must fit in ``handshake_timeout``), then the heartbeat
deadline, pushed forward by each heartbeat with one integer store. One timer
advances the wheel and checks the paused (slow) connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mpim.worker.channel import AUTHED, CLOSED, NEW, REGISTERING
from mpim.worker.wheel import TimingWheel, WheelItem

if TYPE_CHECKING:
    from mpim.config import Config
    from mpim.worker.channel import Channel, Registry

log = logging.getLogger("mpim.worker")


def wheel_tick(cfg: Config) -> float:
    """Deadline resolution: an eighth of the shortest timeout, between 50 ms and 1 s."""
    shortest = min(cfg.protocol.handshake_timeout, cfg.heartbeat_timeout)
    return min(1.0, max(0.05, shortest / 8))


class Deadlines:
    """Implements :class:`~mpim.worker.channel.Flow`."""

    def __init__(
        self, cfg: Config, loop: asyncio.AbstractEventLoop, registry: Registry, stats: dict[str, int]
    ) -> None:
        self.cfg = cfg
        self.loop = loop
        self.registry = registry
        self.stats = stats
        self.max_pending = cfg.channel.max_pending_bytes
        self.wheel = TimingWheel(wheel_tick(cfg), self._expired)
        self.paused: set[Channel] = set()
        self._t0 = loop.time()
        self._handle: asyncio.TimerHandle | None = None
        self._on_tick: list[Callable[[], None]] = []

    def on_tick(self, hook: Callable[[], None]) -> None:
        """``hook()`` runs on every tick (other per-connection timeouts: acks, confirmations)."""
        self._on_tick.append(hook)

    def reconfigure(self, cfg: Config) -> None:
        self.cfg = cfg
        self.max_pending = cfg.channel.max_pending_bytes

    def start(self) -> None:
        self._t0 = self.loop.time()
        self._handle = self.loop.call_later(self.wheel.tick, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    # -- deadlines --------------------------------------------------------------------
    def handshake(self, channel: Channel) -> None:
        self.wheel.add(channel, self.cfg.protocol.handshake_timeout)

    def beat(self, channel: Channel) -> None:
        """Authenticated, or a heartbeat: the heartbeat deadline starts again."""
        self.wheel.extend(channel, self.cfg.heartbeat_timeout)

    def untimed(self, channel: Channel) -> None:
        """No deadline at all (the echo endpoint for conformance runs)."""
        self.wheel.remove(channel)

    def forget(self, channel: Channel) -> None:
        self.wheel.remove(channel)
        self.paused.discard(channel)

    def _expired(self, item: WheelItem) -> None:
        channel: Channel = item  # type: ignore[assignment]
        if channel.state == NEW:
            self.stats["handshake_timeout"] += 1
            log.info("closing %s: no auth within %gs", channel.peer(), self.cfg.protocol.handshake_timeout)
        elif channel.state == REGISTERING:
            self.stats["register_timeout"] += 1
            log.warning(
                "closing %s key=%s: the router did not confirm the session within %gs",
                channel.peer(),
                channel.key,
                self.cfg.protocol.handshake_timeout,
            )
        elif channel.state == AUTHED:
            self.stats["heartbeat_timeout"] += 1
            log.info("closing %s key=%s: heartbeat timeout", channel.peer(), channel.key)
        self.registry.close(channel)

    def _tick(self) -> None:
        target = int((self.loop.time() - self._t0) / self.wheel.tick)
        while self.wheel.now < target:
            self.wheel.advance()
        if self.paused:
            slow = self.cfg.channel.slow_timeout
            limit = self.loop.time() - slow
            for channel in [c for c in self.paused if c.paused_at < limit]:
                self.cut_slow(channel, f"paused over {slow:g}s")
        for hook in self._on_tick:
            hook()
        self._handle = self.loop.call_later(self.wheel.tick, self._tick)

    # -- Flow ---------------------------------------------------------------------------
    def pause(self, channel: Channel) -> None:
        channel.paused_at = self.loop.time()
        self.paused.add(channel)

    def resume(self, channel: Channel) -> None:
        channel.paused_at = 0.0
        self.paused.discard(channel)

    def cut_slow(self, channel: Channel, why: str) -> None:
        if channel.state == CLOSED:
            return
        self.stats["slow_cut"] += 1
        size = channel.transport.get_write_buffer_size()
        self.stats["slow_cut_bytes"] += size
        log.warning(
            "slow consumer %s key=%s cut: %s (%d bytes queued)", channel.peer(), channel.key, why, size
        )
        self.registry.close(channel, abort=True)
