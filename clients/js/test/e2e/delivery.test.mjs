// Reliable delivery in headless Chromium against a real `mpim master` (2 workers,
// [delivery] replay_max = 100 and max_unacked = 16: a replay of 40 takes three windows, each
// let out by the page's acks): offline then resume, a page reload that resumes from
// localStorage, a resume too far back (not recovered), and a kill -9 of the router and of the
// user's worker while a backend pushes steadily. Started by tests/clients/test_js.py.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  api,
  childPid,
  exactlyOnceInOrder,
  harness,
  launch,
  pushMany,
  pushMid,
  pushSteadily,
  sleep,
  staticServer,
  until,
  WS_URL,
  workerPidOf,
} from "./support.mjs";

let browser;
let pages;
before(async () => {
  pages = await staticServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await pages?.close();
});

/** A harness page with one session for `mid`; returns the page and what its handler saw. */
async function userPage(mid, key, options = {}) {
  const seen = [];
  const page = await harness(browser.context, pages.base, (_name, message) => {
    seen.push(message);
  });
  await open(page, mid, key, options);
  return { page, seen };
}

async function open(page, mid, key, options = {}) {
  await page.evaluate(
    ([url, token, options]) => window.openSession("u", url, token, options),
    [WS_URL(), { mid, key, accepts: [1000] }, { backoffMs: [50, 1000], caps: ["ack", "seq"], ...options }],
  );
  await page.waitForFunction(() => window.sessions.u.state === "ready", null, { timeout: 20_000 });
}

const events = (page, kind) =>
  page.evaluate((kind) => window.runs.u.events.filter(([e]) => e === kind).map(([, info]) => info), kind);

test("offline, then back: what was pushed meanwhile arrives once, in order, recovered", async () => {
  const mid = 3001;
  const { page, seen } = await userPage(mid, "laptop", { ackEvery: 8 }); // (acks inside each window, too)
  const accepted = new Map();
  for (let i = 0; i < 5; i++) accepted.set(await pushMid(mid, `live-${i}`), `live-${i}`);
  await until(() => seen.length === 5, "the live pushes");

  await browser.context.setOffline(true); // (the page hears "offline": the SDK drops its connection)
  await page.waitForFunction(() => window.sessions.u.state !== "ready");
  const bodies = Array.from({ length: 40 }, (_, i) => `away-${i}`);
  (await pushMany(mid, bodies)).forEach((seq, i) => accepted.set(seq, bodies[i]));
  await sleep(300);
  assert.equal(seen.length, 5, "nothing arrives while offline");
  await browser.context.setOffline(false);

  await until(() => seen.length >= 45, "the 40 pushed while offline");
  accepted.set(await pushMid(mid, "after"), "after");
  await until(() => seen.length >= 46, "a live push after the resume");
  exactlyOnceInOrder(seen, accepted);
  assert.equal(seen.length, 46);
  const resumes = await events(page, "resumed");
  assert.equal(resumes.length, 2);
  assert.deepEqual(
    resumes.map((r) => r.recovered),
    [true, true],
  );
  assert.deepEqual(page.problems, []);
  await page.close();
});

test("a reloaded page resumes from the position kept in localStorage: nothing twice, nothing lost", async () => {
  const mid = 3002;
  const { page, seen } = await userPage(mid, "tab");
  const accepted = new Map();
  for (const [i, seq] of (await pushMany(mid, ["a", "b", "c"])).entries()) accepted.set(seq, "abc"[i]);
  await until(() => seen.length === 3, "the first pushes");
  const key = `mpim-client:${WS_URL()}|${mid}|tab`;
  await until(
    async () => JSON.parse((await page.evaluate((key) => localStorage.getItem(key), key)) ?? "{}").seq === Math.max(...accepted.keys()),
    "the position in localStorage",
  );

  await page.evaluate(() => window.sessions.u.close());
  const bodies = Array.from({ length: 30 }, (_, i) => `gone-${i}`);
  (await pushMany(mid, bodies)).forEach((seq, i) => accepted.set(seq, bodies[i]));
  await page.reload();
  await page.waitForFunction(() => window.mpim !== undefined);
  await open(page, mid, "tab");
  await until(() => seen.length >= 33, "what was pushed while the page was away");
  exactlyOnceInOrder(seen, accepted);
  assert.equal(seen.length, 33);
  const [resume] = await events(page, "resumed");
  assert.equal(resume.recovered, true);
  await page.close();
});

