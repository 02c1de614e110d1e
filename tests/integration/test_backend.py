"""Client messages to a business backend over HTTP ([upstream] url): answers come back to the client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from mpim.client import connect_tcp
from mpim.proto import Op
from tests.gzclient import GzClient
from tests.integration.cluster import Cluster, start_master
from tests.support import ServerProcess, free_port, run


class Backend:
    """A business backend in its own thread's loop: it answers "ok:<body>", or fails on request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append({**request.query, "body": body.decode()})
        if b"fail" in body:
            return web.Response(status=500, text="boom")
        if b"slow" in body:
            await asyncio.sleep(3)
        return web.Response(body=b"ok:" + body)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Backend]]:
    import threading

    backend = Backend()
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/messages", backend.handle)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", backend.port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    tmp: Path = tmp_path_factory.mktemp("backend")
    url = f"http://127.0.0.1:{backend.port}/messages"
    server = start_master(
        tmp, 1, upstream={"url": url, "timeout": 1.0, "ack": "only"}, gozero={"path": "/ws", "op": 4001}
    )
    try:
        run(Cluster(server).wait_workers(1))
        yield server, backend
    finally:
        server.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_a_goim_clients_message_gets_the_backends_answer_in_its_echo(
    setup: tuple[ServerProcess, Backend],
) -> None:
    srv, backend = setup

    async def main() -> None:
        client = await connect_tcp("127.0.0.1", srv.tcp_port)
        await client.auth({"mid": 70, "key": "goim-70"})
        seq = await client.send(Op.SEND_MSG, b"hello backend")
        reply = await client.recv()
        assert (reply.op, reply.seq, reply.body) == (Op.SEND_MSG, seq, b"ok:hello backend")
        assert {"mid": "70", "key": "goim-70", "op": "4", "body": "hello backend"} in backend.seen
        await client.send(Op.SEND_MSG, b"fail")  # a backend error: goim's empty echo, and a log line
        reply = await client.recv()
        assert (reply.op, reply.body) == (Op.SEND_MSG, b"")
        await client.close()

    run(main())
    srv.wait_log("answered 500")


def test_an_ack_clients_message_gets_the_answer_or_the_error(setup: tuple[ServerProcess, Backend]) -> None:
    srv, _ = setup

    async def main() -> None:
        client = await connect_tcp("127.0.0.1", srv.tcp_port)
        await client.auth({"mid": 71, "key": "ack-71", "caps": ["ack"]})
        answers = {}
        for msg_id, body in (("m1", "question"), ("m2", "fail"), ("m3", "slow")):
            await client.send(Op.SEND_MSG, json.dumps({"id": msg_id, "op": 4000, "body": body}).encode())
            reply = await client.recv(timeout=5)
            assert reply.op == Op.SEND_MSG_REPLY
            answer = json.loads(reply.body)
            answers[answer["id"]] = answer
        # (the body the backend gets is the JSON of the client's "body")
        assert answers["m1"]["code"] == 0 and answers["m1"]["body"] == 'ok:"question"'
        assert answers["m2"]["code"] == -502 and "HTTP 500" in answers["m2"]["message"]
        assert answers["m3"]["code"] == -504  # past [upstream] timeout = 1 s
        await client.send(Op.SEND_MSG, json.dumps({"id": "m4", "op": 4000, "body": None}).encode())
        assert json.loads((await client.recv()).body)["code"] == 0
        await client.close()

    run(main())


def test_a_slow_or_failing_backend_is_an_error_for_the_client(setup: tuple[ServerProcess, Backend]) -> None:
    srv, _ = setup

    async def main() -> None:
        client = await connect_tcp("127.0.0.1", srv.tcp_port)
        await client.auth({"mid": 72, "key": "goim-72"})
        await client.send(Op.SEND_MSG, b"slow")  # past [upstream] timeout = 1 s
        reply = await client.recv(timeout=5)
        assert (reply.op, reply.body) == (Op.SEND_MSG, b"")
        await client.close()

    run(main())
    srv.wait_log("did not answer")


def test_a_go_zero_clients_methods_go_to_the_backend_and_its_answer_comes_back(
    setup: tuple[ServerProcess, Backend],
) -> None:
    srv, backend = setup

    async def main() -> None:
        client = await GzClient.connect(f"ws://127.0.0.1:{srv.ws_port}/ws", {"mid": 73})
        await client.send(frameType=0, id="f1", method="friend.list", data={"page": 1})
        ack = await client.recv()  # [upstream] ack = "only": acked once the backend answered
        assert (ack["frameType"], ack["id"], ack["ackSeq"]) == (2, "f1", 1)
        answer = await client.recv()
        assert (answer["frameType"], answer["id"], answer["method"], answer["formId"]) == (
            0, "f1", "friend.list", "root",
        )  # fmt: skip
        sent = {"id": "f1", "method": "friend.list", "data": {"page": 1}}
        assert answer["data"] == "ok:" + json.dumps(sent, separators=(",", ":"))
        assert {"mid": "73", "key": "gozero-73", "op": "4001", "body": answer["data"][3:]} in backend.seen
        await client.send(frameType=3, id="f2", method="friend.add", data="fail")  # no ack asked
        error = await client.recv()
        assert (error["frameType"], error["id"], error["code"]) == (9, "f2", -502)
        await client.close()

    run(main())
