/** One WebSocket connection of a session: its frame numbering and what it is waiting for. */

import { encodeFrame, Op } from "./frame.js";

/** What the SDK needs of a WebSocket: the browser's, Node's (22+), or e.g. the `ws` package's. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: unknown;
  onmessage: unknown;
  onclose: unknown;
  onerror: unknown;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

const OPEN = 1;
const EMPTY = new Uint8Array(0);

export class Link {
  readonly ws: WebSocketLike;
  /** The header seq of the last numbered frame sent (Auth is 1): each next one is + 1 (the `seq` cap). */
  private numbered = 0;
  authSeq = 0;
  authed = false;
  /** Some stream frame (a push with a seq, or op 21) came on this link: acks mean something to it. */
  streamed = false;
  /** Something arrived since the last heartbeat was sent. */
  heard = true;
  /** The room joined at Auth (the token's), then as changed by op 13. */
  room: string;
  /** Header seq of each op 4 sent -> its message id (the answer echoes the seq). */
  readonly messages = new Map<number, string>();
  /** Header seq of each op 12 sent -> the room asked for. */
  readonly rooms = new Map<number, string>();
  authTimer: ReturnType<typeof setTimeout> | undefined;
  beatTimer: ReturnType<typeof setInterval> | undefined;
  stableTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(ws: WebSocketLike, room: string) {
    this.ws = ws;
    this.room = room;
  }

  get open(): boolean {
    return this.ws.readyState === OPEN;
  }

  /** Send a numbered frame; returns its header seq. */
  send(op: number, body: Uint8Array | string = EMPTY): number {
    this.numbered = (this.numbered + 1) & 0x7fffffff; // (the server's numbering wraps the same way)
    this.write(encodeFrame(op, body, this.numbered));
    return this.numbered;
  }

  /** Op 18: outside the numbering, its header seq is the stream seq it acks. */
  ack(seq: number): void {
    this.write(encodeFrame(Op.ACK, EMPTY, seq));
  }

  private write(data: Uint8Array): void {
    if (!this.open) return; // (closing: the next connection sends what matters again)
    this.ws.send(data);
  }

  /** Stop listening to this socket and close it. */
  shut(code = 1000, reason = ""): void {
    clearTimeout(this.authTimer);
    clearInterval(this.beatTimer);
    clearTimeout(this.stableTimer);
    const ws = this.ws;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      // (already closed, or a code the implementation refuses)
    }
  }
}
