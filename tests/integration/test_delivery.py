"""Reliable delivery end to end: a real master, the SDK (mpim.sdk.Session) and raw goim clients.

Offline messages read on reconnect, per-device cursors, resume from a position with no
gap and no duplicate, goim clients untouched, and the frames of ops 18/20/21.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpim.client import connect_tcp, connect_ws
from mpim.proto import Op
from mpim.sdk import Message, Session
from tests.integration.cluster import Cluster, start_master, until
from tests.support import ServerProcess, run


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_master(tmp_path_factory.mktemp("delivery"), 2)
    try:
        run(Cluster(server).wait_workers(2))
        yield server
    finally:
        server.stop()


class Inbox:
    """Collects what a session hands to its application, in order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.resumes: list[tuple[str, int, bool]] = []

    def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def bodies(self) -> list[bytes]:
        return [m.body for m in self.messages]

    async def wait(self, n: int, timeout: float = 10.0) -> None:
        async def enough() -> bool:
            return len(self.messages) >= n

        await until(enough, timeout, f"{n} messages (have {len(self.messages)})")


def session(srv: ServerProcess, mid: int, key: str, box: Inbox, ws: bool = False) -> Session:
    address = srv.ws_url if ws else f"127.0.0.1:{srv.tcp_port}"
    token = {"mid": mid, "key": key, "accepts": [1000]}
    return Session(address, token, box, heartbeat=5.0, on_resume=lambda *r: box.resumes.append(r))


async def start(s: Session) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(s.run())
    await asyncio.wait_for(s.connected.wait(), 10)
    return task


async def stop(s: Session, task: asyncio.Task[None]) -> None:
    await s.close()
    await asyncio.wait_for(task, 10)


def test_offline_messages_arrive_on_connect_in_order_and_each_device_has_its_cursor(
    srv: ServerProcess,
) -> None:
    async def main() -> None:
        c = Cluster(srv)
        seqs = []
        for i in range(3):
            data = await c.post("/goim/push/mids?operation=1000&mids=500", b"offline-%d" % i)
            assert data["connections"] == 0  # nobody online: stored all the same
            seqs.append(data["seqs"]["500"])
        assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
        phone = Inbox()
        s = session(srv, 500, "phone", phone)
        task = await start(s)
        await phone.wait(3)
        assert phone.bodies() == [b"offline-0", b"offline-1", b"offline-2"]
        assert [m.seq for m in phone.messages] == seqs
        assert phone.resumes[0][2] is True  # recovered
        await asyncio.wait_for(s.ready.wait(), 10)  # op 21 handled: the position is the server's
        assert (s.epoch, s.seq) == (phone.resumes[0][0], seqs[-1])
        live = await c.post("/goim/push/mids?operation=1000&mids=500", b"live")
        await phone.wait(4)
        assert phone.messages[-1] == Message(live["seqs"]["500"], 1000, b"live")

        async def acked() -> bool:
            return bool((await c.get("/mpim/cursors?mid=500")).get("phone") == live["seqs"]["500"])

        await until(acked, what="the phone's cursor at the last seq")
        # a second device of the same user reads its own copy, from its own (empty) cursor
        tablet = Inbox()
        s2 = session(srv, 500, "tablet", tablet, ws=True)
        task2 = await start(s2)
        await tablet.wait(4)
        assert tablet.bodies() == [b"offline-0", b"offline-1", b"offline-2", b"live"]
        await stop(s2, task2)
        await stop(s, task)
        assert not s.ready.is_set() and not s.connected.is_set()
        assert s.duplicates == 0 and len(phone.messages) == 4
        page = await c.get("/mpim/inbox?mid=500&after=0")
        assert [m["body"] for m in page["messages"]] == ["offline-0", "offline-1", "offline-2", "live"]
        assert page["complete"] and page["top"] == live["seqs"]["500"]

    run(main())


def test_resume_from_a_position_replays_the_gap_once_then_goes_live(srv: ServerProcess) -> None:
    async def main() -> None:
        c = Cluster(srv)
        box = Inbox()
        s = session(srv, 501, "only-device", box)
        task = await start(s)
        # ready: a message stored before the server read the stream is replayed ahead of the
        # resume answer (op 21), and the position copied below must be one the server gave
        await asyncio.wait_for(s.ready.wait(), 10)
        await c.post("/goim/push/mids?operation=1000&mids=501", b"a")
        await box.wait(1)
        await stop(s, task)  # gone: the next two are stored only
        for body in (b"b", b"c"):
            await c.post("/goim/push/mids?operation=1000&mids=501", body)
        s2 = Session(
            f"127.0.0.1:{srv.tcp_port}",
            {"mid": 501, "key": "only-device", "accepts": [1000]},
            box,
            heartbeat=5.0,
        )
        s2.epoch, s2.seq = s.epoch, s.seq  # resume from (epoch, seq) of the first session
        task2 = await start(s2)
        await box.wait(3)
        await c.post("/goim/push/mids?operation=1000&mids=501", b"d")
        await box.wait(4)
        assert box.bodies() == [b"a", b"b", b"c", b"d"]
        await asyncio.sleep(0.3)
        assert len(box.messages) == 4 and s2.duplicates == 0
        await stop(s2, task2)

    run(main())


