"""Private chat and client messages in the three upstream ack modes, anti-replay and the upstream rate limit.

A real master per mode; users talk through the SDK (mpim.sdk.Session) and raw clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mpim.client import ConnectionClosedError, connect_tcp
from mpim.proto import Op, encode
from mpim.sdk import Message, SendError, Session
from tests.integration.cluster import Cluster, start_master, until
from tests.support import ServerProcess, run


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], ServerProcess]]:
    """One master per upstream ack mode, started when a test first asks for it."""
    started: dict[str, ServerProcess] = {}

    def get(mode: str) -> ServerProcess:
        if mode not in started:
            server = start_master(
                tmp_path_factory.mktemp(f"chat-{mode}"),
                2,
                upstream={"ack": mode, "resend": 0.2, "confirm_timeout": 1.0, "rate": 50.0, "burst": 20},
                delivery={"max_unread": 3},
            )
            started[mode] = server
            run(Cluster(server).wait_workers(2))
        return started[mode]

    try:
        yield get
    finally:
        for server in started.values():
            server.stop()


ALL = ["none", "only", "rigor"]
ACKED = ["only", "rigor"]


class Box:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def chats(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.messages if m.seq]

    async def wait(self, n: int) -> None:
        async def enough() -> bool:
            return len(self.chats()) >= n

        await until(enough, 10, f"{n} chat messages (have {len(self.chats())})")


async def user(srv: ServerProcess, mid: int, key: str, box: Box) -> tuple[Session, asyncio.Task[None]]:
    s = Session(f"127.0.0.1:{srv.tcp_port}", {"mid": mid, "key": key, "accepts": [1000]}, box, heartbeat=5.0)
    task = asyncio.get_running_loop().create_task(s.run())
    await asyncio.wait_for(s.connected.wait(), 10)
    return s, task


async def done(*sessions: tuple[Session, asyncio.Task[None]]) -> None:
    for s, task in sessions:
        await s.close()
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("mode", ALL)
def test_private_chat_both_ways_with_the_senders_other_device(masters: Any, mode: str) -> None:
    srv = masters(mode)
    base = {"none": 100, "only": 200, "rigor": 300}[mode]
    alice_id, bob_id = base + 1, base + 2

    async def main() -> None:
        alice_box, alice2_box, bob_box = Box(), Box(), Box()
        alice = await user(srv, alice_id, f"alice-{base}", alice_box)
        alice2 = await user(srv, alice_id, f"alice2-{base}", alice2_box)
        bob = await user(srv, bob_id, f"bob-{base}", bob_box)
        if mode == "none":
            # goim's echo acknowledges; the message is processed all the same
            await alice[0]._client.send(  # type: ignore[union-attr]
                Op.SEND_MSG, json.dumps({"id": "n1", "to": bob_id, "op": 1000, "body": "hi bob"}).encode()
            )
        else:
            ack = await alice[0].send(to=bob_id, op=1000, body="hi bob", id="a1")
            assert ack.id == "a1" and ack.seq > 0
        await bob_box.wait(1)
        got = bob_box.chats()[0]
        assert (got["from"], got["to"], got["body"]) == (alice_id, bob_id, "hi bob")
        await alice2_box.wait(1)  # the sender's other device has its copy
        assert alice2_box.chats()[0]["body"] == "hi bob"
        if mode != "none":
            reply = await bob[0].send(to=alice_id, op=1000, body={"text": "hi alice"}, id="b1")
            await alice_box.wait(2)  # (its own message, then bob's)
            assert [m["body"] for m in alice_box.chats()] == ["hi bob", {"text": "hi alice"}]
            assert reply.seq > 0
            # a retry with the same id is answered again, but not delivered twice
            again = await bob[0].send(to=alice_id, op=1000, body={"text": "hi alice"}, id="b1")
            assert again.seq == reply.seq
            await asyncio.sleep(0.3)
            assert len(alice_box.chats()) == 2
        await done(alice, alice2, bob)

    run(main())


@pytest.mark.parametrize("mode", ACKED)
def test_an_offline_recipient_gets_it_later_and_a_forged_sender_is_ignored(masters: Any, mode: str) -> None:
    srv = masters(mode)
    base = {"only": 210, "rigor": 310}[mode]
    sender_id, offline_id = base + 1, base + 2

    async def main() -> None:
        client = await connect_tcp("127.0.0.1", srv.tcp_port)
        await client.auth({"mid": sender_id, "key": f"s-{base}", "caps": ["ack"]})
        body = {"text": "while you were out"}
        raw = {"id": "f1", "to": offline_id, "op": 1000, "body": body, "from": 999999}
        await client.send(Op.SEND_MSG, json.dumps(raw).encode())  # "from" claims someone else
        answer = json.loads((await client.recv()).body)
        if answer.get("state") == "received":  # rigor: confirm, then it is processed
            await client.send(22, b'{"id": "f1"}')
            answer = json.loads((await client.recv()).body)
        assert (answer["id"], answer["code"], answer["state"]) == ("f1", 0, "done")
        box = Box()
        later = await user(srv, offline_id, f"o-{base}", box)
        await box.wait(1)
        got = box.chats()[0]
        assert got["from"] == sender_id and got["body"] == body
        await client.close()
        await done(later)

    run(main())


@pytest.mark.parametrize("mode", ACKED)
def test_a_full_inbox_refuses_private_messages_with_a_clear_error(masters: Any, mode: str) -> None:
    srv = masters(mode)
    base = {"only": 220, "rigor": 320}[mode]

    async def main() -> None:
        sender = await user(srv, base + 1, f"full-{base}", Box())
        for i in range(3):  # [delivery] max_unread = 3
            await sender[0].send(to=base + 2, op=1000, body=i)
        with pytest.raises(SendError) as info:
            await sender[0].send(to=base + 2, op=1000, body="one too many")
        assert info.value.code == -429
        await done(sender)

    run(main())


@pytest.mark.parametrize("mode", ACKED)
def test_messages_for_the_backend_and_bad_message_bodies(masters: Any, mode: str) -> None:
    srv = masters(mode)
    base = {"only": 230, "rigor": 330}[mode]

    async def main() -> None:
        sender = await user(srv, base + 1, f"backend-{base}", Box())
        ack = await sender[0].send(op=4000, body={"order": 7})  # no "to": the receive hook gets it
        assert ack.seq == 0
        client = await connect_tcp("127.0.0.1", srv.tcp_port)
        await client.auth({"mid": base + 2, "key": f"bad-{base}", "caps": ["ack"]})
        seq = await client.send(Op.SEND_MSG, b"not json")
        reply = await client.recv()
        assert (reply.op, reply.seq) == (Op.SEND_MSG_REPLY, seq)
        assert json.loads(reply.body)["code"] == -400
        await client.close()
        await done(sender)

    run(main())


def test_anti_replay_cuts_replayed_and_skipped_seqs_and_leaves_goim_clients_alone(masters: Any) -> None:
    srv = masters("only")

    async def main() -> None:
        for bad in (3, 2, 5):  # auth is seq 1, a heartbeat seq 2; then: 3 twice, 2 again, or 5
            client = await connect_tcp("127.0.0.1", srv.tcp_port)
            await client.send(
                Op.AUTH, json.dumps({"mid": 240, "key": f"seq-{bad}", "caps": ["seq"]}).encode(), seq=1
            )
            assert (await client.recv()).op == Op.AUTH_REPLY
            await client.send(Op.HEARTBEAT, seq=2)
            assert (await client.recv()).op == Op.HEARTBEAT_REPLY
            if bad == 3:
                await client.send(Op.HEARTBEAT, seq=3)  # the right next one: served
                assert (await client.recv()).op == Op.HEARTBEAT_REPLY
                await client.send(Op.HEARTBEAT, seq=3)  # replayed
            else:
                await client.send(Op.HEARTBEAT, seq=bad)  # 2 = replayed, 5 = skipped
            frames = await client.expect_closed()
            assert [f.op for f in frames] == [Op.DISCONNECT_REPLY]
        # goim's client.js sends seq 1 on every frame: without the cap nobody checks
        goim = await connect_tcp("127.0.0.1", srv.tcp_port)
        await goim.auth({"mid": 241, "key": "goim-seq"})
        for _ in range(3):
            await goim.send(Op.HEARTBEAT, seq=1)
            assert (await goim.recv()).op == Op.HEARTBEAT_REPLY
        await goim.close()

    run(main())


def test_an_upstream_flood_is_cut(masters: Any) -> None:
    srv = masters("only")

    async def main() -> None:
        client = await connect_tcp("127.0.0.1", srv.tcp_port)
        await client.auth({"mid": 250, "key": "flood"})
        await client.send_raw(b"".join(encode(Op.HEARTBEAT, seq=i) for i in range(100)))  # burst 20 at 50/s
        replies = []
        # (a reset may swallow the last frames: the log says why it was closed)
        with contextlib.suppress(ConnectionClosedError, OSError):
            replies = await client.expect_closed()
        assert len([f for f in replies if f.op == Op.HEARTBEAT_REPLY]) <= 20
        await asyncio.to_thread(srv.wait_log, "over the upstream rate", 5)

    run(main())


def test_rigor_resends_the_receipt_until_confirmed_and_expires_it_after(masters: Any) -> None:
    srv = masters("rigor")

    async def main() -> None:
        client = await connect_tcp("127.0.0.1", srv.tcp_port)
        await client.auth({"mid": 260, "key": "rigor-260", "caps": ["ack"]})
        seq = await client.send(
            Op.SEND_MSG, json.dumps({"id": "r1", "to": 261, "op": 1000, "body": 1}).encode()
        )
        answers = []
        while True:  # "received", re-sent every 0.2 s, then -408 after confirm_timeout = 1 s
            frame = await client.recv(timeout=5)
            assert (frame.op, frame.seq) == (Op.SEND_MSG_REPLY, seq)
            answers.append(json.loads(frame.body))
            if answers[-1]["code"]:
                break
        assert len(answers) >= 3 and all(
            a == {"id": "r1", "code": 0, "state": "received"} for a in answers[:-1]
        )
        assert answers[-1]["code"] == -408
        await client.send(22, b'{"id": "r1"}')  # too late: nothing happens
        page = await Cluster(srv).get("/mpim/inbox?mid=261")
        assert page["messages"] == []  # never processed
        await client.close()

    run(main())


def test_a_retry_after_kill_9_of_the_router_gets_the_first_seq_and_is_stored_once(tmp_path: Path) -> None:
    """The de-dup ids are in the inbox with the messages: a router started again after kill -9
    answers a retried id with the first seq, and the recipient's inbox holds it once."""
    srv = start_master(tmp_path, 2, upstream={"ack": "only"})
    sender, recipient = 400, 401

    async def send_m1(key: str) -> dict[str, Any]:
        client = await connect_tcp("127.0.0.1", srv.tcp_port)
        try:
            await client.auth({"mid": sender, "key": key, "caps": ["ack"]})
            message = {"id": "m1", "to": recipient, "op": 1000, "body": "once"}
            seq = await client.send(Op.SEND_MSG, json.dumps(message).encode())
            while True:  # (a push of its own copy may come first)
                frame = await client.recv(timeout=10)
                if (frame.op, frame.seq) == (Op.SEND_MSG_REPLY, seq):
                    return dict(json.loads(frame.body))
        finally:
            await client.close()

    async def main() -> None:
        c = Cluster(srv)
        await c.wait_workers(2)
        first = await send_m1("a-phone")
        assert (first["id"], first["code"], first["state"]) == ("m1", 0, "done") and first["seq"] > 0
        (router,) = [pid for pid, title in srv.children().items() if title.startswith("mpim: router")]
        os.kill(router, signal.SIGKILL)

        async def back() -> bool:
            try:
                here = [w for w in await c.get("/mpim/workers") if w["pid"]]
            except (OSError, AssertionError, ValueError):  # not listening yet, or not whole
                return False
            routers = [pid for pid, title in srv.children().items() if title.startswith("mpim: router")]
            return bool(routers) and router not in routers and len(here) == 2 and all(w["bus"] for w in here)

        await until(back, 30, "a new router process and the workers reporting to it")
        again = await send_m1("a-laptop")
        assert again == first
        page = await c.get(f"/mpim/inbox?mid={recipient}")
        assert [json.loads(m["body"])["id"] for m in page["messages"]] == ["m1"]
        own = await c.get(f"/mpim/inbox?mid={sender}")
        assert [m["seq"] for m in own["messages"]] == [first["seq"]]

    try:
        run(main())
    finally:
        srv.stop()
