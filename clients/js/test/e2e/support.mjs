// What the end-to-end tests share: the master under test (its ports come in the environment,
// set by tests/clients/test_js.py, which starts it), a static server for the pages, headless
// Chromium through playwright-core (the system's browser, never a downloaded one), pushes
// through the HTTP API, and the pids to kill.

import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: these tests run under pytest (tests/clients/test_js.py)`);
  return value;
}

export const WS_URL = () => env("MPIM_WS_URL"); // ws://127.0.0.1:<port>/sub
export const HTTP = () => env("MPIM_HTTP"); // http://127.0.0.1:<port>
export const MASTER_PID = () => Number(env("MPIM_MASTER_PID"));

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `check` until it returns something truthy. */
export async function until(check, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

// -- the pages ----------------------------------------------------------------------------------
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".map": "application/json" };
const SERVED = ["/clients/js/dist/", "/clients/js/test/e2e/", "/examples/web/"];

/** The repository's pages and the built SDK over HTTP on 127.0.0.1 (GET only, those folders only). */
export async function staticServer() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    let name = decodeURIComponent(url.pathname);
    if (name.endsWith("/")) name += "index.html";
    const file = path.join(ROOT, path.normalize(name));
    if (req.method !== "GET" || !SERVED.some((dir) => name.startsWith(dir)) || !file.startsWith(ROOT)) {
      res.writeHead(404).end();
      return;
    }
    fs.readFile(file, (error, data) => {
      if (error) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" }).end(data);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  return { base, close: () => new Promise((resolve) => server.close(resolve)) };
}

const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

/** Debian's chromium, headless, in a fresh profile (a browser context: one profile, many pages). */
export async function launch() {
  const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
  if (!fs.existsSync(executablePath)) {
    throw new Error(`no browser at ${executablePath}: apt-get install -y chromium (run-tests.sh does)`);
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "mpim-client-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: FLAGS,
  });
  return {
    context,
    async close() {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * A page of the harness (window.openSession), whose messages are reported to `record(name,
 * {seq, op, body})` in this process before they are acked. Errors in the page fail the test.
 */
export async function harness(context, base, record = () => {}) {
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(String(error)));
  await page.exposeFunction("record", record);
  await page.goto(`${base}/clients/js/test/e2e/harness.html`);
  await page.waitForFunction(() => window.mpim !== undefined);
  page.problems = problems;
  return page;
}

// -- the server ---------------------------------------------------------------------------------
export async function api(method, target, body) {
  const response = await fetch(`${HTTP()}${target}`, { method, body });
  const answer = await response.json();
  return answer;
}

/** Push by mid; returns the seq the user's stream gave it. */
export async function pushMid(mid, body, op = 1000) {
  const answer = await api("POST", `/goim/push/mids?operation=${op}&mids=${mid}`, body);
  assert.equal(answer.code, 0, JSON.stringify(answer));
  return answer.data.seqs[String(mid)];
}

/** Many pushes by mid in one request (POST /mpim/push); returns their seqs in order. */
export async function pushMany(mid, bodies, op = 1000) {
  const items = bodies.map((body) => ({ kind: "mids", op, mids: [mid], body }));
  const answer = await api("POST", "/mpim/push", JSON.stringify(items));
  assert.equal(answer.code, 0, JSON.stringify(answer));
  return answer.data.map((item) => {
    assert.equal(item.code, 0, JSON.stringify(item));
    return item.data.seqs[String(mid)];
  });
}

/**
 * Push by mid as fast as `ratePerSec` until `stop.done`; `accepted` gets seq -> body of each push
 * the API accepted (refusals and failures while a process is down are expected).
 */
export async function pushSteadily(mid, stop, accepted, ratePerSec = 100) {
  let n = 0;
  while (!stop.done) {
    const body = `p-${n++}`;
    try {
      const answer = await api("POST", `/goim/push/mids?operation=1000&mids=${mid}`, body);
      if (answer.code === 0) accepted.set(answer.data.seqs[String(mid)], body);
    } catch {
      // the router is down: this push was not accepted
    }
    await sleep(1000 / ratePerSec);
  }
  return n;
}

/** The pid of the master's child whose title starts with `title` ("mpim: router"). */
export function childPid(title) {
  const master = String(MASTER_PID());
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1];
      if (ppid !== master) continue;
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").replace(/\0/g, " ").trim();
      if (cmdline.startsWith(title)) return Number(entry);
    } catch {
      // (gone meanwhile)
    }
  }
  throw new Error(`no child "${title}" of the master ${master}`);
}

/** The pid of the worker holding `mid`'s connection. */
export async function workerPidOf(mid) {
  const sessions = await until(async () => {
    const answer = await api("GET", `/mpim/session?mid=${mid}`);
    return answer.code === 0 && answer.data.length ? answer.data : null;
  }, `mid ${mid} in the router's tables`);
  assert.equal(sessions.length, 1, JSON.stringify(sessions));
  const workers = (await api("GET", "/mpim/workers")).data;
  const worker = workers.find((w) => w.id === sessions[0].worker);
  assert.ok(worker?.pid, `worker ${sessions[0].worker} in ${JSON.stringify(workers)}`);
  return worker.pid;
}

/** Every accepted seq was handled, exactly once, in seq order, with its body. */
export function exactlyOnceInOrder(handled, accepted) {
  const seqs = handled.map((m) => m.seq);
  const sorted = [...new Set(seqs)].sort((a, b) => a - b);
  assert.deepEqual(seqs, sorted, "a message was handled twice or out of order");
  const byseq = new Map(handled.map((m) => [m.seq, m.body]));
  const missing = [...accepted.keys()].filter((seq) => !byseq.has(seq));
  assert.deepEqual(missing, [], `${missing.length} accepted pushes never handled`);
  for (const [seq, body] of accepted) assert.equal(byseq.get(seq), body, `the body of seq ${seq}`);
}
