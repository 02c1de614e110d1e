// The Session against a hand-driven fake server, with mocked timers: no sockets, no waiting.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, memoryStorage, SendError, Session } from "../../dist/index.js";
import { encodeFrame, FakeServer, Op, settle, text } from "./fake.mjs";

const URL = "ws://mpim.test/sub";
const TOKEN = { mid: 7, key: "phone", accepts: [1000] };

/** A started session on a fake server, its first connection open and authenticated. */
async function opened(t, options = {}, handler = null, { accept = true, storage = memoryStorage() } = {}) {
  t.mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  const server = new FakeServer();
  const got = [];
  const onMessage =
    handler ??
    ((message) => {
      got.push(message);
    });
  const session = new Session(URL, options.token ?? TOKEN, onMessage, {
    WebSocket: server.WebSocket,
    storage,
    ackDelayMs: 0,
    ...options,
  });
  const errors = [];
  session.on("error", (error) => errors.push(error));
  session.start();
  await settle();
  if (accept) server.last.accept();
  return { server, session, got, errors, conn: server.last };
}

test("Auth carries the caps, then op 20 asks to resume from the device's cursor ({})", async (t) => {
  const { conn, session } = await opened(t);
  const [auth, resume] = conn.sent;
  assert.equal(auth.op, Op.AUTH);
  assert.deepEqual(JSON.parse(text(auth)), { ...TOKEN, caps: ["ack"] });
  assert.equal(resume.op, Op.RESUME);
  assert.equal(resume.seq, auth.seq + 1);
  assert.deepEqual(conn.json(resume), {});
  assert.equal(session.state, "resuming");
  conn.resumed("e1", 0);
  assert.deepEqual(await session.ready, { epoch: "e1", seq: 0, recovered: true });
  assert.equal(session.state, "ready");
  await session.close();
});

test("caps given in the token are kept beside the session's", async (t) => {
  const { conn, session } = await opened(t, { token: { ...TOKEN, caps: ["seq"] } });
  assert.deepEqual(JSON.parse(text(conn.sent[0])).caps, ["seq", "ack"]);
  await session.close();
});

test("each message reaches the handler once, in order; duplicates of a replay are dropped and acked", async (t) => {
  const { conn, session, got } = await opened(t);
  conn.push(1);
  conn.push(2);
  conn.resumed("e1", 2);
  conn.push(2); // (a duplicate)
  conn.push(3);
  await settle();
  assert.deepEqual(
    got.map((m) => [m.seq, m.text()]),
    [
      [1, "m1"],
      [2, "m2"],
      [3, "m3"],
    ],
  );
  assert.equal(session.duplicates, 1);
  assert.deepEqual([session.epoch, session.seq], ["e1", 3]);
  assert.equal(conn.acks().at(-1), 3);
  await session.close();
});

test("the ack waits for an async handler to settle, and is cumulative", async (t) => {
  const releases = [];
  const { conn, session } = await opened(t, {}, () => new Promise((resolve) => releases.push(resolve)));
  conn.resumed("e1", 0);
  conn.write(encodeFrame(1000, "a", 1), encodeFrame(1000, "b", 2));
  await settle();
  assert.equal(releases.length, 1, "the second message waits for the first");
  assert.deepEqual(conn.acks(), []);
  releases[0]();
  await settle();
  assert.equal(releases.length, 2);
  assert.equal(session.seq, 1);
  releases[1]();
  await settle();
  assert.deepEqual(conn.acks(), [2], "one ack for both, after the handler settled");
  await session.close();
});

test("a long replay is acked every ackEvery messages while it runs (the server's window moves on)", async (t) => {
  const { conn, session, got } = await opened(t, { ackEvery: 64 });
  const frames = Array.from({ length: 200 }, (_, i) => encodeFrame(1000, `r${i + 1}`, i + 1));
  conn.batch(frames);
  await settle();
  assert.equal(got.length, 200);
  assert.deepEqual(conn.acks(), [64, 128, 192, 200]);
  await session.close();
});

