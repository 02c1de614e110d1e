"""The arbiter's decisions, driven without forking: a fake host records spawns and kills."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from typing import Any

import pytest

from mpim import config
from mpim.config import Config, ConfigError
from mpim.master.arbiter import BOOT, RUNNING, Arbiter
from mpim.master.children import BUS, RETIRING, ROUTER, STOPPING, WORKER, ChildSpec
from mpim.master.stopper import DRAINING, HELPER_STOP, QUICK
from mpim.master.table import STOP_MARGIN

SIGKILL, SIGTERM, SIGQUIT = signal.SIGKILL, signal.SIGTERM, signal.SIGQUIT


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mpim.master")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0  # a machine that just booted: nothing may take a small clock for "long ago"

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeHost:
    next_config: Config | ConfigError | None = None
    spawned: list[tuple[int, ChildSpec]] = field(default_factory=list)
    kills: list[tuple[int, int]] = field(default_factory=list)
    logging_set: list[Config] = field(default_factory=list)
    reopened: int = 0
    _pid: int = 100

    def spawn(self, spec: ChildSpec) -> int:
        self._pid += 1
        self.spawned.append((self._pid, spec))
        return self._pid

    def kill(self, pid: int, sig: int) -> None:
        self.kills.append((pid, sig))

    def load_config(self) -> Config:
        assert self.next_config is not None
        if isinstance(self.next_config, ConfigError):
            raise self.next_config
        return self.next_config

    def configure_logging(self, cfg: Config) -> None:
        self.logging_set.append(cfg)

    def reopen_logs(self) -> None:
        self.reopened += 1

    def take_kills(self) -> list[tuple[int, int]]:
        kills, self.kills = self.kills, []
        return kills

    def take_spawned(self) -> list[tuple[int, ChildSpec]]:
        spawned, self.spawned = self.spawned, []
        return spawned


def make_cfg(workers: int = 2, **sections: dict[str, Any]) -> Config:
    server: dict[str, Any] = {"workers": workers, "worker_timeout": 10.0, "graceful_timeout": 20.0}
    server.update(sections.pop("server", {}))
    return config.replace(config.Config(), server=server, **sections)


def pids(arb: Arbiter, kind: str, generation: int | None = None) -> list[int]:
    return sorted(c.pid for c in arb.live(kind, generation))


def worker_pid(arb: Arbiter, slot: int, generation: int | None = None) -> int:
    gen = arb.serving.generation if generation is None else generation
    (child,) = [c for c in arb.live(WORKER, gen) if c.spec.slot == slot]
    return child.pid


def ready_all(arb: Arbiter, generation: int | None = None) -> None:
    for pid in pids(arb, WORKER, generation):
        arb.message(pid, "ready")


def booted(workers: int = 2) -> tuple[Arbiter, FakeHost, Clock]:
    host, clock = FakeHost(), Clock()
    arb = Arbiter(make_cfg(workers), host, clock)
    arb.start()
    ready_all(arb)
    host.take_spawned()
    return arb, host, clock


def beat_all(arb: Arbiter) -> None:
    for pid in pids(arb, WORKER):
        arb.message(pid, "beat")


# -- boot ------------------------------------------------------------------------------


def test_start_forks_bus_router_and_one_worker_per_slot() -> None:
    host = FakeHost()
    arb = Arbiter(make_cfg(3), host, Clock())
    arb.start()
    specs = [spec for _, spec in host.spawned]
    assert [s.kind for s in specs] == [BUS, ROUTER, WORKER, WORKER, WORKER]
    assert [s.title for s in specs] == [
        "mpim: bus",
        "mpim: router",
        "mpim: worker 1",
        "mpim: worker 2",
        "mpim: worker 3",
    ]
    assert {s.generation for s in specs if s.kind == WORKER} == {1}
    assert host.kills == []


def test_bound_once_every_worker_reported_ready(caplog: pytest.LogCaptureFixture) -> None:
    arb = Arbiter(make_cfg(2), FakeHost(), Clock())
    arb.start()
    first, second = pids(arb, WORKER)
    arb.message(first, "ready")
    assert arb.phase == BOOT
    arb.message(second, "ready")
    assert arb.phase == RUNNING
    assert "bound: tcp 0.0.0.0:3101, ws 0.0.0.0:3102; 2 workers serving" in caplog.text
    assert f"worker 2 (pid {second}) up (generation 1)" in caplog.text


def test_boot_error_at_first_boot_stops_the_master_without_respawn(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost()
    arb = Arbiter(make_cfg(2), host, Clock())
    arb.start()
    host.take_spawned()
    first, _ = pids(arb, WORKER)
    arb.exited(first, 3)
    arb.tick()
    assert arb.phase == QUICK
    assert host.spawned == []
    assert {sig for _, sig in host.kills} == {SIGQUIT}
    assert sorted(pid for pid, _ in host.kills) == sorted(arb.children)
    assert f"worker 1 (pid {first}) failed to boot (exited with code 3)" in caplog.text
    for pid in list(arb.children):
        arb.exited(pid, 0)
    assert arb.exit_code == 3
    assert host.spawned == []


def test_crash_during_boot_other_than_boot_error_is_retried() -> None:
    host = FakeHost()
    arb = Arbiter(make_cfg(2), host, Clock())
    arb.start()
    host.take_spawned()
    arb.exited(worker_pid(arb, 1), 1)
    arb.tick()
    ((_, spec),) = host.spawned
    assert (spec.kind, spec.slot, arb.phase) == (WORKER, 1, BOOT)


# -- respawn and backoff -----------------------------------------------------------------


def test_dead_worker_is_replaced_at_once_in_its_slot(caplog: pytest.LogCaptureFixture) -> None:
    arb, host, clock = booted(3)
    clock.advance(60)
    beat_all(arb)
    victim = worker_pid(arb, 2)
    others = [worker_pid(arb, 1), worker_pid(arb, 3)]
    arb.exited(victim, -9)
    arb.tick()
    ((pid, spec),) = host.spawned
    assert (spec.kind, spec.slot, spec.generation, spec.title) == (WORKER, 2, 1, "mpim: worker 2")
    assert host.kills == []  # the other workers are left alone
    assert pids(arb, WORKER) == sorted([*others, pid])
    assert f"worker 2 (pid {victim}) killed by signal 9 (SIGKILL); restarting now" in caplog.text


def test_repeated_quick_deaths_back_off_exponentially() -> None:
    arb, host, clock = booted(1)
    clock.advance(60)
    delays = []
    for _ in range(5):
        arb.exited(worker_pid(arb, 1), 1)
        start = clock.now
        arb.tick()
        while not host.spawned:
            clock.advance(0.25)
            arb.tick()
        delays.append(clock.now - start)
        host.take_spawned()
        clock.advance(1)  # dies one second after it started: a quick death
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0]
    clock.advance(60)  # a long life resets the backoff
    arb.exited(worker_pid(arb, 1), 1)
    arb.tick()
    assert len(host.spawned) == 1


def test_next_deadline_covers_backoff_heartbeats_and_kill_deadlines() -> None:
    arb, _, clock = booted(1)
    assert arb.next_deadline() == clock.now + 10.0  # the worker's heartbeat deadline
    arb.exited(worker_pid(arb, 1), 1)
    arb.tick()
    clock.advance(1)
    arb.exited(worker_pid(arb, 1), 1)
    assert arb.next_deadline() == clock.now + 0.5


@pytest.mark.parametrize("kind", [ROUTER, BUS])
def test_dead_helper_is_restarted(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    arb, host, clock = booted(2)
    clock.advance(60)
    (pid,) = pids(arb, kind)
    arb.exited(pid, 1)
    arb.tick()
    ((new, spec),) = host.spawned
    assert spec.kind == kind and pids(arb, kind) == [new]
    assert f"{kind} (pid {pid}) exited with code 1; restarting now" in caplog.text


# -- heartbeat -------------------------------------------------------------------------


def test_hung_worker_is_killed_and_replaced(caplog: pytest.LogCaptureFixture) -> None:
    arb, host, clock = booted(2)
    hung, alive = worker_pid(arb, 1), worker_pid(arb, 2)
    for _ in range(4):
        clock.advance(3)
        arb.message(alive, "beat")
        arb.tick()
    assert host.take_kills() == [(hung, SIGKILL)]
    assert "is hung: no heartbeat for 12.0s; killing it" in caplog.text
    arb.tick()
    assert host.kills == []  # one kill, not one per tick
    arb.exited(hung, -9)
    arb.tick()
    ((_, spec),) = host.spawned
    assert spec.slot == 1


def test_beating_workers_are_left_alone() -> None:
    arb, host, clock = booted(2)
    for _ in range(20):
        clock.advance(5)
        beat_all(arb)
        arb.tick()
    assert host.kills == []


def test_worker_that_never_binds_is_killed_as_hung() -> None:
    arb, host, clock = booted(1)
    arb.exited(worker_pid(arb, 1), -9)
    arb.tick()
    ((pid, _),) = host.take_spawned()
    clock.advance(10)
    arb.tick()
    assert host.kills == [(pid, SIGKILL)]


# -- reload ----------------------------------------------------------------------------


def test_reload_with_a_broken_config_keeps_running(caplog: pytest.LogCaptureFixture) -> None:
    arb, host, _ = booted(2)
    before = arb.serving.cfg
    host.next_config = ConfigError("c.toml: [tcp] backlog: expected an integer, got 'x'")
    arb.signal(signal.SIGHUP)
    assert host.spawned == [] and host.kills == []
    assert arb.serving.cfg is before and arb.reloader.pending is None
    assert "reload refused, keeping the running config: c.toml: [tcp] backlog" in caplog.text


def test_reload_starts_a_new_generation_then_retires_the_old(caplog: pytest.LogCaptureFixture) -> None:
    arb, host, _ = booted(2)
    old = pids(arb, WORKER)
    helpers = pids(arb, ROUTER) + pids(arb, BUS)
    new_cfg = make_cfg(2, auth={"mode": "jwt", "secret": "s" * 32})
    host.next_config = new_cfg
    arb.signal(signal.SIGHUP)
    spawned = host.take_spawned()
    assert [(s.kind, s.slot, s.generation) for _, s in spawned] == [(WORKER, 1, 2), (WORKER, 2, 2)]
    assert all(s.cfg is new_cfg for _, s in spawned)
    assert "reload begin: generation 2" in caplog.text and "changed: [auth]" in caplog.text
    arb.message(spawned[0][0], "ready")
    assert host.kills == [] and arb.serving.cfg is not new_cfg  # nothing changes until all are bound
    arb.message(spawned[1][0], "ready")
    assert sorted(host.take_kills()) == [(pid, signal.SIGUSR2) for pid in old]
    assert arb.serving.cfg is new_cfg and arb.serving.generation == 2
    assert host.logging_set == [new_cfg]  # the master's own log settings follow
    assert all(c.state == RETIRING for c in arb.live(WORKER, 1))
    assert pids(arb, ROUTER) + pids(arb, BUS) == helpers  # [http] did not change: no restart
    assert "reload done: generation 2 serving with 2 workers; 2 workers of generation 1 retire" in caplog.text


def test_retired_workers_are_not_restarted_and_have_a_deadline() -> None:
    arb, host, clock = booted(1)
    old = worker_pid(arb, 1)
    host.next_config = make_cfg(1, server={"reload_drain_timeout": 100.0})
    arb.signal(signal.SIGHUP)
    ready_all(arb, 2)
    host.take_spawned()
    host.take_kills()
    clock.advance(100 + 20 + STOP_MARGIN - 1)  # reload_drain_timeout of the *old* config is 300
    beat_all(arb)
    arb.tick()
    assert host.kills == []
    clock.advance(300)
    beat_all(arb)
    arb.tick()
    assert host.take_kills() == [(old, SIGKILL)]
    arb.exited(old, -9)
    arb.tick()
    assert host.spawned == []


def test_reload_that_changes_http_reloads_the_router_in_place() -> None:
    arb, host, _ = booted(1)
    (router,) = pids(arb, ROUTER)
    (bus,) = pids(arb, BUS)
    host.next_config = make_cfg(1, http={"bind": "127.0.0.1:4111"})
    arb.signal(signal.SIGHUP)
    ready_all(arb, 2)
    host.take_spawned()
    kills = host.take_kills()
    assert (router, signal.SIGHUP) in kills and (router, SIGTERM) not in kills
    assert host.spawned == [] and pids(arb, ROUTER) == [router] and pids(arb, BUS) == [bus]


def test_reload_of_worker_settings_leaves_the_router_alone() -> None:
    arb, host, _ = booted(1)
    (router,) = pids(arb, ROUTER)
    host.next_config = make_cfg(1, room={"batch": 5})
    arb.signal(signal.SIGHUP)
    ready_all(arb, 2)
    assert all(pid != router for pid, _ in host.take_kills())


def test_reload_can_change_the_number_of_workers() -> None:
    arb, host, _ = booted(2)
    host.next_config = make_cfg(3)
    arb.signal(signal.SIGHUP)
    assert [s.slot for _, s in host.take_spawned()] == [1, 2, 3]
    ready_all(arb, 2)
    assert arb.serving.workers_wanted == 3


def test_new_generation_that_fails_to_boot_is_abandoned(caplog: pytest.LogCaptureFixture) -> None:
    arb, host, clock = booted(2)
    before = arb.serving.cfg
    old = pids(arb, WORKER, 1)
    host.next_config = make_cfg(2, tcp={"bind": ["127.0.0.1:9"]})
    arb.signal(signal.SIGHUP)
    first, second = (pid for pid, _ in host.take_spawned())
    arb.message(first, "ready")
    arb.exited(second, 3)
    arb.tick()
    assert host.take_kills() == [(first, SIGTERM)]
    assert host.spawned == []  # no retry of the failed generation
    assert arb.serving.cfg is before and arb.serving.generation == 1 and arb.reloader.pending is None
    assert pids(arb, WORKER, 1) == old
    assert "reload abandoned:" in caplog.text and "a boot error" in caplog.text
    assert "generation 1 keeps serving" in caplog.text
    arb.exited(first, 0)
    clock.advance(5)
    beat_all(arb)
    arb.tick()
    assert host.spawned == [] and host.kills == []


def test_reload_while_a_generation_is_booting_replaces_it() -> None:
    arb, host, _ = booted(1)
    host.next_config = make_cfg(1, protocol={"heartbeat": 30.0})
    arb.signal(signal.SIGHUP)
    ((booting, _),) = host.take_spawned()
    newest = make_cfg(1, protocol={"heartbeat": 60.0})
    host.next_config = newest
    arb.signal(signal.SIGHUP)
    assert host.take_kills() == [(booting, SIGTERM)]
    ((pid, spec),) = host.take_spawned()
    assert spec.generation == 3 and spec.cfg is newest
    arb.exited(booting, -15)  # the superseded worker's exit is expected
    arb.message(pid, "ready")
    assert arb.serving.generation == 3 and arb.serving.cfg is newest


def test_reload_is_ignored_while_booting_or_draining(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost(next_config=make_cfg(2))
    arb = Arbiter(make_cfg(2), host, Clock())
    arb.start()
    host.take_spawned()
    arb.signal(signal.SIGHUP)
    assert host.spawned == []
    assert "reload ignored: the first workers are still booting" in caplog.text
    ready_all(arb)
    arb.signal(signal.SIGTERM)
    arb.signal(signal.SIGHUP)
    assert host.spawned == []


# -- drain and stop ----------------------------------------------------------------------


def test_drain_stops_workers_first_then_router_then_bus(caplog: pytest.LogCaptureFixture) -> None:
    arb, host, _ = booted(2)
    (router,), (bus,) = pids(arb, ROUTER), pids(arb, BUS)
    workers = pids(arb, WORKER)
    arb.signal(signal.SIGTERM)
    assert arb.phase == DRAINING
    kills = host.take_kills()
    assert kills[0] == (router, signal.SIGUSR2)  # the router refuses pushes before workers drain
    assert sorted(kills[1:]) == [(pid, SIGTERM) for pid in workers]
    arb.message(workers[0], "told 3")
    arb.exited(workers[0], 0)
    assert host.kills == []  # the router waits for every worker
    arb.message(workers[1], "told 4")
    arb.exited(workers[1], 0)
    assert host.take_kills() == [(router, SIGTERM)]
    arb.exited(router, 0)
    assert host.take_kills() == [(bus, SIGTERM)]
    assert arb.exit_code is None
    arb.exited(bus, 0)
    arb.tick()
    assert arb.exit_code == 0
    assert host.spawned == []
    assert "drain begin: 2 workers" in caplog.text
    assert "drain done: told 7 clients to disconnect (op 6); exit 0" in caplog.text


def test_drain_includes_retiring_workers() -> None:
    arb, host, _ = booted(1)
    host.next_config = make_cfg(1)
    arb.signal(signal.SIGHUP)
    ready_all(arb, 2)
    host.take_kills()
    arb.signal(signal.SIGTERM)
    kills = [k for k in host.kills if k[1] != signal.SIGUSR2]
    assert sorted(kills) == [(pid, SIGTERM) for pid in pids(arb, WORKER)]
    assert len(kills) == 2


def test_no_restart_during_drain() -> None:
    arb, host, clock = booted(2)
    arb.signal(signal.SIGTERM)
    arb.exited(pids(arb, ROUTER)[0], -9)  # dies on its own before its turn
    for pid in pids(arb, WORKER):
        arb.exited(pid, 1)
    clock.advance(60)
    arb.tick()
    assert host.spawned == []


def test_stuck_worker_is_killed_after_the_graceful_timeout() -> None:
    arb, host, clock = booted(1)
    (worker,) = pids(arb, WORKER)
    arb.signal(signal.SIGTERM)
    host.take_kills()
    clock.advance(20 + STOP_MARGIN - 0.5)
    beat_all(arb)
    arb.tick()
    assert host.kills == []
    clock.advance(1)
    beat_all(arb)
    arb.tick()
    assert host.take_kills() == [(worker, SIGKILL)]
    arb.exited(worker, -9)
    (router,) = pids(arb, ROUTER)
    assert host.take_kills() == [(router, SIGTERM)]
    clock.advance(HELPER_STOP)
    arb.tick()
    assert host.take_kills() == [(router, SIGKILL)]


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_second_term_or_int_makes_the_drain_quick(second: int) -> None:
    arb, host, _ = booted(2)
    arb.signal(signal.SIGTERM)
    host.take_kills()
    arb.signal(second)
    assert arb.phase == QUICK
    assert sorted(host.take_kills()) == sorted((pid, SIGQUIT) for pid in arb.children)
    for pid in list(arb.children):
        arb.exited(pid, 0)
    assert arb.exit_code == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_stop_everyone_at_once(sig: int) -> None:
    arb, host, clock = booted(2)
    arb.signal(sig)
    assert sorted(host.take_kills()) == sorted((pid, SIGQUIT) for pid in arb.children)
    assert all(c.state == STOPPING for c in arb.children.values())
    clock.advance(5)
    arb.tick()
    assert sorted(host.take_kills()) == sorted((pid, SIGKILL) for pid in arb.children)
    for pid in list(arb.children):
        arb.exited(pid, -9)
    assert arb.exit_code == 0
    assert host.spawned == []


# -- other signals -----------------------------------------------------------------------


def test_ttin_adds_a_worker_and_ttou_retires_the_last_slot() -> None:
    arb, host, _ = booted(2)
    arb.signal(signal.SIGTTIN)
    ((pid, spec),) = host.take_spawned()
    assert (spec.slot, spec.generation, arb.serving.workers_wanted) == (3, 1, 3)
    arb.message(pid, "ready")
    arb.signal(signal.SIGTTOU)
    assert host.take_kills() == [(pid, signal.SIGUSR2)]
    assert arb.serving.workers_wanted == 2
    arb.exited(pid, 0)
    arb.tick()
    assert host.spawned == []


def test_ttou_keeps_at_least_one_worker() -> None:
    arb, host, _ = booted(1)
    arb.signal(signal.SIGTTOU)
    assert host.kills == [] and arb.serving.workers_wanted == 1


def test_usr1_reopens_the_masters_log_and_tells_every_child() -> None:
    arb, host, _ = booted(2)
    arb.signal(signal.SIGUSR1)
    assert host.reopened == 1
    assert sorted(host.kills) == sorted((pid, signal.SIGUSR1) for pid in arb.children)
    assert len(host.kills) == 4


def test_status_lines_from_unknown_pids_and_unknown_exits_are_ignored() -> None:
    arb, host, _ = booted(1)
    arb.message(999, "ready")
    arb.exited(999, 0)
    arb.message(pids(arb, WORKER)[0], "told x")
    assert host.spawned == [] and host.kills == [] and arb.phase == RUNNING


def test_router_boot_error_at_first_boot_stops_the_master() -> None:
    host = FakeHost()
    arb = Arbiter(make_cfg(1), host, Clock())
    arb.start()
    host.take_spawned()
    arb.exited(pids(arb, ROUTER)[0], 3)
    arb.tick()
    assert arb.phase == QUICK and host.spawned == []
    for pid in list(arb.children):
        arb.exited(pid, 0)
    assert arb.exit_code == 3


def test_reload_keeps_the_bus_location(caplog: pytest.LogCaptureFixture) -> None:
    arb, host, _ = booted(1)
    host.next_config = make_cfg(1, server={"run_dir": "/elsewhere"})
    arb.signal(signal.SIGHUP)
    ((_, spec),) = host.spawned
    assert spec.cfg.server.run_dir == ""
    assert "reload keeps [server] run_dir: the bus cannot move while the master runs" in caplog.text


class ForkFails(FakeHost):
    failing: bool = False

    def spawn(self, spec: ChildSpec) -> int:
        if self.failing:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return super().spawn(spec)


def test_failed_fork_is_retried_and_breaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    host, clock = ForkFails(), Clock()
    arb = Arbiter(make_cfg(2), host, clock)
    arb.start()
    ready_all(arb)
    clock.advance(60)
    beat_all(arb)
    host.take_spawned()
    host.failing = True
    arb.exited(worker_pid(arb, 1), -9)
    arb.tick()
    assert "cannot fork worker 1: [Errno 11]" in caplog.text
    host.failing = False
    clock.advance(1)
    beat_all(arb)
    arb.tick()
    ((_, spec),) = host.take_spawned()
    assert spec.slot == 1


def test_failed_fork_during_reload_abandons_it() -> None:
    host = ForkFails(next_config=make_cfg(2))
    arb = Arbiter(make_cfg(2), host, Clock())
    arb.start()
    ready_all(arb)
    host.take_spawned()
    host.failing = True
    arb.signal(signal.SIGHUP)
    assert arb.reloader.pending is None and arb.serving.generation == 1 and host.spawned == []


def test_the_router_is_told_how_many_workers_to_wait_for() -> None:
    host, clock = FakeHost(), Clock()
    arb = Arbiter(make_cfg(3), host, clock)
    arb.start()
    (router_spec,) = [spec for _, spec in host.take_spawned() if spec.kind == ROUTER]
    assert router_spec.expect == 3  # the first boot: every worker about to start
    ready_all(arb)
    arb.exited(pids(arb, ROUTER)[0], -9)
    clock.advance(60)
    arb.tick()
    ((_, again),) = host.take_spawned()
    assert again.kind == ROUTER and again.expect == 3  # a restart: the live workers


def test_a_router_that_cannot_boot_after_the_workers_are_up_stops_the_master(
    caplog: pytest.LogCaptureFixture,
) -> None:
    arb, _, _ = booted(2)
    assert arb.phase == RUNNING
    (router,) = pids(arb, ROUTER)
    arb.exited(router, 3)  # e.g. Redis unreachable at start: a restart would not help
    assert arb.phase == QUICK and "router" in caplog.text and "failed to boot" in caplog.text


def test_a_router_that_crashed_once_and_then_cannot_boot_is_restarted() -> None:
    arb, _, clock = booted(2)
    (router,) = pids(arb, ROUTER)
    arb.exited(router, -9)  # it ran, then died
    clock.advance(60)
    arb.tick()
    (again,) = pids(arb, ROUTER)
    arb.exited(again, 3)  # (Redis is down right now: keep trying, with backoff)
    assert arb.phase == RUNNING