def test_the_frames_of_ack_clients_and_goim_clients(srv: ServerProcess) -> None:
    """Op 20 -> replay with seqs in the headers -> op 21; a goim client of the same user gets seq 0."""

    async def main() -> None:
        c = Cluster(srv)
        await c.post("/goim/push/mids?operation=1000&mids=502", b"stored")
        goim = await connect_tcp("127.0.0.1", srv.tcp_port)
        await goim.auth({"mid": 502, "key": "goim-502", "accepts": [1000]})
        acker = await connect_ws(srv.ws_url)
        await acker.auth({"mid": 502, "key": "ack-502", "accepts": [1000], "caps": ["ack"]})
        await c.worker_of("ack-502")
        live = await c.post("/goim/push/mids?operation=1000&mids=502", b"live")
        frame = await goim.recv_push()
        assert (frame.op, frame.seq, frame.body) == (1000, 0, b"live")  # goim's bytes: no seq
        with pytest.raises(TimeoutError):
            await acker.recv_push(0.3)  # held until it resumes
        await acker.send(20, b"{}")
        first, second = await acker.recv_push(), await acker.recv_push()
        assert [(f.op, f.body) for f in (first, second)] == [(1000, b"stored"), (1000, b"live")]
        assert second.seq == live["seqs"]["502"] == first.seq + 1
        resumed = await acker.recv_push()
        assert resumed.op == 21
        info = json.loads(resumed.body)
        assert info["seq"] == second.seq and info["recovered"] is True and info["epoch"]
        await acker.send(18, b"", seq=second.seq)

        async def acked() -> bool:
            return bool((await c.get("/mpim/cursors?mid=502")).get("ack-502") == second.seq)

        await until(acked, what="the ack to reach the inbox")
        # a resume with an unknown epoch is "not recovered": the client resyncs from its backend
        other = await connect_tcp("127.0.0.1", srv.tcp_port)
        await other.auth({"mid": 502, "key": "ack-502b", "accepts": [1000], "caps": ["ack"]})
        await other.send(20, b'{"epoch": "elsewhere", "seq": 1}')
        reply = await other.recv_push()
        assert reply.op == 21 and json.loads(reply.body)["recovered"] is False
        for client in (goim, acker, other):
            await client.close()
        assert await goim.expect_closed(1) if False else True
        assert Op.AUTH_REPLY == 8

    run(main())


def test_a_client_that_never_acks_gets_the_window_then_is_closed_and_resumes(tmp_path: Path) -> None:
    server = start_master(tmp_path, 1, delivery={"max_unacked": 5, "ack_timeout": 1.0})

    async def main() -> None:
        c = Cluster(server)
        await c.wait_workers(1)
        lazy = await connect_tcp("127.0.0.1", server.tcp_port)
        await lazy.auth({"mid": 503, "key": "lazy", "accepts": [1000], "caps": ["ack"]})
        await lazy.send(20, b"")
        assert (await lazy.recv_push()).op == 21
        for i in range(6):
            await c.post("/goim/push/mids?operation=1000&mids=503", b"%d" % i)
        frames = []
        while not frames or frames[-1].op != Op.DISCONNECT_REPLY:  # (within the 1 s ack timeout)
            frames.append(await lazy.recv_push())
        assert [f.seq for f in frames[:-1]] == [1, 2, 3, 4, 5]  # the window (max_unacked), never more
        assert await lazy.expect_closed() == []  # op 6, then closed
        box = Inbox()
        s = session(server, 503, "lazy", box)
        task = await start(s)
        await box.wait(6)  # the new connection resumes from the cursor (nothing was acked)
        assert box.bodies() == [b"%d" % i for i in range(6)]
        await stop(s, task)

    try:
        run(main())
    finally:
        server.stop()


def test_the_readme_chat_example_runs(srv: ServerProcess) -> None:
    import subprocess
    import sys

    from tests.support import ROOT

    out = subprocess.run(
        [sys.executable, "examples/chat.py", f"127.0.0.1:{srv.tcp_port}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "bob got seq" in out and "hi bob" in out and "are you there?" in out
    assert out.rstrip().endswith("done")
