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

from mpim import bus, records
from mpim.records import BusFence, Mark, PushRoom
from tests.support import ROOT, write_config


def test_topics_are_prefix_free() -> None:
    topics = [
        bus.BROADCAST,
        bus.room_topic("live://1"),
        bus.room_topic("live://10"),
        bus.room_topic(""),
        bus.room_topic("b"),
    ]
    for a, b in permutations(topics, 2):
        assert not b.startswith(a), (a, b)


def test_split_and_room_of() -> None:
    payload = records.array([records.encode(PushRoom(1000, b"\x00body\x00"))])
    topic, rest = bus.split(bus.room_topic("live://1") + payload)
    assert topic == bus.room_topic("live://1") and rest == payload
    assert bus.room_of(topic) == "live://1"
    assert bus.split(bus.BROADCAST + payload) == (bus.BROADCAST, payload)
    for bad in (b"", b"x123", b"rno-terminator", b"w\x00"):
        with pytest.raises(ValueError):
            bus.split(bad)
    with pytest.raises(ValueError):
        bus.room_of(bus.BROADCAST)


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


def test_forwarder_filters_by_subscription_keeps_order_and_passes_fences_up(proxy: tuple[str, str]) -> None:
    """The router's XPUB and two workers' XSUBs, as in a host: a fence after a subscription proves it."""
    bus_in, bus_out = proxy
    ctx = zmq.Context()
    try:
        pub = ctx.socket(zmq.XPUB)
        pub.connect(bus_in)
        in_room = ctx.socket(zmq.XSUB)
        other = ctx.socket(zmq.XSUB)
        for sub in (in_room, other):
            sub.connect(bus_out)
            sub.send(bus.SUBSCRIBE + bus.BROADCAST)
        in_room.send(bus.SUBSCRIBE + bus.room_topic("live://1"))
        other.send(bus.SUBSCRIBE + bus.room_topic("live://10"))
        # Fences follow the subscriptions on each pipe; resend until both came up (pipes connect async).
        deadline = time.monotonic() + 10
        fenced: set[str] = set()
        while fenced != {"in", "other"}:
            assert time.monotonic() < deadline, "fences never reached the publisher"
            for name, sub in (("in", in_room), ("other", other)):
                if name not in fenced:
                    sub.send(records.encode(BusFence(name, 1)))
            while pub.poll(50):
                message = pub.recv()
                if message[:1] not in (bus.SUBSCRIBE, bus.UNSUBSCRIBE):
                    fenced.add(records.Decoder(BusFence)(message).worker)
        encode = records.encode
        for i in range(500):
            pub.send(bus.room_topic("live://1") + records.array([encode(PushRoom(1000, str(i).encode()))]))
        pub.send(bus.BROADCAST + records.array([encode(Mark(1))]))
        decode = records.Decoder(list[records.BusRecord])
        got = []
        while True:
            assert in_room.poll(5000)
            topic, payload = bus.split(in_room.recv())
            if topic == bus.BROADCAST:
                break
            got.extend(r.body for r in decode(payload))
        assert got == [str(i).encode() for i in range(500)]  # none lost: the fence proved the subscription
        assert other.poll(5000)
        assert decode(bus.split(other.recv())[1]) == [Mark(1)]  # nothing of live://1 reached it
    finally:
        ctx.destroy(linger=0)
