"""HTTP push ingress throughput: wrk against the router of a real ``mpim master``.

    python bench/http_push.py [--seconds 10] [--connections 64] [--threads 1] [--kind room|room-member|keys]

Starts ``mpim master`` (2 workers, log level warning) on free loopback ports and
runs wrk with goim's room push (``bench/wrk_push_room.lua``: ``POST
/goim/push/room?operation=1000&type=test&room=1`` with ``{"test":1}``):

- ``room``: nobody is in the room, so this is the ingress alone (parse, answer,
  publish; ZeroMQ drops the message at the router as no worker subscribed);
- ``room-member``: one TCP client is in ``test://1``, so every push also crosses
  the bus and is written to it;
- ``keys``: push to the key of one connected TCP client (resolved in the tables).

Prints wrk's output and a JSON line with req/s, the router process's CPU
seconds and requests per router CPU-second. wrk and the client share the two
cores with the server, so req/s is a floor for the router.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import free_port  # noqa: E402
from mpim.client import connect_tcp  # noqa: E402
from tests.support import wait_port, write_config  # noqa: E402

KEYS_LUA = """wrk.method = "POST"
wrk.path = "/goim/push/keys?operation=1000&keys=bench-key"
wrk.body = '{"test":1}'
wrk.headers["Content-Type"] = "application/json"
"""


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def router_pid(master: int) -> int:
    for child in psutil.Process(master).children():
        if "router" in " ".join(child.cmdline()):
            return int(child.pid)
    raise RuntimeError("no router process under the master")


async def hold_client(port: int, room: str, ready: asyncio.Event, stop: asyncio.Event) -> int:
    client = await connect_tcp("127.0.0.1", port)
    await client.auth({"mid": 1, "key": "bench-key", "room_id": room, "accepts": [1000]})
    ready.set()
    got = 0
    while not stop.is_set():
        try:
            await client.recv(0.2)
            got += 1
        except TimeoutError:
            continue
    await client.close()
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kind", choices=("room", "room-member", "keys"), default="room")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="mpim-bench-"))
    tcp, ws, http = free_port(), free_port(), free_port()
    cfg = write_config(
        tmp / "c.toml",
        {
            "server": {"workers": 2},
            "tcp": {"bind": [f"127.0.0.1:{tcp}"]},
            "websocket": {"bind": [f"127.0.0.1:{ws}"]},
            "http": {"bind": f"127.0.0.1:{http}"},
            "ingress": {"zmq_bind": f"tcp://127.0.0.1:{free_port()}"},
            "log": {"level": "warning"},
        },
    )
    script = ROOT / "bench" / "wrk_push_room.lua"
    if args.kind == "keys":
        script = tmp / "keys.lua"
        script.write_text(KEYS_LUA)
    with open(tmp / "master.log", "wb") as log:
        master = subprocess.Popen(
            [sys.executable, "-m", "mpim", "master", "-c", str(cfg)], stdout=log, stderr=log
        )
    try:
        wait_port(http, 30, master)
        wait_port(tcp, 30, master)
        time.sleep(1.0)
        router = router_pid(master.pid)

        async def run() -> tuple[str, float, int]:
            ready, stop = asyncio.Event(), asyncio.Event()
            room = "test://1" if args.kind == "room-member" else ""
            holder = None
            if args.kind != "room":
                holder = asyncio.create_task(hold_client(tcp, room, ready, stop))
            if holder is not None:
                await ready.wait()
                await asyncio.sleep(1.0)  # the router learns the key
            cpu0 = cpu_seconds(router)
            wrk = await asyncio.create_subprocess_exec(
                "wrk",
                f"-t{args.threads}",
                f"-c{args.connections}",
                f"-d{args.seconds}s",
                "-s",
                str(script),
                f"http://127.0.0.1:{http}",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await wrk.communicate()
            cpu = cpu_seconds(router) - cpu0
            stop.set()
            got = await holder if holder is not None else 0
            return out.decode(), cpu, got

        out, cpu, got = asyncio.run(run())
        print(out)
        match = re.search(r"^\s*(\d+) requests in", out, re.M)
        rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
        total = int(match.group(1)) if match else 0
        print(
            json.dumps(
                {
                    "kind": args.kind,
                    "requests": total,
                    "req_per_s": float(rps.group(1)) if rps else 0.0,
                    "router_cpu_s": round(cpu, 2),
                    "req_per_router_cpu_s": round(total / cpu) if cpu else 0,
                    "pushes_received": got,
                }
            )
        )
        return 0
    finally:
        os.kill(master.pid, signal.SIGTERM)
        master.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