test("acks are coalesced: one at once, the next after ackDelayMs", async (t) => {
  const { conn, session } = await opened(t, { ackDelayMs: 10_000 });
  conn.resumed("e1", 0);
  await settle();
  conn.push(1);
  await settle();
  assert.deepEqual(conn.acks(), [1], "the first ack leaves at once");
  conn.push(2);
  conn.push(3);
  await settle();
  assert.deepEqual(conn.acks(), [1], "the next ones wait for the interval");
  t.mock.timers.tick(10_000);
  await settle();
  assert.deepEqual(conn.acks(), [1, 3], "then one ack covers both");
  await session.close();
});

test("goim pushes (seq 0: room, everyone, by key) are messages too, never acked nor de-duplicated", async (t) => {
  const { conn, session, got } = await opened(t);
  conn.resumed("e1", 5);
  await settle();
  const before = conn.acks().length;
  conn.write(encodeFrame(1001, "room", 0));
  conn.write(encodeFrame(1001, "room", 0));
  await settle();
  assert.deepEqual(
    got.map((m) => [m.seq, m.op, m.text()]),
    [
      [0, 1001, "room"],
      [0, 1001, "room"],
    ],
  );
  assert.equal(conn.acks().length, before);
  assert.equal(session.seq, 5);
  await session.close();
});

test("op 21: a new epoch or an unrecovered resume moves the position; 'resumed' and 'ready' fire each time", async (t) => {
  const { server, conn, session } = await opened(t);
  const seen = [];
  session.on("resumed", (info) => seen.push(["resumed", info]));
  session.on("ready", (info) => seen.push(["ready", info.epoch]));
  conn.resumed("e1", 10);
  await settle();
  assert.deepEqual([session.epoch, session.seq], ["e1", 10]);
  conn.drop();
  t.mock.timers.tick(60_000);
  await settle();
  const second = server.last;
  second.accept();
  assert.deepEqual(second.json(second.of(Op.RESUME)[0]), { epoch: "e1", seq: 10 });
  second.resumed("e2", 4, false); // (the store lost data: a new epoch)
  await settle();
  assert.deepEqual([session.epoch, session.seq], ["e2", 4]);
  assert.deepEqual(seen, [
    ["resumed", { epoch: "e1", seq: 10, recovered: true }],
    ["ready", "e1"],
    ["resumed", { epoch: "e2", seq: 4, recovered: false }],
    ["ready", "e2"],
  ]);
  assert.equal(second.acks().at(-1), 4, "the new position is acked");
  await session.close();
});

test("every frame after Auth is numbered +1 (heartbeats, messages, confirms, rooms); acks carry the stream seq", async (t) => {
  const { conn, session } = await opened(t, { heartbeatMs: 1000 });
  conn.resumed("e1", 0);
  conn.push(1);
  const sent = session.send({ to: 8, body: "hi", id: "x1" });
  t.mock.timers.tick(1000); // a heartbeat
  conn.write(encodeFrame(Op.HEARTBEAT_REPLY, new Uint8Array([0, 0, 0, 3]), conn.of(Op.HEARTBEAT)[0].seq));
  conn.write(encodeFrame(Op.SEND_MSG_REPLY, JSON.stringify({ id: "x1", code: 0, state: "received" }), 0));
  session.changeRoom("live://2").catch(() => {}); // (closed before its answer)
  conn.push(2);
  await settle();
  const numbered = conn.sent.filter((f) => f.op !== Op.ACK);
  assert.deepEqual(
    numbered.map((f) => f.op),
    [Op.AUTH, Op.RESUME, Op.HEARTBEAT, Op.SEND_MSG, Op.HEARTBEAT, Op.CONFIRM, Op.CHANGE_ROOM],
  );
  assert.deepEqual(
    numbered.map((f) => f.seq),
    numbered.map((_, i) => numbered[0].seq + i),
  );
  assert.deepEqual(conn.acks(), [1, 2]);
  assert.equal(session.online, 3);
  conn.write(encodeFrame(Op.SEND_MSG_REPLY, JSON.stringify({ id: "x1", code: 0, seq: 9, state: "done" }), 0));
  assert.deepEqual(await sent, { id: "x1", seq: 9, body: "" });
  await session.close();
});

