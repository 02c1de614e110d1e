"""mpim.sdk.Session against a scripted goim server on a real loopback socket (no mpim server)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from mpim.client import ConnectionClosedError, connect_tcp
from mpim.proto import Decoder, Op, encode
from mpim.sdk import Message, Session
from tests.support import run


def test_a_replay_cut_before_the_first_op_21_is_not_handed_to_the_handler_twice() -> None:
    """Found by ``python -m bench chaos``: a new Session knows no epoch until its first op 21, and
    dropped nothing as a duplicate until then, so a replay cut short and sent again from the
    device's cursor reached the handler twice."""

    async def main() -> None:
        connections = 0
        resumes: list[bytes] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            first = connections == 1
            decoder = Decoder(max_body=1 << 20)
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for frame in decoder.feed(data):
                    if frame.op == Op.AUTH:
                        writer.write(encode(Op.AUTH_REPLY, b"", seq=frame.seq))
                    elif frame.op == 20:  # resume: from the device's cursor (0) both times
                        resumes.append(frame.body)
                        for seq in (1, 2, 3) if first else (1, 2, 3, 4):
                            writer.write(encode(1000, b"m%d" % seq, seq=seq))
                        if first:  # cut before op 21 (a worker killed mid-replay)
                            await writer.drain()
                            writer.close()
                            return
                        top = {"epoch": "e1", "seq": 4, "recovered": True}
                        writer.write(encode(21, json.dumps(top).encode(), seq=frame.seq))
                await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        handled: list[int] = []

        def handler(message: Message) -> None:
            handled.append(message.seq)

        session = Session(f"127.0.0.1:{port}", {"mid": 5, "key": "k"}, handler, backoff=(0.01, 0.02))
        task = asyncio.get_running_loop().create_task(session.run())
        await asyncio.wait_for(session.ready.wait(), 10)
        await session.close()
        await asyncio.wait_for(task, 10)
        server.close()
        assert resumes == [b"{}", b"{}"]  # (no epoch known yet: from the cursor both times)
        assert handled == [1, 2, 3, 4]
        assert (session.epoch, session.seq) == ("e1", 4)

    run(main())


def test_an_op_6_instead_of_the_auth_reply_is_a_reconnect_not_a_crash() -> None:
    """Found by ``python -m bench chaos``: a worker that drains answers an Auth with op 6 (go
    elsewhere); the client library raised AssertionError, which ended Session.run for good."""

    async def main() -> None:
        connections = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            first = connections == 1
            decoder = Decoder(max_body=1 << 20)
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    if frame.op == Op.AUTH and first:  # draining: go elsewhere
                        writer.write(encode(Op.DISCONNECT_REPLY))
                        await writer.drain()
                        writer.close()
                        return
                    if frame.op == Op.AUTH:
                        writer.write(encode(Op.AUTH_REPLY, b"", seq=frame.seq))
                    elif frame.op == 20:
                        top = {"epoch": "e1", "seq": 0, "recovered": True}
                        writer.write(encode(21, json.dumps(top).encode(), seq=frame.seq))
                await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        session = Session(f"127.0.0.1:{port}", {"mid": 5, "key": "k"}, lambda m: None, backoff=(0.01, 0.02))
        task = asyncio.get_running_loop().create_task(session.run())
        await asyncio.wait_for(session.ready.wait(), 10)
        assert connections == 2 and not task.done()
        await session.close()
        await asyncio.wait_for(task, 10)
        server.close()

    run(main())


def test_a_write_after_the_server_closed_is_a_closed_connection_not_a_runtime_error() -> None:
    """Found by a 30-minute chaos soak: ``Session.send`` raised uvloop's RuntimeError ("the
    handler is closed") out of a write racing the server's close, instead of sending the
    message again after the reconnect."""

    async def main() -> None:
        closed = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()
            closed.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = await connect_tcp("127.0.0.1", port)
        await closed.wait()
        with contextlib.suppress(ConnectionClosedError):
            await client.recv_push(timeout=5)  # reads the EOF: the transport is closed now
        for _ in range(3):
            try:
                await client.send(Op.HEARTBEAT)
            except ConnectionClosedError:
                pass
            except OSError:
                pass  # a reset seen by the kernel first is a closed connection as well
        await client.close()
        server.close()

    run(main())


def test_a_send_cancelled_while_its_answer_came_leaves_no_unretrieved_error() -> None:
    """Found in a two-host soak's log ("Future exception was never retrieved", a -504 answer):
    the answer to a message arrived while the sending task, cancelled (its connection ended),
    was still writing it."""

    async def main() -> None:
        import gc

        from mpim.sdk import SendError

        loop = asyncio.get_running_loop()
        errors: list[str] = []
        loop.set_exception_handler(lambda _, ctx: errors.append(str(ctx.get("message"))))
        stuck = asyncio.Event()

        class Writer:
            async def send(self, op: int, body: bytes, seq: int = 0) -> int:
                await stuck.wait()
                return 1

        session = Session("127.0.0.1:9", {"mid": 5, "key": "k"}, lambda m: None)
        session._client = Writer()  # type: ignore[assignment]
        session.connected.set()
        task = loop.create_task(session.send(6, body={"n": 1}, id="x"))
        for _ in range(3):
            await asyncio.sleep(0)
        _, future = session._sending["x"]
        future.set_exception(SendError("x", -504, "no answer from the router"))  # (as the reader does)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        del future, task
        gc.collect()
        await asyncio.sleep(0)
        assert errors == []

    run(main())
