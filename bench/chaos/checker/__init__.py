"""The checker: judges a whole chaos history against mpim's contract (pure: no I/O, no clocks).

:func:`check` builds the model (:mod:`.model`) and runs every rule module: the reliable
streams (:mod:`.streams`), resumes (:mod:`.resume`), seq-0 pushes (:mod:`.live`), room order
(:mod:`.order`),
private chat (:mod:`.chat`), connections, counts and hosts (:mod:`.hosts`). Each rule is
documented in its module; the README's "Proving it" lists them.
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.chaos.checker import chat, hosts, live, order, resume, streams
from bench.chaos.checker.base import Report, Violation
from bench.chaos.checker.model import Model, build
from bench.chaos.history import Op

RULES = (
    "reliable-lost",
    "reliable-order",
    "reliable-mismatch",
    "resume-op21",
    "client-crash",
    "unexpected",
    "refused-delivered",
    "at-most-once",
    "goim-seq",
    "live-delivery",
    "room-order",
    "chat-seq",
    "chat-stored-once",
    "chat-sender",
    "overcount",
    "dead-host",
    "counts-converge",
    "one-key",
    "recovery",
    "host-restart",
)
PENDING_FLAGS = {"issue-22": 22}  # --known-pending names -> issue numbers


def check(ops: list[Op], known_pending: Iterable[int] = ()) -> Report:
    model = build(ops)
    facts = streams.Facts()
    violations: list[Violation] = []
    violations += streams.check(model, facts)
    violations += resume.check(model)
    violations += live.check(model)
    violations += order.check(model)
    violations += chat.check(model, facts)
    violations += hosts.check(model)
    return Report(violations, frozenset(known_pending), stats(model))


def stats(model: Model) -> dict[str, int]:
    pushes = model.pushes
    return {
        "operations": len(model.ops),
        "pushes": len(pushes),
        "pushes ok": sum(1 for p in pushes if p.ok),
        "pushes info": sum(1 for p in pushes if p.op.outcome == "info"),
        "pushes refused": sum(1 for p in pushes if p.op.outcome == "fail"),
        "chat messages": len(model.chats),
        "chat sends": sum(len(s) for s in model.chats.values()),
        "connections": len(model.conns),
        "deliveries": sum(len(c.frames) for c in model.conns.values()),
        "resumes answered": sum(len(c.resumed) for c in model.conns.values()),
        "not recovered": sum(
            1 for c in model.conns.values() for r in c.resumed if not r.values.get("recovered", True)
        ),
        "faults": len(model.faults),
    }


__all__ = ["PENDING_FLAGS", "RULES", "Report", "Violation", "check"]