test("send: op 4 carries {id, to, op, body}; [upstream] ack = only answers op 5 'done' with the seq", async (t) => {
  const { conn, session } = await opened(t);
  const sent = session.send({ to: 8, op: 1000, body: { text: "hi" }, id: "c1" });
  const [message] = conn.of(Op.SEND_MSG);
  assert.deepEqual(conn.json(message), { id: "c1", op: 1000, body: { text: "hi" }, to: 8 });
  conn.write(encodeFrame(Op.SEND_MSG_REPLY, JSON.stringify({ id: "c1", code: 0, message: "", seq: 4, state: "done" }), message.seq));
  assert.deepEqual(await sent, { id: "c1", seq: 4, body: "" });
  await session.close();
});

test("send without `to` is for the backend: its answer body comes back", async (t) => {
  const { conn, session } = await opened(t);
  const sent = session.send({ body: 1, id: "b1" });
  assert.deepEqual(conn.json(conn.of(Op.SEND_MSG)[0]), { id: "b1", op: 1000, body: 1 });
  conn.write(encodeFrame(Op.SEND_MSG_REPLY, JSON.stringify({ id: "b1", code: 0, seq: 0, body: "ok", state: "done" }), 0));
  assert.deepEqual(await sent, { id: "b1", seq: 0, body: "ok" });
  await session.close();
});

test("[upstream] ack = none: goim's echo (same op and seq, empty body) is the answer", async (t) => {
  const { conn, session } = await opened(t);
  const sent = session.send({ to: 8, body: "x", id: "n1" });
  conn.write(encodeFrame(Op.SEND_MSG, "", conn.of(Op.SEND_MSG)[0].seq));
  assert.deepEqual(await sent, { id: "n1", seq: 0, body: "" });
  await session.close();
});

test("rigor: 'received' is confirmed with op 22 {id} (each time it comes), then 'done' resolves", async (t) => {
  const { conn, session } = await opened(t);
  const sent = session.send({ to: 8, body: "x", id: "r1" });
  const received = JSON.stringify({ id: "r1", code: 0, state: "received" });
  conn.write(encodeFrame(Op.SEND_MSG_REPLY, received, conn.of(Op.SEND_MSG)[0].seq));
  conn.write(encodeFrame(Op.SEND_MSG_REPLY, received, conn.of(Op.SEND_MSG)[0].seq)); // (re-sent by the server)
  assert.deepEqual(conn.of(Op.CONFIRM).map((f) => conn.json(f)), [{ id: "r1" }, { id: "r1" }]);
  conn.write(encodeFrame(Op.SEND_MSG_REPLY, JSON.stringify({ id: "r1", code: 0, seq: 2, state: "done" }), 0));
  assert.deepEqual(await sent, { id: "r1", seq: 2, body: "" });
  await session.close();
});

for (const code of [-503, -504, -408]) {
  test(`a transient ${code} is sent again under the same id`, async (t) => {
    const { conn, session } = await opened(t);
    const sent = session.send({ to: 8, body: "x", id: "t1" });
    conn.write(encodeFrame(Op.SEND_MSG_REPLY, JSON.stringify({ id: "t1", code, message: "later" }), 0));
    assert.equal(conn.of(Op.SEND_MSG).length, 1);
    t.mock.timers.tick(1000);
    const again = conn.of(Op.SEND_MSG);
    assert.equal(again.length, 2);
    assert.deepEqual(conn.json(again[1]), conn.json(again[0]));
    conn.write(encodeFrame(Op.SEND_MSG_REPLY, JSON.stringify({ id: "t1", code: 0, seq: 3, state: "done" }), 0));
    assert.equal((await sent).seq, 3);
    await session.close();
  });
}

