"""Private chat (README "Private chat", "Upstream acks"): every message id is answered with one
seq, stored once in each stream (the recipient's and the sender's) across restarts, and carries
its real sender.

Rules:

- ``chat-seq`` — sends of one id (a first send and its retries, in any connection, before
  and after restarts) answered ok with different seqs;
- ``chat-stored-once`` — one id at two seqs of one user's stream, as the devices and the
  final inbox read saw it;
- ``chat-sender`` — a delivered envelope whose ``from`` is not the sender's mid (the server
  stamps it; the workload's messages carry a forged ``from``), or whose ``to`` or ``body`` is
  not what was sent.
"""

from __future__ import annotations

import json
from collections import defaultdict

from bench.chaos.checker.base import Violation
from bench.chaos.checker.model import Model
from bench.chaos.checker.streams import Facts
from bench.chaos.history import OK

OBSERVED = ("recv", "inbox")  # what clients and the final read saw (not what the answers claim)


def check(model: Model, facts: Facts) -> list[Violation]:
    out: list[Violation] = []
    for msg_id, sends in model.chats.items():
        done = [s for s in sends if s.outcome == OK and s.seq is not None]
        seqs = sorted({s.seq for s in done if s.seq is not None})
        if len(seqs) > 1:
            out.append(
                Violation(
                    "chat-seq",
                    f"message {msg_id} from {sends[0].sender} answered with {len(seqs)} seqs {seqs}",
                    [s.op for s in done][:6],
                )
            )
        item = "C:" + msg_id
        for mid in {sends[0].sender, sends[0].to}:
            where: dict[str, set[int]] = defaultdict(set)
            ops = []
            for (epoch, seq), op in sorted(facts.seqs_of(mid, item).items()):
                if op.kind in OBSERVED:
                    where[epoch].add(seq)
                    ops.append(op)
            for epoch, at in where.items():
                if len(at) > 1:
                    out.append(
                        Violation(
                            "chat-stored-once",
                            f"message {msg_id} from {sends[0].sender} is stored {len(at)} times in the stream"
                            f" of mid {mid} (epoch {epoch}, seqs {sorted(at)})",
                            [*(s.op for s in done[:2]), *ops[:4]],
                        )
                    )
    for conn in model.conns.values():
        for f in conn.frames:
            what, _, env = model.item_of(f)
            if what != "chat" or env is None:
                continue
            first = model.chats[str(env["id"])][0]
            sent_body = first.op.values.get("body")
            if env.get("from") != first.sender or env.get("to") != first.to or env.get("body") != sent_body:
                out.append(
                    Violation(
                        "chat-sender",
                        f"{conn.id} got message {env['id']} as from {env.get('from')} to {env.get('to')}"
                        f" body {json.dumps(env.get('body'))}; it was sent by {first.sender} to {first.to}"
                        f" with body {json.dumps(sent_body)}",
                        [first.op, f],
                    )
                )
    return out
