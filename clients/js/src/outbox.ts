/**
 * A session's messages on their way up (op 4), until the server answered each one.
 *
 * A message carries its id and is sent again under that id — the server stores and delivers
 * it once — on every new connection, when no answer came within `resendAfterMs`, and after a
 * transient refusal (-503, -504, -408). The answer depends on the server's `[upstream] ack`:
 * `none`, goim's echo (op 4, same header seq, empty body); `only`, op 5 `"state": "done"`;
 * `rigor`, op 5 `"state": "received"` first, which is confirmed with op 22 `{"id"}`, then
 * "done".
 */

import { Code, SendError, TRANSIENT } from "./errors.js";
import { type Frame, Op } from "./frame.js";
import type { Link } from "./link.js";

const MAX_ID = 64; // characters of a message id (the server's limit)
const RETRY_MS = 1000; // pause before sending again after a transient refusal
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** The server's answer to a message. */
export interface Ack {
  id: string;
  /** The message's seq in the sender's own stream (private chat, `[upstream] ack` only/rigor; else 0). */
  seq: number;
  /** The business backend's answer (messages without `to`), as text. */
  body: string;
}

export interface OutgoingMessage {
  /** The recipient's mid: private chat. Leave it out (or 0) for a message to the business backend. */
  to?: number;
  /** The push op the recipient watches (in its token's `accepts`); 1000 by default. */
  op?: number;
  /** Any JSON value. */
  body?: unknown;
  /** Your id for the message (1-64 characters, unique per sender); one is made up when left out. */
  id?: string;
  /** Give up (-504) after this long without a final answer; `sendTimeoutMs` by default. */
  timeoutMs?: number;
}

export interface OutboxOptions {
  maxBody: number;
  resendAfterMs: number;
  sendTimeoutMs: number;
}

interface Pending {
  id: string;
  payload: Uint8Array;
  promise: Promise<Ack>;
  resolve: (ack: Ack) => void;
  reject: (error: SendError) => void;
  deadline: ReturnType<typeof setTimeout> | undefined;
  retry: ReturnType<typeof setTimeout> | undefined;
  timeoutMs: number;
  startedAt: number;
}

export class Outbox {
  private readonly pending = new Map<string, Pending>();
  private ids = 0;