test("no answer within resendAfterMs: sent again under the same id", async (t) => {
  const { conn, session } = await opened(t, { resendAfterMs: 5000 });
  const sent = session.send({ to: 8, body: "x", id: "s1" });
  t.mock.timers.tick(4999);
  assert.equal(conn.of(Op.SEND_MSG).length, 1);
  t.mock.timers.tick(1);
  assert.equal(conn.of(Op.SEND_MSG).length, 2);
  assert.equal(conn.json(conn.of(Op.SEND_MSG)[1]).id, "s1");
  conn.write(encodeFrame(Op.SEND_MSG_REPLY, JSON.stringify({ id: "s1", code: 0, seq: 1, state: "done" }), 0));
  await sent;
  await session.close();
});

test("a message still unanswered is sent again under the same id on the next connection, after op 20", async (t) => {
  const { server, conn, session } = await opened(t);
  const sent = session.send({ to: 8, body: "x", id: "k1" });
  const queued = session.send({ to: 8, body: "y", id: "k2" });
  conn.drop();
  await settle();
  t.mock.timers.tick(1000);
  await settle();
  const next = server.last;
  assert.notEqual(next, conn);
  next.accept();
  assert.deepEqual(
    next.sent.map((f) => f.op),
    [Op.AUTH, Op.RESUME, Op.HEARTBEAT, Op.SEND_MSG, Op.SEND_MSG],
  );
  assert.deepEqual(next.of(Op.SEND_MSG).map((f) => next.json(f).id), ["k1", "k2"]);
  for (const id of ["k1", "k2"]) {
    next.write(encodeFrame(Op.SEND_MSG_REPLY, JSON.stringify({ id, code: 0, seq: 1, state: "done" }), 0));
  }
  await Promise.all([sent, queued]);
  await session.close();
});

test("a refusal rejects with its code; no answer in time rejects -504; too large is refused here", async (t) => {
  const { conn, session } = await opened(t);
  const refused = session.send({ to: 8, body: "x", id: "f1" });
  conn.write(encodeFrame(Op.SEND_MSG_REPLY, JSON.stringify({ id: "f1", code: -429, message: "unread" }), 0));
  await assert.rejects(refused, (e) => e instanceof SendError && e.code === Code.TOO_MANY && e.id === "f1");
  const late = session.send({ to: 8, body: "x", id: "f2", timeoutMs: 30_000 });
  t.mock.timers.tick(30_000);
  await assert.rejects(late, (e) => e instanceof SendError && e.code === -504);
  const before = conn.of(Op.SEND_MSG).length;
  await assert.rejects(session.send({ to: 8, body: "x".repeat(5000) }), (e) => e.code === Code.TOO_LARGE);
  assert.equal(conn.of(Op.SEND_MSG).length, before, "not sent: the server would close the connection");
  await session.close();
});

test("close() rejects what is still unanswered with -1", async (t) => {
  const { session } = await opened(t);
  const sent = session.send({ to: 8, body: "x" });
  await session.close();
  await assert.rejects(sent, (e) => e.code === Code.CLOSED);
});

test("reconnects back off exponentially with jitter, and start over once a connection held 10 s", async (t) => {
  const { server, session } = await opened(t, { backoffMs: [100, 1000] }, null, { accept: false });
  const delays = [];
  session.on("disconnected", (info) => delays.push(info.reconnectInMs));
  for (let i = 0; i < 6; i++) {
    server.last.drop();
    await settle();
    t.mock.timers.tick(2000);
    await settle();
  }
  const bases = [100, 200, 400, 800, 1000, 1000];
  delays.forEach((delay, i) => {
    assert.ok(delay >= bases[i] * 0.5 && delay <= bases[i] * 1.5, `delay ${i}: ${delay} for base ${bases[i]}`);
  });
  server.last.accept();
  server.last.resumed("e1", 0);
  await settle();
  server.last.drop(); // (at once: as when two tabs with one key kick each other)
  await settle();
  assert.ok(delays.at(-1) >= 500, `a connection lost at once does not start the backoff over (${delays.at(-1)})`);
  t.mock.timers.tick(2000);
  await settle();
  server.last.accept();
  server.last.resumed("e1", 0);
  await settle();
  t.mock.timers.tick(10_000);
  server.last.drop();
  await settle();
  assert.ok(delays.at(-1) <= 150, `after 10 s up the backoff starts over (${delays.at(-1)})`);
  await session.close();
});

