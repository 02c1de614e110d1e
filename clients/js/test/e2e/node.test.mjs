// The SDK in Node (its global WebSocket: Node 22+, or Node 20 with --experimental-websocket)
// against a real `mpim master`: the default storage is the process's memory, so a second
// session of the same user and device resumes where the first stopped. Started by
// tests/clients/test_js.py.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Session } from "../../dist/index.js";
import { exactlyOnceInOrder, pushMany, until, WS_URL } from "./support.mjs";

const MID = 6001;

function open(seen) {
  const session = new Session(WS_URL(), { mid: MID, key: "server-side", accepts: [1000] }, (message) => {
    seen.push({ seq: message.seq, op: message.op, body: message.text() });
  });
  return session.start();
}

test("in Node: a session follows the stream, and the next one resumes from the memory storage", async () => {
  assert.equal(typeof WebSocket, "function", "no global WebSocket: Node 22+, or Node 20 with --experimental-websocket");
  const seen = [];
  const accepted = new Map();
  const first = open(seen);
  await first.ready;
  (await pushMany(MID, ["one", "two"])).forEach((seq, i) => accepted.set(seq, ["one", "two"][i]));
  await until(() => seen.length === 2, "the first pushes");
  const ack = await first.send({ to: MID + 1, body: { text: "hello" } });
  assert.equal(typeof ack.id, "string");
  await until(() => seen.length === 3, "my own copy of the message");
  const own = seen[2];
  assert.deepEqual(JSON.parse(own.body), { id: ack.id, from: MID, to: MID + 1, body: { text: "hello" } });
  accepted.set(own.seq, own.body);
  await first.close();

  (await pushMany(MID, ["three", "four"])).forEach((seq, i) => accepted.set(seq, ["three", "four"][i]));
  const second = open(seen);
  const resumed = await second.ready;
  assert.equal(resumed.recovered, true);
  await until(() => seen.length === 5, "what came while no session was open");
  exactlyOnceInOrder(seen, accepted);
  assert.equal(second.seq, Math.max(...accepted.keys()));
  await second.close();
});
