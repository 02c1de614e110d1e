"""The worker's counters for the metrics: every close has one reason, deliveries and bytes are exact,
latency and batch sizes are sampled once per push or flush. A real in-process worker, real clients."""

from __future__ import annotations

import contextlib
import time

import pytest

from mpim.metrics import hist
from mpim.metrics.hist import BATCH_BOUNDS, LATENCY_US_BOUNDS, IntHistogram
from mpim.metrics.names import WORKER_COUNTERS
from mpim.proto import Op, encode
from mpim.worker.hub import Hub
from mpim.worker.room import ws_batch
from mpim.worker.wsframe import binary_frame
from tests.worker.harness import Running, run, serving

# every worker stat that is a reason for mpim_disconnects_total
REASONS = tuple(key for name, _, _, keys in WORKER_COUNTERS if name == "mpim_disconnects" for key, _ in keys)


def closes(hub: Hub) -> dict[str, int]:
    """Closes by reason, only the non-zero ones."""
    counters = hub.counters()
    return {k: counters[k] for k in REASONS if counters[k]}


async def all_closed(srv: Running, n: int) -> None:
    await srv.settle(lambda: srv.hub.stats["closed_tcp"] + srv.hub.stats["closed_ws"] == n)


def test_histogram_buckets() -> None:
    h = IntHistogram((1, 5, 10))
    for v in (0, 1, 2, 5, 6, 10, 11, 1000):
        h.observe(v)
    assert h.counts == [2, 2, 2, 2] and h.total == 1035 and h.count == 8
    stats: dict[str, int] = {}
    h.export("x", stats)
    assert stats == {"x:0": 2, "x:1": 2, "x:2": 2, "x:3": 2, "x:sum": 1035}
    assert hist.read(stats, "x", (1, 5, 10)) == ([2, 4, 6, 8], 1035)
    assert hist.read({}, "x", (1, 5, 10)) == ([0, 0, 0, 0], 0)


@pytest.mark.parametrize("kind", ["tcp", "ws"])
def test_each_close_is_counted_once_with_its_reason(kind: str) -> None:
    async def scenario() -> None:
        cfg = {"protocol": {"handshake_timeout": 0.3}, "server": {"max_connections": 4}}
        async with serving(**cfg) as srv:
            hub = srv.hub
            gone = await srv.authed(kind, mid=1, key="leaves")
            await gone.close()  # the client leaves
            await srv.authed(kind, mid=2, key="twice")
            await srv.authed(kind, mid=3, key="twice")  # kicks the first "twice"
            bad = await srv.client(kind)
            await bad.send(Op.AUTH, b"not json")  # auth failure
            broken = await srv.authed(kind, mid=4, key="broken")
            await broken.send_raw(b"\x00\x00\x00\x10\x00\x07" + b"\x00" * 10)  # headerLen 7: protocol error
            await srv.client(kind)  # never authenticates: handshake timeout
            await all_closed(srv, 5)
            assert closes(hub) == {
                "client_closed": 1,
                "kicked": 1,
                "auth_fail": 1,
                "rejected": 1,
                "handshake_timeout": 1,
            }
            opened = hub.stats[f"opened_{kind}"]
            assert opened == 6 and hub.counters()[f"conns_{kind}"] == 1  # the second "twice"
            for _ in range(5):  # the limit is 4 open connections
                with contextlib.suppress(Exception):  # a WebSocket client sees its refusal as an error
                    await srv.client(kind)
            await all_closed(srv, 7)
            assert closes(hub)["limit_closed"] == 2 == hub.stats["refused"]
            assert hub.counters()[f"conns_{kind}"] == 4 == len(hub.registry)
            assert hub.drain() == 4  # a stop tells the last four to go
            await all_closed(srv, 11)
            assert closes(hub)["drained"] == 4
            assert sum(closes(hub).values()) == hub.stats["closed_tcp"] + hub.stats["closed_ws"] == 11

    run(scenario)


def test_heartbeat_timeout_is_its_own_reason() -> None:
    async def scenario() -> None:
        async with serving(protocol={"heartbeat": 0.1, "heartbeat_max": 2}) as srv:
            await srv.authed("tcp", mid=1, key="silent")
            await all_closed(srv, 1)
            assert closes(srv.hub) == {"heartbeat_timeout": 1}

    run(scenario)