test("the connection is dropped when a whole heartbeat interval passed without a word from the server", async (t) => {
  const { server, conn, session } = await opened(t, { heartbeatMs: 1000 });
  assert.equal(conn.of(Op.HEARTBEAT).length, 1, "one at once (its answer has the room's online count)");
  conn.resumed("e1", 0);
  t.mock.timers.tick(1000);
  assert.equal(conn.of(Op.HEARTBEAT).length, 2);
  t.mock.timers.tick(1000); // no answer
  await settle();
  assert.equal(conn.closedBy, "client");
  assert.equal(server.conns.length, 1);
  t.mock.timers.tick(1000);
  await settle();
  assert.equal(server.conns.length, 2, "and a new one opened");
  await session.close();
});

test("op 6 (the server asks us to go): reconnect and resume from the position", async (t) => {
  const { server, conn, session } = await opened(t);
  conn.resumed("e1", 3);
  conn.push(4);
  conn.write(encodeFrame(Op.DISCONNECT_REPLY, "", 0));
  await settle();
  assert.equal(conn.closedBy, "client");
  t.mock.timers.tick(1000);
  await settle();
  server.last.accept();
  assert.deepEqual(server.last.json(server.last.of(Op.RESUME)[0]), { epoch: "e1", seq: 4 });
  await session.close();
});

test("changeRoom: op 12, resolved by op 13; the room is joined again after a reconnect", async (t) => {
  const { server, conn, session } = await opened(t);
  const rooms = [];
  session.on("room", (info) => rooms.push(info.room));
  const changed = session.changeRoom("live://9");
  const [ask] = conn.of(Op.CHANGE_ROOM);
  assert.equal(text(ask), "live://9");
  conn.write(encodeFrame(Op.CHANGE_ROOM_REPLY, "live://9", ask.seq));
  await changed;
  assert.equal(session.room, "live://9");
  conn.drop();
  t.mock.timers.tick(1000);
  await settle();
  server.last.accept();
  assert.deepEqual(server.last.of(Op.CHANGE_ROOM).map(text), ["live://9"]);
  server.last.write(encodeFrame(Op.CHANGE_ROOM_REPLY, "live://9", server.last.of(Op.CHANGE_ROOM)[0].seq));
  assert.deepEqual(rooms, ["live://9", "live://9"]);
  await assert.rejects(session.changeRoom("a\0b"), /NUL/);
  await session.close();
});

test("a handler that throws is reported; the message counts as handled (acked, not redelivered)", async (t) => {
  const { conn, session, errors } = await opened(t, {}, () => {
    throw new Error("boom");
  });
  conn.resumed("e1", 0);
  conn.push(1);
  await settle();
  assert.equal(session.seq, 1);
  assert.deepEqual(conn.acks().at(-1), 1);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].kind, "handler");
  assert.equal(errors[0].cause.message, "boom");
  await session.close();
});

test("the position is saved, and a new session with the same storage resumes from it", async (t) => {
  const storage = memoryStorage();
  const first = await opened(t, {}, null, { storage });
  first.conn.resumed("e1", 0);
  first.conn.push(1);
  first.conn.push(2);
  await settle();
  await first.session.close();
  assert.equal(storage.getItem(`mpim-client:${URL}|7|phone`), JSON.stringify({ epoch: "e1", seq: 2 }));
  t.mock.timers.reset();
  const second = await opened(t, {}, null, { storage });
  assert.deepEqual(second.conn.json(second.conn.of(Op.RESUME)[0]), { epoch: "e1", seq: 2 });
  await second.session.close();
});

