"""A go-zero chat client on mpim: the go-zero chat server's JSON frames over WebSocket.

Turn the endpoint on (config.toml: ``[gozero] path = "/ws"``), run ``mpim master -c
config.toml``, then::

    python examples/gozero_client.py ws://127.0.0.1:3102/ws [--mids 1001,1002] [--secret S] [--ack only]

Alice and Bob connect, Alice asks who is online and writes to Bob; Bob leaves,
Alice writes again, and Bob gets that message when he comes back. ``--secret``:
the server's ``[auth] secret`` in jwt mode (the token is then an HS256 JWT; else
goim's JSON token, json mode). ``--ack``: the server's ``[upstream] ack``.

What a client does here, frame by frame (see the README's "go-zero clients"):

- every 20 s a ping ``{"frameType": 1}``;
- a message: ``{"frameType": 0, "id", "method": "conversation.chat", "data":
  {"recvId", "chatType": 2, "msg": {"mType": 0, "content"}}}``; with ack "only"
  the server answers ``{"frameType": 2, "id", "ackSeq": 1}`` once it stored it;
  with "rigor" that ack comes first and the client confirms it with ``ackSeq`` + 1
  (answering every ack that way is harmless in "only");
- every push (``method`` "push") carries ``ackSeq``, its place in the user's
  stream: the client acks what it handled with ``{"frameType": 2, "method":
  "push", "ackSeq": <highest>}``, or gets it again on its next connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]


class ChatError(Exception):
    """The server answered a message with an error frame (frameType 9)."""


class GoZeroClient:
    def __init__(self, url: str, token: str, on_push: Callable[[Frame], None], ack: str = "only") -> None:
        self.url = f"{url}?token={urllib.parse.quote(token)}"
        self.on_push = on_push
        self.ack = ack
        self.conn: ClientConnection | None = None
        self.acked = 0  # highest push seq acked
        self.answers: dict[str, asyncio.Queue[Frame]] = {}  # our message id -> the frames naming it
        self.ids = (f"{time.time_ns():x}-{n}" for n in itertools.count())
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> GoZeroClient:
        self.conn = await connect(self.url)
        self.tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._ping())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        if self.conn is not None:
            await self.conn.close()

    async def send(self, **frame: Any) -> None:
        assert self.conn is not None
        await self.conn.send(json.dumps(frame))

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(20)
            await self.send(frameType=1)

    async def _read(self) -> None:
        assert self.conn is not None
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.conn:
                frame: Frame = json.loads(raw)
                kind, msg_id = frame["frameType"], frame["id"]
                if kind == 0 and frame["method"] == "push":
                    self.on_push(frame)
                    if frame["ackSeq"] > self.acked:  # handled: ack it (cumulative)
                        self.acked = frame["ackSeq"]
                        await self.send(frameType=2, method="push", ackSeq=self.acked)
                elif msg_id in self.answers:  # about a message of ours: an ack, an answer, an error
                    if kind == 2:  # (rigor: confirm it; "only": ignored by the server)
                        await self.send(frameType=2, id=msg_id, ackSeq=frame["ackSeq"] + 1)
                    self.answers[msg_id].put_nowait(frame)
                elif kind == 9:
                    print("error from the server:", frame["data"])

    async def _call(self, method: str, data: Any, until: Callable[[Frame], bool] | None) -> Frame | None:
        """Send a data frame; with ``until``, wait for the first frame naming it that matches."""
        msg_id = next(self.ids)
        queue = self.answers[msg_id] = asyncio.Queue()
        try:
            await self.send(frameType=0, id=msg_id, method=method, data=data)
            while until is not None:
                frame = await asyncio.wait_for(queue.get(), 10)
                if frame["frameType"] == 9:
                    raise ChatError(f"{frame.get('code')}: {frame['data']}")
                if until(frame):
                    return frame
            return None
        finally:
            del self.answers[msg_id]

    async def chat(self, to: int, content: str) -> None:
        """Send a text message; with ack "only" / "rigor", returns once the server took it."""
        data = {"recvId": str(to), "chatType": 2, "msg": {"mType": 0, "content": content}}
        await self._call("conversation.chat", data, None if self.ack == "none" else lambda f: True)

    async def online(self, *uids: int) -> list[str]:
        """Which of these users are online now (the server names no one else)."""
        frame = await self._call("user.online", [str(u) for u in uids], lambda f: f["frameType"] == 0)
        assert frame is not None
        return list(frame["data"])


def token_for(mid: int, secret: str) -> str:
    if not secret:
        return json.dumps({"mid": mid})  # json mode: trusted, for trying things out
    import jwt

    return jwt.encode({"sub": str(mid), "exp": int(time.time()) + 3600}, secret, algorithm="HS256")


async def main(args: argparse.Namespace) -> None:
    alice_id, bob_id = (int(m) for m in args.mids.split(","))
    got: dict[str, list[str]] = {"alice": [], "bob": []}

    def printer(name: str, mid: int) -> Callable[[Frame], None]:
        def on_push(frame: Frame) -> None:
            if frame["formId"] == str(mid):
                return  # our own message, back in our stream (our other devices get it too)
            text = frame["data"]["msg"]["content"] if frame["formId"] != "root" else frame["data"]
            got[name].append(text)
            print(f"{name} got: {text} (from {frame['formId']}, seq {frame['ackSeq']})")

        return on_push

    def user(name: str, mid: int) -> GoZeroClient:
        return GoZeroClient(args.url, token_for(mid, args.secret), printer(name, mid), args.ack)

    async with user("alice", alice_id) as alice:
        async with user("bob", bob_id):
            await asyncio.sleep(0.2)
            print("online:", await alice.online(alice_id, bob_id))
            await alice.chat(bob_id, "hi bob")
            while "hi bob" not in got["bob"]:
                await asyncio.sleep(0.05)
        print("bob left")
        await asyncio.sleep(0.2)
        await alice.chat(bob_id, "are you there?")
        async with user("bob", bob_id):  # back: the message waited in his inbox
            while "are you there?" not in got["bob"]:
                await asyncio.sleep(0.05)
    print("done")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="two go-zero clients chatting over mpim")
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:3102/ws")
    parser.add_argument("--mids", default="1001,1002", help="alice's and bob's user ids")
    parser.add_argument("--secret", default="", help="[auth] secret (jwt mode); empty = json mode")
    parser.add_argument("--ack", choices=["none", "only", "rigor"], default="only", help="[upstream] ack")
    asyncio.run(main(parser.parse_args()))
