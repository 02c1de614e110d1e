"""Several hosts that survive their own failures (host leases), against real masters on one
redis-server: a crashed host starts again in seconds, a dead or paused host's users are never
answered as reached, cluster counts follow the truth, one key keeps one connection across hosts,
and nothing is answered ok while a host rejoins after a Redis outage.

The leases are the defaults ([cluster] lease_interval 1 s, lease_ttl 4 s); the session ttl is
the default too (~8 minutes), so nothing here passes because an entry expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from mpim.client import Client, ConnectionClosedError, connect_tcp
from mpim.proto import Op
from tests.integration.cluster import Cluster, cluster_host, until
from tests.redis_support import RedisServer
from tests.support import ServerProcess, http_json, run, wait_port

LEASE = 4.0


def host(
    tmp: Path, name: str, redis: RedisServer, workers: int = 1, **sections: dict[str, Any]
) -> ServerProcess:
    return cluster_host(tmp, name, redis.url, workers, **sections)


def crash(srv: ServerProcess) -> None:
    """kill -9 of a host's whole process tree, all at once: the master is stopped first, so
    neither it (SIGCHLD) nor its children (their parent-death SIGTERM) tidy anything up."""
    children = list(srv.children())
    srv.signal(signal.SIGSTOP)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    srv.signal(signal.SIGKILL)
    srv.wait(10)


async def joined(srv: ServerProcess, mid: int, key: str, room: str = "") -> Client:
    client = await connect_tcp("127.0.0.1", srv.tcp_port)
    await client.auth({"mid": mid, "key": key, "room_id": room, "accepts": [1000]})
    return client


async def reached(c: Cluster, mid: int, body: bytes = b"probe") -> int:
    return int((await c.post(f"/goim/push/mids?operation=1000&mids={mid}", body))["connections"])


def test_a_crashed_host_serves_again_within_seconds_and_drops_its_dead_entries(
    tmp_path: Path, redis_private: RedisServer
) -> None:
    a = host(tmp_path, "host-a", redis_private)
    b = host(tmp_path, "host-b", redis_private)
    try:

        async def main() -> None:
            await Cluster(b).wait_workers(1)
            client = await joined(b, 71, "b-71")  # (open through the crash: its entry stays behind)
            ca = Cluster(a)
            await until(lambda: _equals(reached(ca, 71), 1), what="the user on host B")
            assert (await client.recv_push()).body == b"probe"
            await asyncio.to_thread(crash, b)
            started = time.monotonic()
            b.start(wait=False)  # the same name, config and ports, at once
            await asyncio.to_thread(b.wait_log, "bound:", 30, 2)  # (the master's probes are closed)
            await asyncio.to_thread(wait_port, b.http_port, 30, b.proc)  # (the router: once the lease lapsed)
            cb = Cluster(b)
            await cb.wait_workers(1)
            serving = time.monotonic() - started
            print(f"host-b serving again {serving:.1f}s after its kill -9")
            assert serving < LEASE + 15, f"restart took {serving:.1f}s"  # (not the session ttl's minutes)
            log = b.log()
            assert "took the name over from incarnation" in log and "dropped 1 of its entries" in log
            assert await reached(ca, 71) == 0  # the dead incarnation's connection is gone
            again = await joined(b, 71, "b-71-new")
            assert await reached(ca, 71, b"again") == 1
            assert (await again.recv_push()).body == b"again"

        try:
            run(main())
        except BaseException:
            print("host-b's log:\n" + "\n".join(b.log().splitlines()[-40:]))
            raise
    finally:
        a.stop()
        b.stop()


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


def test_a_dead_or_paused_host_is_never_answered_as_reached(
    tmp_path: Path, redis_private: RedisServer
) -> None:
    """Three hosts. C is killed: within a lease, pushes through A to C's users answer
    connections 0 (with the inbox seq) and never 1 again. B is paused (SIGSTOP, as a host cut
    off from Redis would be): the same; once resumed it renews, files its sessions again and
    its users are reached again."""
    a, b, c = (host(tmp_path, name, redis_private) for name in ("host-a", "host-b", "host-c"))
    try:

        async def main() -> None:
            ca = Cluster(a)
            for srv in (b, c):
                await Cluster(srv).wait_workers(1)
            on_b, on_c = await joined(b, 81, "b-81"), await joined(c, 82, "c-82")
            await until(lambda: _equals(reached(ca, 81), 1), what="the user on host B")
            await until(lambda: _equals(reached(ca, 82), 1), what="the user on host C")
            crash(c)
            killed = time.monotonic()
            answers = []
            while time.monotonic() - killed < LEASE + 3:
                answer = await ca.post("/goim/push/mids?operation=1000&mids=82", b"x")
                answers.append((time.monotonic() - killed, answer["connections"], answer["seqs"]))
                await asyncio.sleep(0.1)
            dead_at = next(t for t, n, _ in answers if n == 0)
            print(f"host-c counted dead {dead_at:.1f}s after its kill -9")
            assert dead_at <= LEASE + 1.5
            assert all(n == 0 for t, n, _ in answers if t >= dead_at), "reached again after counted dead"
            assert all(seqs.get("82") for _, _, seqs in answers)  # stored for the user all along
            hosts = [h["domain"] for h in (await ca.get("/goim/nodes/weighted"))["hosts"]]
            assert sorted(hosts) == ["host-a", "host-b"]

            os.kill(_router(b), signal.SIGSTOP)
            try:
                await until(lambda: _equals(reached(ca, 81), 0), LEASE + 3, "paused host-b counted dead")
                assert await reached(ca, 81) == 0
            finally:
                os.kill(_router(b), signal.SIGCONT)
            await until(lambda: _equals(reached(ca, 81, b"back"), 1), 15, "host-b reached again")
            assert "its lease had lapsed" in b.log()
            bodies = []
            while b"back" not in bodies:
                bodies.append((await on_b.recv_push()).body)
            await on_b.close()
            await on_c.close()

        run(main(), timeout=120)
    finally:
        for srv in (a, b, c):
            srv.stop()


def _router(srv: ServerProcess) -> int:
    (pid,) = [p for p, t in srv.children().items() if t.startswith("mpim: router")]
    return pid


def test_cluster_counts_follow_the_truth_within_two_intervals(
    tmp_path: Path, redis_private: RedisServer
) -> None:
    """Default online_interval (5 s): room, top, total, nodes and heartbeat counts are exact
    within 20 s of clients coming and going, on either host."""
    a = host(tmp_path, "host-a", redis_private)
    b = host(tmp_path, "host-b", redis_private)
    try:

        async def main() -> None:
            ca, cb = Cluster(a), Cluster(b)
            await cb.wait_workers(1)
            watcher = await joined(a, 90, "watch", "live://c")
            crowd = [await joined(b, 900 + i, f"crowd-{i}", "live://c") for i in range(30)]
            extra = [await joined(b, 990 + i, f"extra-{i}") for i in range(5)]

            async def exact(room: int, total: int, on_b: int) -> bool:
                rooms = await ca.get("/goim/online/room?type=live&rooms=c")
                top = await cb.get("/goim/online/top?type=live&limit=5")
                totals = await ca.get("/goim/online/total")
                nodes = {h["domain"]: h["conns"] for h in (await ca.get("/goim/nodes/weighted"))["hosts"]}
                beat = await watcher.heartbeat()
                return (
                    rooms == {"c": room}
                    and top == ([{"room_id": "c", "count": room}] if room else [])
                    and totals["conn_count"] == total
                    and nodes.get("host-b") == on_b
                    and beat == room
                )

            started = time.monotonic()
            await until(lambda: exact(31, 36, 35), 20, "the counts with 36 clients")
            print(f"counts exact {time.monotonic() - started:.1f}s after the clients came")
            for client in crowd[:20] + extra:
                await client.close()
            started = time.monotonic()
            await until(lambda: exact(11, 11, 10), 20, "the counts after 25 left")
            print(f"counts exact {time.monotonic() - started:.1f}s after 25 clients left")
            for client in crowd[20:]:
                await client.close()
            await until(lambda: exact(1, 1, 0), 20, "the counts after all left")

        run(main(), timeout=120)
    finally:
        a.stop()
        b.stop()


def test_one_key_keeps_one_connection_when_both_hosts_take_it_at_once(
    tmp_path: Path, redis_private: RedisServer
) -> None:
    a = host(tmp_path, "host-a", redis_private)
    b = host(tmp_path, "host-b", redis_private)
    try:

        async def main() -> None:
            ca = Cluster(a)
            await Cluster(b).wait_workers(1)
            for trial in range(40):
                key = f"race-{trial}"
                token = json.dumps({"mid": 60, "key": key, "accepts": [1000]}).encode()
                clients = [await connect_tcp("127.0.0.1", srv.tcp_port) for srv in (a, b)]
                await asyncio.gather(*(client.send(Op.AUTH, token) for client in clients))

                async def outcome(client: Client) -> str:
                    try:
                        frames = [await client.recv(3.0)]
                        frames += await client.expect_closed(1.5)
                    except TimeoutError:
                        return "alive"
                    except ConnectionClosedError:
                        return "closed"
                    return "alive" if frames[-1].op == Op.AUTH_REPLY else "closed"

                states = await asyncio.gather(*(outcome(client) for client in clients))
                assert sorted(states) == ["alive", "closed"], f"trial {trial}: {states}"
                count = (await ca.post(f"/goim/push/keys?operation=1000&keys={key}", b"k"))["connections"]
                assert count == 1, f"trial {trial}: the key reached {count} connections"
                for client in clients:
                    await client.close()

        run(main(), timeout=240)
    finally:
        a.stop()
        b.stop()


def test_nothing_is_answered_ok_while_the_hosts_rejoin_after_redis_comes_back(
    tmp_path: Path, redis_private: RedisServer
) -> None:
    """Pushes by mid and to a room go through host A all along, to users on A and B, while
    Redis is killed and restarted empty: every push answered ok reached every connection it
    counted (the room push: the members on both hosts); the outage logs one error line and
    summaries, not a line per push."""
    a = host(tmp_path, "host-a", redis_private)
    b = host(tmp_path, "host-b", redis_private)
    try:

        async def main() -> None:
            ca = Cluster(a)
            await Cluster(b).wait_workers(1)
            on_a = await joined(a, 50, "a-50", "live://r")
            on_b = await joined(b, 51, "b-51", "live://r")
            await until(lambda: _equals(reached(ca, 51), 1), what="the user on host B")
            ok_room: list[bytes] = []
            ok_mid: list[bytes] = []
            stop = asyncio.Event()

            async def push() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    room, mid = b"room-%d" % n, b"mid-%d" % n
                    status, answer = await http_json(
                        a.http_port, "POST", "/goim/push/room?operation=1000&type=live&room=r", room
                    )
                    if status == 200 and answer["code"] == 0:
                        ok_room.append(room)
                    status, answer = await http_json(
                        a.http_port, "POST", "/goim/push/mids?operation=1000&mids=50&mids=51", mid
                    )
                    if status == 200 and answer["code"] == 0:
                        assert answer["data"]["connections"] == 2, answer
                        ok_mid.append(mid)
                    await asyncio.sleep(0.01)

            pusher = asyncio.get_running_loop().create_task(push())
            await asyncio.sleep(1.0)
            await asyncio.to_thread(redis_private.kill)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(redis_private.restart, keep_data=False)
            await asyncio.sleep(LEASE + 4)
            stop.set()
            await pusher
            assert ok_room and ok_mid
            for client in (on_a, on_b):
                got = set()
                while True:
                    try:
                        got.add((await client.recv_push(2.0)).body)
                    except TimeoutError:
                        break
                missing = [body for body in ok_room + ok_mid if body not in got]
                assert not missing, f"{len(missing)} pushes answered ok never arrived, e.g. {missing[:3]}"
            errors = [line for line in a.log().splitlines() if " ERROR " in line and "inbox" in line]
            assert len(errors) <= 2, errors

        run(main(), timeout=120)
    finally:
        a.stop()
        b.stop()


def test_a_restarted_router_listens_on_its_rooms_again_at_once(
    tmp_path: Path, redis_private: RedisServer
) -> None:
    """Found by the two-host soak: after kill -9 of a host's router, room pushes from any host
    (they all go through Redis) did not reach that host's members until its next count
    refresh (``online_interval``): the new router subscribed to a room's channel only when a
    member joined, and its workers' session reports file members without joining anew. With
    ``online_interval`` at its maximum (10 s) the room push must arrive within 6 s of the host
    serving again."""
    a = host(tmp_path, "host-a", redis_private, router={"online_interval": 10.0})
    b = host(tmp_path, "host-b", redis_private, router={"online_interval": 10.0})
    try:

        async def main() -> None:
            ca, cb = Cluster(a), Cluster(b)
            await ca.wait_workers(1)
            await cb.wait_workers(1)
            member = await joined(b, 51, "member-b", "live://kept")
            await ca.post("/goim/push/room?operation=1000&type=live&room=kept", b"before")
            assert (await member.recv_push(timeout=10)).body == b"before"
            os.kill(_router(b), signal.SIGKILL)
            await asyncio.sleep(0.5)
            await cb.wait_workers(1)  # a new router, its worker linked and on the bus again
            for n in range(24):
                await http_json(
                    a.http_port, "POST", "/goim/push/room?operation=1000&type=live&room=kept", b"after-%d" % n
                )
                with contextlib.suppress(TimeoutError):
                    frame = await member.recv_push(timeout=0.25)
                    assert frame.body.startswith(b"after-"), frame
                    return
            raise AssertionError("no room push reached host B's member within 6 s of its router's restart")

        run(main(), timeout=120)
    finally:
        a.stop()
        b.stop()


def test_room_pushes_from_redis_wait_for_a_restarted_bus_instead_of_vanishing(
    tmp_path: Path, redis_private: RedisServer
) -> None:
    """Found by the two-host soak: after kill -9 of a host's bus, the room pushes that came to it
    through Redis while its bus was down were published into nothing (ZeroMQ drops what no
    subscriber takes), though the host that took them answered ok. They are held, in order,
    until the bus and every worker's place on it are back. (The master is paused so that the
    bus stays down while the pushes come; what the dying bus took in its last instant is
    still lost: room pushes are at most once.)"""
    a = host(tmp_path, "host-a", redis_private)
    b = host(tmp_path, "host-b", redis_private)
    try:

        async def main() -> None:
            ca, cb = Cluster(a), Cluster(b)
            await ca.wait_workers(1)
            await cb.wait_workers(1)
            member = await joined(b, 52, "member-b2", "live://held")
            (bus_pid,) = [p for p, t in b.children().items() if t.startswith("mpim: bus")]
            b.signal(signal.SIGSTOP)  # (no new bus until SIGCONT)
            try:
                os.kill(bus_pid, signal.SIGKILL)

                async def bus_down() -> bool:
                    return not any(w["bus"] for w in await cb.get("/mpim/workers") if w["pid"])

                await until(bus_down, what="host B's router saw its bus go")
                sent = [b"held-%d" % n for n in range(20)]
                for body in sent:
                    await ca.post("/goim/push/room?operation=1000&type=live&room=held", body)
            finally:
                b.signal(signal.SIGCONT)
            got = [(await member.recv_push(timeout=15)).body for _ in sent]
            assert got == sent

        run(main(), timeout=120)
    finally:
        a.stop()
        b.stop()
