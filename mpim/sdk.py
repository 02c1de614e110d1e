"""An asyncio client library for mpim's reliable delivery (and plain goim pushes).

    import asyncio
    from mpim.sdk import Session

    async def on_message(msg):          # called once per message, in order
        print(msg.seq, msg.op, msg.body)

    async def main():
        session = Session("127.0.0.1:3101", {"mid": 123, "key": "phone", "accepts": [1000]}, on_message)
        task = asyncio.create_task(session.run())
        await session.ready.wait()          # resumed: the position is the server's
        ack = await session.send(to=456, op=1000, body={"text": "hi"})   # private chat
        print("stored as", ack.seq)
        await session.close()

A :class:`Session` connects over TCP (``host:port``) or WebSocket (``ws://host:port/sub``),
authenticates with the ``ack`` cap (and ``seq`` if asked), heart-beats, and reconnects
with exponential backoff and jitter. After every Auth it resumes from the position of
the last message it handled — ``(epoch, seq)``, or from its device's cursor on the first
connection — so messages pushed while it was away arrive first, in order. Each message
is handed to the handler once (duplicates from a replay are dropped by seq) and acked
(op 18) after the handler returns. ``send`` posts a private message (or, without
``to``, a message for the backend) with an id, retries it with the same id after a
reconnect, and returns the server's acknowledgment; in ``rigor`` mode it confirms the
server's receipt (op 22) first.

Resume outcomes are reported through ``on_resume(epoch, seq, recovered)``: when
``recovered`` is false the server could not replay everything (its store lost data,
or the client was away too long) and the application should resync from its backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mpim.client import Client, ConnectionClosedError, connect_tcp, connect_ws
from mpim.proto import Frame, Op

log = logging.getLogger("mpim.sdk")

# The reliable-delivery ops under the names the SDK documents (they are :class:`mpim.proto.Op`'s).
OP_ACK, OP_RESUME, OP_RESUMED, OP_CONFIRM = Op.ACK, Op.RESUME, Op.RESUMED, Op.CONFIRM
TRANSIENT = frozenset((-503, -504, -408))  # refusals a resend of the same id may get past
STABLE = 10.0  # seconds a connection must have served before the reconnect backoff starts over


@dataclass(frozen=True)
class Message:
    seq: int  # the user's stream seq (0 for room / broadcast / by-key pushes: not stored)
    op: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Ack:
    """The server's answer to :meth:`Session.send`."""

    id: str
    seq: int  # the message's seq in the sender's own stream (private chat)
    body: bytes = b""  # the backend's answer (messages without ``to``)


class SendError(Exception):
    def __init__(self, msg_id: str, code: int, message: str) -> None:
        super().__init__(f"{msg_id}: {code} {message}")
        self.id = msg_id
        self.code = code
        self.message = message


Handler = Callable[[Message], Awaitable[None] | None]


