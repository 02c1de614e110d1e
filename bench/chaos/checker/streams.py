"""Reliable delivery (``caps: ["ack"]``): the per-user streams as every device saw them.

The contract (README "Reliable delivery and chat", ARCHITECTURE "Delivery guarantees"):
a push by mid answered ok, and a private message answered done, is in the user's stream
with one seq; every ack device of the user handles it exactly once after de-dup, in seq
order, unless that device was told ``recovered: false`` (or a new epoch) for it; a
resume replays the missing messages in order and then says op 21.

A device is its key; a *life* is one client instance with its memory (an SDK
``Session``, or the raw client until it forgets its position). Within a life the seqs
handled must follow each other: after seq n comes n + 1, except

- a frame at or below the position is a duplicate (dropped by the client: the raw client
  shows them, the SDK must not hand them to its handler);
- a jump inside a replay is allowed when that replay's op 21 says ``recovered: false``
  (trimmed messages), or when the connection ended before its op 21 (unknown);
- op 21 moves the position: to ``top`` when not recovered or in a new epoch; when
  recovered, the replay must have reached ``top`` before it. An op 21 with no epoch (the
  server could not read the stream) is "not recovered" from an unknown position.

Past its op 21 a connection's own seqs follow each other (live pushes and catch-up
reads); this is checked per connection, since a same-key race can keep two connections
of one life open for a moment.

Rules: ``reliable-order`` (a skipped seq, a replay that said recovered but was not, the
SDK handing a seq twice), ``reliable-lost`` (an ok'd message a device never handled,
without an excuse), ``reliable-mismatch`` (one seq, two messages); the resumes themselves
are :mod:`.resume`'s.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field

from bench.chaos.checker.base import Violation
from bench.chaos.checker.model import Conn, Model
from bench.chaos.history import OK, Op

Excuse = tuple[str, int, float, float]  # (epoch, after seq, up to seq, when told)
ANY = "*"  # an excuse in an epoch the client never learnt


@dataclass
class Facts:
    """What the streams hold, for the chat rules: per user, (epoch, seq) -> items, item -> seqs."""

    epochs: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    at: dict[int, dict[tuple[str, int], dict[str, Op]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )
    where: dict[int, dict[str, dict[tuple[str, int], Op]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )

    def add(self, mid: int, epoch: str, seq: int, item: str, op: Op) -> None:
        self.at[mid][(epoch, seq)].setdefault(item, op)
        self.where[mid][item].setdefault((epoch, seq), op)

    def seqs_of(self, mid: int, item: str) -> dict[tuple[str, int], Op]:
        return self.where[mid].get(item, {})


@dataclass
class Device:
    key: str
    mid: int
    kind: str
    handled: set[str] = field(default_factory=set)
    excuses: list[Excuse] = field(default_factory=list)
    last_told: list[Op] = field(default_factory=list)  # its op-21 events

    def excused(self, epoch: str | None, seq: int | None, since: float) -> bool:
        if seq is None or epoch is None:  # where it sits is unknown: any later loss of messages covers it
            return any(when >= since for _, _, _, when in self.excuses)
        return any(e in (epoch, ANY) and lo < seq <= hi for e, lo, hi, _ in self.excuses)


def item_id(model: Model, frame: Op) -> str | None:
    what, push, env = model.item_of(frame)
    if what == "push" and push is not None:
        return "P:" + push.body
    if what == "chat" and env is not None:
        return "C:" + str(env["id"])
    return None


class _Life:
    def __init__(self, device: Device, facts: Facts, out: list[Violation]) -> None:
        self.device = device
        self.facts = facts
        self.out = out
        self.epoch: str | None = None
        self.pos: int | None = None
        self.live: set[str] = set()  # connections past their op 21
        self.last: dict[str, int | None] = {}  # a live connection's own last seq (None: unknown)
        self.start: dict[str, int] = {}  # the seq a connection resumed after (0 = unknown)
        self.gaps: dict[str, list[tuple[int, int, Op]]] = defaultdict(list)
        self.soft: dict[str, tuple[int, int, Op]] = {}  # a fresh life's first seq (its cursor is unknown)
        self.unplaced: list[tuple[int, str, Op]] = []  # handled before the epoch was known

    def connect(self, conn: Conn) -> None:
        position = conn.position or {}
        if "epoch" in position and self.pos is None:  # a life that starts from a saved position
            self.epoch, self.pos = str(position["epoch"]), int(position["seq"])
        self.start[conn.id] = int(position.get("seq", 0)) if "epoch" in position else 0

    def frame(self, conn: Conn, f: Op, item: str | None) -> None:
        seq = int(f.values.get("seq", 0))
        if seq <= 0:
            return
        if conn.id in self.live:  # (its own stream: a same-key race may run two connections)
            last = self.last.get(conn.id)
            if last is not None and seq > last + 1:
                self._violation(
                    "reliable-order",
                    f"seqs {last + 1}..{seq - 1} skipped on a live connection (after op 21)",
                    [conn.connect, *conn.resumed[:1], f],
                )
            self.last[conn.id] = seq if last is None else max(last, seq)
        if self.pos is not None and seq <= self.pos:
            if self.device.kind == "sdk":
                self._violation(
                    "reliable-order",
                    f"the SDK handed seq {seq} to the handler after seq {self.pos} (handled once, in order)",
                    [conn.connect, f],
                )
            self._observe(seq, item, f)
            return
        if self.pos is None and seq > 1 and conn.id not in self.live:
            self.soft[conn.id] = (0, seq, f)
        if conn.id not in self.live and self.pos is not None and seq > self.pos + 1:
            self.gaps[conn.id].append((self.pos, seq, f))
        self.pos = seq
        if item is not None:
            self.device.handled.add(item)
        self._observe(seq, item, f)

    def resumed(self, conn: Conn, r: Op) -> None:
        epoch, top, recovered = str(r.values["epoch"]), int(r.values["top"]), bool(r.values["recovered"])
        self.device.last_told.append(r)
        self.live.add(conn.id)
        gaps, self.gaps[conn.id] = self.gaps[conn.id], []
        self.soft.pop(conn.id, None)  # (it started at the device's cursor, which op 21 vouches for)
        if not epoch:  # the stream could not be read: not recovered, and no position either
            self.last[conn.id] = None
            if self.epoch is not None:
                self.device.excuses.append((self.epoch, self.pos or 0, math.inf, r.time))
            return
        self.last[conn.id] = top
        if self.epoch is None:
            self.epoch = epoch
            for seq, item, f in self.unplaced:
                if item is not None:
                    self.facts.add(self.device.mid, epoch, seq, item, f)
            self.unplaced = []
        elif epoch != self.epoch:
            asked = (conn.position or {}).get("epoch")
            if recovered and asked is not None and asked != epoch:
                self._violation(
                    "reliable-order",
                    f"resumed from epoch {asked} but op 21 names epoch {epoch} and says recovered",
                    [conn.connect, r],
                )
            self.device.excuses.append((self.epoch, 0, math.inf, r.time))
            self.epoch, self.pos = epoch, top
            return
        if recovered:
            for lo, hi, f in gaps:
                self._violation(
                    "reliable-order",
                    f"a replay skipped seqs {lo + 1}..{hi - 1} yet its op 21 says recovered",
                    [conn.connect, f, r],
                )
            if self.pos is None:
                self.pos = top
            elif self.pos < top:
                self._violation(
                    "reliable-order",
                    f"op 21 says recovered up to seq {top}, but the replay before it reached {self.pos}",
                    [conn.connect, r],
                )
                self.device.excuses.append((epoch, self.pos, top, -math.inf))  # (reported here, not as lost)
                self.pos = top
            return
        self.device.excuses.append((epoch, self.start.get(conn.id, 0), top, r.time))
        self.pos = top if self.pos is None else max(self.pos, top)

    def closed(self, conn: Conn) -> None:
        if conn.id not in self.live:  # a replay that never got its op 21: its jumps are unknowns
            soft = self.soft.pop(conn.id, None)
            for lo, hi, f in self.gaps.pop(conn.id, []) + ([soft] if soft else []):
                self.device.excuses.append((self.epoch or ANY, lo, hi - 1, f.time))

    def _observe(self, seq: int, item: str | None, f: Op) -> None:
        if item is None:
            return
        if self.epoch is None:
            self.unplaced.append((seq, item, f))
        else:
            self.facts.add(self.device.mid, self.epoch, seq, item, f)

    def _violation(self, rule: str, message: str, ops: list[Op]) -> None:
        self.out.append(Violation(rule, f"device {self.device.key}: {message}", ops))


def _walk(model: Model, device: Device, facts: Facts, out: list[Violation]) -> None:
    conns = [c for c in model.conns.values() if c.key == device.key and c.ack]
    lives: dict[str, list[Conn]] = defaultdict(list)
    for c in sorted(conns, key=lambda c: c.connect.index):
        lives[c.life].append(c)
    for life_conns in lives.values():
        life = _Life(device, facts, out)
        events: list[tuple[int, str, Conn, Op]] = []
        for c in life_conns:
            events.append((c.connect.index, "connect", c, c.connect))
            events += [(f.index, "recv", c, f) for f in c.frames]
            events += [(r.index, "resumed", c, r) for r in c.resumed]
            if c.close is not None:
                events.append((c.close.index, "close", c, c.close))
        for _, kind, c, op in sorted(events, key=lambda e: e[0]):
            if kind == "connect":
                life.connect(c)
            elif kind == "recv":
                life.frame(c, op, item_id(model, op))
            elif kind == "resumed":
                life.resumed(c, op)
            else:
                life.closed(c)
        for c in life_conns:
            if c.close is None:
                life.closed(c)


def check(model: Model, facts: Facts) -> list[Violation]:
    out: list[Violation] = []
    devices = [Device(key, mid, kind) for key, (mid, kind) in model.meta.devices.items()]
    for device in devices:
        _walk(model, device, facts, out)
    for o in model.inbox:
        mid, epoch = int(o.values["mid"]), str(o.values["epoch"])
        facts.epochs[mid].add(epoch)
        for seq, _op, body in o.values.get("messages", []):
            item = _stored_item(model, str(body))
            if item is not None:
                facts.add(mid, epoch, int(seq), item, o)
    for c in model.conns.values():
        for r in c.resumed:
            facts.epochs[c.mid].add(str(r.values["epoch"]))
    _answers(model, facts)
    out += _lost(model, devices, facts)
    out += _mismatch(model, facts)
    return out


def _stored_item(model: Model, body: str) -> str | None:
    if body in model.by_body:
        return "P:" + body
    try:
        env = json.loads(body)
    except ValueError:
        return None
    if isinstance(env, dict) and isinstance(env.get("id"), str):
        return "C:" + str(env["id"])
    return None


def _answers(model: Model, facts: Facts) -> None:
    """What the answers claim (a push's seq per user, a chat's seq in its sender's stream), where
    the user's stream had one epoch the whole run (else an answer's epoch is unknown)."""
    for p in model.pushes:
        if p.ok:
            for mid, seq in p.seqs.items():
                if len(facts.epochs[mid]) == 1:
                    facts.add(mid, next(iter(facts.epochs[mid])), seq, "P:" + p.body, p.op)
    for sends in model.chats.values():
        for s in sends:
            if s.outcome == OK and s.seq is not None and len(facts.epochs[s.sender]) == 1:
                facts.add(s.sender, next(iter(facts.epochs[s.sender])), s.seq, "C:" + s.id, s.op)


Owed = tuple[str, int | None, str | None, Op, float]


def _owed(model: Model, facts: Facts, mid: int) -> list[Owed]:
    """Every message of the user's stream that was answered ok: (item, seq, epoch, the answer,
    since when it may have been stored: a chat's from its first attempt, whose answer may
    have been lost while a retry's was a de-duplicated one)."""
    single = next(iter(facts.epochs[mid])) if len(facts.epochs[mid]) == 1 else None
    owed: list[Owed] = []
    for p in model.pushes:
        if p.ok and p.target == "mid" and mid in p.mids:
            owed.append(("P:" + p.body, p.seqs.get(mid), single, p.op, p.op.time))
    for msg_id, sends in model.chats.items():
        done = [s for s in sends if s.outcome == OK]
        if not done or mid not in (done[0].sender, done[0].to):
            continue
        item = "C:" + msg_id
        seq = done[0].seq if mid == done[0].sender else None
        if seq is None:  # where the recipient's copy sits, if anyone saw it
            seen = sorted(facts.seqs_of(mid, item))
            if single is not None and seen:
                seq = seen[0][1]
        owed.append((item, seq, single, done[0].op, min(s.op.time for s in sends)))
    return owed


