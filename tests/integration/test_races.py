"""The moment after the Auth reply: a push accepted then must reach the client (real master, 2 workers).

Each try connects a fresh client, authenticates, and pushes the instant the Auth
reply is read: by key, by user, and into a room that is new on the client's
worker, over HTTP and over the ZeroMQ ingress. Before the session was registered
with the router ahead of the reply, most of these were answered ``connections: 0``
(or ok for a room whose subscription was not live) and lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import msgpack
import pytest
import zmq
import zmq.asyncio

from mpim.client import Client, connect_tcp, connect_ws
from tests.integration.chaos import Http
from tests.integration.cluster import Cluster, start_master
from tests.support import ServerProcess, run

TRIES = 200


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_master(tmp_path_factory.mktemp("races"), 2)
    try:
        run(Cluster(server).wait_workers(2))
        yield server
    finally:
        server.stop()


class Zmq:
    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.connect(endpoint)

    async def push(self, req: dict[str, object]) -> dict[str, object]:
        await self.sock.send(msgpack.packb(req))
        return dict(msgpack.unpackb(await asyncio.wait_for(self.sock.recv(), 5)))

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


async def one_try(srv: ServerProcess, i: int, target: str, via: str, http: Http, zq: Zmq) -> None:
    key, mid, room = f"race-{via}-{target}-{i}", 100_000 + i, f"race://{via}-{i}"
    client: Client = await (connect_ws(srv.ws_url) if i % 2 else connect_tcp("127.0.0.1", srv.tcp_port))
    try:
        await client.auth(
            {"mid": mid, "key": key, "room_id": room if target == "room" else "", "accepts": [1000]}
        )
        body = f"{target}-{i}".encode()
        if via == "http":
            query = {"key": f"keys={key}", "mid": f"mids={mid}", "room": f"type=race&room={via}-{i}"}[target]
            answer = await http.post(
                f"/goim/push/{target}s?operation=1000&{query}".replace("rooms?", "room?"), body
            )
        else:
            req: dict[str, object] = {"op": 1000, "body": body}
            req.update(
                {"key": {"kind": "keys", "keys": [key]}, "mid": {"kind": "mids", "mids": [mid]}}.get(
                    target, {"kind": "room", "room": room}
                )
            )
            answer = await zq.push(req)
        assert answer["code"] == 0, answer
        if target != "room":
            assert answer["data"]["connections"] == 1, answer
        frame = await client.recv_push(5)
        assert frame.body == body
    finally:
        await client.close()


@pytest.mark.parametrize("via", ["http", "zmq"])
@pytest.mark.parametrize("target", ["key", "mid", "room"])
def test_a_push_right_after_the_auth_reply_is_delivered(srv: ServerProcess, target: str, via: str) -> None:
    async def main() -> None:
        http, zq = Http(srv.http_port), Zmq(srv.ingress)
        try:
            for i in range(TRIES):
                await one_try(srv, i, target, via, http, zq)
        finally:
            http.reset()
            zq.close()

    run(main())


def test_a_key_that_cannot_be_encoded_is_refused_and_blinds_nothing(srv: ServerProcess) -> None:
    """A json token with a lone surrogate used to pass auth and break every report of its worker."""

    async def main() -> None:
        c = Cluster(srv)
        try:
            spread = await c.spread("blind", None, "", 2, 2)
            for i in range(4):  # land on both workers
                bad = await (connect_ws(srv.ws_url) if i % 2 else connect_tcp("127.0.0.1", srv.tcp_port))
                await bad.send(7, b'{"mid": 77, "key": "\\ud800", "room_id": "live://\\udfff"}')
                assert await bad.expect_closed() == []
            assert len(await c.workers()) == 2
            for client, key, _ in spread:
                data = await c.post(f"/goim/push/keys?operation=1000&keys={key}", b"still here")
                assert data == {"connections": 1}
                assert (await client.recv_push(5)).body == b"still here"
        finally:
            await c.close()

    run(main())