  /** `link()`: the current connection, if it got past Auth (else its Auth sends what waits). */
  constructor(
    private readonly options: OutboxOptions,
    private readonly link: () => Link | null,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  send(message: OutgoingMessage): Promise<Ack> {
    const id = message.id ?? this.newId();
    const known = this.pending.get(id);
    if (known !== undefined) return known.promise; // (the same id again: the same answer)
    if (typeof id !== "string" || id.length < 1 || id.length > MAX_ID) {
      return Promise.reject(new SendError(String(id), Code.BAD_REQUEST, `id must be 1 to ${MAX_ID} characters`));
    }
    const value: Record<string, unknown> = { id, op: message.op ?? 1000, body: message.body ?? null };
    if (message.to) value["to"] = message.to;
    let payload: Uint8Array;
    try {
      payload = encoder.encode(JSON.stringify(value));
    } catch (error) {
      return Promise.reject(new SendError(id, Code.BAD_REQUEST, `body is not JSON: ${String(error)}`));
    }
    const max = this.options.maxBody;
    if (payload.length > max) {
      // (the server would close the connection, and every reconnect would send it again)
      return Promise.reject(new SendError(id, Code.TOO_LARGE, `${payload.length} bytes once encoded; the server takes ${max}`));
    }
    let resolve!: (ack: Ack) => void;
    let reject!: (error: SendError) => void;
    const promise = new Promise<Ack>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const timeoutMs = message.timeoutMs ?? this.options.sendTimeoutMs;
    const pending: Pending = {
      id,
      payload,
      promise,
      resolve,
      reject,
      deadline: undefined,
      retry: undefined,
      timeoutMs,
      startedAt: now(),
    };
    pending.deadline = setTimeout(() => {
      this.finish(pending);
      reject(new SendError(id, Code.TIMEOUT, `no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    this.pending.set(id, pending);
    this.post(pending);
    return promise;
  }

  /** A new connection got past Auth: everything unanswered goes again, in order, under its id. */
  resend(): void {
    for (const pending of this.pending.values()) this.post(pending);
  }

  /** Op 4 with a header seq we sent a message under, and no body (or, outside `ack`, the backend's). */
  isEcho(link: Link, frame: Frame, reliable: boolean): boolean {
    return frame.op === Op.SEND_MSG && link.messages.has(frame.seq) && (!frame.body.length || !reliable);
  }

  /** `[upstream] ack = "none"`: goim's echo is the only answer there is. */
  echoed(link: Link, frame: Frame): void {
    const id = link.messages.get(frame.seq);
    const pending = id === undefined ? undefined : this.pending.get(id);
    if (pending === undefined) return;
    this.finish(pending);
    pending.resolve({ id: pending.id, seq: 0, body: decoder.decode(frame.body) });
  }

  /** Op 5. */
  answered(link: Link, frame: Frame): void {
    let answer: Record<string, unknown>;
    try {
      answer = JSON.parse(decoder.decode(frame.body)) as Record<string, unknown>;
    } catch {
      return;
    }
    const id = typeof answer["id"] === "string" ? answer["id"] : link.messages.get(frame.seq);
    const pending = id === undefined ? undefined : this.pending.get(id);
    if (pending === undefined) return;
    if (answer["state"] === "received") {
      link.send(Op.CONFIRM, JSON.stringify({ id: pending.id })); // (rigor: we saw the receipt)
      return;
    }
    const code = Number(answer["code"]) | 0;
    const reason = typeof answer["message"] === "string" ? answer["message"] : "";
    if (code && TRANSIENT.has(code)) {
      clearTimeout(pending.retry); // (sent again after a pause, or at the next Auth)
      const left = pending.timeoutMs - (now() - pending.startedAt);
      pending.retry = setTimeout(() => this.post(pending), Math.max(0, Math.min(RETRY_MS, left)));
      return;
    }
    this.finish(pending);
    if (code) pending.reject(new SendError(pending.id, code, reason));
    else {
      const body = answer["body"];
      pending.resolve({ id: pending.id, seq: Number(answer["seq"]) | 0, body: typeof body === "string" ? body : "" });
    }
  }

  /** The session closed: every message still waiting is rejected (-1). */
  abandon(): void {
    for (const pending of [...this.pending.values()]) {
      this.finish(pending);
      pending.reject(new SendError(pending.id, Code.CLOSED, "the session was closed"));
    }
  }

  private post(pending: Pending): void {
    clearTimeout(pending.retry);
    pending.retry = undefined;
    const link = this.link();
    if (link === null) return;
    forget(link, pending.id);
    link.messages.set(link.send(Op.SEND_MSG, pending.payload), pending.id);
    pending.retry = setTimeout(() => this.post(pending), this.options.resendAfterMs);
  }

  private finish(pending: Pending): void {
    clearTimeout(pending.deadline);
    clearTimeout(pending.retry);
    this.pending.delete(pending.id);
    const link = this.link();
    if (link !== null) forget(link, pending.id);
  }

  private newId(): string {
    this.ids += 1;
    const bytes = new Uint8Array(8);
    const crypto = (globalThis as { crypto?: { getRandomValues(a: Uint8Array): Uint8Array } }).crypto;
    if (crypto !== undefined) crypto.getRandomValues(bytes);
    else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    return `m${this.ids}-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }
}

function forget(link: Link, id: string): void {
  for (const [seq, known] of link.messages) if (known === id) link.messages.delete(seq);
}

export function now(): number {
  const perf = (globalThis as { performance?: { now(): number } }).performance;
  return perf !== undefined ? perf.now() : Date.now();
}