def _lost(model: Model, devices: list[Device], facts: Facts) -> list[Violation]:
    out: list[Violation] = []
    for device in devices:
        missing = [
            (item, seq, answer)
            for item, seq, epoch, answer, since in _owed(model, facts, device.mid)
            if item not in device.handled and not device.excused(epoch, seq, since)
        ]
        if missing:
            known = [seq for _, seq, _ in missing if seq]
            shown = ", ".join(f"{item}@{seq}" for item, seq, _ in missing[:10])
            span = f" (seqs {min(known)}..{max(known)})" if known else ""
            out.append(
                Violation(
                    "reliable-lost",
                    f"device {device.key} (mid {device.mid}) never handled {len(missing)} message(s)"
                    f" answered ok and not excused by recovered:false: {shown}{span}",
                    [answer for _, _, answer in missing[:5]] + device.last_told[-2:],
                )
            )
    return out


def _mismatch(model: Model, facts: Facts) -> list[Violation]:
    out: list[Violation] = []
    for mid, positions in facts.at.items():
        for (epoch, seq), items in sorted(positions.items()):
            if len(items) > 1:
                names = sorted(items)
                out.append(
                    Violation(
                        "reliable-mismatch",
                        f"mid {mid} epoch {epoch} seq {seq} carries {len(items)} different messages: "
                        + ", ".join(names[:4]),
                        [items[n] for n in names[:4]],
                    )
                )
        pushes: dict[str, set[tuple[str, int]]] = defaultdict(set)
        for (epoch, seq), items in positions.items():
            for item in items:
                if item.startswith("P:"):
                    pushes[item].add((epoch, seq))
        for item, where in pushes.items():
            epochs = {e for e, _ in where}
            if any(len([s for e, s in where if e == ep]) > 1 for ep in epochs):
                ops = [positions[w][item] for w in sorted(where)][:4]
                out.append(
                    Violation(
                        "reliable-mismatch",
                        f"mid {mid}: push {item[2:]} sits at {len(where)} seqs {sorted(where)[:4]}",
                        ops,
                    )
                )
    return out
