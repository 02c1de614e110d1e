/**
 * A reliable mpim session over WebSocket: the JavaScript twin of `mpim.sdk.Session`.
 *
 * It connects, authenticates with the `ack` cap, resumes from the last message it handled
 * (op 20: `{epoch, seq}`, or `{}` = from this device's acked cursor), hands each message to
 * `onMessage` once and in order (a replay's duplicates are dropped by seq), and acks (op 18,
 * cumulative) once the handler settled: coalesced, and at least every `ackEvery` messages
 * while a long replay runs, since the server writes at most `[delivery] max_unacked`
 * unacked pushes and then waits. It heart-beats, reconnects with exponential backoff and
 * jitter, and keeps its position in a storage (`localStorage` in browsers) so a reloaded
 * page resumes where it stopped.
 *
 * `send()` posts a message with an id (op 4) and resolves with the server's answer; it is
 * sent again under the same id after a reconnect, when no answer came within
 * `resendAfterMs`, and after -503, -504 or -408 (the server stores it once). All three
 * `[upstream] ack` modes are understood: `none` (goim's echo), `only` (op 5 "done"), and
 * `rigor` (op 5 "received", confirmed with op 22, then "done").
 *
 * Every frame after Auth carries the previous header seq + 1 (heartbeats included; acks
 * carry the seq they ack), so the `seq` cap's strict numbering holds whether asked or not.
 */

import { Emitter } from "./emitter.js";
import { Code, SendError, SessionError } from "./errors.js";
import { decodeMessage, type Frame, Op, ProtocolError } from "./frame.js";
import { Link, type WebSocketConstructor, type WebSocketLike } from "./link.js";
import { type Ack, now, type OutgoingMessage, Outbox } from "./outbox.js";
import { defaultStorage, parsePosition, type Position, type PositionStorage } from "./storage.js";
import { authBody, claimsOf, type Token, type TokenValue } from "./token.js";

const decoder = new TextDecoder();
const encoder = new TextEncoder();
const STABLE_MS = 10_000; // a connection ready this long starts the backoff over when it is lost

/** One message of the stream (seq > 0) or a goim push (room, everyone, by key: seq 0). */
export class Message {
  constructor(
    /** The user's stream seq; 0 for pushes that are not stored (room, everyone, by key). */
    readonly seq: number,
    readonly op: number,
    readonly body: Uint8Array,
  ) {}

  text(): string {
    return decoder.decode(this.body);
  }

  /** The body parsed as JSON (a private message is `{"id", "from", "to", "body"}`). */
  json<T = unknown>(): T {
    return JSON.parse(this.text()) as T;
  }
}

/** Op 21: where the stream stands after a resume. */
export interface ResumeInfo {
  epoch: string;
  /** The top of the stream when the server answered. */
  seq: number;
  /** false: the server could not replay everything (lost data, or away too long): resync from your backend. */
  recovered: boolean;
}

export interface DisconnectInfo {
  code: number;
  reason: string;
  /** When the next connection starts, or null after close(). */
  reconnectInMs: number | null;
}

export type SessionEvents = {
  message: [message: Message];
  connected: [info: { connection: number }];
  resumed: [info: ResumeInfo];
  ready: [info: ResumeInfo];
  disconnected: [info: DisconnectInfo];
  heartbeat: [info: { online: number }];
  room: [info: { room: string }];
  error: [error: SessionError];
};

export type Handler = (message: Message) => void | Promise<void>;

export type SessionState = "idle" | "connecting" | "resuming" | "ready" | "disconnected" | "closed";

