"""A reliable device on the SDK (:class:`mpim.sdk.Session`), recorded from the outside.

Each online spell is one ``Session`` (one *life*: the SDK's memory), started from the
position the last one saved (``session.epoch``, ``session.seq``) or from ``{}`` (the device's
cursor), over TCP or WebSocket; the SDK reconnects and resumes by itself when a fault drops
it. :class:`RecordingSession` only watches: a ``connect`` operation per connection (from the
dial to the Auth reply), the handler's messages (``recv``), op 21 (``resumed``) and the
connection's end (``close``). Private messages go through ``Session.send`` (its own retries
under the same id), one ``chat`` operation per call; now and then an id already answered is
sent again and must get the same seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from bench.chaos.checker.model import CLIENT, FINAL
from bench.chaos.ctx import ACCEPTS, HEARTBEAT, OPS, Ctx
from bench.chaos.history import FAIL, INFO, OK
from mpim.client import Client, ConnectionClosedError
from mpim.proto import Frame
from mpim.sdk import TRANSIENT, Message, SendError, Session

log = logging.getLogger(__name__)


class RecordingSession(Session):
    def __init__(self, device: SdkDevice, address: str, host: str, **kw: Any) -> None:
        token = {"mid": device.mid, "key": device.key, "room_id": device.room, "accepts": ACCEPTS}
        super().__init__(address, token, self._on_message, on_resume=self._on_resume, **kw)
        self.device = device
        self.host = host
        self.conn_id = ""
        self.authed = False
        self.leaving = ""  # why the harness closes it (CLIENT or FINAL)

    async def _open(self) -> Client:
        device, history = self.device, self.device.ctx.history
        device.conns += 1
        self.conn_id = conn_id = f"{device.key}#{device.conns}"
        self.authed = False
        values: dict[str, Any] = {"conn": conn_id, "key": device.key, "mid": device.mid, "room": device.room}
        values.update(host=self.host, ack=True, life=str(device.life), transport=device.transport)
        values["position"] = {"epoch": self.epoch, "seq": self.seq} if self.epoch else {}
        start = history.now()
        try:
            client = await super()._open()
        except (OSError, TimeoutError) as exc:
            history.record(
                device.process, "connect", FAIL, {**values, "error": str(exc)}, time=start, end=None
            )
            raise
        auth = client.auth

        async def recorded_auth(token: str | bytes | dict[str, Any], timeout: float = 5.0) -> Frame:
            try:
                reply = await auth(token, timeout)
            except BaseException as exc:
                values.update(error=str(exc) or type(exc).__name__, gave_up=history.now())
                history.record(device.process, "connect", INFO, values, time=start, end=None)
                raise
            history.record(device.process, "connect", OK, values, time=start)
            self.authed = True
            return reply

        setattr(client, "auth", recorded_auth)  # noqa: B010  (watch the SDK's own Auth call)
        return client

    async def _session(self) -> None:
        why = "?"
        try:
            await super()._session()
        except ConnectionClosedError as exc:
            why = "op6" if "op 6" in str(exc) else "eof"
            raise
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            why = f"error: {exc or type(exc).__name__}"
            raise
        finally:
            if self.authed:
                self.authed = False
                self.device.ctx.history.event(
                    self.device.process, "close", {"conn": self.conn_id, "why": self.leaving or why}
                )

    def _on_message(self, message: Message) -> None:
        body = message.body.decode("utf-8", "replace")
        values = {"conn": self.conn_id, "seq": message.seq, "op": message.op, "body": body}
        self.device.ctx.history.event(self.device.process, "recv", values)

    def _on_resume(self, epoch: str, top: int, recovered: bool) -> None:
        values = {"conn": self.conn_id, "epoch": epoch, "top": top, "recovered": recovered}
        self.device.ctx.history.event(self.device.process, "resumed", values)


class SdkDevice:
    def __init__(self, ctx: Ctx, key: str, mid: int, peers: list[int], room: str) -> None:
        self.ctx = ctx
        self.key = key
        self.mid = mid
        self.peers = peers
        self.room = room
        self.process = f"sdk:{key}"
        self.rng = ctx.rng(self.process)
        self.life = 0
        self.conns = 0
        self.transport = "tcp"
        self.saved: tuple[str, int] | None = None
        self.session: RecordingSession | None = None
        self.done: list[tuple[float, str, int, Any]] = []
        self.sent = 0

    async def run(self) -> None:
        rng = self.rng
        while not self.ctx.closing.is_set():
            self.life += 1
            host = rng.choice(self.ctx.hosts)
            self.transport = "ws" if rng.random() < 0.5 else "tcp"
            address = (
                f"ws://127.0.0.1:{host.ws_port}/sub"
                if self.transport == "ws"
                else f"127.0.0.1:{host.tcp_port}"
            )
            session = RecordingSession(
                self, address, host.label, heartbeat=HEARTBEAT, backoff=(0.1, 1.0), resend_after=3.0
            )
            if self.saved is not None and rng.random() < 0.75:
                session.epoch, session.seq = self.saved
            self.session = session
            loop = asyncio.get_running_loop()
            runner = loop.create_task(session.run())
            runner.add_done_callback(self._crashed)
            chats = loop.create_task(self._chats(session))
            final = self.ctx.final.is_set()
            with contextlib.suppress(TimeoutError):
                waiting = self.ctx.closing if final else self.ctx.final
                await asyncio.wait_for(waiting.wait(), None if final else rng.uniform(2, 8))
            if self.ctx.final.is_set() and not self.ctx.closing.is_set():
                await self.ctx.closing.wait()  # (final: stay online until everyone closes)
            session.leaving = FINAL if self.ctx.closing.is_set() else CLIENT
            await session.close()
            try:
                await asyncio.wait_for(runner, 10)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception:  # (recorded by _crashed when it happened)
                pass
            chats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chats
            if session.epoch:
                self.saved = (session.epoch, session.seq)
            if self.ctx.closing.is_set():
                return
            away = rng.uniform(8, 16) if rng.random() < 0.25 else rng.uniform(1, 5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.final.wait(), away)

    def _crashed(self, runner: asyncio.Task[None]) -> None:
        """Session.run ended by itself (it must run until close()): record it at once."""
        if runner.cancelled() or runner.exception() is None or self.ctx.closing.is_set():
            return
        exc = runner.exception()
        values = {"life": str(self.life), "error": f"{type(exc).__name__}: {exc}"}
        self.ctx.history.record(self.process, "crash", "info", values)

    async def _chats(self, session: RecordingSession) -> None:
        rng = self.rng
        loop = asyncio.get_running_loop()
        sending: set[asyncio.Task[None]] = set()
        try:
            while not self.ctx.stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ctx.stopping.wait(), rng.uniform(0.5, 1.5))
                if self.ctx.stopping.is_set() or not session.connected.is_set() or sending:
                    continue
                now = self.ctx.history.now()
                recent = [d for d in self.done if d[0] > now - 60]
                if recent and rng.random() < 0.15:
                    _, msg_id, to, body = rng.choice(recent)
                else:
                    self.sent += 1
                    msg_id, to = f"s{self.mid}-{self.key}-{self.sent}", rng.choice(self.peers)
                    body = {"n": self.sent, "by": self.key}
                task = loop.create_task(self._send(session, msg_id, to, body))
                sending.add(task)
                task.add_done_callback(sending.discard)
        finally:
            for task in sending:
                task.cancel()
            if sending:
                await asyncio.wait(sending)

    async def _send(self, session: RecordingSession, msg_id: str, to: int, body: Any) -> None:
        history = self.ctx.history
        values: dict[str, Any] = {
            "id": msg_id,
            "from": self.mid,
            "to": to,
            "body": body,
            "conn": session.conn_id,
        }
        start = history.now()
        try:
            ack = await session.send(to=to, op=OPS["chat"], body=body, id=msg_id, timeout=20.0)
        except SendError as exc:
            values.update(code=exc.code, message=exc.message)
            history.record(self.process, "chat", INFO if exc.code in TRANSIENT else FAIL, values, time=start)
            return
        except asyncio.CancelledError:
            values["error"] = "given up: the session closed"
            history.record(self.process, "chat", INFO, values, time=start, end=None)
            raise
        except Exception as exc:  # the SDK promises SendError only: keep the run, say it loudly
            log.error("chat %s: Session.send raised %r", msg_id, exc)
            values["error"] = f"Session.send raised {exc!r}"
            history.record(self.process, "chat", INFO, values, time=start)
            return
        if self.ctx.upstream_ack == "none":  # goim's echo, sent before the message is processed
            values.update(code=0, echo=True)
            history.record(self.process, "chat", INFO, values, time=start)
        else:
            values.update(code=0, seq=ack.seq)
            history.record(self.process, "chat", OK, values, time=start)
        self.done.append((start, msg_id, to, body))

    def settled(self, epoch: str, top: int) -> bool:
        s = self.session
        return s is not None and s.ready.is_set() and s.epoch == epoch and s.seq >= top


__all__ = ["RecordingSession", "SdkDevice"]