def test_a_websocket_close_frame_is_the_client_s_doing() -> None:
    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.authed("ws", mid=1, key="a")
            await client.close()  # a close frame, then the TCP close
            await all_closed(srv, 1)
            assert closes(srv.hub) == {"client_closed": 1}

    run(scenario)


@pytest.mark.parametrize("kind", ["tcp", "ws"])
def test_deliveries_and_bytes_are_exact(kind: str) -> None:
    async def scenario() -> None:
        async with serving(room={"batch": 2, "batch_delay": 5.0}) as srv:
            hub = srv.hub
            clients = [
                await srv.authed(kind, mid=i, key=f"k{i}", room_id="live://1", accepts=[1000])
                for i in range(3)
            ]
            frame = encode(1000, b"hello")
            size = len(binary_frame(frame)) if kind == "ws" else len(frame)
            assert hub.push_keys(1000, ["k0", "k1", "nobody"], b"hello") == 2
            assert hub.push_keys(1001, ["k2"], b"hello") == 0  # k2 does not watch 1001
            hub.push_room(1000, "live://1", b"hello")
            hub.push_room(1000, "live://1", b"hello")  # the second frame flushes the batch of two
            hub.push_room(1000, "live://nobody", b"hello")
            hub.push_all(1000, 0, b"hello")
            for c in clients[:2]:
                assert len([await c.recv_push() for _ in range(4)]) == 4
            c = hub.counters()
            assert (c["keys_pushes"], c["keys_deliveries"], c["keys_bytes"]) == (2, 2, 2 * size)
            assert (c["keys_offline"], c["keys_not_watching"]) == (1, 1)
            inner = frame + frame
            room_size = len(ws_batch(inner)) if kind == "ws" else len(inner)
            assert (c["room_flushes"], c["room_frames"], c["room_deliveries"]) == (1, 2, 6)
            assert c["room_bytes"] == 3 * room_size
            assert c["room_absent"] == 1
            assert (c["all_pushes"], c["all_deliveries"], c["all_bytes"]) == (1, 3, 3 * size)
            assert hist.read(c, "batch", BATCH_BOUNDS)[0][:2] == [0, 1]  # one flush of two frames
            assert c["bytes_in"] > 0

    run(scenario)


def test_frames_queued_for_a_room_that_empties_are_counted_as_dropped() -> None:
    async def scenario() -> None:
        async with serving(room={"mode": "fixed", "batch": 100, "batch_delay": 5.0}) as srv:
            client = await srv.authed("tcp", mid=1, key="a", room_id="live://2")
            for _ in range(3):
                srv.hub.push_room(1000, "live://2", b"x")
            await client.close()
            await srv.settle(lambda: len(srv.hub.rooms) == 0)
            assert srv.hub.counters()["room_gone"] == 3

    run(scenario)


def test_latency_runs_from_the_router_s_stamp_to_the_write() -> None:
    async def scenario() -> None:
        async with serving(room={"batch_delay": 0.0}) as srv:
            await srv.authed("tcp", mid=1, key="a", room_id="live://3", accepts=[1000])
            delivery = srv.hub.delivery
            stamp = time.monotonic() - 0.003  # accepted 3 ms ago
            delivery.push_keys(1000, ["a"], b"x", at=stamp)
            delivery.push_room(1000, "live://3", b"y", at=stamp)
            delivery.push_all(1000, 0, b"z", at=stamp)
            delivery.push_keys(1000, ["a"], b"x")  # no stamp (a standalone worker): not observed
            await srv.settle(lambda: srv.hub.meter.room_flushes == 1)
            c = srv.hub.counters()
            for kind in ("keys", "room", "all"):
                cumulative, total = hist.read(c, f"latency_{kind}", LATENCY_US_BOUNDS)
                assert cumulative[-1] == 1 and total >= 3000, kind
                assert cumulative[LATENCY_US_BOUNDS.index(2_500)] == 0  # not below the 3 ms it took

    run(scenario)
