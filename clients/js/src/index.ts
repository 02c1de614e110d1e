/**
 * mpim-client: mpim's reliable delivery and private chat over goim's binary WebSocket frames,
 * for browsers and Node. See README.md.
 */

export {
  type DisconnectInfo,
  type Handler,
  Message,
  type ResumeInfo,
  Session,
  type SessionEvents,
  type SessionOptions,
  type SessionState,
} from "./session.js";
export { type Ack, type OutgoingMessage } from "./outbox.js";
export { Code, SendError, SessionError, TRANSIENT } from "./errors.js";
export { browserStorage, defaultStorage, memoryStorage, type Position, type PositionStorage } from "./storage.js";
export { type Token, type TokenValue } from "./token.js";
export { type WebSocketConstructor, type WebSocketLike } from "./link.js";
export { decodeMessage, encodeFrame, type Frame, HEADER_SIZE, Op, ProtocolError } from "./frame.js";
