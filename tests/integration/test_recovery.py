"""The router's tables after kill -9 of a worker or of the router itself (real ``mpim master``)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from tests.integration.cluster import ROUTER, Cluster, in_cluster, nothing_more, pushes, until
from tests.support import ServerProcess, http_json


def test_kill_9_of_a_worker_removes_its_sessions(tmp_path: Path) -> None:
    async def scenario(srv: ServerProcess, c: Cluster) -> None:
        spread = await c.spread("kw", 8, "kill://1", 6, 2)
        victim = spread[0][2]
        pid = (await c.workers())[victim]
        doomed = {key for _, key, w in spread if w == victim}
        kept = [(client, key) for client, key, w in spread if w != victim]
        assert await c.get("/goim/online/total") == {"ip_count": 1, "conn_count": 6}
        os.kill(pid, signal.SIGKILL)

        async def cleaned() -> bool:
            total = await c.get("/goim/online/total")
            return bool(total["conn_count"] == len(kept))

        # the master respawns the slot at once (a new pid: the old one's sessions go then);
        # at the latest the sweep drops a worker silent for worker_expiry
        await until(cleaned, timeout=ROUTER["worker_expiry"] + 10, what="the dead worker's sessions to go")
        for key in doomed:
            assert await c.get(f"/mpim/session?key={key}") == []
        assert await c.get("/goim/online/room?type=kill&rooms=1") == {"1": len(kept)}
        assert (await c.post("/goim/push/mids?operation=1000&mids=8", b"alive"))["connections"] == len(kept)
        for client, _ in kept:
            assert [f.body for f in await pushes(client, 1)] == [b"alive"]
            await nothing_more(client)
        assert pid not in (await c.workers()).values()

    in_cluster(tmp_path, 2, scenario)


def test_kill_9_of_the_router_and_the_tables_recover(tmp_path: Path) -> None:
    async def scenario(srv: ServerProcess, c: Cluster) -> None:
        spread = await c.spread("kr", 9, "rec://1", 5, 2)
        other, _ = await c.join("kr-other", 10, "rec://2", ws=True)
        before = {
            "total": await c.get("/goim/online/total"),
            "rooms": await c.get("/goim/online/room?type=rec&rooms=1&rooms=2"),
            "user": sorted((s["key"], s["worker"]) for s in await c.get("/mpim/session?mid=9")),
        }
        assert before["total"] == {"ip_count": 1, "conn_count": 6}
        routers = [pid for pid, title in srv.children().items() if title.startswith("mpim: router")]
        assert len(routers) == 1
        os.kill(routers[0], signal.SIGKILL)

        async def recovered() -> bool:
            try:
                return bool(
                    await c.get("/goim/online/total") == before["total"]
                    and await c.get("/goim/online/room?type=rec&rooms=1&rooms=2") == before["rooms"]
                    and sorted((s["key"], s["worker"]) for s in await c.get("/mpim/session?mid=9"))
                    == before["user"]
                )
            except OSError:  # the new router is not listening yet
                return False

        await until(recovered, timeout=20, what="the restarted router's tables to be whole")
        new_routers = [pid for pid, title in srv.children().items() if title.startswith("mpim: router")]
        assert new_routers and new_routers != routers
        assert (await c.post("/goim/push/mids?operation=1000&mids=9", b"again"))["connections"] == 5
        for client, _, _ in spread:
            assert [f.body for f in await pushes(client, 1)] == [b"again"]
        await c.post("/goim/push/room?operation=1000&type=rec&room=2", b"room")
        assert [f.body for f in await pushes(other, 1)] == [b"room"]

    in_cluster(tmp_path, 2, scenario)


def test_a_silent_worker_is_swept_and_resyncs_when_it_wakes(tmp_path: Path) -> None:
    async def scenario(srv: ServerProcess, c: Cluster) -> None:
        spread = await c.spread("sw", 11, "", 4, 2)
        victim = spread[0][2]
        pid = (await c.workers())[victim]
        held = sum(1 for _, _, w in spread if w == victim)
        os.kill(pid, signal.SIGSTOP)  # no reports, but not dead: only the sweep can tell
        try:

            async def swept() -> bool:
                return bool((await c.get("/goim/online/total"))["conn_count"] == 4 - held)

            await until(swept, timeout=ROUTER["worker_expiry"] + 10, what="the silent worker to be swept")
            assert victim not in await c.workers()
        finally:
            os.kill(pid, signal.SIGCONT)

        async def back() -> bool:
            return bool((await c.get("/goim/online/total"))["conn_count"] == 4)

        await until(back, what="the woken worker's sessions to come back")
        assert (await c.post("/goim/push/mids?operation=1000&mids=11", b"back"))["connections"] == 4
        for client, _, _ in spread:
            assert [f.body for f in await pushes(client, 1)] == [b"back"]

    in_cluster(tmp_path, 2, scenario)


def test_kill_9_of_the_bus_and_pushes_flow_again(tmp_path: Path) -> None:
    async def scenario(srv: ServerProcess, c: Cluster) -> None:
        spread = await c.spread("kb", 12, "bus://1", 4, 2)
        buses = [pid for pid, title in srv.children().items() if title.startswith("mpim: bus")]
        assert len(buses) == 1
        os.kill(buses[0], signal.SIGKILL)
        accepted: list[bytes] = []
        refused = 0
        for n in range(400):  # while the bus is down or coming back, room pushes are refused (-503)
            status, answer = await http_json(
                srv.http_port, "POST", "/goim/push/room?operation=1000&type=bus&room=1", b"probe-%d" % n
            )
            if answer["code"] == 0:
                accepted.append(b"probe-%d" % n)
                if len(accepted) == 3:
                    break
            else:
                assert (status, answer["code"]) == (503, -503), answer
                refused += 1
            await asyncio.sleep(0.02)
        assert len(accepted) == 3 and refused > 0
        # every push answered ok reached every member (a refused one may or may not have)
        for client, _, _ in spread:
            got = []
            while True:
                try:
                    got.append((await client.recv_push(0.5)).body)
                except TimeoutError:
                    break
            assert set(accepted) <= set(got), (accepted, got)
        await c.post("/goim/push/room?operation=1000&type=bus&room=1", b"room")
        assert (await c.post("/goim/push/mids?operation=1000&mids=12", b"mid"))["connections"] == 4
        for client, _, _ in spread:
            assert sorted(f.body for f in await pushes(client, 2)) == [b"mid", b"room"]

    in_cluster(tmp_path, 2, scenario)


def test_room_pushes_are_confirmed_at_once_by_a_restarted_router_however_long_the_old_one_ran(
    tmp_path: Path,
) -> None:
    """Found by ``python -m bench chaos``: the workers keep the highest bus mark they saw, and a new
    router numbered its marks from 1 again, so the workers ignored its marks (and confirmed none of
    its room pushes: -504) until it had published as many as the old one had."""

    async def scenario(srv: ServerProcess, c: Cluster) -> None:
        spread = await c.spread("km", 13, "mark://1", 4, 2)
        for n in range(60):  # the old router's marks: one per push, at least
            await c.post("/goim/push/room?operation=1000&type=mark&room=1", b"before-%d" % n)
        for client, _, _ in spread:
            assert len(await pushes(client, 60)) == 60
        (router,) = [pid for pid, title in srv.children().items() if title.startswith("mpim: router")]
        os.kill(router, signal.SIGKILL)
        answers: list[tuple[int, int]] = []

        async def answered() -> bool:
            try:
                status, answer = await http_json(
                    srv.http_port, "POST", "/goim/push/room?operation=1000&type=mark&room=1", b"after"
                )
            except OSError:  # the new router is not listening yet
                return False
            if answer["code"] == -503:  # rebuilding its tables, or a worker not on the bus yet
                return False
            answers.append((status, answer["code"]))
            return True

        await until(answered, timeout=20, what="the restarted router to answer a room push")
        assert answers == [(200, 0)], answers  # not -504: every worker confirmed it in time
        for client, _, _ in spread:
            assert [f.body for f in await pushes(client, 1)] == [b"after"]

    in_cluster(tmp_path, 2, scenario)
