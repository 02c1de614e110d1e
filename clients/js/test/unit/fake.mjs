// A WebSocket stand-in and a hand-driven "server" for the unit tests: every connection the
// session opens shows up in `server.conns`; a test opens it, reads the frames the session sent
// (decoded), and writes frames back.

import { decodeMessage, encodeFrame, Op } from "../../dist/index.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Let promises and microtasks run (timers are mocked; setImmediate is not). */
export async function settle(rounds = 5) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

export class FakeServer {
  constructor() {
    /** @type {FakeConn[]} */
    this.conns = [];
    const server = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.binaryType = "blob";
        this.onopen = this.onmessage = this.onclose = this.onerror = null;
        this.conn = new FakeConn(this);
        server.conns.push(this.conn);
      }
      send(data) {
        if (this.readyState !== 1) throw new Error("send on a socket that is not open");
        this.conn.sent.push(...decodeMessage(data));
      }
      close(code = 1000, reason = "") {
        if (this.readyState === 3) return;
        this.readyState = 3;
        this.conn.closedBy = "client";
        const onclose = this.onclose;
        queueMicrotask(() => onclose?.({ code, reason }));
      }
    };
  }

  /** The latest connection. */
  get last() {
    return this.conns[this.conns.length - 1];
  }
}

export class FakeConn {
  constructor(ws) {
    this.ws = ws;
    /** Frames the session sent: {ver, op, seq, body}. */
    this.sent = [];
    this.closedBy = "";
  }

  open() {
    this.ws.readyState = 1;
    this.ws.onopen?.({});
  }

  /** Open, answer Auth (op 8, same seq); returns the Auth frame. */
  accept() {
    this.open();
    const auth = this.sent.find((f) => f.op === Op.AUTH);
    if (!auth) throw new Error("no Auth frame");
    this.write(encodeFrame(Op.AUTH_REPLY, "", auth.seq));
    return auth;
  }

  /** Write these frames as one WebSocket message. */
  write(...frames) {
    const size = frames.reduce((n, f) => n + f.length, 0);
    const data = new Uint8Array(size);
    let at = 0;
    for (const f of frames) {
      data.set(f, at);
      at += f.length;
    }
    this.ws.onmessage?.({ data: data.buffer });
  }

  /** A reliable push (header seq = the stream seq). */
  push(seq, body = `m${seq}`, op = 1000) {
    this.write(encodeFrame(op, body, seq));
  }

  /** An op-9 batch holding these frames (as a room batch, or a window of a replay, is written). */
  batch(frames) {
    const inner = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let at = 0;
    for (const f of frames) {
      inner.set(f, at);
      at += f.length;
    }
    this.write(encodeFrame(Op.RAW, inner, 0));
  }

  resumed(epoch, seq, recovered = true, replySeq = 0) {
    this.write(encodeFrame(Op.RESUMED, JSON.stringify({ epoch, seq, recovered }), replySeq));
  }

  /** The server closes the connection. */
  drop(code = 1006) {
    this.ws.readyState = 3;
    this.closedBy = "server";
    this.ws.onclose?.({ code, reason: "" });
  }

  of(op) {
    return this.sent.filter((f) => f.op === op);
  }

  json(frame) {
    return JSON.parse(decoder.decode(frame.body));
  }

  acks() {
    return this.of(Op.ACK).map((f) => f.seq);
  }
}

export function text(frame) {
  return decoder.decode(frame.body);
}

export { encoder, encodeFrame, Op };