test("a JWT's claims name the storage key; its caps decide whether the session is reliable", async (t) => {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const jwt = (claims) => `${b64({ alg: "HS256" })}.${b64(claims)}.sig`;
  const storage = memoryStorage();
  storage.setItem(`mpim-client:${URL}|42|tab`, JSON.stringify({ epoch: "e9", seq: 5 }));
  const reliable = await opened(t, { token: jwt({ mid: 42, key: "tab", caps: ["ack"] }) }, null, { storage });
  assert.equal(text(reliable.conn.sent[0]), jwt({ mid: 42, key: "tab", caps: ["ack"] }), "sent as it is");
  assert.deepEqual(reliable.conn.json(reliable.conn.of(Op.RESUME)[0]), { epoch: "e9", seq: 5 });
  await reliable.session.close();
  t.mock.timers.reset();
  const plain = await opened(t, { token: jwt({ mid: 42, key: "tab2" }) });
  assert.equal(plain.conn.of(Op.RESUME).length, 0, "no ack cap: no resume");
  assert.deepEqual(await plain.session.ready, { epoch: "", seq: 0, recovered: true });
  plain.conn.push(3); // (a goim client gets seq 0 anyway)
  await settle();
  assert.deepEqual(plain.got.map((m) => m.seq), [0]);
  assert.equal(plain.conn.acks().length, 0);
  await plain.session.close();
});

test("a token function is called for every connection (a fresh JWT each time)", async (t) => {
  let calls = 0;
  const { server, session } = await opened(t, { token: () => ({ ...TOKEN, n: ++calls }) });
  server.last.drop();
  t.mock.timers.tick(1000);
  await settle();
  server.last.accept();
  assert.equal(calls, 2);
  assert.equal(JSON.parse(text(server.last.sent[0])).n, 2);
  await session.close();
});

test("bytes that are not goim frames: a protocol error, and a new connection", async (t) => {
  const { server, conn, session, errors } = await opened(t);
  conn.ws.onmessage({ data: new Uint8Array([0, 0, 0, 20, 0, 9]).buffer });
  await settle();
  assert.equal(errors[0].kind, "protocol");
  assert.equal(conn.closedBy, "client");
  t.mock.timers.tick(1000);
  await settle();
  assert.equal(server.conns.length, 2);
  await session.close();
});

test("no Auth answer within authTimeoutMs: closed, reported, and tried again", async (t) => {
  const { server, session, errors } = await opened(t, { authTimeoutMs: 500 }, null, { accept: false });
  server.last.open();
  t.mock.timers.tick(500);
  await settle();
  assert.equal(server.last.closedBy, "client");
  assert.equal(errors[0].kind, "connect");
  t.mock.timers.tick(1000);
  await settle();
  assert.equal(server.conns.length, 2);
  await session.close();
});

test("in a browser: 'offline' drops the connection, 'online' reconnects at once (no backoff wait)", async (t) => {
  const listeners = {};
  globalThis.document = {};
  globalThis.addEventListener = (type, listener) => (listeners[type] = listener);
  globalThis.removeEventListener = (type) => delete listeners[type];
  t.after(() => {
    delete globalThis.document;
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  });
  const { server, conn, session } = await opened(t, { backoffMs: [60_000, 60_000] });
  conn.resumed("e1", 2);
  await settle();
  listeners.offline();
  await settle();
  assert.equal(conn.closedBy, "client");
  assert.equal(session.state, "disconnected");
  listeners.online();
  await settle();
  assert.equal(server.conns.length, 2, "connecting again without waiting a minute");
  server.last.accept();
  assert.deepEqual(server.last.json(server.last.of(Op.RESUME)[0]), { epoch: "e1", seq: 2 });
  await session.close();
  assert.deepEqual(Object.keys(listeners), [], "listeners removed on close");
});
