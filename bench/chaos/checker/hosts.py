"""What an answer says about connections, counts and hosts (README "Pushing messages", "Several
hosts"; ARCHITECTURE "Several hosts": a host whose lease lapsed is dead to the others at once).

Rules:

- ``overcount`` — a push by key or mid answered ``connections: n`` while fewer of the
  connections it named could have been open (a connection counts from its dial until
  ``dead_grace`` after its client saw it close);
- ``dead-host`` [issue 22] — the same (with several hosts), where the excess are connections
  of another host that was cut off (from Redis, or Redis itself down) for at least
  ``dead_grace`` during the whole push, or that left while their host could not tell the
  others (its master or router killed or stopped, or it was cut off) and are still counted
  ``dead_grace`` later: "nothing answered delivered went to a host that was dead" (a host
  whose lease lapsed is dead to the others at once);
- ``counts-converge`` [issue 22 with several hosts] — once no connection came or went for
  two ``online_interval`` (plus two reports and a second), ``/goim/online/total`` and
  ``/goim/online/room`` on every host equal the connections the clients hold;
- ``one-key`` [issue 22 across hosts] — two connections of one key both alive for more
  than ``kick_grace`` outside fault windows ("a key that connects again kicks the older");
- ``recovery`` — a fault after which the system did not serve again within the harness's
  wait; ``host-restart`` [issue 22] — a host (or its router) killed with kill -9 was
  refused a restart because "another live host" had its name: its own dead incarnation.
"""

from __future__ import annotations

import math
from collections import defaultdict

from bench.chaos.checker.base import Violation
from bench.chaos.checker.model import Conn, Model, Push
from bench.chaos.history import FAIL, OK

ISSUE_22 = 22
CUT_OFF = ("partition-redis",)  # one host cut from Redis (fault.host)
REDIS_DOWN = ("kill-redis", "pause-redis")  # every host cut from the others
# a host that cannot tell the cluster its connections left: its router (its membership) down or cut off
SILENT = ("kill-master", "term", "kill-router", "pause-router", "pause-master", *CUT_OFF)


def check(model: Model) -> list[Violation]:
    return [*_counted(model), *_counts(model), *_one_key(model), *_recovery(model)]


def _end(c: Conn, last: float) -> float:
    """Until when the server may have held ``c``: a refused dial never, an Auth that got no
    answer until its client gave up."""
    if c.connect.outcome == FAIL:
        return -math.inf
    if c.connect.outcome != OK:
        return float(c.connect.values.get("gave_up", c.connect.time))
    return c.closed if c.closed is not None else last


def _targets(model: Model, p: Push) -> list[Conn]:
    if p.target == "mid":
        return [c for mid in dict.fromkeys(p.mids) for c in model.by_mid(mid)]
    return [c for key in dict.fromkeys(p.keys) for c in model.by_key(key)]


def _unreachable(model: Model, c: Conn, p: Push, grace: float) -> bool:
    """``c`` (alive on its client's side) was cut off from the push's host for the whole push."""
    if c.host == p.host or p.op.end is None:
        return False
    for f in model.faults:
        cuts = f.name in REDIS_DOWN or (f.name in CUT_OFF and f.host in (c.host, p.host))
        if cuts and f.applied + grace <= p.op.time and p.op.end <= f.healed:
            return True
    return False


def _silenced(model: Model, c: Conn, p: Push, last: float) -> bool:
    """``c`` left while its host could not tell the others (its router or master down, the host
    or Redis cut off) and the push came through another host: the others counted a dead host's
    entry, which leases (issue 22) end within the grace."""
    if c.host == p.host or c.dialed > p.op.time:
        return False
    gone = _end(c, last)
    return any(
        (f.name in REDIS_DOWN or (f.name in SILENT and f.host == c.host)) and f.overlaps(gone, p.op.time)
        for f in model.faults
    )


