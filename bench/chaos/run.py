"""One chaos run, start to end: servers, clients, load and nemesis for ``duration`` seconds,
then heal, settle, read, close, check, and write the outputs.

Phases (all in the history): start the servers and the goim and probe clients and wait until
the system serves; start the devices and the backend, and the nemesis on its schedule; at
``duration`` stop the nemesis, heal everything and wait until it serves again; stop the
pushes and messages; bring every device online until each has op 21 and its user's stream
top (the final reads); once no connection came or went for a while, read the online counts
of every host; read every reliable user's inbox; close every client; stop the servers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos import report
from bench.chaos.backend import Pushers
from bench.chaos.checker import check
from bench.chaos.checker.base import Report
from bench.chaos.ctx import Ctx
from bench.chaos.history import History
from bench.chaos.nemesis import Nemesis
from bench.chaos.topology import Topology, sections
from bench.chaos.workload import Workload

log = logging.getLogger("bench.chaos")

DEAD_GRACE = 5.0  # issue 22: a dead or cut-off host is dead to the others within the lease (<= 5 s)
KICK_GRACE = 2.0  # issue 22 asks one second; the rest is slack for a loaded 2-core machine


@dataclass
class Options:
    hosts: int
    duration: float
    seed: int
    nemesis: list[str]
    server_root: Path
    out: Path
    rate: float = 30.0
    upstream_ack: str = "only"
    known_pending: list[int] = field(default_factory=list)
    shards: int = 1  # [router] shards of each host


async def run(opts: Options) -> tuple[Report, str, Path]:
    opts.out.mkdir(parents=True, exist_ok=True)
    history = History(opts.out / "history.jsonl")
    topology = Topology(opts.server_root, opts.hosts, opts.upstream_ack, opts.seed, opts.shards)
    ctx = Ctx(history, topology.hosts, opts.seed, opts.upstream_ack)
    meta: dict[str, Any] = {}
    pushers: Pushers | None = None
    workload: Workload | None = None
    try:
        shards = f" with {opts.shards} router shards each" if opts.shards > 1 else ""
        _say(f"starting {opts.hosts} host(s){shards} from {opts.server_root} in {topology.tmp}")
        await topology.start()
        pushers = Pushers(ctx)
        workload = Workload(ctx, pushers)
        router = sections(opts.upstream_ack)["router"]
        meta = {
            "hosts": [h.label for h in topology.hosts],
            "shards": opts.shards,
            "seed": opts.seed,
            "duration": opts.duration,
            "nemesis": opts.nemesis,
            "rate": opts.rate,
            "upstream_ack": opts.upstream_ack,
            "server_root": str(opts.server_root),
            "online_interval": router["online_interval"],
            "report_interval": router["report_interval"],
            "dead_grace": DEAD_GRACE,
            "kick_grace": KICK_GRACE,
            "config": topology.hosts[0].sections,
            "config_dropped": topology.dropped,
            **workload.meta(),
        }
        history.record("harness", "meta", "ok", meta)
        workload.start_clients()
        ok, state = await workload.prober.healthy(60)
        if not ok:
            raise RuntimeError(f"the system did not serve after starting: {state}")
        nemesis = Nemesis(ctx, topology, workload.prober, opts.nemesis)
        start = history.now()
        workload.start_load(opts.rate)
        faults = asyncio.get_running_loop().create_task(nemesis.run(start + opts.duration))
        _say(f"workload and nemesis ({', '.join(opts.nemesis) or 'none'}) for {opts.duration:g}s")
        await asyncio.sleep(opts.duration)
        nemesis.stopped.set()
        await faults
        healed, state = await nemesis.heal_all()
        history.record("harness", "heal", "ok" if healed else "info", {"state": state})
        await workload.stop_load()
        _say(f"{nemesis.count} faults; healed: {healed} {state}; settling")
        await workload.settle(45)
        settle = 2 * router["online_interval"] + 2 * router["report_interval"] + 1.0
        await asyncio.sleep(settle + 0.6)
        await workload.read_counts()
        await asyncio.sleep(1.0)
        await workload.read_counts()
        await workload.read_inboxes()
        await workload.close()
    finally:
        if workload is not None:
            await workload.close(5)
        if pushers is not None:
            pushers.close()
        await topology.stop()
        history.close()
    _say("checking the history")
    result = check(history.ops, opts.known_pending)
    faults_n = sum(1 for o in history.ops if o.process == "nemesis")
    line = report.verdict(result, faults_n)
    report.write(opts.out, result, history.ops, meta, line)
    return result, line, topology.tmp


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)
