"""Resumes and the devices' clients (README "Reliable delivery and chat": a resume is answered
by op 21; the SDK reconnects until closed).

Rules: ``resume-op21`` — a connection the server closed after its resume but before op 21,
with no fault window and no other connection of the key (a kick, a race) to explain it (the
backlog livelock of issue 21), or a device that did not get op 21 and catch up with its
stream once faults stopped; ``client-crash`` — the SDK's ``Session.run`` ended by itself.
"""

from __future__ import annotations

from collections import defaultdict

from bench.chaos.checker.base import Violation
from bench.chaos.checker.model import CLIENT, FINAL, Conn, Model
from bench.chaos.history import OK


def check(model: Model) -> list[Violation]:
    return _resumes(model)


def _resumes(model: Model) -> list[Violation]:
    out: list[Violation] = []
    by_key: dict[str, list[Conn]] = defaultdict(list)
    for c in model.conns.values():
        by_key[c.key].append(c)
    for c in model.conns.values():
        if not c.ack or c.authed is None or c.resumed or c.closed is None or c.why in (FINAL, CLIENT):
            continue
        if not model.calm(c.dialed, c.closed):
            continue
        kicked = any(  # another connection of the key while this one lived (a kick, a race)
            o.id != c.id and o.dialed <= c.closed and (o.closed is None or o.closed >= c.dialed)
            for o in by_key[c.key]
        )
        if kicked:
            continue
        out.append(
            Violation(
                "resume-op21",
                f"device {c.key}: the server closed connection {c.id} ({c.why}) {c.closed - c.authed:.1f}s"
                f" after its Auth reply without op 21, with no fault and no other connection of the key",
                [c.connect, *c.frames[-2:], *([c.close] if c.close is not None else [])],
            )
        )
    for o in model.ops:
        if o.kind == "crash":
            out.append(
                Violation(
                    "client-crash",
                    f"{o.process}: Session.run ended by itself ({o.values.get('error')}); it must reconnect"
                    " until close()",
                    [o],
                )
            )
    for o in model.finals:
        if o.outcome != OK:
            out.append(
                Violation(
                    "resume-op21",
                    f"device {o.values.get('device')}: once faults stopped it did not get op 21 and catch up"
                    f" within {o.values.get('waited', '?')}s ({o.values.get('state', '')})",
                    [o],
                )
            )
    return out
