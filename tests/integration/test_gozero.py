"""The go-zero endpoint under a real master: go-zero web clients and goim ``ack`` clients chat with
each other in every ack mode, get their offline messages, pushes of every kind and presence."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from mpim.client import Client, connect_tcp
from mpim.proto import Frame, Op
from tests.gzclient import GzClient
from tests.integration.cluster import Cluster, start_master, until
from tests.support import ServerProcess, run


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], ServerProcess]]:
    """One master (2 workers) per upstream ack mode, started when a test first asks for it."""
    started: dict[str, ServerProcess] = {}

    def get(mode: str) -> ServerProcess:
        if mode not in started:
            server = start_master(
                tmp_path_factory.mktemp(f"gozero-{mode}"),
                2,
                gozero={"path": "/ws"},
                upstream={"ack": mode, "resend": 0.2, "confirm_timeout": 1.5},
            )
            started[mode] = server
            run(Cluster(server).wait_workers(2))
        return started[mode]

    try:
        yield get
    finally:
        for server in started.values():
            server.stop()


def url(srv: ServerProcess) -> str:
    return f"ws://127.0.0.1:{srv.ws_port}/ws"


async def gz_user(srv: ServerProcess, mid: int, **claims: Any) -> GzClient:
    """A go-zero client, once its session is filed (its key in the router's tables)."""
    client = await GzClient.connect(url(srv), {"mid": mid, **claims})
    await Cluster(srv).worker_of(f"gozero-{mid}")
    return client


class GoimUser:
    """A goim ack client (caps ack, resumed), keeping the frames it did not ask for yet."""

    def __init__(self, client: Client, mode: str) -> None:
        self.client = client
        self.mode = mode
        self.kept: list[Frame] = []

    @classmethod
    async def connect(cls, srv: ServerProcess, mid: int, key: str, mode: str) -> GoimUser:
        client = await connect_tcp("127.0.0.1", srv.tcp_port)
        await client.auth({"mid": mid, "key": key, "accepts": [1000], "caps": ["ack"]})
        await client.send(20, b"{}")
        user = cls(client, mode)
        assert (await user.next(lambda f: f.op == 21)).op == 21
        return user

    async def next(self, match: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        for i, frame in enumerate(self.kept):
            if match(frame):
                return self.kept.pop(i)
        while True:
            frame = await self.client.recv_push(timeout)
            if match(frame):
                return frame
            self.kept.append(frame)

    async def chat(self, msg_id: str, to: int, body: Any) -> dict[str, Any] | None:
        """Send a private message the way the master's mode wants; the final op 5 answer (none: None)."""
        raw = json.dumps({"id": msg_id, "to": to, "op": 1000, "body": body}).encode()
        seq = await self.client.send(Op.SEND_MSG, raw)
        if self.mode == "none":
            await self.next(lambda f: f.op == Op.SEND_MSG and f.seq == seq)  # goim's echo
            return None
        answer = json.loads((await self.next(lambda f: f.op == Op.SEND_MSG_REPLY and f.seq == seq)).body)
        if self.mode == "rigor":
            assert answer["state"] == "received", answer
            await self.client.send(22, json.dumps({"id": msg_id}).encode())
            answer = json.loads((await self.next(lambda f: f.op == Op.SEND_MSG_REPLY and f.seq == seq)).body)
        return dict(answer)

    async def message(self) -> tuple[int, dict[str, Any]]:
        """The next private message (its stream seq and envelope), acked."""
        frame = await self.next(lambda f: f.op == 1000)
        await self.client.send(18, seq=frame.seq)
        return frame.seq, json.loads(frame.body)

    async def close(self) -> None:
        await self.client.close()


async def gz_chat(client: GzClient, mode: str, msg_id: str, to: int | str, content: str) -> None:
    """A go-zero client's conversation.chat, through the mode's acks (rigor: seen re-sent, then confirmed)."""
    data = {"recvId": str(to), "chatType": 2, "msg": {"mType": 0, "content": content}}
    await client.send(frameType=0, id=msg_id, method="conversation.chat", data=data)
    if mode == "none":
        return
    ack = await client.next(lambda f: f["frameType"] == 2 and f["id"] == msg_id)
    assert ack["ackSeq"] == 1, ack  # only: the client's 0 + 1; rigor: 1 for a client's 0
    if mode == "rigor":
        again = await client.next(lambda f: f["frameType"] == 2 and f["id"] == msg_id)  # re-sent
        assert again["ackSeq"] == 1
        await client.send(frameType=2, id=msg_id, ackSeq=2)  # confirmed: now it is processed


MODES = ["none", "only", "rigor"]


@pytest.mark.parametrize("mode", MODES)
def test_a_go_zero_client_and_a_goim_ack_client_chat_both_ways(masters: Any, mode: str) -> None:
    srv = masters(mode)
    base = {"none": 1100, "only": 1200, "rigor": 1300}[mode]
    alice_id, bob_id = base + 1, base + 2  # alice: go-zero web client; bob: goim ack client

    async def main() -> None:
        alice = await gz_user(srv, alice_id)
        bob = await GoimUser.connect(srv, bob_id, f"bob-{base}", mode)
        await gz_chat(alice, mode, "a1", bob_id, "hi bob")
        _, env = await bob.message()
        assert (env["id"], env["from"], env["to"]) == ("a1", alice_id, bob_id)
        assert env["body"]["msg"] == {"mType": 0, "content": "hi bob"}
        assert (
            env["body"]["sendId"] == str(alice_id) and env["body"]["conversationId"] == f"{alice_id}_{bob_id}"
        )
        own = await alice.push()  # the sender's own copy, in its stream
        assert (own["id"], own["formId"], own["ackSeq"]) == ("a1", str(alice_id), 1)

        answer = await bob.chat("b1", alice_id, "hi alice")
        if answer is not None:
            assert (answer["code"], answer["state"]) == (0, "done")
        got = await alice.push()
        assert (got["id"], got["formId"], got["ackSeq"], got["op"]) == ("b1", str(bob_id), 2, 1000)
        assert got["data"]["msg"] == {"mType": 0, "content": "hi alice"}
        assert (got["data"]["sendId"], got["data"]["recvId"]) == (str(bob_id), str(alice_id))
        await alice.ack_pushes(2)

        cluster = Cluster(srv)

        async def acked() -> bool:
            cursors = await cluster.get(f"/mpim/cursors?mid={alice_id}")
            return bool(cursors.get(f"gozero-{alice_id}") == 2)

        await until(acked, what="the go-zero device's cursor at 2")
        await alice.close()
        await bob.close()

    run(main())


def test_rigor_acks_expire_unconfirmed_and_are_never_processed(masters: Any) -> None:
    srv = masters("rigor")

    async def main() -> None:
        alice = await gz_user(srv, 1401)
        bob = await GoimUser.connect(srv, 1402, "bob-1400", "rigor")
        await alice.send(frameType=0, id="lost", method="conversation.chat", data={"recvId": 1402, "msg": {}})
        error = await alice.next(lambda f: f["frameType"] == 9, timeout=10)
        assert (error["id"], error["code"], error["data"]) == ("lost", -408, "not confirmed in time")
        with pytest.raises(TimeoutError):
            await bob.next(lambda f: f.op == 1000, timeout=0.5)
        # a no-ack data frame (frameType 3) needs no confirmation, whatever the mode
        await alice.send(frameType=3, id="n1", method="conversation.chat", data={"recvId": 1402, "msg": {}})
        _, env = await bob.message()
        assert env["id"] == "n1"
        await alice.close()
        await bob.close()

    run(main())


def test_a_retried_id_is_delivered_once(masters: Any) -> None:
    srv = masters("only")

    async def main() -> None:
        alice = await gz_user(srv, 1501)
        bob = await GoimUser.connect(srv, 1502, "bob-1500", "only")
        for _ in range(2):
            await gz_chat(alice, "only", "same", 1502, "once")
        _, env = await bob.message()
        assert env["id"] == "same"
        with pytest.raises(TimeoutError):
            await bob.next(lambda f: f.op == 1000, timeout=0.5)
        await alice.close()
        await bob.close()

    run(main())


def test_offline_messages_come_on_connect_until_acked(masters: Any) -> None:
    srv = masters("only")
    alice_id, bob_id = 1601, 1602

    async def main() -> None:
        bob = await GoimUser.connect(srv, bob_id, "bob-1600", "only")
        for i in range(3):  # alice has never connected: her inbox keeps them
            assert (await bob.chat(f"m{i}", alice_id, f"msg {i}") or {})["code"] == 0
        alice = await gz_user(srv, alice_id)
        got = [await alice.push() for _ in range(3)]
        assert [(f["id"], f["ackSeq"]) for f in got] == [("m0", 1), ("m1", 2), ("m2", 3)]
        await alice.ack_pushes(2)  # the third is not acked: it comes again
        cluster = Cluster(srv)

        async def cursor() -> int:
            return int((await cluster.get(f"/mpim/cursors?mid={alice_id}")).get(f"gozero-{alice_id}", 0))

        await until(lambda: _equals(cursor(), 2), what="cursor 2")
        await alice.close()
        await until(lambda: _gone(cluster, f"gozero-{alice_id}"), what="alice's session to leave")
        alice = await gz_user(srv, alice_id)
        again = await alice.push()
        assert (again["id"], again["ackSeq"]) == ("m2", 3)
        await alice.ack_pushes(3)
        await until(lambda: _equals(cursor(), 3), what="cursor 3")
        await alice.close()
        await bob.close()

    run(main())


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def _gone(cluster: Cluster, key: str) -> bool:
    return not await cluster.get(f"/mpim/session?key={key}")


def test_pushes_of_every_kind(masters: Any) -> None:
    srv = masters("none")

    async def main() -> None:
        alice = await gz_user(srv, 1701, room_id="live://1700")
        cluster = Cluster(srv)
        await cluster.post("/goim/push/mids?operation=1000&mids=1701", b'{"kind":"mid"}')
        by_mid = await alice.push()
        assert by_mid["data"] == {"kind": "mid"} and by_mid["ackSeq"] > 0 and by_mid["formId"] == "root"
        await cluster.post("/goim/push/keys?operation=1001&keys=gozero-1701", b"by key")
        by_key = await alice.push()
        assert (by_key["data"], by_key["op"], by_key["ackSeq"]) == ("by key", 1001, 0)
        await cluster.post("/goim/push/room?operation=1002&type=live&room=1700", b"[1,2]")
        assert (await alice.push())["data"] == [1, 2]
        await cluster.post("/goim/push/all?operation=1003", b"everyone")
        assert (await alice.push())["data"] == "everyone"
        await alice.ack_pushes(by_mid["ackSeq"])
        await alice.close()

    run(main())


def test_ping_unknown_method_auth_refused_and_user_online(masters: Any) -> None:
    srv = masters("none")

    async def main() -> None:
        with pytest.raises(InvalidStatus) as info:
            await GzClient.connect(url(srv), "not a token")
        assert info.value.response.status_code == 401
        alice = await gz_user(srv, 1801)
        await alice.send(frameType=1)
        assert (await alice.recv())["frameType"] == 1
        await alice.send(frameType=0, id="x1", method="group.list")
        unknown = await alice.recv()
        assert (unknown["frameType"], unknown["data"]) == (0, "unknown method: group.list")
        bob = await GoimUser.connect(srv, 1802, "bob-1800", "none")  # online over goim, any worker
        await alice.send(frameType=0, id="o1", method="user.online", data=["1802", 1803, 1801])
        online = await alice.next(lambda f: f["id"] == "o1")
        assert (online["method"], online["formId"], online["data"]) == (
            "user.online",
            "1801",
            ["1802", "1801"],
        )
        await alice.send(frameType=0, id="o2", method="user.online")  # nobody named: the caller
        assert (await alice.next(lambda f: f["id"] == "o2"))["data"] == ["1801"]
        await alice.close()
        await bob.close()

    run(main())


def test_one_connection_per_user_on_the_endpoint_and_goim_devices_stay(masters: Any) -> None:
    srv = masters("none")

    async def main() -> None:
        phone = await GoimUser.connect(srv, 1901, "phone-1901", "none")
        first = await gz_user(srv, 1901)
        for _ in range(3):  # whichever worker each lands on, the newest one is the one left
            second = await GzClient.connect(url(srv), {"mid": 1901})
            assert await first.closed() == []
            await second.send(frameType=1)
            assert (await second.recv())["frameType"] == 1
            first = second
        sessions = await Cluster(srv).get("/mpim/session?mid=1901")
        assert sorted(s["key"] for s in sessions) == ["gozero-1901", "phone-1901"]
        await Cluster(srv).post("/goim/push/mids?operation=1000&mids=1901", b"both")
        assert (await first.push())["data"] == "both"
        assert (await phone.next(lambda f: f.op == 1000)).body == b"both"
        await first.close()
        await phone.close()

    run(main())


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("{not json", "the frame is not JSON"),
        ('{"frameType": "ping"}', "frameType must be an integer"),
        ('{"frameType": 0, "id": ["x"], "method": "conversation.chat"}', "id must be a string"),
    ],
)
def test_bad_json_and_wrong_types(masters: Any, message: str, why: str) -> None:
    srv = masters("none")
    mid = 2000 + len(message)

    async def main() -> None:
        client = await gz_user(srv, mid)
        await client.send_raw(message)
        got = await client.closed()
        assert [f["frameType"] for f in got] == [9] and why in got[0]["data"]
        again = await gz_user(srv, mid)  # the server goes on
        await again.send(frameType=0, id="c", method="conversation.chat", data="not an object")
        error = await again.recv()
        assert (error["frameType"], error["code"]) == (9, -400)  # a bad message: the connection stays
        await again.send(frameType=1)
        assert (await again.recv())["frameType"] == 1
        await again.close()

    run(main())
    log = srv.wait_log(f"go-zero frame: {why}")
    assert log.count(f"go-zero frame: {why}") == 1 and "Traceback" not in log


