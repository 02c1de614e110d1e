import assert from "node:assert/strict";
import { test } from "node:test";

import { decodeMessage, encodeFrame, HEADER_SIZE, Op, ProtocolError } from "../../dist/index.js";

const bytes = (...values) => Uint8Array.from(values);

test("a frame is goim's 16-byte big-endian header and the body", () => {
  const frame = encodeFrame(Op.AUTH, "ab", 0x01020304, 1);
  assert.deepEqual(
    frame,
    bytes(0, 0, 0, 18, 0, 16, 0, 1, 0, 0, 0, 7, 1, 2, 3, 4, 0x61, 0x62), // packLen headerLen ver op seq body
  );
  assert.equal(HEADER_SIZE, 16);
});

test("a message of several frames decodes to each, bodies and seqs intact", () => {
  const a = encodeFrame(1000, "hello", 7);
  const b = encodeFrame(Op.HEARTBEAT_REPLY, bytes(0, 0, 0, 5), 3);
  const both = new Uint8Array([...a, ...b]);
  const frames = decodeMessage(both.buffer);
  assert.deepEqual(
    frames.map((f) => [f.ver, f.op, f.seq, [...f.body]]),
    [
      [1, 1000, 7, [...new TextEncoder().encode("hello")]],
      [1, 3, 3, [0, 0, 0, 5]],
    ],
  );
});

test("an op-9 batch is split into its inner frames, each with its own seq", () => {
  const inner = [encodeFrame(1000, "x", 41), encodeFrame(1000, "y", 42), encodeFrame(1001, "", 0)];
  const body = new Uint8Array(inner.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of inner) {
    body.set(f, at);
    at += f.length;
  }
  const frames = decodeMessage(encodeFrame(Op.RAW, body, 0));
  assert.deepEqual(
    frames.map((f) => [f.op, f.seq]),
    [
      [1000, 41],
      [1000, 42],
      [1001, 0],
    ],
  );
});

test("the highest header seq, 2^31 - 1, round-trips", () => {
  const frame = encodeFrame(18, "", 0x7fffffff);
  assert.equal(decodeMessage(frame)[0].seq, 0x7fffffff);
});

test("bad input is a ProtocolError: headerLen, packLen, a message ending inside a frame", () => {
  const good = encodeFrame(1000, "body", 1);
  const badHeader = good.slice();
  badHeader[5] = 17;
  assert.throws(() => decodeMessage(badHeader), ProtocolError);
  const shortPack = good.slice();
  shortPack[3] = 15;
  assert.throws(() => decodeMessage(shortPack), ProtocolError);
  assert.throws(() => decodeMessage(good.slice(0, good.length - 1)), /with 19 left/);
  assert.throws(() => decodeMessage(good.slice(0, 10)), /10 bytes left over/);
});
