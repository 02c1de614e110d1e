"""A reliable client (the SDK) while a backend pushes by mid at a steady rate, and the host is disturbed.

Kill -9 of the client's worker, of the router, of the bus, a SIGHUP reload, and a whole
master restart (the embedded store on disk): at the end the client has handled every
push the API accepted, exactly once and in seq order.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mpim.config import to_toml
from mpim.sdk import Message, Session
from tests.integration.chaos import Http
from tests.integration.cluster import Cluster, start_master, until
from tests.support import ServerProcess, run

MID = 900


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def __call__(self, message: Message) -> None:
        if message.seq:
            self.messages.append(message)


async def push_steadily(
    port: int, stop: asyncio.Event, accepted: dict[int, bytes], rate: float = 100.0
) -> int:
    """Push by mid until ``stop``; ``accepted`` gets seq -> body of every push answered ok."""
    http, n = Http(port), 0
    while not stop.is_set():
        body = b"p-%d" % n
        n += 1
        try:
            answer = await asyncio.wait_for(http.post(f"/goim/push/mids?operation=1000&mids={MID}", body), 5)
            if answer["code"] == 0:
                accepted[answer["data"]["seqs"][str(MID)]] = body
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, StopIteration):
            http.reset()
        await asyncio.sleep(1 / rate)
    http.reset()
    return n


def check(recorder: Recorder, accepted: dict[int, bytes]) -> None:
    seqs = [m.seq for m in recorder.messages]
    assert seqs == sorted(set(seqs)), "handled twice or out of order"
    handled = {m.seq: m.body for m in recorder.messages}
    missing = [seq for seq in accepted if seq not in handled]
    assert not missing, f"{len(missing)} accepted pushes never handled, e.g. seqs {missing[:5]}"
    assert all(handled[seq] == body for seq, body in accepted.items())


Disturb = Callable[[ServerProcess, Cluster], Awaitable[None]]


def children(srv: ServerProcess, title: str) -> list[int]:
    return [pid for pid, t in srv.children().items() if t.startswith(title)]


async def kill_workers(srv: ServerProcess, c: Cluster) -> None:
    (conn,) = await c.get(f"/mpim/session?mid={MID}")
    os.kill((await c.workers())[conn["worker"]], signal.SIGKILL)


async def kill_router(srv: ServerProcess, c: Cluster) -> None:
    (router,) = children(srv, "mpim: router")
    os.kill(router, signal.SIGKILL)


async def kill_bus(srv: ServerProcess, c: Cluster) -> None:
    (proxy,) = children(srv, "mpim: bus")
    os.kill(proxy, signal.SIGKILL)


async def reload(srv: ServerProcess, c: Cluster) -> None:
    sections = {k: dict(v) for k, v in srv.sections.items()}
    sections.setdefault("router", {})["online_interval"] = 1.0
    sections.setdefault("room", {})["batch"] = 10
    srv.config.write_text(to_toml(sections))
    srv.signal(signal.SIGHUP)
    await asyncio.to_thread(srv.wait_log, "reload done", 20)


@pytest.mark.parametrize("disturb", [kill_workers, kill_router, kill_bus, reload], ids=lambda f: f.__name__)
def test_every_accepted_push_is_handled_once_in_order(tmp_path: Path, disturb: Disturb) -> None:
    srv = start_master(tmp_path, 2)

    async def main() -> None:
        c = Cluster(srv)
        await c.wait_workers(2)
        recorder = Recorder()
        session = Session(
            f"127.0.0.1:{srv.tcp_port}", {"mid": MID, "key": "phone", "accepts": [1000]}, recorder
        )
        session.backoff = (0.05, 1.0)
        client = asyncio.get_running_loop().create_task(session.run())
        await asyncio.wait_for(session.connected.wait(), 10)
        stop, accepted = asyncio.Event(), {}
        pusher = asyncio.get_running_loop().create_task(push_steadily(srv.http_port, stop, accepted))
        await asyncio.sleep(0.7)
        await disturb(srv, c)
        await asyncio.sleep(1.5)
        stop.set()
        sent = await pusher
        assert len(accepted) > 10, f"only {len(accepted)} of {sent} pushes were accepted"

        async def caught_up() -> bool:
            return set(accepted) <= {m.seq for m in recorder.messages}

        await until(caught_up, 20, "the client to handle every accepted push")
        check(recorder, accepted)
        print(
            f"{disturb.__name__}: {sent} pushed, {len(accepted)} accepted, {session.connections} connections"
        )
        await session.close()
        await asyncio.wait_for(client, 10)

    try:
        run(main())
    finally:
        srv.stop()


def test_a_master_restart_loses_nothing_the_inbox_accepted(tmp_path: Path) -> None:
    srv = start_master(tmp_path, 2)
    recorder = Recorder()
    accepted: dict[int, bytes] = {}
    position: list[tuple[str, int]] = []

    async def before() -> None:
        c = Cluster(srv)
        await c.wait_workers(2)
        session = Session(
            f"127.0.0.1:{srv.tcp_port}", {"mid": MID, "key": "phone", "accepts": [1000]}, recorder
        )
        task = asyncio.get_running_loop().create_task(session.run())
        await asyncio.wait_for(session.ready.wait(), 10)  # the position saved below is the server's
        for i in range(5):
            answer = await c.post(f"/goim/push/mids?operation=1000&mids={MID}", b"live-%d" % i)
            accepted[answer["seqs"][str(MID)]] = b"live-%d" % i

        async def five() -> bool:
            return len(recorder.messages) == 5

        await until(five, what="five live messages")
        await session.close()
        await asyncio.wait_for(task, 10)
        position.append((session.epoch, session.seq))

        async def gone() -> bool:
            return bool((await c.get("/goim/online/total"))["conn_count"] == 0)

        await until(gone, what="the router to see the client go")
        for i in range(20):  # the client is away: stored only
            answer = await c.post(f"/goim/push/mids?operation=1000&mids={MID}", b"away-%d" % i)
            assert answer["connections"] == 0
            accepted[answer["seqs"][str(MID)]] = b"away-%d" % i

    try:
        run(before())
        srv.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]  (the master; its children follow)
        srv.wait(10)
    finally:
        srv.stop()
    srv.start(wait=False)  # the same config, the same inbox file
    srv.wait_log("bound:", timeout=30, count=2)

    async def after() -> None:
        c = Cluster(srv)
        await c.wait_workers(2)
        session = Session(
            f"127.0.0.1:{srv.tcp_port}", {"mid": MID, "key": "phone", "accepts": [1000]}, recorder
        )
        session.epoch, session.seq = position[0]
        task = asyncio.get_running_loop().create_task(session.run())

        async def caught_up() -> bool:
            return len(recorder.messages) == 25

        await until(caught_up, 20, "the 20 stored messages after the restart")
        check(recorder, accepted)
        await session.close()
        await asyncio.wait_for(task, 10)

    try:
        run(after())
    finally:
        srv.stop()