class Session:
    def __init__(
        self,
        address: str,
        token: str | bytes | dict[str, Any],
        handler: Handler,
        *,
        caps: tuple[str, ...] = ("ack",),
        heartbeat: float = 30.0,
        backoff: tuple[float, float] = (0.2, 30.0),
        on_resume: Callable[[str, int, bool], None] | None = None,
        auth_timeout: float = 10.0,
        resend_after: float = 10.0,
        ack_every: int = 64,
        ack_interval: float = 0.02,
    ) -> None:
        self.address = address
        if isinstance(token, dict):
            token = json.dumps({**token, "caps": list(caps)})
        self.token = token.encode() if isinstance(token, str) else token
        self.handler = handler
        self.heartbeat = heartbeat
        self.backoff = backoff
        self.on_resume = on_resume
        self.auth_timeout = auth_timeout
        self.resend_after = resend_after  # a message with no answer this long is sent again (same id)
        self.ack_every = ack_every  # in a long run of messages (a replay), ack at least this often
        self.ack_interval = ack_interval  # ... but never more often than this: acks are cumulative
        self.epoch = ""
        self.seq = 0  # the last message handled (and acked)
        self.resumed = False
        self.connected = asyncio.Event()  # set once the resume (op 20) is sent
        self.ready = asyncio.Event()  # set once its answer (op 21) is handled: the position is the server's
        self.connections = 0
        self.received = 0
        self.duplicates = 0
        self._unacked = 0  # messages handled since the last ack
        self._acked_at = -1e9  # loop time of the last ack sent
        self._ack_later: asyncio.Task[None] | None = None  # an ack held back by ack_interval
        self._client: Client | None = None
        self._closing = False
        self._ids = itertools.count(1)
        self._sending: dict[str, tuple[dict[str, Any], asyncio.Future[Ack]]] = {}
        self._frames: dict[int, str] = {}  # header seq of a sent message -> its id (mode none's echo)

    # -- the connection loop ----------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, and reconnect, until :meth:`close`."""
        delay = self.backoff[0]
        loop = asyncio.get_running_loop()
        while not self._closing:
            started = loop.time()
            try:
                await self._session()
            except (
                OSError,
                ConnectionClosedError,
                TimeoutError,
                asyncio.IncompleteReadError,
                ValueError,
            ) as exc:
                log.info("connection to %s lost: %s", self.address, exc or type(exc).__name__)
            finally:
                if self.ready.is_set() and loop.time() - started >= STABLE:
                    delay = self.backoff[0]  # (it served a while: start the backoff over)
                if self._ack_later is not None:
                    self._ack_later.cancel()
                self.connected.clear()
                self.ready.clear()
                self.resumed = False
                client, self._client = self._client, None
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.close()
            if self._closing:
                break
            await asyncio.sleep(delay * random.uniform(0.7, 1.3))
            delay = min(self.backoff[1], delay * 2)

    async def _open(self) -> Client:
        if self.address.startswith(("ws://", "wss://")):
            return await connect_ws(self.address)
        host, _, port = self.address.rpartition(":")
        return await connect_tcp(host or "127.0.0.1", int(port))

    async def _session(self) -> None:
        client = self._client = await self._open()
        await client.auth(self.token, timeout=self.auth_timeout)
        position = {"epoch": self.epoch, "seq": self.seq} if self.epoch else {}
        await client.send(Op.RESUME, json.dumps(position).encode())
        self.connections += 1
        self.connected.set()
        beat = asyncio.get_running_loop().create_task(self._beat(client))
        try:
            for msg_id in list(self._sending):  # retried with the same id: the server de-duplicates
                await self._post(client, msg_id)
            while True:
                await self._handle(client, await client.recv_push(timeout=3 * self.heartbeat))
                while client.pending:
                    await self._handle(client, await client.recv_push())
                    if self._unacked >= self.ack_every:  # (a long replay: its window moves on)
                        await self._ack(client)
                await self._ack(client)
        finally:
            beat.cancel()

    async def _beat(self, client: Client) -> None:
        with contextlib.suppress(ConnectionClosedError, OSError):
            while True:
                await asyncio.sleep(self.heartbeat)
                await client.send(Op.HEARTBEAT)

    # -- frames ---------------------------------------------------------------------------------
    async def _handle(self, client: Client, frame: Frame) -> None:
        op = frame.op
        if op in (Op.HEARTBEAT_REPLY,):
            return
        if op == Op.DISCONNECT_REPLY:
            raise ConnectionClosedError("the server asked us to reconnect (op 6)")
        if op == Op.RESUMED:
            self._resumed(frame)
        elif op == Op.SEND_MSG_REPLY:
            await self._reply(client, frame)
        elif op == Op.SEND_MSG and not frame.body and frame.seq in self._frames:
            self._echoed(self._frames.pop(frame.seq))
        elif frame.seq == 0:  # not stored: room, broadcast, by key
            self.received += 1
            await self._call(Message(0, op, frame.body))
        elif frame.seq <= self.seq:  # (also before the first op 21: a replay cut short comes again)
            self.duplicates += 1
        else:
            self.received += 1
            await self._call(Message(frame.seq, op, frame.body))
            self.seq = frame.seq
            self._unacked += 1

    def _resumed(self, frame: Frame) -> None:
        info = json.loads(frame.body)
        epoch, top, recovered = str(info["epoch"]), int(info["seq"]), bool(info["recovered"])
        if epoch != self.epoch or not recovered:
            self.seq = max(top, self.seq) if epoch == self.epoch else top
        self.epoch = epoch
        self.resumed = True
        self.ready.set()
        self._unacked += 1  # (ack the position: a skipped gap moves the device cursor past it)
        if self.on_resume is not None:
            self.on_resume(epoch, top, recovered)

    async def _call(self, message: Message) -> None:
        result = self.handler(message)
        if result is not None:
            await result

    async def _ack(self, client: Client, now: bool = False) -> None:
        """Op 18, cumulative: its header seq is the last message handled (outside the seq-cap
        numbering); at most one per ``ack_interval`` (the server limits acks per second), the
        rest coalesced into one sent when the interval is over."""
        if not (self._unacked and self.seq):
            return
        loop = asyncio.get_running_loop()
        wait = self._acked_at + self.ack_interval - loop.time()
        if wait > 0 and not now:
            if self._ack_later is None or self._ack_later.done():
                self._ack_later = loop.create_task(self._ack_after(client, wait))
            return
        self._unacked = 0
        self._acked_at = loop.time()
        await client.send(Op.ACK, b"", seq=self.seq)

    async def _ack_after(self, client: Client, wait: float) -> None:
        """The held-back ack, and the ones asked for while it was on its way (each call of
        :meth:`_ack` meanwhile found this task running and left its ack to it)."""
        await asyncio.sleep(wait)
        with contextlib.suppress(ConnectionClosedError, OSError):
            while self._unacked and self.seq:
                await self._ack(client, now=True)
                if self._unacked:
                    await asyncio.sleep(self.ack_interval)

    # -- messages -------------------------------------------------------------------------------
    async def send(
        self, to: int = 0, op: int = 1000, body: Any = None, id: str | None = None, timeout: float = 60.0
    ) -> Ack:
        """Send a private message to user ``to`` (or, with ``to=0``, a message for the backend).

        Returns the server's acknowledgment; raises :class:`SendError` if it refused. The
        message is sent again under the same id (the server stores it once) after every
        reconnect, when no answer came within ``resend_after`` seconds, and after a
        transient refusal (-503 router unreachable, -504 no answer in time, -408 receipt
        not confirmed in time); past ``timeout`` seconds it raises ``SendError`` -504."""
        msg_id = id or f"m{next(self._ids)}-{random.getrandbits(32):08x}"
        payload: dict[str, Any] = {"id": msg_id, "op": op, "body": body}
        if to:
            payload["to"] = to
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                future: asyncio.Future[Ack] = loop.create_future()
                self._sending[msg_id] = (payload, future)
                client = self._client
                if client is not None and self.connected.is_set():
                    with contextlib.suppress(ConnectionClosedError, OSError):
                        await self._post(client, msg_id)
                left = deadline - loop.time()
                try:
                    return await asyncio.wait_for(
                        asyncio.shield(future), min(self.resend_after, max(0.0, left))
                    )
                except TimeoutError:
                    pass
                except SendError as exc:
                    if exc.code not in TRANSIENT:
                        raise
                    log.info("message %s: %s; sending it again", msg_id, exc.message)
                    await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
                if loop.time() >= deadline:
                    raise SendError(msg_id, -504, f"no answer within {timeout:g}s")
        finally:
            pending = self._sending.pop(msg_id, None)
            if pending is not None and pending[1].done() and not pending[1].cancelled():
                pending[1].exception()  # (an answer that came as this send was cancelled: seen)

    async def _post(self, client: Client, msg_id: str) -> None:
        seq = await client.send(Op.SEND_MSG, json.dumps(self._sending[msg_id][0]).encode())
        self._frames[seq] = msg_id

    def _echoed(self, msg_id: str) -> None:
        """``[upstream] ack = "none"``: goim's echo (same op and seq, no body) is the only answer."""
        pending = self._sending.get(msg_id)
        if pending is not None and not pending[1].done():
            pending[1].set_result(Ack(msg_id, 0))

    async def _reply(self, client: Client, frame: Frame) -> None:
        try:
            answer = json.loads(frame.body)
        except ValueError:
            return
        msg_id = answer.get("id")
        pending = self._sending.get(msg_id) if isinstance(msg_id, str) else None
        if pending is None:
            return
        _, future = pending
        if answer.get("state") == "received":  # rigor: confirm that we saw the receipt
            await client.send(Op.CONFIRM, json.dumps({"id": msg_id}).encode())
            return
        if future.done():
            return
        self._frames = {seq: i for seq, i in self._frames.items() if i != msg_id}
        if answer.get("code", 0):
            future.set_exception(SendError(msg_id, int(answer["code"]), str(answer.get("message", ""))))
        else:
            body = str(answer.get("body", "")).encode()
            future.set_result(Ack(msg_id, int(answer.get("seq", 0)), body))

    async def close(self) -> None:
        self._closing = True
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                await self._ack(client, now=True)
                await client.close()


async def follow(
    address: str, token: str | dict[str, Any], caps: tuple[str, ...], heartbeat: float, count: int = 0
) -> int:
    """`mpim client --caps ack`: print every message with its seq, reconnect and resume until stopped."""
    import sys

    done = asyncio.Event()
    seen = 0

    def show(message: Message) -> None:
        nonlocal seen
        seen += 1
        body = message.body.decode("utf-8", "backslashreplace")
        print(f"push op={message.op} seq={message.seq} body={body}", flush=True)
        if count and seen >= count:
            done.set()

    def resumed(epoch: str, seq: int, recovered: bool) -> None:
        state = "recovered" if recovered else "NOT recovered: resync from your backend"
        print(f"resumed at epoch {epoch} seq {seq} ({state})", flush=True)

    session = Session(address, token, show, caps=caps, heartbeat=heartbeat, on_resume=resumed)
    runner = asyncio.get_running_loop().create_task(session.run())
    try:
        await done.wait()
    finally:
        await session.close()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    print(f"{seen} messages, {session.connections} connections", file=sys.stderr)
    return 0
