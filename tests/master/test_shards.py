"""The arbiter with ``[router] shards`` = 2: one router child per shard, each its own slot."""

from __future__ import annotations

import signal

import pytest

from mpim.master.arbiter import QUICK, RUNNING, Arbiter
from mpim.master.children import BUS, ROUTER, WORKER, ChildSpec
from mpim.master.statusfile import parse
from tests.master.test_arbiter import Clock, FakeHost, make_cfg, pids, ready_all

SHARDS = {"router": {"shards": 2}}


def booted_shards(workers: int = 2) -> tuple[Arbiter, FakeHost, Clock]:
    host, clock = FakeHost(), Clock()
    arb = Arbiter(make_cfg(workers, **SHARDS), host, clock)
    arb.start()
    ready_all(arb)
    host.take_spawned()
    return arb, host, clock


def router_of(arb: Arbiter, shard: int) -> int:
    (pid,) = [c.pid for c in arb.live(ROUTER) if c.spec.slot == shard]
    return pid


def test_start_forks_one_router_per_shard_with_its_title() -> None:
    host = FakeHost()
    arb = Arbiter(make_cfg(2, **SHARDS), host, Clock())
    arb.start()
    specs = [spec for _, spec in host.spawned]
    assert [s.kind for s in specs] == [BUS, ROUTER, ROUTER, WORKER, WORKER]
    assert [s.title for s in specs[:3]] == ["mpim: bus", "mpim: router 0", "mpim: router 1"]
    assert [s.slot for s in specs if s.kind == ROUTER] == [0, 1]
    assert [s.role for s in specs if s.kind == ROUTER] == ["router-0", "router-1"]
    assert {s.expect for s in specs if s.kind == ROUTER} == {2}
    spec = ChildSpec(ROUTER, make_cfg(1))  # one shard: as before shards existed
    assert (spec.title, spec.role, spec.slot) == ("mpim: router", "router", 0)


def test_a_dead_shard_is_restarted_alone_in_its_slot(caplog: pytest.LogCaptureFixture) -> None:
    arb, host, clock = booted_shards()
    clock.advance(60)
    first, second = router_of(arb, 0), router_of(arb, 1)
    arb.exited(second, -9)
    arb.tick()
    ((new, spec),) = host.take_spawned()
    assert spec.kind == ROUTER and spec.slot == 1 and spec.title == "mpim: router 1"
    assert router_of(arb, 0) == first and router_of(arb, 1) == new
    assert first not in {pid for pid, _ in host.kills}  # shard 0 was left alone
    assert f"router 1 (pid {second}) killed by signal 9 (SIGKILL); restarting now" in caplog.text


def test_each_shard_has_its_own_backoff() -> None:
    arb, host, clock = booted_shards()
    arb.exited(router_of(arb, 1), 1)  # a quick death: restarted at once the first time
    arb.tick()
    host.take_spawned()
    arb.exited(router_of(arb, 1), 1)  # again: backoff for shard 1
    arb.exited(router_of(arb, 0), 1)  # shard 0's first death: at once
    arb.tick()
    ((_, spec),) = host.take_spawned()
    assert spec.slot == 0
    clock.advance(0.5)
    arb.tick()
    ((_, spec),) = host.take_spawned()
    assert spec.slot == 1


def test_signals_reach_every_shard() -> None:
    arb, host, _ = booted_shards()
    routers = pids(arb, ROUTER)
    assert len(routers) == 2
    host.next_config = make_cfg(2, http={"bind": "127.0.0.1:4111"}, **SHARDS)
    arb.signal(signal.SIGHUP)
    ready_all(arb, 2)
    kills = host.take_kills()
    assert {pid for pid, sig in kills if sig == signal.SIGHUP} == set(routers)
    arb.signal(signal.SIGUSR1)
    assert set(routers) <= {pid for pid, sig in host.take_kills() if sig == signal.SIGUSR1}
    arb.signal(signal.SIGTERM)
    assert {pid for pid, sig in host.take_kills() if sig == signal.SIGUSR2} == set(routers)
    for pid in pids(arb, WORKER):
        arb.exited(pid, 0)
    assert sorted(pid for pid, sig in host.take_kills() if sig == signal.SIGTERM) == routers
    arb.exited(routers[0], 0)
    assert host.take_kills() == []  # the bus waits for every shard
    arb.exited(routers[1], 0)
    assert host.take_kills() == [(pids(arb, BUS)[0], signal.SIGTERM)]


def test_a_shard_that_cannot_boot_stops_the_master(caplog: pytest.LogCaptureFixture) -> None:
    arb, _, _ = booted_shards()
    assert arb.phase == RUNNING
    arb.exited(router_of(arb, 1), 3)
    assert arb.phase == QUICK
    assert "router 1 (pid" in caplog.text and "failed to boot" in caplog.text


def test_a_shard_that_ran_and_then_cannot_boot_is_retried_while_another_cannot_at_first() -> None:
    arb, _, clock = booted_shards()
    arb.exited(router_of(arb, 0), -9)  # shard 0 ran, then died
    clock.advance(60)
    arb.tick()
    arb.exited(router_of(arb, 0), 3)  # its restart cannot boot: keep trying
    assert arb.phase == RUNNING
    arb.exited(router_of(arb, 1), 3)  # shard 1's first incarnation cannot boot: fatal
    assert arb.phase == QUICK


def test_a_reload_that_changes_the_shards_is_refused_whole(caplog: pytest.LogCaptureFixture) -> None:
    arb, host, _ = booted_shards()
    before = arb.serving.cfg
    host.next_config = make_cfg(3, router={"shards": 3})
    arb.signal(signal.SIGHUP)
    assert host.spawned == [] and host.kills == []
    assert arb.serving.cfg is before and arb.reloader.pending is None
    assert arb.counts["reload_refused"] == 1
    assert "reload refused, keeping the running config: [router] shards 2 -> 3 needs a restart" in caplog.text


def test_the_status_lists_every_shard() -> None:
    arb, _, _ = booted_shards()
    status = arb.status()
    assert status["shards"] == 2
    routers = [(r["kind"], r["slot"]) for r in status["children"] if r["kind"] == ROUTER]
    assert sorted(routers) == [(ROUTER, 0), (ROUTER, 1)]
    import json

    parsed = parse(json.dumps(status).encode())
    assert parsed.shards == 2
    assert sorted(c.slot for c in parsed.children if c.kind == ROUTER) == [0, 1]
