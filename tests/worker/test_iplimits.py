"""Per-IP limits without sockets: a fake clock, addresses in, admitted or refused (counted, logged)."""

from __future__ import annotations

import collections
import logging
from typing import Any

import pytest

from mpim import config
from mpim.worker.iplimits import STATS, IpLimits


class Clock:
    def __init__(self) -> None:
        self.now = 0.0  # a machine that just booted: nothing may take a small clock for "long ago"

    def __call__(self) -> float:
        return self.now


def make(**limits: Any) -> tuple[IpLimits, Clock, collections.Counter[str]]:
    base = {"conns_per_ip": 3, "rate_per_ip": 0.0, "auth_failures": 0, "exempt": ["127.0.0.0/8"], **limits}
    cfg = config.replace(config.Config(), limits=base)
    clock = Clock()
    stats: collections.Counter[str] = collections.Counter(dict.fromkeys(STATS, 0))
    return IpLimits(cfg.limits, clock, stats), clock, stats  # type: ignore[arg-type]


def test_connections_per_ip_cut_the_excess_and_serve_the_rest() -> None:
    limits, _, stats = make()
    assert [limits.admit("203.0.113.7") for _ in range(5)] == [True, True, True, False, False]
    assert limits.admit("203.0.113.8")  # another address is not affected
    assert stats["limit_conns"] == 2
    limits.release("203.0.113.7")
    assert limits.admit("203.0.113.7") and not limits.admit("203.0.113.7")
    assert limits.open_count("203.0.113.7") == 3


def test_new_connections_per_second_are_a_token_bucket() -> None:
    limits, clock, stats = make(conns_per_ip=0, rate_per_ip=2.0, burst_per_ip=4)
    assert [limits.admit("198.51.100.1") for _ in range(6)] == [True] * 4 + [False] * 2
    assert stats["limit_rate"] == 2
    clock.now += 0.5  # one token back
    assert limits.admit("198.51.100.1") and not limits.admit("198.51.100.1")
    clock.now += 100  # never more than the burst
    assert sum(limits.admit("198.51.100.1") for _ in range(10)) == 4


def test_failed_auths_ban_the_address_for_a_while() -> None:
    limits, clock, stats = make(conns_per_ip=0, auth_failures=3, auth_window=10.0, ban_time=30.0)
    ip = "192.0.2.50"
    limits.auth_failed(ip)
    limits.auth_failed(ip)
    assert limits.admit(ip) and not limits.banned(ip)
    limits.auth_failed(ip)
    assert limits.banned(ip) and stats["bans"] == 1
    assert not limits.admit(ip) and stats["limit_banned"] == 1
    assert limits.admit("192.0.2.51")
    clock.now += 30.0
    assert limits.admit(ip) and not limits.banned(ip)


def test_failures_further_apart_than_the_window_do_not_ban() -> None:
    limits, clock, stats = make(conns_per_ip=0, auth_failures=3, auth_window=10.0)
    for _ in range(6):
        limits.auth_failed("192.0.2.9")
        clock.now += 6.0
    assert not limits.banned("192.0.2.9") and stats["bans"] == 0


def test_exempt_networks_and_non_addresses_are_never_limited() -> None:
    limits, _, stats = make(conns_per_ip=1, auth_failures=1, exempt=["10.0.0.0/8", "2001:db8::/32"])
    for ip in ("10.1.2.3", "2001:db8::5", "", "unix-socket"):
        assert all(limits.admit(ip) for _ in range(5))
        limits.auth_failed(ip)
        assert not limits.banned(ip)
    assert len(limits) == 0 and sum(stats.values()) == 0


def test_ipv6_counts_per_network_and_ipv4_mapped_as_ipv4() -> None:
    limits, _, _ = make(conns_per_ip=2)
    assert limits.admit("2001:db8:1:2::1") and limits.admit("2001:db8:1:2::ffff")
    assert not limits.admit("2001:db8:1:2:aaaa::1")  # same /64
    assert limits.admit("2001:db8:1:3::1")  # the next /64
    assert limits.admit("::ffff:203.0.113.1") and limits.admit("203.0.113.1")
    assert not limits.admit("203.0.113.1")
    exact, _, _ = make(conns_per_ip=1, ipv6_prefix=128)
    assert exact.admit("2001:db8::1") and exact.admit("2001:db8::2") and not exact.admit("2001:db8::1")


def test_refusals_are_logged_once_per_interval_per_address(caplog: pytest.LogCaptureFixture) -> None:
    limits, clock, _ = make(conns_per_ip=1, log_interval=10.0)
    caplog.set_level(logging.WARNING, "mpim.worker")
    limits.admit("203.0.113.1")
    for _ in range(50):
        limits.admit("203.0.113.1")
    limits.admit("203.0.113.2")
    limits.admit("203.0.113.2")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "refusing 203.0.113.1: 1 open connections ([limits] conns_per_ip)",
        "refusing 203.0.113.2: 1 open connections ([limits] conns_per_ip)",
    ]
    caplog.clear()
    limits.sweep()
    assert caplog.records == []  # the interval has not passed
    clock.now += 10.0
    limits.sweep()
    assert [r.getMessage() for r in caplog.records] == [
        "203.0.113.1: 49 more times: 1 open connections ([limits] conns_per_ip)"
    ]


def test_sweep_forgets_quiet_addresses_only() -> None:
    limits, clock, _ = make(conns_per_ip=5, rate_per_ip=1.0, burst_per_ip=2, auth_failures=5, ban_time=50.0)
    limits.admit("192.0.2.1")  # still open
    limits.admit("192.0.2.2")
    limits.release("192.0.2.2")  # closed, bucket refilling
    for _ in range(5):
        limits.auth_failed("192.0.2.3")  # banned
    limits.sweep()
    assert len(limits) == 3
    clock.now += 2.0  # 192.0.2.2's bucket is full again
    limits.sweep()
    assert len(limits) == 2
    clock.now += 60.0  # the ban is over
    limits.sweep()
    assert len(limits) == 1 and limits.open_count("192.0.2.1") == 1
