"""Hand-made chaos histories for the checker's tests: each call appends one operation, with the
times given (seconds), in the order written, like the harness records them."""

from __future__ import annotations

import json
from typing import Any

from bench.chaos.checker import Report, check
from bench.chaos.ctx import OPS
from bench.chaos.history import OK, Op


class H:
    def __init__(
        self, hosts: tuple[str, ...] = ("A",), devices: dict[str, tuple[int, str]] | None = None
    ) -> None:
        self.ops: list[Op] = []
        self.devices = devices if devices is not None else {"raw-1": (1, "raw")}
        meta = {"hosts": list(hosts), "ops": OPS, "online_interval": 1.0, "report_interval": 0.2}
        meta.update(dead_grace=5.0, kick_grace=2.0, devices=self.devices)
        self.op("harness", "meta", OK, meta, 0.0)

    def op(
        self, process: str, kind: str, outcome: str, values: dict[str, Any], t: float, end: Any = "t"
    ) -> Op:
        op = Op(len(self.ops), process, kind, t, t if end == "t" else end, outcome, values)
        self.ops.append(op)
        return op

    # -- clients ---------------------------------------------------------------------------------
    def connect(
        self,
        conn: str,
        t: float,
        *,
        mid: int = 1,
        room: str = "",
        host: str = "A",
        ack: bool = True,
        life: str = "1",
        position: dict[str, Any] | None = None,
        outcome: str = OK,
        process: str = "",
    ) -> str:
        key = conn.partition("#")[0]
        values = {"conn": conn, "key": key, "mid": mid, "room": room, "host": host, "ack": ack, "life": life}
        if ack:
            values["position"] = position if position is not None else {}
        self.op(process or f"c:{key}", "connect", outcome, values, t, t + 0.001 if outcome == OK else None)
        return conn

    def recv(self, conn: str, t: float, body: str, seq: int = 0, op: int | None = None) -> Op:
        kind = "chat" if body.startswith("{") else "mid" if seq else "room"
        values = {"conn": conn, "seq": seq, "op": op if op is not None else OPS[kind], "body": body}
        return self.op(self._process(conn), "recv", OK, values, t)

    def resumed(self, conn: str, t: float, top: int, recovered: bool = True, epoch: str = "e1") -> Op:
        values = {"conn": conn, "epoch": epoch, "top": top, "recovered": recovered}
        return self.op(self._process(conn), "resumed", OK, values, t)

    def close(self, conn: str, t: float, why: str = "final") -> Op:
        return self.op(self._process(conn), "close", OK, {"conn": conn, "why": why}, t)

    def _process(self, conn: str) -> str:
        return next(o.process for o in self.ops if o.kind == "connect" and o.values["conn"] == conn)

    # -- the backend -----------------------------------------------------------------------------
    def push(
        self,
        t: float,
        body: str,
        target: str = "mid",
        *,
        outcome: str = OK,
        end: float | None = None,
        host: str = "A",
        mids: list[int] | None = None,
        keys: list[str] | None = None,
        room: str = "",
        code: int | None = 0,
        connections: int | None = None,
        seqs: dict[int, int] | None = None,
    ) -> Op:
        values: dict[str, Any] = {
            "via": "http",
            "host": host,
            "target": target,
            "op": OPS[target],
            "body": body,
        }
        if target == "mid":
            values["mids"] = mids or [1]
        if target == "key":
            values["keys"] = keys or []
        if target == "room":
            values["room"] = room
        if code is not None:
            values["code"] = code
        if connections is not None:
            values["connections"] = connections
        if seqs:
            values["seqs"] = {str(m): s for m, s in seqs.items()}
        finish = end if end is not None else (t + 0.01 if outcome != "info" else None)
        return self.op("backend", "push", outcome, values, t, finish)

    def chat(
        self,
        t: float,
        msg_id: str,
        frm: int,
        to: int,
        *,
        seq: int | None = None,
        outcome: str = OK,
        code: int = 0,
    ) -> Op:
        values: dict[str, Any] = {"id": msg_id, "from": frm, "to": to, "body": {"n": msg_id}, "code": code}
        if seq is not None:
            values["seq"] = seq
        return self.op(f"c:sender-{frm}", "chat", outcome, values, t, t + 0.01)

    @staticmethod
    def envelope(msg_id: str, frm: int, to: int, body: Any = None) -> str:
        env = {"id": msg_id, "from": frm, "to": to, "body": body if body is not None else {"n": msg_id}}
        return json.dumps(env, separators=(",", ":"))

    # -- the harness and the nemesis -------------------------------------------------------------
    def fault(self, name: str, t: float, end: float | None, *, host: str = "A", **values: Any) -> Op:
        values = {"host": host, "applied": t, "healed": end if end is not None else t, **values}
        return self.op("nemesis", name, OK if end is not None else "info", values, t, end)

    def counts(self, t: float, host: str, total: int, rooms: dict[str, int]) -> Op:
        return self.op("harness", "counts", OK, {"host": host, "total": total, "rooms": rooms}, t)

    def inbox(self, t: float, mid: int, messages: list[tuple[int, str]], epoch: str = "e1") -> Op:
        values = {"mid": mid, "epoch": epoch, "top": max((s for s, _ in messages), default=0)}
        values["messages"] = [[s, OPS["mid"], b] for s, b in messages]
        return self.op("harness", "inbox", OK, values, t)

    def final(self, t: float, device: str, ok: bool = True) -> Op:
        return self.op("harness", "final", OK if ok else "fail", {"device": device, "waited": 45}, t)

    # -- the verdict -----------------------------------------------------------------------------
    def check(self, *pending: int) -> Report:
        return check(self.ops, pending)


def rules(report: Report) -> list[str]:
    return sorted(v.rule for v in report.failing)
