"""What the master tells the router (reloads, restarts, its children): the arbiter's counts and the file."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from mpim.config import ConfigError
from mpim.master.children import BUS, ROUTER, WORKER
from mpim.master.statusfile import ChildInfo, StatusFile, StatusReader, parse
from tests.master.test_arbiter import beat_all, booted, make_cfg, pids, worker_pid


def test_the_arbiter_counts_reloads_by_outcome() -> None:
    arb, host, _ = booted(2)
    host.next_config = ConfigError("c.toml: [tcp] backlog: expected an integer")
    arb.signal(signal.SIGHUP)
    host.next_config = make_cfg(2)
    arb.signal(signal.SIGHUP)
    for pid, _ in host.take_spawned():
        arb.message(pid, "ready")
    host.next_config = make_cfg(2)
    arb.signal(signal.SIGHUP)
    _, second = (pid for pid, _ in host.take_spawned())
    arb.exited(second, 3)  # the new generation cannot boot
    assert dict(arb.counts) == {"reload_refused": 1, "reload_done": 1, "reload_abandoned": 1}
    status = arb.status()
    assert status["generation"] == 2 and status["pid"] == os.getpid()


def test_the_arbiter_counts_restarts_by_role_and_hung_workers() -> None:
    arb, _, clock = booted(2)
    arb.exited(worker_pid(arb, 1), -9)
    arb.exited(pids(arb, BUS)[0], -9)
    arb.exited(pids(arb, ROUTER)[0], 1)
    arb.tick()
    hung = worker_pid(arb, 2)
    for _ in range(4):
        clock.advance(3)
        for pid in pids(arb, WORKER):
            if pid != hung:
                arb.message(pid, "beat")
        arb.tick()
    assert dict(arb.counts) == {"restart_worker": 1, "restart_bus": 1, "restart_router": 1, "hung_killed": 1}


def test_retired_and_stopped_children_are_not_restarts() -> None:
    arb, host, clock = booted(2)
    host.next_config = make_cfg(2)
    arb.signal(signal.SIGHUP)
    for pid, _ in host.take_spawned():
        arb.message(pid, "ready")
    for pid in pids(arb, WORKER, 1):
        arb.exited(pid, 0)  # the old generation retired
    clock.advance(1)
    beat_all(arb)
    arb.tick()
    assert "restart_worker" not in arb.counts


def test_the_status_lists_every_child() -> None:
    arb, _, _ = booted(2)
    children = [parse(json.dumps(arb.status()).encode()).children]
    kinds = sorted((c.kind, c.slot, c.generation, c.state) for c in children[0])
    assert kinds == [
        ("bus", 0, 0, "ready"),
        ("router", 0, 0, "ready"),
        ("worker", 1, 1, "ready"),
        ("worker", 2, 1, "ready"),
    ]


def test_the_file_is_rewritten_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    writer = StatusFile(str(path))
    status = {
        "pid": 1,
        "generation": 1,
        "counts": {},
        "children": [{"pid": 2, "kind": "bus", "slot": 0, "generation": 0, "state": "ready"}],
    }
    writer.update(status)
    os.utime(path, ns=(1, 1))
    writer.update(dict(status))
    assert path.stat().st_mtime_ns == 1  # same content: not written again
    writer.update({**status, "generation": 2})
    reader = StatusReader(str(path))
    read = reader.read()
    assert read is not None and read.generation == 2
    assert read.children == [ChildInfo(2, "bus", 0, 0, "ready")]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_missing_run_directory_is_not_an_error(tmp_path: Path) -> None:
    writer = StatusFile(str(tmp_path / "gone" / "master.json"))
    writer.update({"pid": 1, "generation": 1, "counts": {}, "children": []})  # nothing raised
    assert StatusReader(str(tmp_path / "gone" / "master.json")).read() is None
    assert StatusReader(None).read() is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b'{"pid": 1}',
        b"\xff\xfe",
        b'{"pid":"x","generation":1,"counts":{},"children":[]}',
        b'{"pid":1,"generation":1,"counts":{"a":"b"},"children":[]}',
        b'{"pid":1,"generation":1,"counts":{},"children":[1]}',
    ],
)
def test_a_damaged_file_is_refused(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a master status file"):
        parse(data)
    path = tmp_path / "master.json"
    path.write_bytes(data)
    assert StatusReader(str(path)).read() is None