export interface SessionOptions {
  /** Capabilities asked for at Auth, added to an object token (a JWT carries its own): `["ack"]`. */
  caps?: readonly string[];
  /** A heartbeat (op 2) this often; a connection that heard nothing for a whole interval is dropped. 30 s. */
  heartbeatMs?: number;
  /** Reconnect delays: from the first, doubling up to the second, each with random jitter (x0.5-1.5). */
  backoffMs?: readonly [number, number];
  /** The WebSocket must open and Auth be answered within this. 10 s. */
  authTimeoutMs?: number;
  /** A message with no answer this long is sent again under its id. 10 s. */
  resendAfterMs?: number;
  /** `send()` gives up after this (SendError -504), unless the message says otherwise. 60 s. */
  sendTimeoutMs?: number;
  /** While messages keep coming (a replay), ack at least every this many. 64. */
  ackEvery?: number;
  /** Otherwise acks are coalesced: at most one per this interval. 20 ms. */
  ackDelayMs?: number;
  /** The server's `[protocol] max_body`: a longer message is refused here (-413), not sent. 4096. */
  maxBody?: number;
  /** Where the position is kept: `localStorage` in browsers, memory elsewhere; null = nowhere. */
  storage?: PositionStorage | null;
  /** The storage key; by default one per URL, user and device key. */
  storageKey?: string;
  /** The WebSocket class, where there is no global one (Node 18-21: e.g. the `ws` package's). */
  WebSocket?: WebSocketConstructor;
}

type Item = { resumed: false; frame: Frame; link: Link } | { resumed: true; frame: Frame; link: Link };

export class Session extends Emitter<SessionEvents> {
  readonly url: string;
  /** The stream's epoch and the seq of the last message handled: the position, safe to persist. */
  epoch = "";
  seq = 0;
  /** Connections that got as far as the Auth answer. */
  connections = 0;
  /** Messages handed to onMessage, and duplicates dropped. */
  received = 0;
  duplicates = 0;
  /** The room's online count from the last heartbeat answer. */
  online = 0;
  /** The first op 21 (the first Auth answer for a session without `ack`): the position is the server's. */
  readonly ready: Promise<ResumeInfo>;

  private readonly token: Token;
  private readonly handler: Handler | null;
  private readonly caps: readonly string[];
  private readonly heartbeatMs: number;
  private readonly backoffMs: readonly [number, number];
  private readonly authTimeoutMs: number;
  private readonly ackEvery: number;
  private readonly ackDelayMs: number;
  private readonly storage: PositionStorage | null;
  private storageKey: string | null;
  private readonly WS: WebSocketConstructor | undefined;

  private _state: SessionState = "idle";
  private started = false;
  private closed = false;
  private reliable = true;
  private link: Link | null = null;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private readyResolve: ((info: ResumeInfo) => void) | null;
  private readonly queue: Item[] = [];
  private head = 0;
  private pumpActive = false;
  private pumping: Promise<void> = Promise.resolve();
  private unacked = 0;
  private lastAckAt = -Infinity;
  private ackTimer: ReturnType<typeof setTimeout> | undefined;
  private saved = "";
  private readonly outbox: Outbox;
  private wantedRoom: string | null = null;
  private readonly roomWaiters: { room: string; resolve: () => void; reject: (error: Error) => void }[] = [];
  private readonly onOnline = (): void => this.reconnectNow();
  private readonly onOffline = (): void => {
    if (this.link !== null) this.drop(this.link, "the browser went offline");
  };

  constructor(url: string, token: Token, onMessage?: Handler | null, options: SessionOptions = {}) {
    super();
    this.url = url;
    this.token = token;
    this.handler = onMessage ?? null;
    this.caps = options.caps ?? ["ack"];
    this.heartbeatMs = options.heartbeatMs ?? 30_000;
    this.backoffMs = options.backoffMs ?? [200, 30_000];
    this.authTimeoutMs = options.authTimeoutMs ?? 10_000;
    this.ackEvery = Math.max(1, options.ackEvery ?? 64);
    this.ackDelayMs = options.ackDelayMs ?? 20;
    this.outbox = new Outbox(
      {
        maxBody: options.maxBody ?? 4096,
        resendAfterMs: options.resendAfterMs ?? 10_000,
        sendTimeoutMs: options.sendTimeoutMs ?? 60_000,
      },
      () => (this.link !== null && this.link.authed ? this.link : null),
    );
    this.storage = options.storage === undefined ? defaultStorage() : options.storage;
    this.storageKey = options.storageKey ?? null;
    this.WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    let resolve: ((info: ResumeInfo) => void) | null = null;
    this.ready = new Promise((r) => (resolve = r));
    this.readyResolve = resolve;
  }

