"""How many messages one browser tab takes through mpim-client: ``python -m bench.js_tab``.

Starts ``mpim master`` on loopback ports and headless Chromium (Debian's, through the
DevTools protocol), and serves bench/js_tab.html, a page whose session (the SDK as built in
clients/js/dist, acks and all) only counts the messages it is handed and checks their order.
Two phases, each with ``--messages`` pushes by mid to the page's user:

- **replay**: the pushes are stored while the user is away; then the page connects and
  resumes from its device's cursor, so the whole backlog comes as a replay, paced by the
  server's window of ``[delivery] max_unacked`` unacked pushes and the page's acks;
- **live**: the page is connected and the pushes go out as fast as the HTTP API takes them
  (``POST /mpim/push``, ``--batch`` pushes a request, ``--inflight`` requests at a time).

The rate is the page's own: messages / (the last one's arrival - the first one's), by
``performance.now()`` in the page. The CPU is that of every Chromium process (browser,
renderer, network service). The live phase is bounded by what the server can push to one
user on this machine, which shares its two cores with the browser; the replay phase is
closer to the tab's own limit. Also printed: the SDK's bundle size, minified and gzipped.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import subprocess
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import uvloop

from bench.cdp import Browser, Page
from bench.procs import cpu_seconds, descendants
from bench.report import append_record, fmt, progress, table
from bench.servers import ROOT, MpimServer

JS = ROOT / "clients" / "js"
BUNDLE = JS / "dist" / "mpim-client.min.js"
SERVED = {"/bench/js_tab.html": "text/html", "/clients/js/dist/": "text/javascript"}
HEADING = "## mpim-client in a browser tab: bundle size and messages per second (issue 25)"
MID = 777


class Files(BaseHTTPRequestHandler):
    """GET of the bench page and the built SDK, nothing else."""

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        kind = next((t for prefix, t in SERVED.items() if path.startswith(prefix)), None)
        file = (ROOT / path.lstrip("/")).resolve()
        if kind is None or ROOT not in file.parents or not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if file.suffix == ".map" else kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


def build() -> None:
    """clients/js/dist, built by npm (npm ci first, when node_modules is missing)."""
    if not (JS / "node_modules").is_dir():
        raise SystemExit("clients/js has no node_modules: cd clients/js && npm ci")
    subprocess.run(["npm", "run", "build", "--silent"], cwd=JS, check=True)


def bundle_size() -> tuple[int, int]:
    data = BUNDLE.read_bytes()
    return len(data), len(gzip.compress(data, compresslevel=9))


async def post(port: int, target: str, body: bytes) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        data = await reader.read()
    finally:
        writer.close()
    return json.loads(data.partition(b"\r\n\r\n")[2])


async def push(port: int, count: int, batch: int, inflight: int, size: int) -> None:
    """``count`` pushes by mid to the page's user, ``batch`` to a request, ``inflight`` requests at once."""
    body = "x" * size
    starts = list(range(0, count, batch))
    gate = asyncio.Semaphore(inflight)

    async def one(start: int) -> None:
        n = min(batch, count - start)
        items = [{"kind": "mids", "op": 1000, "mids": [MID], "body": body} for _ in range(n)]
        async with gate:
            answer = await post(port, "/mpim/push", json.dumps(items).encode())
        if answer.get("code") != 0 or any(item.get("code") for item in answer["data"]):
            raise RuntimeError(f"a push was refused: {str(answer)[:300]}")

    await asyncio.gather(*(one(s) for s in starts))


def chromium_cpu(browser: Browser) -> float:
    total = 0.0
    for pid in descendants(browser.proc.pid):
        try:
            total += cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            continue
    return total