def test_the_jwt_in_the_subprotocol_and_urlencoded_json(tmp_path: Any) -> None:
    secret = "s" * 40
    srv = start_master(tmp_path, 1, gozero={"path": "/ws"}, auth={"mode": "jwt", "secret": secret})

    async def main() -> None:
        import time

        import jwt

        await Cluster(srv).wait_workers(1)
        token = jwt.encode({"sub": "2101", "exp": time.time() + 60}, secret, algorithm="HS256")
        client = await GzClient.connect(url(srv), token, via="subprotocol")
        assert client.conn.subprotocol == token
        await Cluster(srv).worker_of("gozero-2101")
        await client.close()
        with pytest.raises(InvalidStatus) as info:  # goim's JSON token is no JWT
            await GzClient.connect(url(srv), {"mid": 2102})
        assert info.value.response.status_code == 401

    try:
        run(main())
    finally:
        srv.stop()


@pytest.mark.parametrize("mode", MODES)
def test_the_example_client_runs(masters: Any, mode: str) -> None:
    import subprocess
    import sys

    srv = masters(mode)
    mids = {"none": "2201,2202", "only": "2211,2212", "rigor": "2221,2222"}[mode]
    done = subprocess.run(
        [sys.executable, "examples/gozero_client.py", url(srv), "--mids", mids, "--ack", mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bob got: are you there?" in done.stdout


def test_two_hosts_presence_chat_and_one_connection_per_user(tmp_path: Any, redis_private: Any) -> None:
    """On two hosts (one Redis): user.online sees users on the other host, chat crosses it, and a
    go-zero connection on one host closes the same user's on the other."""
    hosts = []
    for name in ("gz-a", "gz-b"):
        (tmp_path / name).mkdir()
        hosts.append(
            start_master(
                tmp_path / name,
                1,
                server={"name": name, "workers": 1, "graceful_timeout": 5.0},
                cluster={"redis": redis_private.url, "timeout": 0.5},
                gozero={"path": "/ws"},
                upstream={"ack": "only"},
            )
        )
    a, b = hosts

    async def main() -> None:
        for srv in hosts:
            await Cluster(srv).wait_workers(1)
        alice = await gz_user(a, 2301)
        bob = await GoimUser.connect(b, 2302, "bob-2302", "only")

        async def sees_bob() -> bool:
            await alice.send(frameType=0, id="o", method="user.online", data=[2302, 2303, 2301])
            answer = await alice.next(lambda f: f["id"] == "o" and f["frameType"] == 0)
            return bool(answer["data"] == ["2302", "2301"])

        await until(sees_bob, what="alice seeing bob on the other host")
        await gz_chat(alice, "only", "x1", 2302, "across hosts")
        _, env = await bob.message()
        assert (env["id"], env["from"]) == ("x1", 2301)
        again = await GzClient.connect(url(b), {"mid": 2301})  # alice again, on host B
        left = await alice.closed()  # (what was queued before: her ack frame and her own copy)
        assert [f["frameType"] for f in left if f["frameType"] not in (0, 2)] == []
        await again.send(frameType=1)
        await again.next(lambda f: f["frameType"] == 1)  # (after her unacked own copy, replayed)
        await again.close()
        await bob.close()

    try:
        run(main())
    finally:
        for srv in hosts:
            srv.stop()
