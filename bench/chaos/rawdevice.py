"""A reliable device (``caps: ["ack"]``) on a raw socket, written from the wire contract: the
workload's second client beside the SDK, sharing no code with it (:mod:`bench.chaos.wire`).

It keeps what a careful client keeps: the stream position ``(epoch, seq)`` of the last
message it handled. Per connection: Auth (op 7) with ``caps ["ack"]``, then op 20 with its
position (or ``{}``), frames handled once each by seq (a seq at or below the position is a
duplicate and dropped), op 18 acks after every read (cumulative: the position), op 21 moves
the position as the README says, op 6 or EOF ends the connection. Private messages (op 4)
carry an id and a forged ``from``; one is in flight at a time, answered by op 5 (``only``,
``rigor`` with op 22 confirms, or goim's echo in ``none``), and resent under the same id
after a transient error, no answer, or a lost connection. Now and then it sends again an id
it already had answered (a client that lost its outbox), which must get the same seq.

It goes offline for random spells (some long enough to overflow ``max_unacked`` and the
inbox trims), comes back from its saved position, from ``{}`` (the device cursor) or with
its memory lost (a new life), and sometimes opens two connections with its key at once (a
same-key race: one must be kicked).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.checker.model import CLIENT, FINAL
from bench.chaos.ctx import ACCEPTS, HEARTBEAT, OPS, Ctx
from bench.chaos.history import FAIL, INFO, OK
from bench.chaos.wire import Frame, RawConnection, WireError

AUTH, AUTH_REPLY, HEARTBEAT_OP, SEND, SEND_REPLY, DISCONNECT = 7, 8, 2, 4, 5, 6
ACK, RESUME, RESUMED, CONFIRM = 18, 20, 21, 22
TRANSIENT = (-503, -504, -408)


@dataclass
class _Conn:
    id: str
    raw: RawConnection
    host: str
    leave: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: bool = False
    acked: int = 0


class RawDevice:
    def __init__(self, ctx: Ctx, key: str, mid: int, peers: list[int], room: str) -> None:
        self.ctx = ctx
        self.key = key
        self.mid = mid
        self.peers = peers
        self.room = room
        self.process = f"raw:{key}"
        self.rng = ctx.rng(self.process)
        self.life = 1
        self.epoch: str | None = None
        self.pos: int | None = None
        self.conns = 0
        self.live: list[_Conn] = []
        self.answers: dict[str, tuple[asyncio.Future[dict[str, Any]], str]] = {}  # id -> (answer, conn)
        self.echoes: dict[tuple[str, int], str] = {}  # (conn, header seq) -> id, for mode "none"
        self.done: list[tuple[float, str, int, Any]] = []  # (when, id, to, body) answered ok
        self.sent = 0

    # -- the device's life ---------------------------------------------------------------------
    async def run(self) -> None:
        chats = asyncio.get_running_loop().create_task(self._chats())
        try:
            mode = "{}"
            while not self.ctx.closing.is_set():
                final = self.ctx.final.is_set()
                until = float("inf") if final else self.ctx.history.now() + self.rng.uniform(2, 8)
                await self._online(mode, until)
                if self.ctx.closing.is_set() or final:
                    break
                away = self.rng.uniform(8, 16) if self.rng.random() < 0.25 else self.rng.uniform(1, 5)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ctx.final.wait(), away)
                r = self.rng.random()
                mode = "saved" if r < 0.7 else "{}" if r < 0.9 else "forget"
                if mode == "forget":
                    self.life += 1
                    self.epoch = self.pos = None
        finally:
            chats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chats

    def _position(self, mode: str) -> dict[str, Any]:
        if mode == "saved" and self.epoch is not None and self.pos is not None:
            return {"epoch": self.epoch, "seq": self.pos}
        return {}

    async def _online(self, mode: str, until: float) -> None:
        first = True
        while not self.ctx.closing.is_set():
            position = self._position(mode if first else "saved")
            first = False
            if not self.ctx.final.is_set() and self.rng.random() < 0.1:
                why = await self._race(position, until)
            else:
                why = await self._session(self._host(), position, asyncio.Event(), until)
            if why in (CLIENT, FINAL) or (self.ctx.history.now() >= until and not self.ctx.final.is_set()):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.closing.wait(), self.rng.uniform(0.1, 0.5))

    def _host(self) -> str:
        return self.rng.choice(self.ctx.hosts).label

    async def _race(self, position: dict[str, Any], until: float) -> str:
        """Two connections with this key at once; if both live after 3 s, the first one leaves."""
        loop = asyncio.get_running_loop()
        first, second = asyncio.Event(), asyncio.Event()
        tasks = [
            loop.create_task(self._session(self._host(), position, first, until)),
            loop.create_task(self._session(self._host(), position, second, until)),
        ]
        done, _ = await asyncio.wait(tasks, timeout=3.0)
        if not done:
            first.set()
        results = await asyncio.gather(*tasks)
        return CLIENT if CLIENT in results else FINAL if FINAL in results else results[-1]

    # -- one connection ------------------------------------------------------------------------
    async def _session(self, label: str, position: dict[str, Any], leave: asyncio.Event, until: float) -> str:
        history = self.ctx.history
        self.conns += 1
        conn_id = f"{self.key}#{self.conns}"
        values: dict[str, Any] = {"conn": conn_id, "key": self.key, "mid": self.mid, "room": self.room}
        values.update(host=label, ack=True, life=str(self.life), position=position, transport="tcp")
        token = {"mid": self.mid, "key": self.key, "room_id": self.room, "accepts": ACCEPTS, "caps": ["ack"]}
        start = history.now()
        try:
            raw = await RawConnection.open(self.ctx.host(label).tcp_port, 3)
        except (OSError, TimeoutError) as exc:
            values["error"] = str(exc) or type(exc).__name__
            history.record(self.process, "connect", FAIL, values, time=start, end=None)
            return "error"
        try:
            seq = raw.send(AUTH, json.dumps(token).encode())
            early = await self._auth_reply(raw, seq)
        except (OSError, TimeoutError, EOFError, WireError) as exc:
            raw.close()
            values.update(error=str(exc) or type(exc).__name__, gave_up=history.now())
            history.record(self.process, "connect", INFO, values, time=start, end=None)
            return "error"
        history.record(self.process, "connect", OK, values, time=start)
        conn = _Conn(conn_id, raw, label, leave)
        raw.send(RESUME, json.dumps(position).encode())
        self.live.append(conn)
        why = "?"
        try:
            why = await self._serve(conn, until, early)
        except EOFError:
            why = "eof"
        except (OSError, WireError, ValueError) as exc:
            why = f"error: {exc or type(exc).__name__}"
        finally:
            self.live.remove(conn)
            raw.close()
            for future, where in list(self.answers.values()):
                if where == conn_id and not future.done():
                    future.set_exception(ConnectionError(f"connection {conn_id} ended ({why})"))
            history.event(self.process, "close", {"conn": conn_id, "why": why})
        return why

    async def _auth_reply(self, raw: RawConnection, seq: int) -> list[Frame]:
        """Wait for op 8; returns the frames that came after it in the same read (an op 6...)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while loop.time() < deadline:
            frames = await raw.read(0.25)
            for i, f in enumerate(frames):
                if f.op == AUTH_REPLY and f.seq == seq:
                    return frames[i + 1 :]
        raise TimeoutError("no Auth reply within 5s")

    async def _serve(self, conn: _Conn, until: float, early: list[Frame]) -> str:
        loop = asyncio.get_running_loop()
        beat = loop.time() + HEARTBEAT
        raw = conn.raw
        while True:
            if self.ctx.closing.is_set():
                return FINAL
            if conn.leave.is_set() or (self.ctx.history.now() >= until and not self.ctx.final.is_set()):
                return CLIENT
            frames, early = early or await raw.read(0.25), []
            for f in frames:
                if f.op == DISCONNECT:
                    return "op6"
                self._frame(conn, f)
            if self.pos is not None and self.pos > conn.acked and (conn.resumed or frames):
                conn.acked = self.pos  # (cumulative; during a replay too: acks pace it)
                raw.send(ACK, seq=self.pos)
            if loop.time() >= beat:
                raw.send(HEARTBEAT_OP)
                beat = loop.time() + HEARTBEAT
            await asyncio.wait_for(raw.writer.drain(), 5)

    def _frame(self, conn: _Conn, f: Frame) -> None:
        history = self.ctx.history
        if f.op == RESUMED:
            info = json.loads(f.body)
            epoch, top, recovered = str(info["epoch"]), int(info["seq"]), bool(info["recovered"])
            history.event(
                self.process, "resumed", {"conn": conn.id, "epoch": epoch, "top": top, "recovered": recovered}
            )
            if epoch != self.epoch:
                self.pos = top
            elif not recovered:
                self.pos = max(top, self.pos or 0)
            self.epoch = epoch
            conn.resumed = True
            conn.acked = 0  # (ack the position: it moves the device cursor past a gap)
        elif f.op == SEND_REPLY:
            self._answer(conn, f)
        elif f.op == SEND and not f.body:
            msg_id = self.echoes.pop((conn.id, f.seq), None)
            if msg_id is not None:
                self._resolve(msg_id, {"id": msg_id, "code": 0})
        elif f.op >= 1000:
            body = f.body.decode("utf-8", "replace")
            history.event(self.process, "recv", {"conn": conn.id, "seq": f.seq, "op": f.op, "body": body})
            if f.seq > 0 and (self.pos is None or f.seq > self.pos):
                self.pos = f.seq

    def _answer(self, conn: _Conn, f: Frame) -> None:
        try:
            answer = json.loads(f.body)
        except ValueError:
            return
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            return
        if answer.get("state") == "received":
            conn.raw.send(CONFIRM, json.dumps({"id": answer["id"]}).encode())
            return
        self._resolve(answer["id"], answer)

    def _resolve(self, msg_id: str, answer: dict[str, Any]) -> None:
        pending = self.answers.get(msg_id)
        if pending is not None and not pending[0].done():
            pending[0].set_result(answer)

    # -- private chat --------------------------------------------------------------------------
    async def _chats(self) -> None:
        rng = self.rng
        while not self.ctx.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.stopping.wait(), rng.uniform(0.5, 1.5))
            if self.ctx.stopping.is_set() or not self.live:
                continue
            now = self.ctx.history.now()
            recent = [d for d in self.done if d[0] > now - 60]
            if recent and rng.random() < 0.15:
                _, msg_id, to, body = rng.choice(recent)
            else:
                self.sent += 1
                msg_id, to = f"r{self.mid}-{self.key}-{self.sent}", rng.choice(self.peers)
                body = {"n": self.sent, "by": self.key}
            await self._send(msg_id, to, body)

    async def _send(self, msg_id: str, to: int, body: Any) -> None:
        history = self.ctx.history
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        payload = json.dumps({"id": msg_id, "to": to, "op": OPS["chat"], "body": body, "from": 1}).encode()
        attempt = 0
        while loop.time() < deadline and not self.ctx.closing.is_set():
            conn = next((c for c in reversed(self.live) if c.resumed), None)
            if conn is None:
                await asyncio.sleep(0.2)
                continue
            attempt += 1
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self.answers[msg_id] = (future, conn.id)
            values: dict[str, Any] = {"id": msg_id, "from": self.mid, "to": to, "body": body}
            values.update(attempt=attempt, conn=conn.id)
            start = history.now()
            header = conn.raw.send(SEND, payload)
            self.echoes[(conn.id, header)] = msg_id
            try:
                answer = await asyncio.wait_for(asyncio.shield(future), 6)
            except (TimeoutError, ConnectionError) as exc:
                values["error"] = str(exc) or type(exc).__name__
                history.record(self.process, "chat", INFO, values, time=start, end=None)
                await asyncio.sleep(0.3)
                continue
            finally:
                self.answers.pop(msg_id, None)
                self.echoes.pop((conn.id, header), None)
            code = int(answer.get("code", 0))
            values.update(code=code, message=str(answer.get("message", "")))
            if answer.get("seq") is not None:
                values["seq"] = int(answer["seq"])
            if code == 0:  # (mode none: goim's echo, sent before the message is processed: no promise)
                echo = self.ctx.upstream_ack == "none"
                values["echo"] = echo
                history.record(self.process, "chat", INFO if echo else OK, values, time=start)
                self.done.append((start, msg_id, to, body))
                return
            history.record(self.process, "chat", INFO if code in TRANSIENT else FAIL, values, time=start)
            if code not in TRANSIENT:
                return
            await asyncio.sleep(0.5)