async def measure(page: Page, browser: Browser, count: int, what: str, timeout: float) -> list[object]:
    """Wait for the page to count ``count`` messages; the row for this phase."""
    cpu0 = chromium_cpu(browser)
    state = await page.wait_for(f"window.state.count >= {count} && window.state", timeout=timeout, what=what)
    cpu = chromium_cpu(browser) - cpu0
    if not state["inOrder"] or state["count"] != count:
        raise RuntimeError(f"{what}: {state['count']} messages, in order: {state['inOrder']}")
    seconds = (state["last"] - state["first"]) / 1000
    connections = await page.evaluate("window.session.connections")
    return [what, count, seconds, count / seconds, cpu, cpu / count * 1e6, connections]


async def run(args: argparse.Namespace) -> list[list[object]]:
    overrides: dict[str, dict[str, Any]] = {
        # the whole backlog is kept, and a resume that far back is replayed
        "inbox": {"max_count": args.messages * 2},
        "delivery": {"replay_max": args.messages * 2},
        "upstream": {"rate": 1000.0, "burst": 2000},
    }
    server = MpimServer(args.workers, overrides)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    browser: Browser | None = None
    try:
        await server.start()
        browser = await Browser.launch()
        page = await browser.new_page(f"http://127.0.0.1:{httpd.server_address[1]}/bench/js_tab.html")
        await page.wait_for("window.ready === true", what="the bench page")
        progress(f"storing {args.messages:,} pushes for user {MID} (away)")
        await push(server.http_port, args.messages, args.batch, args.inflight, args.size)
        token = {"mid": MID, "key": "bench-tab", "accepts": [1000]}
        url = f"ws://127.0.0.1:{server.ws_port}/sub"
        started = time.monotonic()
        options = {} if args.ack_delay_ms is None else {"ackDelayMs": args.ack_delay_ms}
        start = (
            f"window.start({json.dumps(url)}, {json.dumps(token)}, {args.messages}, {json.dumps(options)})"
        )
        await page.evaluate(start)
        rows = [await measure(page, browser, args.messages, "replay", args.timeout)]
        progress(
            f"replay: {fmt(rows[0][3])} messages/s ({time.monotonic() - started:.1f} s with the connect)"
        )
        await page.evaluate(f"window.expect({args.messages})")
        pushing = asyncio.create_task(
            push(server.http_port, args.messages, args.batch, args.inflight, args.size)
        )
        rows.append(await measure(page, browser, args.messages, "live", args.timeout))
        await pushing
        progress(f"live: {fmt(rows[1][3])} messages/s")
        return rows
    finally:
        if browser is not None:
            await browser.close()
        httpd.shutdown()
        await server.stop()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench.js_tab", description=__doc__)
    top.add_argument("--messages", type=int, default=20_000, help="pushes per phase")
    top.add_argument("--size", type=int, default=100, help="push body bytes")
    top.add_argument("--workers", type=int, default=1, help="[server] workers")
    top.add_argument("--batch", type=int, default=500, help="pushes per POST /mpim/push request")
    top.add_argument("--inflight", type=int, default=4, help="requests in flight at once")
    top.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may take")
    top.add_argument(
        "--ack-delay-ms", type=float, default=None, help="the session's ackDelayMs (SDK default)"
    )
    top.add_argument("--no-build", action="store_true", help="use clients/js/dist as it is")
    top.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not args.no_build:
        build()
    raw, gz = bundle_size()
    rows = uvloop.run(run(args))
    header = [
        "phase",
        "messages",
        "seconds",
        "messages / s",
        "Chromium CPU-s",
        "µs Chromium CPU / message",
        "connections so far",
    ]
    text = (
        f"Bundle (`clients/js/dist/mpim-client.min.js`, esbuild `--minify`, ES module): {raw:,} bytes, "
        f"{gz:,} gzipped (level 9).\n\n" + table(header, rows)
    )
    print(text)
    if args.record:
        append_record(
            HEADING,
            "bench.js_tab",
            f"One tab, one session (user {MID}), {args.messages:,} pushes by mid per phase, "
            f"{args.size}-byte bodies, {args.workers} worker(s), default `[delivery] max_unacked` (512); "
            "the handler only counts. Rate = messages / (last arrival - first arrival) in the page.",
            text,
        )


if __name__ == "__main__":
    main()