  get state(): SessionState {
    return this._state;
  }

  /** Connect (after reading the stored position), and keep reconnecting until {@link close}. */
  start(): this {
    if (this.started || this.closed) return this;
    if (this.WS === undefined) {
      throw new TypeError(
        "no WebSocket here: pass options.WebSocket (Node 18-21: e.g. the ws package's; Node 20: --experimental-websocket)",
      );
    }
    this.started = true;
    const g = globalThis as { addEventListener?: (type: string, fn: () => void) => void; document?: unknown };
    if (g.document !== undefined && typeof g.addEventListener === "function") {
      // The browser says the network went: a connection may hang on without a word until the
      // heartbeat gives up, so drop it now (the next one resumes); back: reconnect at once.
      g.addEventListener("offline", this.onOffline);
      g.addEventListener("online", this.onOnline);
    }
    void this.load().then(() => this.connect());
    return this;
  }

  /**
   * Wait for the message being handled, ack what was handled, save the position, and close.
   * Messages still waiting to be sent are rejected (SendError -1).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this._state = "closed";
    clearTimeout(this.reconnectTimer);
    const g = globalThis as { removeEventListener?: (type: string, fn: () => void) => void };
    g.removeEventListener?.("online", this.onOnline);
    g.removeEventListener?.("offline", this.onOffline);
    await this.pumping;
    const link = this.link;
    this.link = null;
    if (link !== null) {
      this.flushAck(link);
      link.shut(1000);
    }
    clearTimeout(this.ackTimer);
    this.outbox.abandon();
    for (const waiter of this.roomWaiters.splice(0)) waiter.reject(new Error("the session was closed"));
    await this.save(true);
    this.emit("disconnected", [{ code: 1000, reason: "closed", reconnectInMs: null }], (e) => this.failed(e));
  }

  // -- the connection loop ---------------------------------------------------------------------
  private async connect(): Promise<void> {
    if (this.closed) return;
    this._state = "connecting";
    let token: TokenValue;
    try {
      token = typeof this.token === "function" ? await this.token() : this.token;
    } catch (error) {
      this.report("connect", "the token function failed", error);
      this.retry(0, "no token");
      return;
    }
    if (this.closed) return;
    const claims = claimsOf(token, this.caps);
    this.reliable = (claims.caps ?? this.caps).includes("ack");
    let ws: WebSocketLike;
    try {
      ws = new (this.WS as WebSocketConstructor)(this.url);
    } catch (error) {
      this.report("connect", `cannot open a WebSocket to ${this.url}`, error);
      this.retry(0, "no WebSocket");
      return;
    }
    ws.binaryType = "arraybuffer";
    const link = new Link(ws, claims.room);
    this.link = link;
    link.authTimer = setTimeout(
      () => this.drop(link, `no Auth answer within ${this.authTimeoutMs} ms`),
      this.authTimeoutMs,
    );
    ws.onopen = () => {
      if (link === this.link) link.authSeq = link.send(Op.AUTH, authBody(token, this.caps));
    };
    ws.onmessage = (event: { data: unknown }) => this.received_(link, event.data);
    ws.onclose = (event: { code?: number; reason?: string }) =>
      this.lost(link, event.code ?? 1006, event.reason || "closed");
    ws.onerror = () => {}; // (a close follows, with what can be known)
  }

  private authed(link: Link): void {
    clearTimeout(link.authTimer);
    link.authed = true;
    this.connections += 1;
    if (this.reliable) {
      this._state = "resuming";
      link.send(Op.RESUME, JSON.stringify(this.epoch ? { epoch: this.epoch, seq: this.seq } : {}));
    }
    link.beatTimer = setInterval(() => this.beat(link), this.heartbeatMs);
    this.beat(link); // (at once, as goim's client does: the room's online count comes with the answer)
    this.emit("connected", [{ connection: this.connections }], (e) => this.failed(e));
    if (link !== this.link) return;
    if (this.wantedRoom !== null && this.wantedRoom !== link.room) this.sendRoom(link, this.wantedRoom);
    this.outbox.resend(); // (under the same ids: stored once)
    if (!this.reliable) this.isReady({ epoch: "", seq: 0, recovered: true }, link);
  }

  private beat(link: Link): void {
    if (!link.heard) {
      this.drop(link, `no answer for ${this.heartbeatMs} ms`);
      return;
    }
    link.heard = false;
    link.send(Op.HEARTBEAT);
  }

  /** Give up on this connection (it is closed) and reconnect. */
  private drop(link: Link, reason: string): void {
    if (link !== this.link) return;
    link.shut(1000);
    this.lost(link, 4000, reason);
  }

