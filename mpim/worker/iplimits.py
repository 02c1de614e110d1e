"""Per-client-IP limits of one worker (goim's ipCnts, and more): connections, rate, Auth failures.

(Rate limits per connection, on what a client sends, are :mod:`mpim.worker.ratelimit`.)

:class:`IpLimits` keeps one small record per client address that is connected
or was seen recently: its open connections (``[limits] conns_per_ip``), a token
bucket of new connections (``rate_per_ip`` per second, ``burst_per_ip`` at once)
and its failed Auths (``auth_failures`` within ``auth_window`` ban it for
``ban_time``). :meth:`IpLimits.admit` is asked once per new connection, before
anything else is spent on it, and :meth:`IpLimits.release` when it closes. The
address is the client's (from the PROXY header on a PROXY listener); IPv6
clients count per ``/ipv6_prefix`` network, and ``exempt`` networks are never
limited. Records of addresses that went quiet are swept, so the table holds only
what is active. Refusals are counted and logged by :class:`Throttled`: the first
at once, then at most one summary line per address per ``log_interval``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpim.config import LimitsSection

log = logging.getLogger("mpim.worker")

STATS = ("limit_conns", "limit_rate", "limit_banned", "bans")
_KEY_CACHE = 4096  # addresses whose limit key is remembered (parsing one costs microseconds)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(values: list[str]) -> list[Network]:
    return [ipaddress.ip_network(value, strict=False) for value in values]


def in_networks(ip: str, nets: list[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in nets)


class Throttled:
    """Log lines about one address at most once per interval; the rest are summed up later."""

    def __init__(self, clock: Callable[[], float], interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self._seen: dict[str, tuple[float, int, str]] = {}  # address -> (logged at, not logged, last why)

    def __call__(self, address: str, why: str, verb: str = "refusing") -> None:
        now = self.clock()
        seen = self._seen.get(address)
        if seen is None or now - seen[0] >= self.interval:
            extra = f" ({seen[1]} more since the last report)" if seen is not None and seen[1] else ""
            log.warning("%s %s: %s%s", verb, address, why, extra)
            self._seen[address] = (now, 0, why)
        else:
            self._seen[address] = (seen[0], seen[1] + 1, why)

    def sweep(self) -> None:
        """Report what was held back once its interval passed; forget quiet addresses."""
        now = self.clock()
        for address, (at, held, why) in list(self._seen.items()):
            if now - at < self.interval:
                continue
            if held:
                log.warning("%s: %d more times: %s", address, held, why)
                self._seen[address] = (now, 0, why)
            else:
                del self._seen[address]


class _Peer:
    __slots__ = ("banned_until", "fail_start", "failures", "open", "stamp", "tokens")

    def __init__(self, now: float, burst: float) -> None:
        self.open = 0
        self.tokens = burst
        self.stamp = now
        self.failures = 0
        self.fail_start = now
        self.banned_until = 0.0


class IpLimits:
    def __init__(self, cfg: LimitsSection, clock: Callable[[], float], stats: dict[str, int]) -> None:
        self.clock = clock
        self.stats = stats
        self.exempt = networks(cfg.exempt)
        self.ipv6_prefix = cfg.ipv6_prefix
        self.throttled = Throttled(clock, cfg.log_interval)
        self._peers: dict[str, _Peer] = {}
        self._keys: dict[str, str | None] = {}
        self.reconfigure(cfg)

    def reconfigure(self, cfg: LimitsSection) -> None:
        """The numbers change live; ``exempt`` and ``ipv6_prefix`` stay (open connections are
        filed by them)."""
        self.conns = cfg.conns_per_ip
        self.rate = cfg.rate_per_ip
        self.burst = float(cfg.burst_per_ip)
        self.auth_failures = cfg.auth_failures
        self.auth_window = cfg.auth_window
        self.ban_time = cfg.ban_time
        self.throttled.interval = cfg.log_interval

    def __len__(self) -> int:
        return len(self._peers)

    def key(self, ip: str) -> str | None:
        """What ``ip`` is limited as (the address, or its IPv6 network); ``None`` = exempt."""
        keys = self._keys
        if ip in keys:
            return keys[ip]
        key: str | None
        try:
            addr = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            key = None  # not an IP (a unix socket): nothing to limit by
        else:
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            if any(addr in net for net in self.exempt):
                key = None
            elif isinstance(addr, ipaddress.IPv6Address) and self.ipv6_prefix < 128:
                key = str(ipaddress.IPv6Network((addr, self.ipv6_prefix), strict=False))
            else:
                key = str(addr)
        if len(keys) >= _KEY_CACHE:
            keys.clear()
        keys[ip] = key
        return key

    # -- connections ---------------------------------------------------------------------------
    def admit(self, ip: str) -> bool:
        """A new connection from ``ip``: True (counted; release it later) or False (refused, logged)."""
        key = self.key(ip)
        if key is None:
            return True
        now = self.clock()
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peers[key] = _Peer(now, self.burst)
        if peer.banned_until > now:
            return self._refuse("limit_banned", key, f"banned for {peer.banned_until - now:.0f}s more")
        if self.conns and peer.open >= self.conns:
            return self._refuse("limit_conns", key, f"{peer.open} open connections ([limits] conns_per_ip)")
        if self.rate > 0:
            peer.tokens = min(self.burst, peer.tokens + (now - peer.stamp) * self.rate)
            peer.stamp = now
            if peer.tokens < 1.0:
                rate = f"more than {self.rate:g} new connections/s ([limits] rate_per_ip)"
                return self._refuse("limit_rate", key, rate)
            peer.tokens -= 1.0
        peer.open += 1
        return True

    def release(self, ip: str) -> None:
        """A connection that :meth:`admit` counted has closed."""
        key = self.key(ip)
        peer = self._peers.get(key) if key is not None else None
        if peer is not None and peer.open > 0:
            peer.open -= 1

    def open_count(self, ip: str) -> int:
        key = self.key(ip)
        peer = self._peers.get(key) if key is not None else None
        return peer.open if peer is not None else 0

    def _refuse(self, stat: str, key: str, why: str) -> bool:
        self.stats[stat] += 1
        self.throttled(key, why)
        return False

    # -- auth failures -----------------------------------------------------------------------------
    def auth_failed(self, ip: str) -> None:
        """An Auth from ``ip`` was refused; too many within the window ban the address."""
        key = self.key(ip)
        if key is None or not self.auth_failures:
            return
        now = self.clock()
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peers[key] = _Peer(now, self.burst)
        if now - peer.fail_start > self.auth_window:
            peer.failures, peer.fail_start = 0, now
        peer.failures += 1
        if peer.failures >= self.auth_failures:
            peer.failures, peer.fail_start = 0, now
            peer.banned_until = now + self.ban_time
            self.stats["bans"] += 1
            log.warning(
                "banning %s for %gs: %d failed Auths within %gs",
                key,
                self.ban_time,
                self.auth_failures,
                self.auth_window,
            )

    def banned(self, ip: str) -> bool:
        key = self.key(ip)
        peer = self._peers.get(key) if key is not None else None
        return peer is not None and peer.banned_until > self.clock()

    # -- upkeep -------------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Forget addresses with nothing open, a full bucket, no ban and no recent failure."""
        now = self.clock()
        full = now - (self.burst / self.rate if self.rate > 0 else 0.0)
        window = now - self.auth_window
        quiet = [
            key
            for key, p in self._peers.items()
            if not p.open
            and p.banned_until <= now
            and (p.stamp <= full or p.tokens >= self.burst)
            and (not p.failures or p.fail_start < window)
        ]
        for key in quiet:
            del self._peers[key]
        self.throttled.sweep()
