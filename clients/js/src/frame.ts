/**
 * goim v2 frames, sans I/O: a 16-byte big-endian header and a body.
 *
 *     packLen int32 | headerLen int16 | ver int16 | op int32 | seq int32 | body
 *
 * `packLen` counts the header; `headerLen` is always 16. Over WebSocket one binary
 * message holds one or more whole frames; a room batch is an op-9 frame whose body is
 * more frames, each with its own header (and, for reliable pushes, its own seq).
 */

export const HEADER_SIZE = 16;

/** Operations of goim v2 and mpim's reliable-delivery ops (18-22). */
export const Op = {
  HEARTBEAT: 2,
  HEARTBEAT_REPLY: 3,
  SEND_MSG: 4,
  SEND_MSG_REPLY: 5,
  DISCONNECT_REPLY: 6,
  AUTH: 7,
  AUTH_REPLY: 8,
  RAW: 9,
  CHANGE_ROOM: 12,
  CHANGE_ROOM_REPLY: 13,
  ACK: 18,
  RESUME: 20,
  RESUMED: 21,
  CONFIRM: 22,
} as const;

export interface Frame {
  ver: number;
  op: number;
  seq: number;
  body: Uint8Array;
}

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

const encoder = new TextEncoder();

/** One frame's bytes. A string body is sent as UTF-8. */
export function encodeFrame(op: number, body: Uint8Array | string = EMPTY, seq = 0, ver = 1): Uint8Array {
  const payload = typeof body === "string" ? encoder.encode(body) : body;
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setInt32(0, HEADER_SIZE + payload.length);
  view.setInt16(4, HEADER_SIZE);
  view.setInt16(6, ver);
  view.setInt32(8, op);
  view.setInt32(12, seq);
  out.set(payload, HEADER_SIZE);
  return out;
}

/**
 * The frames of one WebSocket message, with op-9 batches split into their inner frames
 * (in order). Throws {@link ProtocolError} on a bad header or a message that ends inside
 * a frame.
 */
export function decodeMessage(data: ArrayBuffer | Uint8Array): Frame[] {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  const frames: Frame[] = [];
  split(bytes, frames, true);
  return frames;
}

function split(bytes: Uint8Array, out: Frame[], outer: boolean): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  while (pos < bytes.length) {
    if (bytes.length - pos < HEADER_SIZE) {
      throw new ProtocolError(`${bytes.length - pos} bytes left over after the last frame`);
    }
    const packLen = view.getInt32(pos);
    const headerLen = view.getInt16(pos + 4);
    if (headerLen !== HEADER_SIZE) throw new ProtocolError(`headerLen ${headerLen} != ${HEADER_SIZE}`);
    if (packLen < HEADER_SIZE) throw new ProtocolError(`packLen ${packLen} < ${HEADER_SIZE}`);
    if (pos + packLen > bytes.length) {
      throw new ProtocolError(`a frame of ${packLen} bytes with ${bytes.length - pos} left`);
    }
    const frame: Frame = {
      ver: view.getInt16(pos + 6),
      op: view.getInt32(pos + 8),
      seq: view.getInt32(pos + 12),
      body: bytes.subarray(pos + HEADER_SIZE, pos + packLen),
    };
    if (frame.op === Op.RAW && outer) split(frame.body, out, false);
    else out.push(frame);
    pos += packLen;
  }
}

const EMPTY = new Uint8Array(0);
