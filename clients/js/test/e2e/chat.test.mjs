// Private chat both ways between two browser pages (two users) against a real `mpim master`
// whose [upstream] ack mode is MPIM_ACK_MODE (none, only or rigor). Started by
// tests/clients/test_js.py once per mode.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { harness, launch, staticServer, until, WS_URL } from "./support.mjs";

const MODE = process.env.MPIM_ACK_MODE ?? "none";
const ALICE = 4001;
const BOB = 4002;

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

async function user(mid, key) {
  const seen = [];
  const page = await harness(browser.context, pages.base, (_name, message) => {
    seen.push(message);
  });
  await page.evaluate(
    // (the seq cap: the server checks that every frame after Auth is numbered + 1, and cuts on a slip)
    ([url, token]) =>
      window.openSession("u", url, token, { backoffMs: [50, 500], resendAfterMs: 2000, caps: ["ack", "seq"] }),
    [WS_URL(), { mid, key, accepts: [1000] }],
  );
  await page.waitForFunction(() => window.sessions.u.state === "ready");
  const send = (to, body, id) =>
    page.evaluate(([to, body, id]) => window.sessions.u.send({ to, body, ...(id ? { id } : {}) }), [to, body, id]);
  const chats = () => seen.map((m) => ({ ...JSON.parse(m.body), seq: m.seq }));
  return { page, seen, send, chats };
}

test(`[upstream] ack = ${MODE}: private messages both ways, each delivered once and in order`, async () => {
  const alice = await user(ALICE, "alice-tab");
  const bob = await user(BOB, "bob-tab");
  const n = 10;
  const [fromAlice, fromBob] = await Promise.all([
    Promise.all(Array.from({ length: n }, (_, i) => alice.send(BOB, `a${i}`))),
    Promise.all(Array.from({ length: n }, (_, i) => bob.send(ALICE, `b${i}`))),
  ]);
  await until(() => alice.seen.length === 2 * n && bob.seen.length === 2 * n, "every copy (own and the other's)");

  for (const [me, other, acks, mine, theirs] of [
    [alice, bob, fromAlice, "a", "b"],
    [bob, alice, fromBob, "b", "a"],
  ]) {
    const chats = me.chats();
    const got = chats.filter((c) => c.from !== (me === alice ? ALICE : BOB));
    const own = chats.filter((c) => c.from === (me === alice ? ALICE : BOB));
    assert.deepEqual(
      got.map((c) => c.body),
      Array.from({ length: n }, (_, i) => `${theirs}${i}`),
      "the other's messages, once each, in their order",
    );
    assert.deepEqual(
      own.map((c) => c.body),
      Array.from({ length: n }, (_, i) => `${mine}${i}`),
      "my own copies (for my other devices)",
    );
    const seqs = chats.map((c) => c.seq);
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), "the stream in seq order");
    for (const [i, ack] of acks.entries()) {
      const copy = own.find((c) => c.id === ack.id);
      assert.equal(copy.body, `${mine}${i}`);
      // none: goim's echo carries no seq; only and rigor answer with the seq of my own copy
      assert.equal(ack.seq, MODE === "none" ? 0 : copy.seq, `ack of ${ack.id}`);
    }
    void other;
  }
  // One more each, now that both acked what they got (acks are outside the numbering: the
  // frames after them must still follow on), and still one connection each: never cut, by the
  // seq cap's check of the numbering or anything else.
  await Promise.all([alice.send(BOB, "after the acks"), bob.send(ALICE, "after the acks")]);
  await until(() => alice.seen.length === 2 * n + 2 && bob.seen.length === 2 * n + 2, "the last copies");
  for (const { page } of [alice, bob]) {
    assert.equal(await page.evaluate(() => window.sessions.u.connections), 1);
  }
  await alice.page.close();
  await bob.page.close();
});

test(`[upstream] ack = ${MODE}: a message sent again under its id is stored and delivered once`, async () => {
  const alice = await user(ALICE, "alice-2");
  const bob = await user(BOB, "bob-2");
  const first = await alice.send(BOB, "once", "dup-1");
  const again = await alice.send(BOB, "once", "dup-1");
  assert.deepEqual(again, first, "the same answer, the first seqs");
  const marker = await alice.send(BOB, "marker");
  void marker;
  await until(() => bob.chats().some((c) => c.body === "marker"), "the marker after the retry");
  assert.equal(bob.chats().filter((c) => c.id === "dup-1").length, 1);
  await alice.page.close();
  await bob.page.close();
});

test(`[upstream] ack = ${MODE}: a message sent while offline goes on the next connection, once`, async () => {
  const alice = await user(ALICE, "alice-3");
  const bob = await user(BOB, "bob-3");
  await browser.context.setOffline(true);
  await alice.page.waitForFunction(() => window.sessions.u.state !== "ready");
  const pending = alice.send(BOB, "from the train", "offline-1");
  await browser.context.setOffline(false);
  const ack = await pending;
  assert.equal(ack.id, "offline-1");
  await until(() => bob.chats().some((c) => c.id === "offline-1"), "the message at bob");
  assert.equal(bob.chats().filter((c) => c.id === "offline-1").length, 1);
  const events = await alice.page.evaluate(() => window.runs.u.events.map(([e]) => e));
  assert.ok(events.filter((e) => e === "connected").length >= 2, events.join(","));
  await alice.page.close();
  await bob.page.close();
});
