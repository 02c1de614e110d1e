"""Private chat, client -> server -> client: N ack clients send each other messages at a total rate.

Every user (mid 1..N, half over TCP and half over WebSocket by default) is an
ack client (caps ack, resume after auth, one cumulative ack per read); with
``--transport gozero`` every user is a go-zero client instead
(:mod:`bench.gzclients`: JSON frames on ``[gozero] path``, ``conversation.chat``,
acks of pushes by ``ackSeq``), for the same figures over the go-zero endpoint. The load
generators send op 4 ``{"id", "to", "op": 1000, "body": [n, sent]}`` from random
users to random other users (``--contacts K``: each user writes to K fixed
others, so the order per sender -> recipient pair is checked on several
messages; 0 = anyone) at the total ``--rates``. The server stores each message
in the recipient's and the sender's inbox and pushes it to both: two
deliveries per message, both counted. With ``[upstream] ack = "only"`` (the
default here, ``--upstream-ack``) the sender gets op 5 after the store; its
latency from the send is the *ack* column.

Prints messages/s, deliveries/s, deliveries per server CPU-second, latency
send -> recipient's receive (p50/p99/max) and send -> the sender's own copy
(p99), the ack latency, and lost (accepted messages whose copy never came),
dup, reorder (per pair, and of the sender's own copies), gaps in the users'
stream seqs and refused messages.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bench import schedwait
from bench.ackclients import merge_named_hist
from bench.fleet import Fleet
from bench.report import append, progress, table
from bench.scenarios.common import (
    Meter,
    Usage,
    check_capacity,
    fleet_for,
    make_mpim,
    mpim_overrides,
    rates_list,
    report_progress,
    running,
    wait_router_sessions,
)
from bench.scenarios.push import profiled, quotient, rates_of, rates_text
from bench.servers import MpimServer
from bench.tally import hist_max, merge_counts, merge_hist, percentile

GOZERO_PATH = "/ws"  # [gozero] path of the server (--transport gozero)

HEADER = (
    "workers", "transport", "users", "messages/s", "deliveries/s", "server CPU %",
    "deliveries / server CPU-s", "router µs / message", "p50 ms", "p99 ms", "max ms", "own copy p99 ms",
    "ack p50 ms", "ack p99 ms", "ack max ms", "lost", "dup", "reorder", "seq gaps", "refused",
    "generators CPU %", "server run-queue wait %",
)  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conns", type=int, default=2000, help="users, one ack connection each")
    p.add_argument("--rate", type=float, default=200, help="messages per second, all users together")
    p.add_argument("--rates", type=rates_list, default=[], help="several rates, comma-separated (200,1000)")
    p.add_argument("--duration", type=float, default=10, help="seconds of sending measured (each rate)")
    p.add_argument(
        "--transport",
        choices=["mixed", "tcp", "ws", "gozero"],
        default="mixed",
        help="mixed: half TCP, half WebSocket (goim ack clients); gozero: go-zero clients on [gozero] path",
    )
    p.add_argument("--contacts", type=int, default=4, help="others each user writes to (0 = anyone)")
    p.add_argument(
        "--upstream-ack",
        choices=["only", "none"],
        default="only",
        help='[upstream] ack: "only" = op 5 after the store, "none" = goim\'s echo at once',
    )


@dataclass
class ChatResult:
    rate: float
    seconds: float
    sent: int
    acked: int
    refused: int
    first_refusal: str
    received: int  # both copies
    own: int  # the senders' own copies
    pair_checked: int  # recipient copies that followed an earlier message of their pair
    expected: int
    lost: int
    dup: int
    reorder: int
    seq_gaps: int
    closed: int
    acks: int  # op 18 frames
    p50: float
    p99: float
    max: float
    own_p99: float
    ack_p50: float
    ack_p99: float
    ack_max: float
    usage: Usage
    profile: str = ""
    reports: list[dict[str, Any]] = field(default_factory=list)
    run_queue: float = float("nan")  # seconds the server processes waited for a CPU

    @property
    def per_second(self) -> float:
        return self.received / self.seconds

    @property
    def per_cpu(self) -> float:
        return quotient(self.received, self.usage.cpu)


def summarize(
    reports: list[dict[str, Any]], sent: int, seconds: float, usage: Usage, profile: str = ""
) -> ChatResult:
    """The phase's figures from the generators' reports.

    Every accepted message (acked with code 0, or echoed) owes two deliveries:
    the recipient's copy and the sender's own. Copies that came twice under one
    stream seq were dropped by the client (``dup``); copies of one message under
    two seqs are counted in ``recv`` and in ``dup``; so the distinct copies are
    ``recv - (dup - dropped)`` and ``lost`` is what of the owed copies is missing.
    """
    acked = merge_counts(reports, "chat_acked")
    received = merge_counts(reports, "recv")
    dup = merge_counts(reports, "dup")
    dropped = merge_counts(reports, "seq_dups")
    distinct = received - (dup - dropped)
    expected = 2 * acked
    hist = merge_hist(reports)
    acks = merge_named_hist(reports, "ack_hist")
    own = merge_named_hist(reports, "own_hist")
    return ChatResult(
        rate=sent / seconds if seconds else float("nan"),
        seconds=seconds,
        sent=sent,
        acked=acked,
        refused=merge_counts(reports, "chat_refused"),
        first_refusal=next((str(r["first_refusal"]) for r in reports if r.get("first_refusal")), ""),
        received=received,
        own=merge_counts(reports, "own_recv"),
        pair_checked=merge_counts(reports, "pair_checked"),
        expected=expected,
        lost=max(0, expected - distinct),
        dup=dup,
        reorder=merge_counts(reports, "reorder"),
        seq_gaps=merge_counts(reports, "seq_gaps"),
        closed=merge_counts(reports, "closed"),
        acks=merge_counts(reports, "acks"),
        p50=percentile(hist, 0.50),
        p99=percentile(hist, 0.99),
        max=hist_max(hist),
        own_p99=percentile(own, 0.99),
        ack_p50=percentile(acks, 0.50),
        ack_p99=percentile(acks, 0.99),
        ack_max=hist_max(acks),
        usage=usage,
        profile=profile,
        reports=reports,
    )


def cpu_split(usage: Usage) -> str:
    return ", ".join(
        f"{name} {cpu:.2f}s ({100 * system / cpu:.0f}% system)"
        for name, cpu, system, _ in usage.rows
        if cpu > 0.005
    )


def row(workers: int, transport: str, users: int, r: ChatResult) -> tuple[Any, ...]:
    ms = 1000.0
    return (
        workers, transport, users, r.rate, r.per_second, 100 * r.usage.cpu / r.seconds, r.per_cpu,
        quotient(1e6 * r.usage.cpu_of("router"), r.sent), ms * r.p50, ms * r.p99, ms * r.max,
        ms * r.own_p99, ms * r.ack_p50, ms * r.ack_p99, ms * r.ack_max, r.lost, r.dup, r.reorder,
        r.seq_gaps, r.refused, 100 * r.usage.client_cpu / r.seconds, 100 * r.run_queue / r.seconds,
    )  # fmt: skip


async def send_phase(fleet: Fleet, rate: float, seconds: float, users: int, contacts: int, seed: int) -> int:
    """Every generator sends its share of ``rate`` for ``seconds``; returns the messages sent."""
    share = rate / len(fleet.gens)
    msg = {"cmd": "chat", "rate": share, "duration": seconds, "users": users, "contacts": contacts}
    await asyncio.gather(*(gen.call({**msg, "seed": seed * 1000 + i}) for i, gen in enumerate(fleet.gens)))
    await asyncio.sleep(seconds)
    done = await fleet.all({"cmd": "chat_wait"})
    return sum(int(d["sent"]) for d in done)


async def settle(fleet: Fleet, timeout: float = 15.0, still: float = 1.5) -> dict[str, int]:
    """Until every message sent was answered and its two copies arrived, or nothing moved for ``still`` s."""
    deadline = time.monotonic() + timeout
    last: tuple[int, int] = (-1, -1)
    last_change = time.monotonic()
    totals: dict[str, int] = {}
    while time.monotonic() < deadline:
        stats = await fleet.all({"cmd": "stats"})
        totals = {k: merge_counts(stats, k) for k in ("chat_sent", "chat_acked", "chat_refused", "recv")}
        answered = totals["chat_acked"] + totals["chat_refused"]
        if answered >= totals["chat_sent"] and totals["recv"] >= 2 * totals["chat_acked"]:
            return totals
        now = (answered, totals["recv"])
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= still:
            break
        await asyncio.sleep(0.1)
    return totals


async def case(args: Any, workers: int) -> list[ChatResult]:
    """Start mpim, connect the users, run every rate; a result per rate."""
    conns = args.conns
    if conns < 2:
        raise ValueError("chat needs at least 2 users")
    sections = mpim_overrides(args)
    sections["upstream"] = {"ack": args.upstream_ack}
    if args.transport == "gozero":
        sections["gozero"] = {"path": GOZERO_PATH}
    server = make_mpim(args, workers, sections)
    check_capacity(server, conns)
    if args.transport == "mixed":
        kinds = [("tcp", conns // 2), ("ws", conns - conns // 2)]
    else:
        kinds = [(args.transport, conns)]
    rates = rates_of(args)
    spied = args.profile
    results: list[ChatResult] = []
    async with running(server), fleet_for(conns, args.deadline, minimum=2) as fleet:
        assert isinstance(server, MpimServer) and server.group is not None
        first = 0
        started = time.monotonic()
        for kind, count in kinds:
            port = server.tcp_port if kind == "tcp" else server.ws_port
            path = GOZERO_PATH if kind == "gozero" else "/sub"
            spec = {"kind": kind, "port": port, "path": path, "rooms": 0, "mode": "mid", "group": 1,
                    "ack": True, "chat": True, "noack": args.upstream_ack == "none"}  # fmt: skip
            replies = await fleet.connect(spec, count, first)
            failed = sum(int(r["failed"]) for r in replies)
            if failed:
                raise RuntimeError(f"{failed} {kind} connections failed:\n{server.log_tail()}")
            first += count
        progress(f"  {conns:,} ack clients ({', '.join(f'{n} {k}' for k, n in kinds)}) resumed in "
                 f"{time.monotonic() - started:.1f}s")  # fmt: skip
        await wait_router_sessions(server.http_port, conns)
        meter = Meter(server.group, server.worker_pids(), fleet.pids)
        for phase, rate in enumerate(rates):
            if len(rates) > 1:
                progress(f"  {rate:g} messages/s")
            if args.warm_seconds > 0:
                await send_phase(fleet, rate, args.warm_seconds, conns, args.contacts, 2 * phase + 1)
                await settle(fleet)
            await fleet.all({"cmd": "reset"})
            meter.start()
            queued = schedwait.sample(meter.group.names)
            ticker = asyncio.create_task(report_progress(fleet, meter, args.duration))
            spy = asyncio.create_task(profiled(meter, spied, args.duration, args.native)) if spied else None
            try:
                sent = await send_phase(fleet, rate, args.duration, conns, args.contacts, 2 * phase + 2)
                seconds = meter.now()[0]
                await settle(fleet)
            finally:
                ticker.cancel()
            usage = meter.stop()
            run_queue = schedwait.waited(queued, schedwait.sample(meter.group.names))
            profile_text = await spy if spy is not None else ""
            reports = await fleet.all({"cmd": "finish"})
            result = summarize(reports, sent, seconds, usage, profile_text)
            result.run_queue = run_queue
            if result.refused:
                progress(f"  warning: {result.refused} messages refused, first: {result.first_refusal}")
            if result.closed:
                progress(f"  warning: {result.closed} client connections were closed during the run")
            results.append(result)
    return results


async def run(args: Any) -> str:
    rows: list[tuple[Any, ...]] = []
    splits: list[str] = []
    checks: list[str] = []
    profiles: list[tuple[str, str]] = []
    transport = "tcp+ws" if args.transport == "mixed" else args.transport
    rates = rates_of(args)
    for workers in args.workers:
        progress(
            f"chat: {workers} worker(s), {args.conns:,} users ({transport}), {rates_text(args)} messages/s, "
            f"[upstream] ack = {args.upstream_ack}"
        )
        results = await case(args, workers)
        for rate, result in zip(rates, results, strict=True):
            rows.append(row(workers, transport, args.conns, result))
            label = f"{workers}w" + (f" {rate:g}/s" if len(rates) > 1 else "")
            splits.append(f"{label}: {cpu_split(result.usage)}")
            checks.append(f"{label} {result.pair_checked:,} of {result.received - result.own:,}")
            if result.profile:
                profiles.append((label, result.profile))
    text = table(HEADER, rows)
    text += "\n\nServer CPU seconds per process during the measured phase:\n\n"
    text += "\n".join(f"- {s}" for s in splits)
    text += "".join(f"\n\n{label}: {profile}" for label, profile in profiles)
    text += (
        "\n\nRecipient copies that followed an earlier message of the same sender -> recipient pair "
        f"(where the pair order was checked): {'; '.join(checks)}. Every sender's own copies are checked "
        "against its sending order."
    )
    return text + (
        f'\n\n`[upstream] ack = "{args.upstream_ack}"`; each user writes to '
        + (f"{args.contacts} fixed contacts" if args.contacts > 0 else "anyone")
        + f"; {args.duration:g} s measured after a {args.warm_seconds:g} s warm-up, each rate on the same "
        "connections. Deliveries count both copies of a message (the recipient's and the sender's own); "
        "p50/p99/max: send -> the recipient's receive; own copy: send -> the sender's receive; ack: send "
        "-> op 5 (or the echo; go-zero: the ack frame). Lost: copies of accepted messages that never came; "
        "reorder: per sender -> "
        "recipient pair and of the sender's own copies; seq gaps: stream seqs skipped in the users' headers. "
        "Server run-queue wait: the time the server processes were runnable but waited for a CPU "
        "(`/proc/<pid>/schedstat`), in % of the measured time summed over the processes: on this shared "
        "VM, latency is the scheduler's when it is high."
    )


def record(args: Any, text: str) -> None:
    who = "go-zero users" if args.transport == "gozero" else "users"
    append(
        f"Private chat: {args.conns:,} {who}, {rates_text(args)} messages/s, ack {args.upstream_ack}", text
    )