def _counted(model: Model) -> list[Violation]:
    out: list[Violation] = []
    grace = model.meta.dead_grace
    last = max((o.end or o.time for o in model.ops), default=0.0)
    several = len(model.meta.hosts) > 1
    for p in model.pushes:
        if not p.ok or p.target not in ("mid", "key") or not p.connections or p.op.end is None:
            continue
        alive = [
            c
            for c in _targets(model, p)
            if c.dialed <= p.op.end and _end(c, last) + grace >= p.op.time  # (may still be counted)
        ]
        reach = [c for c in alive if not (several and _unreachable(model, c, p, grace))]
        if p.connections <= len(reach):
            continue
        stale = [c for c in _targets(model, p) if c not in alive and _silenced(model, c, p, last)]
        if p.connections <= len(alive) or (several and stale):
            rule, issue, why = "dead-host", ISSUE_22, "the others were on a host that was dead or cut off"
        else:
            rule, issue, why = "overcount", None, "no other connection of them was open"
        latest: dict[str, Conn] = {}  # each named key's last connection authenticated before the push
        for c in sorted(_targets(model, p), key=lambda c: c.connect.index):
            if c.authed is not None and c.authed <= p.op.end:
                latest[c.key] = c
        shown = list(latest.values())[-3:]
        out.append(
            Violation(
                rule,
                f"push {p.body} by {p.target} via host {p.host} answered {p.connections} connection(s)"
                " delivered;"
                f" {len(reach)} could be reached ({len(alive)} open within {grace:g}s); {why}",
                [p.op, *(c.connect for c in shown), *(c.close for c in shown if c.close is not None)],
                issue,
            )
        )
    return out


def _counts(model: Model) -> list[Violation]:
    out: list[Violation] = []
    meta = model.meta
    window = 2 * meta.online_interval + 2 * meta.report_interval + 1.0
    changes = sorted(
        t
        for c in model.conns.values()
        for t in (c.dialed, c.authed, c.closed, c.connect.end)
        if t is not None and not math.isinf(t)
    )
    issue = ISSUE_22 if len(meta.hosts) > 1 else None
    for o in model.counts:
        if o.outcome != OK:
            continue
        before = [t for t in changes if t <= (o.end or o.time)]
        if before and before[-1] > o.time - window:
            continue  # not settled yet: not judged
        at = o.time
        open_now = [c for c in model.conns.values() if c.open_at(at)]
        want_total = len(open_now)
        rooms: dict[str, int] = defaultdict(int)
        for c in open_now:
            if c.room:
                rooms[c.room] += 1
        got_total = o.values.get("total")
        got_rooms = {str(k): int(n) for k, n in (o.values.get("rooms") or {}).items()}
        want_rooms = {room: rooms.get(room, 0) for room in got_rooms}
        if got_total != want_total or got_rooms != want_rooms:
            out.append(
                Violation(
                    "counts-converge",
                    f"host {o.values.get('host')} counts {got_total} connections, rooms {got_rooms};"
                    f" the clients hold {want_total}, rooms {want_rooms}, unchanged for"
                    f" {at - (before[-1] if before else 0):.1f}s (window {window:g}s)",
                    [o],
                    issue,
                )
            )
    return out


def _one_key(model: Model) -> list[Violation]:
    out: list[Violation] = []
    last = max((o.end or o.time for o in model.ops), default=0.0)
    by_key: dict[str, list[Conn]] = defaultdict(list)
    for c in model.conns.values():
        if c.authed is not None:
            by_key[c.key].append(c)
    for key, conns in by_key.items():
        conns.sort(key=lambda c: c.authed or 0.0)
        for i, a in enumerate(conns):
            for b in conns[i + 1 :]:
                assert a.authed is not None and b.authed is not None
                lo, hi = b.authed, min(_end(a, last), _end(b, last))
                if hi - lo > model.meta.kick_grace and model.calm(lo, hi):
                    out.append(
                        Violation(
                            "one-key",
                            f"key {key}: connections {a.id} (host {a.host}) and {b.id} (host {b.host})"
                            f" were both open for {hi - lo:.1f}s after the second one's Auth reply",
                            [a.connect, b.connect, *(x.close for x in (a, b) if x.close is not None)],
                            ISSUE_22 if a.host != b.host else None,
                        )
                    )
    return out


def _recovery(model: Model) -> list[Violation]:
    out: list[Violation] = []
    for f in model.faults:
        refused = f.op.values.get("refused")
        refused = refused if isinstance(refused, list) else []
        if refused:
            out.append(
                Violation(
                    "host-restart",
                    f"after {f.name} on host {f.host} (the killed processes gone), starts were refused"
                    f" because a live host held the name: {'; '.join(str(r) for r in refused[:2])}",
                    [f.op],
                    ISSUE_22,
                )
            )
        if f.op.outcome != OK:
            out.append(
                Violation(
                    "recovery",
                    f"after {f.name} on host {f.host or '-'} the system did not serve again within"
                    f" {f.op.values.get('waited', '?')}s: {f.op.values.get('state', '')}",
                    [f.op],
                    ISSUE_22 if refused else None,
                )
            )
    return out
