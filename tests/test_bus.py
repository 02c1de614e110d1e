"""The bus codec (pure) and the forwarder process with real ZeroMQ sockets."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import permutations
from pathlib import Path

import pytest
import zmq

from mpim import bus
from tests.support import ROOT, write_config


def test_topics_are_prefix_free() -> None:
    topics = [
        bus.BROADCAST,
        bus.CONTROL,
        bus.worker_topic("h/1/10"),
        bus.worker_topic("h/1/100"),
        bus.room_topic("live://1"),
        bus.room_topic("live://10"),
        bus.room_topic(""),
        bus.room_topic("b"),
        bus.worker_topic(""),
    ]
    for a, b in permutations(topics, 2):
        assert not b.startswith(a), (a, b)


def test_split_and_room_of() -> None:
    env = bus.push_room(1000, b"\x00body\x00")
    topic, rest = bus.split(bus.room_topic("live://1") + env)
    assert topic == bus.room_topic("live://1") and rest == env
    assert bus.room_of(topic) == "live://1"
    assert bus.split(bus.BROADCAST + env) == (bus.BROADCAST, env)
    assert bus.split(bus.CONTROL + env) == (bus.CONTROL, env)
    assert bus.split(bus.worker_topic("h/1/2") + env) == (bus.worker_topic("h/1/2"), env)
    for bad in (b"", b"x123", b"rno-terminator"):
        with pytest.raises(ValueError):
            bus.split(bad)
    with pytest.raises(ValueError):
        bus.room_of(bus.BROADCAST)


def test_envelopes_round_trip() -> None:
    assert bus.unpack(bus.push_keys(5, ["a", "b"], b"x")) == [bus.PUSH_KEYS, 5, ["a", "b"], b"x"]
    assert bus.unpack(bus.push_all(5, 10, b"x")) == [bus.PUSH_ALL, 5, 10, b"x"]
    assert bus.unpack(bus.status(9, {"r": 1})) == [bus.STATUS, 9, {"r": 1}]
    assert bus.unpack(bus.pack({1: "int keys are allowed"})) == {1: "int keys are allowed"}


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\x91\x01extra"])
def test_unpack_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ValueError, match="malformed msgpack"):
        bus.unpack(data)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[str, str]]:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = write_config(tmp_path / "bus.toml", {"log": {"level": "debug"}})
    code = (
        "import sys; from mpim import config, log; from mpim.bus import run_bus; "
        "from mpim.runtime import Endpoints; log.setup('debug', '', 'bus'); "
        "sys.exit(run_bus(config.load(sys.argv[1]), Endpoints.in_dir(sys.argv[2])))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(cfg), str(run_dir)], cwd=ROOT)
    try:
        yield f"ipc://{run_dir}/bus-in", f"ipc://{run_dir}/bus-out"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM is a clean exit


def test_forwarder_filters_by_subscription_and_keeps_order(proxy: tuple[str, str]) -> None:
    bus_in, bus_out = proxy
    ctx = zmq.Context()
    try:
        pub = ctx.socket(zmq.PUB)
        pub.connect(bus_in)
        in_room = ctx.socket(zmq.SUB)
        other = ctx.socket(zmq.SUB)
        for sub in (in_room, other):
            sub.connect(bus_out)
            sub.setsockopt(zmq.SUBSCRIBE, bus.BROADCAST)
        in_room.setsockopt(zmq.SUBSCRIBE, bus.room_topic("live://1"))
        other.setsockopt(zmq.SUBSCRIBE, bus.room_topic("live://10"))
        # Subscriptions travel up asynchronously: publish probes until both see one.
        deadline = time.monotonic() + 10
        seen = {id(in_room): False, id(other): False}
        while not all(seen.values()):
            assert time.monotonic() < deadline, "subscriptions never reached the publisher"
            pub.send(bus.BROADCAST + b"probe")
            for sub in (in_room, other):
                while sub.poll(20):
                    sub.recv()
                    seen[id(sub)] = True
        time.sleep(0.2)
        for sub in (in_room, other):
            while sub.poll(50):
                sub.recv()
        for i in range(500):
            pub.send(bus.room_topic("live://1") + bus.push_room(1000, str(i).encode()))
        pub.send(bus.BROADCAST + b"end")
        got = []
        while True:
            assert in_room.poll(5000)
            topic, env = bus.split(in_room.recv())
            if topic == bus.BROADCAST:
                break
            got.append(bus.unpack(env)[2])
        assert got == [str(i).encode() for i in range(500)]
        assert other.poll(5000)
        assert other.recv() == bus.BROADCAST + b"end"  # nothing of live://1 reached it
    finally:
        ctx.destroy(linger=0)


def test_unpack_all_reads_a_run_of_envelopes() -> None:
    run = bus.push_room(1, b"a") + bus.push_room(2, b"b") + bus.status(3, None)
    assert bus.unpack_all(run) == [[bus.PUSH_ROOM, 1, b"a"], [bus.PUSH_ROOM, 2, b"b"], [bus.STATUS, 3, None]]
    for bad in (b"", b"\xc1", run[:-1], bus.push_room(1, b"a") + b"\x92\x01"):
        with pytest.raises(ValueError, match="malformed msgpack"):
            bus.unpack_all(bad)
