"""Pushes that carry no stream seq (by key, to a room, to everyone, and by mid to goim clients):
goim's at-most-once delivery, plus what an answer promises (README "Pushing messages").

Rules:

- ``unexpected`` — a client got a body nobody pushed, or a push that did not name it
  (another key, user or room), or under another op;
- ``refused-delivered`` — a push answered with a definite refusal (``fail``), or a private
  message refused every time it was sent, reached a client;
- ``at-most-once`` — a client got the same seq-0 push twice;
- ``goim-seq`` — a goim connection (no ``ack`` cap) got a push with a header seq other than 0;
- ``live-delivery`` — a push answered ok did not reach a connection it named that was
  authenticated before the push and never lost (closed only by the harness at the end).
  With several hosts, only for pushes made while no fault was under way (a room push is
  answered once Redis took it; delivery to another host is not promised during faults).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from bench.chaos.checker.base import Violation
from bench.chaos.checker.model import Conn, Model, Push
from bench.chaos.history import FAIL, Op


def names(push: Push, conn: Conn) -> bool:
    """Whether ``push`` is addressed to ``conn``."""
    if push.target == "mid":
        return conn.mid in push.mids
    if push.target == "key":
        return conn.key in push.keys
    if push.target == "room":
        return conn.room == push.room
    return push.target == "all"


def check(model: Model) -> list[Violation]:
    out: list[Violation] = []
    delivered: dict[str, list[tuple[Conn, Op]]] = defaultdict(list)  # push body / chat id -> where
    for conn in model.conns.values():
        zero: Counter[str] = Counter()
        for f in conn.frames:
            what, push, env = model.item_of(f)
            op, seq = int(f.values.get("op", 0)), int(f.values.get("seq", 0))
            if what == "?":
                out.append(Violation("unexpected", f"{conn.id} got a body nobody sent (op {op})", [f]))
                continue
            if push is not None:
                delivered[push.body].append((conn, f))
                if not names(push, conn) or model.meta.ops.get(push.target) != op:
                    out.append(
                        Violation(
                            "unexpected",
                            f"{conn.id} (mid {conn.mid}, key {conn.key}, room {conn.room!r}) got a push by"
                            f" {push.target} that did not name it, or under op {op}",
                            [push.op, conn.connect, f],
                        )
                    )
                item = "P:" + push.body
            else:
                assert env is not None
                delivered["C:" + str(env["id"])].append((conn, f))
                sends = model.chats[str(env["id"])]
                if conn.mid not in (sends[0].sender, sends[0].to):
                    out.append(
                        Violation(
                            "unexpected",
                            f"{conn.id} (mid {conn.mid}) got private message {env['id']} between"
                            f" {sends[0].sender} and {sends[0].to}",
                            [sends[0].op, conn.connect, f],
                        )
                    )
                item = "C:" + str(env["id"])
            if seq != 0 and not conn.ack:
                out.append(
                    Violation(
                        "goim-seq", f"goim connection {conn.id} (no ack cap) got a push with seq {seq}", [f]
                    )
                )
            if seq == 0:
                zero[item] += 1
                if zero[item] == 2:
                    firsts = [g for g in conn.frames if model.item_of(g)[1] is push][:2]
                    out.append(
                        Violation(
                            "at-most-once",
                            f"{conn.id} got {item} twice",
                            [*([push.op] if push is not None else []), *(firsts or [f])],
                        )
                    )
    out += _at_most_once_per_client(model)
    out += _refused(model, delivered)
    out += _live(model)
    return out


def _at_most_once_per_client(model: Model) -> list[Violation]:
    """The same seq-0 push on two connections of one client that were not open at the same time
    (a repeat on a later connection is a resend; two connections of a same-key race may both
    get a push while both live, which ``one-key`` judges)."""
    out: list[Violation] = []
    seen: dict[str, dict[str, Op]] = defaultdict(dict)
    last = max((o.end or o.time for o in model.ops), default=0.0)
    for conn in sorted(model.conns.values(), key=lambda c: c.connect.index):
        for f in conn.frames:
            push = model.item_of(f)[1]
            if push is None or int(f.values.get("seq", 0)) != 0:
                continue
            first = seen[conn.process].get(push.body)
            other = model.conns.get(str(first.values.get("conn"))) if first is not None else None
            if first is not None and other is not None and other.id != conn.id:
                if (other.closed if other.closed is not None else last) > conn.dialed:
                    continue  # (both open at once)
                out.append(
                    Violation(
                        "at-most-once",
                        f"{conn.process} got push {push.body} on two connections",
                        [push.op, first, f],
                    )
                )
            seen[conn.process].setdefault(push.body, f)
    return out


def _refused(model: Model, delivered: dict[str, list[tuple[Conn, Op]]]) -> list[Violation]:
    out: list[Violation] = []
    for p in model.pushes:
        if p.op.outcome == FAIL and delivered.get(p.body):
            conn, f = delivered[p.body][0]
            out.append(
                Violation(
                    "refused-delivered",
                    f"push {p.body} was refused ({p.code}) yet reached {len(delivered[p.body])} client(s)",
                    [p.op, f],
                )
            )
    for msg_id, sends in model.chats.items():
        if sends and all(s.outcome == FAIL for s in sends) and delivered.get("C:" + msg_id):
            conn, f = delivered["C:" + msg_id][0]
            out.append(
                Violation(
                    "refused-delivered",
                    f"private message {msg_id} was refused every time it was sent, yet reached {conn.id}",
                    [*(s.op for s in sends[:3]), f],
                )
            )
    return out


def _live(model: Model) -> list[Violation]:
    out: list[Violation] = []
    several = len(model.meta.hosts) > 1
    kept = [c for c in model.conns.values() if c.why == "final" and c.authed is not None]
    got = {c.id: {str(f.values.get("body", "")) for f in c.frames} for c in kept}
    for p in model.pushes:
        if not p.ok or p.op.end is None:
            continue
        if several and not model.calm(p.op.time, p.op.end):
            continue
        for c in kept:
            if p.target == "mid" and c.ack:
                continue  # (the user's stream: see the reliable rules)
            if names(p, c) and c.continuous_over(p.op.time) and p.body not in got[c.id]:
                out.append(
                    Violation(
                        "live-delivery",
                        f"push {p.body} by {p.target} was answered ok but never reached {c.id}"
                        f" (authenticated {p.op.time - (c.authed or 0):.2f}s before it, never lost)",
                        [p.op, c.connect, *([c.close] if c.close is not None else [])],
                    )
                )
    return out
