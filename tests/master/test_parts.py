"""The master's small pieces: config diffs on reload, exit descriptions, the status pipe."""

from __future__ import annotations

import contextlib
import os

from mpim import config
from mpim.master.children import Backoff, ChildSpec, describe_exit
from mpim.master.reload import changed_sections, pin_bus_keys, router_changed
from mpim.master.status import StatusReader, StatusWriter


def test_changed_sections_names_each_section_that_differs() -> None:
    old = config.Config()
    new = config.replace(old, auth={"mode": "jwt", "secret": "x" * 32}, tcp={"backlog": 10})
    assert changed_sections(old, new) == ["[tcp]", "[auth]"]
    assert changed_sections(old, config.replace(old)) == []


def test_router_reloads_only_for_its_own_sections() -> None:
    old = config.Config()
    assert not router_changed(old, config.replace(old, room={"batch": 5}, channel={"slow_timeout": 3.0}))
    assert router_changed(old, config.replace(old, log={"level": "debug"}))
    assert not router_changed(old, config.replace(old, server={"workers": 3}, auth={"mode": "json"}))
    assert router_changed(old, config.replace(old, http={"bind": "127.0.0.1:9999"}))
    assert router_changed(old, config.replace(old, router={"sweep_interval": 2.0}))
    assert router_changed(old, config.replace(old, protocol={"heartbeat": 10.0}))  # session expiry
    assert router_changed(old, config.replace(old, tcp={"bind": ["0.0.0.0:4101"]}))  # nodes/weighted
    assert router_changed(old, config.replace(old, server={"name": "edge-7"}))


def test_bus_location_is_pinned_on_reload() -> None:
    old = config.Config()
    new = config.replace(old, server={"run_dir": "/tmp/elsewhere"}, bus={"in_endpoint": "tcp://127.0.0.1:1"})
    kept, pinned = pin_bus_keys(old, new)
    assert pinned == ["[server] run_dir", "[bus] in_endpoint"]
    moved = config.replace(old, router={"endpoint": "tcp://127.0.0.1:2"})
    assert pin_bus_keys(old, moved)[1] == ["[router] endpoint"]
    assert kept.server.run_dir == "" and kept.bus.in_endpoint == ""
    same, none = pin_bus_keys(old, config.replace(old, tcp={"backlog": 5}))
    assert none == [] and same.tcp.backlog == 5


def test_child_titles_and_exit_descriptions() -> None:
    cfg = config.Config()
    assert ChildSpec("worker", cfg, 3, 1).title == "mpim: worker 3"
    assert ChildSpec("worker", cfg, 3, 1).role == "worker-3"
    assert ChildSpec("bus", cfg).title == "mpim: bus"
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"


def test_backoff_doubles_for_quick_deaths_and_resets_after_a_long_life() -> None:
    backoff = Backoff(quick=10.0, first=0.5, cap=4.0)
    key = ("worker", 1)
    assert [backoff.delay(key, 1.0) for _ in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff.delay(key, 11.0) == 0.0
    assert backoff.delay(("worker", 2), 1.0) == 0.0  # per slot


def test_status_lines_cross_the_pipe_whole() -> None:
    read_fd, write_fd = os.pipe()
    try:
        writer, reader = StatusWriter(write_fd), StatusReader(pid=7)
        assert writer.send("ready") and writer.send("told 12")
        data = os.read(read_fd, 100)
        assert reader.feed(data[:3]) == []
        assert reader.feed(data[3:]) == ["ready", "told 12"]
        os.close(read_fd)
        assert not writer.send("beat")  # the master is gone
    finally:
        for fd in (read_fd, write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