test("away for longer than replay_max: not recovered, and the stream goes on from the top", async () => {
  const mid = 3003;
  const { page, seen } = await userPage(mid, "old-phone");
  await pushMid(mid, "first");
  await until(() => seen.length === 1, "the first push");
  await browser.context.setOffline(true);
  await page.waitForFunction(() => window.sessions.u.state !== "ready");
  const seqs = await pushMany(mid, Array.from({ length: 150 }, (_, i) => `lost-${i}`)); // > replay_max (100)
  await browser.context.setOffline(false);
  const resumed = await until(async () => (await events(page, "resumed"))[1], "the second resume");
  assert.deepEqual(resumed, { epoch: resumed.epoch, seq: seqs.at(-1), recovered: false });
  const next = await pushMid(mid, "next");
  await until(() => seen.length === 2, "the push after the unrecovered resume");
  assert.deepEqual(seen.at(-1), { seq: next, op: 1000, body: "next" });
  assert.equal(await page.evaluate(() => window.sessions.u.seq), next);
  await page.close();
});

for (const [victim, pidOf] of [
  ["the router", async () => childPid("mpim: router")],
  ["the user's worker", async (mid) => workerPidOf(mid)],
]) {
  test(`kill -9 of ${victim} during a stream: every accepted push handled once, in order`, async () => {
    const mid = victim === "the router" ? 3004 : 3005;
    const { page, seen } = await userPage(mid, "desk");
    const stop = { done: false };
    const accepted = new Map();
    const pusher = pushSteadily(mid, stop, accepted, 100);
    await sleep(700);
    const pid = await pidOf(mid);
    process.kill(pid, "SIGKILL");
    await sleep(1800);
    stop.done = true;
    const sent = await pusher;
    assert.ok(accepted.size > 20, `only ${accepted.size} of ${sent} pushes were accepted`);
    await until(
      () => [...accepted.keys()].every((seq) => seen.some((m) => m.seq === seq)),
      "every accepted push handled",
      30_000,
    );
    exactlyOnceInOrder(seen, accepted);
    const connections = await page.evaluate(() => window.sessions.u.connections);
    console.log(`${victim}: ${sent} pushed, ${accepted.size} accepted, ${seen.length} handled, ${connections} connections`);
    assert.deepEqual(page.problems, []);
    await page.close();
  });
}

test("goim pushes (room, key, everyone: seq 0) are messages too; a changed room is joined again after a reconnect", async () => {
  const mid = 3006;
  const seen = [];
  const page = await harness(browser.context, pages.base, (_name, message) => {
    seen.push(message);
  });
  await page.evaluate(
    ([url, token]) => {
      window.openSession("u", url, token, { backoffMs: [50, 500] });
      window.rooms = [];
      window.sessions.u.on("room", (info) => window.rooms.push(info.room));
    },
    [WS_URL(), { mid, key: "sofa", room_id: "live://7", accepts: [1000] }],
  );
  await page.waitForFunction(() => window.sessions.u.state === "ready");
  const push = async (target, body) => assert.equal((await api("POST", target, body)).code, 0);
  await push("/goim/push/room?operation=1000&type=live&room=7", "in room 7");
  await push("/goim/push/keys?operation=1000&keys=sofa", "by key");
  await push("/goim/push/all?operation=1000", "to everyone");
  await until(() => seen.length === 3, "the three goim pushes");
  assert.deepEqual(
    seen.map((m) => [m.seq, m.body]),
    [
      [0, "in room 7"],
      [0, "by key"],
      [0, "to everyone"],
    ],
  );

  await page.evaluate(() => window.sessions.u.changeRoom("live://8"));
  await push("/goim/push/room?operation=1000&type=live&room=7", "to the old room");
  await push("/goim/push/room?operation=1000&type=live&room=8", "in room 8");
  await until(() => seen.length === 4, "the push to the new room");
  assert.deepEqual(seen.at(-1), { seq: 0, op: 1000, body: "in room 8" });

  process.kill(await workerPidOf(mid), "SIGKILL"); // (a new connection: Auth joins room 7, then op 12 moves it)
  await page.waitForFunction(() => window.rooms.length === 2, null, { timeout: 20_000 });
  assert.deepEqual(await page.evaluate(() => window.rooms), ["live://8", "live://8"]);
  await push("/goim/push/room?operation=1000&type=live&room=8", "room 8 again");
  await until(() => seen.length === 5, "a room push after the reconnect");
  assert.deepEqual(seen.at(-1), { seq: 0, op: 1000, body: "room 8 again" });
  await page.close();
});