  private lost(link: Link, code: number, reason: string): void {
    if (link !== this.link) return;
    this.link = null;
    link.shut(1000);
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    if (this.closed) return;
    const offline = (globalThis as { navigator?: { onLine?: boolean } }).navigator?.onLine === false;
    if (!link.authed && !offline) {
      this.report(
        "connect",
        `${this.url}: closed before the Auth answer (${code} ${reason}): down, a wrong URL, or the token refused`,
      );
    }
    this.retry(code, reason);
  }

  private retry(code: number, reason: string): void {
    this._state = "disconnected";
    const [first, last] = this.backoffMs;
    const base = Math.min(last, first * 2 ** Math.min(this.attempt, 30));
    const delay = Math.round(base * (0.5 + Math.random()));
    this.attempt += 1;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.connect();
    }, delay);
    this.emit("disconnected", [{ code, reason, reconnectInMs: delay }], (e) => this.failed(e));
  }

  private reconnectNow(): void {
    if (this.closed || this.reconnectTimer === undefined) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    void this.connect();
  }

  // -- frames in -------------------------------------------------------------------------------
  private received_(link: Link, data: unknown): void {
    if (link !== this.link) return;
    link.heard = true;
    let frames: Frame[];
    try {
      if (ArrayBuffer.isView(data)) frames = decodeMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      else if (Object.prototype.toString.call(data) === "[object ArrayBuffer]") frames = decodeMessage(data as ArrayBuffer);
      else throw new ProtocolError(`a ${typeof data} WebSocket message (goim sends binary ones)`);
    } catch (error) {
      this.report("protocol", `${this.url}: ${(error as Error).message}`, error);
      this.drop(link, "protocol error");
      return;
    }
    for (const frame of frames) {
      if (link !== this.link) break;
      this.frame(link, frame);
    }
    if (this.head < this.queue.length && !this.pumpActive) {
      this.pumpActive = true; // (before the call: a pump that never waits is done when it returns)
      this.pumping = this.pump();
    }
  }

  private frame(link: Link, frame: Frame): void {
    switch (frame.op) {
      case Op.AUTH_REPLY:
        if (!link.authed && frame.seq === link.authSeq) this.authed(link);
        return;
      case Op.HEARTBEAT_REPLY:
        if (frame.body.length === 4) {
          this.online = new DataView(frame.body.buffer, frame.body.byteOffset, 4).getInt32(0);
        }
        this.emit("heartbeat", [{ online: this.online }], (e) => this.failed(e));
        return;
      case Op.DISCONNECT_REPLY:
        this.drop(link, "the server asked us to reconnect (op 6)");
        return;
      case Op.CHANGE_ROOM_REPLY:
        this.roomChanged(link, frame.seq);
        return;
      case Op.SEND_MSG_REPLY:
        this.outbox.answered(link, frame);
        return;
    }
    if (!link.authed) return;
    if (this.outbox.isEcho(link, frame, this.reliable)) {
      this.outbox.echoed(link, frame); // ([upstream] ack = "none": goim's echo is the answer)
      return;
    }
    const resumed = frame.op === Op.RESUMED && this.reliable;
    if (resumed || frame.seq > 0) link.streamed = true;
    this.queue.push({ resumed, frame, link } as Item); // (handled once the whole message is read)
  }

  // -- the stream: in order, one message at a time ----------------------------------------------
  private async pump(): Promise<void> {
    try {
      while (this.head < this.queue.length && !this.closed) {
        const item = this.queue[this.head] as Item;
        this.queue[this.head] = undefined as unknown as Item;
        this.head += 1;
        if (item.resumed) this.resumed(item.frame, item.link);
        else {
          const result = this.deliver(item.frame);
          if (result !== undefined) await result;
        }
        if (this.unacked >= this.ackEvery) this.ackNow(); // (a long replay: its window moves on)
      }
    } finally {
      this.queue.splice(0, this.head);
      this.head = 0;
      this.pumpActive = false;
    }
    if (!this.closed) {
      this.ackSoon();
      void this.save(false);
    }
  }

  private deliver(frame: Frame): Promise<void> | undefined {
    const seq = this.reliable && frame.seq > 0 ? frame.seq : 0;
    if (seq > 0 && this.seq > 0 && seq <= this.seq) {
      this.duplicates += 1;
      this.unacked += 1; // (acked too: the server's window must move on)
      return undefined;
    }
    const message = new Message(seq, frame.op, frame.body);
    this.received += 1;
    this.emit("message", [message], (e) => this.failed(e));
    let result: void | Promise<void> = undefined;
    try {
      result = this.handler?.(message);
    } catch (error) {
      this.report("handler", `onMessage threw on seq ${seq} (op ${frame.op}); it counts as handled`, error);
    }
    if (result === undefined || typeof (result as Promise<void>).then !== "function") {
      this.handled(seq);
      return undefined;
    }
    return (result as Promise<void>).then(
      () => this.handled(seq),
      (error: unknown) => {
        this.report("handler", `onMessage rejected seq ${seq} (op ${frame.op}); it counts as handled`, error);
        this.handled(seq);
      },
    );
  }

  private handled(seq: number): void {
    if (seq > 0) {
      this.seq = seq;
      this.unacked += 1;
    }
  }

  private resumed(frame: Frame, link: Link): void {
    let info: ResumeInfo;
    try {
      const value = JSON.parse(decoder.decode(frame.body)) as Record<string, unknown>;
      if (typeof value["epoch"] !== "string" || typeof value["seq"] !== "number") throw new Error("no epoch and seq");
      info = { epoch: value["epoch"], seq: value["seq"] | 0, recovered: value["recovered"] === true };
    } catch (error) {
      this.report("protocol", `${this.url}: a resume answer (op 21) that is not {"epoch", "seq", "recovered"}`, error);
      this.drop(link, "protocol error");
      return;
    }
    if (info.epoch !== this.epoch || !info.recovered) {
      this.seq = info.epoch === this.epoch ? Math.max(info.seq, this.seq) : info.seq;
    }
    this.epoch = info.epoch;
    this.unacked += 1; // (ack the position: a skipped gap moves the device cursor past it)
    this.emit("resumed", [info], (e) => this.failed(e));
    this.isReady(info, link);
  }

  /** The position is the server's (op 21, or the Auth answer outside `ack`); `link` is ready if still ours. */
  private isReady(info: ResumeInfo, link: Link): void {
    if (link === this.link) {
      this._state = "ready";
      // The backoff starts over once a connection held a while (not at once: two tabs with the
      // same key kick each other with op 6, and must not do it five times a second).
      clearTimeout(link.stableTimer);
      link.stableTimer = setTimeout(() => (this.attempt = 0), STABLE_MS);
    }
    this.emit("ready", [info], (e) => this.failed(e));
    const resolve = this.readyResolve;
    this.readyResolve = null;
    resolve?.(info);
  }

  // -- acks --------------------------------------------------------------------------------------
  /** Ack now if none went out within `ackDelayMs`, else at the end of that interval. */
  private ackSoon(): void {
    if (!this.unacked || this.ackTimer !== undefined) return;
    const wait = this.lastAckAt + this.ackDelayMs - now();
    if (wait <= 0) {
      this.ackNow();
      return;
    }
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined;
      this.ackNow();
    }, wait);
  }

  private ackNow(): void {
    const link = this.link;
    if (link !== null) this.flushAck(link);
  }

  private flushAck(link: Link): void {
    // Only on a connection that streamed (before that, an ack changes nothing on the server).
    if (!this.unacked || !this.seq || !link.authed || !link.streamed || !this.reliable) return;
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    this.unacked = 0;
    this.lastAckAt = now();
    link.ack(this.seq);
    void this.save(false);
  }

  // -- the position --------------------------------------------------------------------------------
  private async load(): Promise<void> {
    if (this.storage === null) return;
    try {
      const token = typeof this.token === "function" ? null : this.token;
      if (this.storageKey === null) {
        if (token === null) return; // (a token function: the key must be given to use storage)
        const claims = claimsOf(token, this.caps);
        this.storageKey = `mpim-client:${this.url}|${claims.mid}|${claims.key}`;
      }
      const position = parsePosition(await this.storage.getItem(this.storageKey));
      if (position !== null && !this.epoch) {
        this.epoch = position.epoch;
        this.seq = position.seq;
        this.saved = JSON.stringify(position);
      }
    } catch (error) {
      this.report("storage", "cannot read the saved position; resuming from the device's cursor", error);
    }
  }

  private async save(wait: boolean): Promise<void> {
    if (this.storage === null || this.storageKey === null || !this.epoch) return;
    const position: Position = { epoch: this.epoch, seq: this.seq };
    const text = JSON.stringify(position);
    if (text === this.saved) return;
    this.saved = text;
    try {
      const done = this.storage.setItem(this.storageKey, text);
      if (wait && done !== undefined) await done;
      else if (done !== undefined) done.catch((error: unknown) => this.report("storage", "cannot save the position", error));
    } catch (error) {
      this.report("storage", "cannot save the position", error);
    }
  }

  // -- messages out ------------------------------------------------------------------------------
  /**
   * Send a private message to user `to` (or, without `to`, a message for the business backend).
   * Resolves with the server's answer; rejects with a {@link SendError} carrying its `code`.
   * The message goes again under the same id after a reconnect, when no answer came within
   * `resendAfterMs`, and after a transient refusal (-503, -504, -408); the server stores it once.
   */
  send(message: OutgoingMessage): Promise<Ack> {
    if (this.closed) {
      return Promise.reject(new SendError(message.id ?? "", Code.CLOSED, "the session was closed"));
    }
    return this.outbox.send(message);
  }

  // -- rooms -------------------------------------------------------------------------------------
  /**
   * Move to another room (op 12; "" = leave any): room pushes come as messages with seq 0.
   * Resolves once the server answered (op 13); after a reconnect the room is joined again.
   */
  changeRoom(room: string): Promise<void> {
    if (room.includes("\0") || encoder.encode(room).length > 256) {
      return Promise.reject(new Error("a room id is at most 256 bytes of UTF-8, without NUL"));
    }
    if (this.closed) return Promise.reject(new Error("the session was closed"));
    this.wantedRoom = room;
    const done = new Promise<void>((resolve, reject) => this.roomWaiters.push({ room, resolve, reject }));
    const link = this.link;
    if (link !== null && link.authed) this.sendRoom(link, room);
    return done;
  }

  /** The room this session is in (as last answered), or wants to be in. */
  get room(): string {
    return this.wantedRoom ?? this.link?.room ?? "";
  }

  private sendRoom(link: Link, room: string): void {
    link.rooms.set(link.send(Op.CHANGE_ROOM, room), room);
  }

  private roomChanged(link: Link, seq: number): void {
    const room = link.rooms.get(seq);
    if (room === undefined) return;
    link.rooms.delete(seq);
    link.room = room;
    this.emit("room", [{ room }], (e) => this.failed(e));
    const latest = room === this.wantedRoom;
    for (let i = this.roomWaiters.length - 1; i >= 0; i--) {
      const waiter = this.roomWaiters[i] as (typeof this.roomWaiters)[number];
      if (waiter.room === room || latest) {
        this.roomWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
  }

  // -- reporting ---------------------------------------------------------------------------------
  private report(kind: SessionError["kind"], message: string, cause?: unknown): void {
    const error = new SessionError(kind, message, cause);
    if (this.listening("error")) this.emit("error", [error], () => {});
    else if (kind === "handler" || kind === "listener") console.error(error, cause); // (a bug of the page's: not silent)
  }

  private failed(error: unknown): void {
    this.report("listener", "an event listener threw", error);
  }
}
