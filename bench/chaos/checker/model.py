"""The history read back as connections, pushes, chats and faults: what the rules reason about.

Nothing here judges; :func:`build` only groups the operations (see :mod:`bench.chaos.history`
for their shape and :mod:`bench.chaos.workload` for who records what).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.history import FAIL, INFO, OK, Op

FINAL, CLIENT = "final", "client"  # a connection closed by the harness at the end / by its client


@dataclass
class Meta:
    hosts: list[str]
    ops: dict[str, int]  # push kind ("mid", "key", "room", "all", "chat") -> business op
    online_interval: float
    report_interval: float
    dead_grace: float  # a dead host's connections may still be counted this long (issue 22: the lease)
    kick_grace: float  # two live connections of one key may overlap this long
    devices: dict[str, tuple[int, str]]  # device key -> (mid, "sdk" | "raw")

    @classmethod
    def from_values(cls, v: dict[str, Any]) -> Meta:
        return cls(
            hosts=list(v.get("hosts", ["A"])),
            ops={str(k): int(n) for k, n in v.get("ops", {}).items()},
            online_interval=float(v.get("online_interval", 1.0)),
            report_interval=float(v.get("report_interval", 0.2)),
            dead_grace=float(v.get("dead_grace", 5.0)),
            kick_grace=float(v.get("kick_grace", 2.0)),
            devices={str(k): (int(m), str(kind)) for k, (m, kind) in v.get("devices", {}).items()},
        )

    @property
    def reliable_mids(self) -> set[int]:
        return {mid for mid, _ in self.devices.values()}


@dataclass
class Conn:
    id: str
    process: str
    key: str
    mid: int
    room: str
    host: str
    ack: bool
    life: str
    position: dict[str, Any] | None  # the resume (op 20) it sent; None: not an ack connection
    connect: Op
    authed: float | None = None
    closed: float | None = None
    why: str = ""  # FINAL, CLIENT, or what the server did ("op6", "eof", "error: ...")
    close: Op | None = None
    resumed: list[Op] = field(default_factory=list)  # op 21 events
    frames: list[Op] = field(default_factory=list)  # "recv" events, in arrival order

    @property
    def dialed(self) -> float:
        return self.connect.time

    def open_at(self, t: float) -> bool:
        return self.authed is not None and self.authed <= t and (self.closed is None or self.closed > t)

    def continuous_over(self, t: float) -> bool:
        """Authenticated before ``t`` and never lost: closed only by the harness at the end."""
        return self.authed is not None and self.authed < t and self.why == FINAL


@dataclass
class Push:
    op: Op
    target: str  # "mid", "key", "room", "all"
    body: str
    host: str
    mids: list[int]
    keys: list[str]
    room: str
    code: int | None
    connections: int | None
    seqs: dict[int, int]

    @property
    def ok(self) -> bool:
        return self.op.outcome == OK


@dataclass
class Chat:
    """One send of a private message (a first send or a retry under the same id)."""

    op: Op
    id: str
    sender: int
    to: int
    seq: int | None  # the sender's seq, from an ok answer

    @property
    def outcome(self) -> str:
        return self.op.outcome


@dataclass
class Fault:
    op: Op
    name: str
    host: str
    start: float
    end: float  # recovered (inf: never)
    applied: float
    healed: float

    def overlaps(self, lo: float, hi: float) -> bool:
        return self.start <= hi and lo <= self.end


@dataclass
class Model:
    meta: Meta
    ops: list[Op]
    conns: dict[str, Conn]
    pushes: list[Push]
    by_body: dict[str, Push]
    chats: dict[str, list[Chat]]  # message id -> its sends
    faults: list[Fault]
    counts: list[Op]
    inbox: list[Op]
    finals: list[Op]
    _indexes: dict[str, dict[object, list[Conn]]] = field(default_factory=dict)

    def by_mid(self, mid: int) -> list[Conn]:
        return self._index("mid").get(mid, [])

    def by_key(self, key: str) -> list[Conn]:
        return self._index("key").get(key, [])

    def _index(self, field_name: str) -> dict[object, list[Conn]]:
        index = self._indexes.get(field_name)
        if index is None:
            index = self._indexes[field_name] = {}
            for c in self.conns.values():
                index.setdefault(getattr(c, field_name), []).append(c)
        return index

    def calm(self, lo: float, hi: float) -> bool:
        """No fault window (applied ... recovered) touches [lo, hi]."""
        return not any(f.overlaps(lo, hi) for f in self.faults)

    def item_of(self, frame: Op) -> tuple[str, Push | None, dict[str, Any] | None]:
        """What a received frame carries: ("push", push, None), ("chat", None, envelope),
        or ("?", None, None) for a body nobody sent."""
        op, body = int(frame.values.get("op", 0)), str(frame.values.get("body", ""))
        if op == self.meta.ops.get("chat"):
            try:
                env = json.loads(body)
            except ValueError:
                return "?", None, None
            if isinstance(env, dict) and isinstance(env.get("id"), str) and env["id"] in self.chats:
                return "chat", None, env
            return "?", None, env if isinstance(env, dict) else None
        push = self.by_body.get(body)
        return ("push", push, None) if push is not None else ("?", None, None)


def build(ops: list[Op]) -> Model:
    meta_op = next((o for o in ops if o.kind == "meta"), None)
    meta = Meta.from_values(meta_op.values if meta_op is not None else {})
    conns: dict[str, Conn] = {}
    pushes: list[Push] = []
    chats: dict[str, list[Chat]] = {}
    faults: list[Fault] = []
    counts: list[Op] = []
    inbox: list[Op] = []
    finals: list[Op] = []
    for o in ops:
        v = o.values
        if o.kind == "connect":
            conn = Conn(
                id=str(v["conn"]),
                process=o.process,
                key=str(v.get("key", "")),
                mid=int(v.get("mid", 0)),
                room=str(v.get("room", "")),
                host=str(v.get("host", "")),
                ack=bool(v.get("ack", False)),
                life=str(v.get("life", "")),
                position=v.get("position"),
                connect=o,
            )
            if o.outcome == OK:
                conn.authed = o.end
            conns[conn.id] = conn
        elif o.kind in ("recv", "resumed", "close"):
            conn_or_none = conns.get(str(v.get("conn")))
            if conn_or_none is None:
                continue
            if o.kind == "recv":
                conn_or_none.frames.append(o)
            elif o.kind == "resumed":
                conn_or_none.resumed.append(o)
            else:
                conn_or_none.closed, conn_or_none.why, conn_or_none.close = o.time, str(v.get("why", "")), o
        elif o.kind == "push":
            pushes.append(_push(o))
        elif o.kind == "chat":
            chat = Chat(o, str(v["id"]), int(v["from"]), int(v["to"]), _int_or_none(v.get("seq")))
            chats.setdefault(chat.id, []).append(chat)
        elif o.process == "nemesis":
            end = o.end if o.end is not None and o.outcome == OK else math.inf
            faults.append(
                Fault(
                    o,
                    o.kind,
                    str(v.get("host", "")),
                    o.time,
                    end,
                    float(v.get("applied", o.time)),
                    float(v.get("healed", end)),
                )
            )
        elif o.kind == "counts":
            counts.append(o)
        elif o.kind == "inbox":
            inbox.append(o)
        elif o.kind == "final":
            finals.append(o)
    by_body = {p.body: p for p in pushes}
    return Model(meta, ops, conns, pushes, by_body, chats, faults, counts, inbox, finals)


def _push(o: Op) -> Push:
    v = o.values
    seqs = {int(m): int(s) for m, s in (v.get("seqs") or {}).items()}
    return Push(
        op=o,
        target=str(v["target"]),
        body=str(v["body"]),
        host=str(v.get("host", "")),
        mids=[int(m) for m in v.get("mids", [])],
        keys=[str(k) for k in v.get("keys", [])],
        room=str(v.get("room", "")),
        code=_int_or_none(v.get("code")),
        connections=_int_or_none(v.get("connections")),
        seqs=seqs,
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


__all__ = ["CLIENT", "FAIL", "FINAL", "INFO", "OK", "Chat", "Conn", "Fault", "Meta", "Model", "Push", "build"]
