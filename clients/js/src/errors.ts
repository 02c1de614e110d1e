/** Errors a {@link Session} reports: a refused message, and what went wrong with a connection. */

/**
 * The codes of a message's answer (op 5 `code`), and the SDK's own. A resend of the same id
 * may get past the transient ones; the server stores a private message once per id.
 */
export const Code = {
  /** The message is malformed (the server says which field). */
  BAD_REQUEST: -400,
  /** Private chat needs a user (mid > 0). */
  FORBIDDEN: -403,
  /** rigor: the receipt was not confirmed in time (transient: sent again). */
  NOT_CONFIRMED: -408,
  /** The SDK's own: the message is larger than `maxBody` once encoded (the server would close). */
  TOO_LARGE: -413,
  /** The recipient has too many unread messages, or too many are unconfirmed: try later. */
  TOO_MANY: -429,
  /** Private chat needs the inbox (`[inbox] enabled = false` on the server). */
  NO_INBOX: -501,
  /** The business backend refused the message or failed. */
  BAD_GATEWAY: -502,
  /** The worker's link to the router is down (transient: sent again). */
  UNAVAILABLE: -503,
  /** No answer in time: the router's, or, from the SDK, none within `send()`'s timeout (transient). */
  TIMEOUT: -504,
  /** The SDK's own: the session was closed before the message was answered. */
  CLOSED: -1,
} as const;

/** Refusals that a resend under the same id may get past (the SDK resends them itself). */
export const TRANSIENT: ReadonlySet<number> = new Set([Code.UNAVAILABLE, Code.TIMEOUT, Code.NOT_CONFIRMED]);

/** A message the server refused, or that got no answer in time (`code`, see {@link Code}). */
export class SendError extends Error {
  readonly id: string;
  readonly code: number;
  readonly reason: string;

  constructor(id: string, code: number, reason: string) {
    super(`${id}: ${code} ${reason}`);
    this.name = "SendError";
    this.id = id;
    this.code = code;
    this.reason = reason;
  }
}

/**
 * What the `error` event carries: `kind` says what failed — `"connect"` (the WebSocket did not
 * open or closed before Auth's answer: a refused token closes it too), `"protocol"` (bytes that
 * are not goim frames), `"handler"` (your onMessage threw or rejected: the message still counts
 * as handled), `"listener"` (an event listener threw), `"storage"` (the position could not be
 * loaded or saved).
 */
export class SessionError extends Error {
  readonly kind: "connect" | "protocol" | "handler" | "listener" | "storage";
  readonly cause?: unknown;

  constructor(kind: SessionError["kind"], message: string, cause?: unknown) {
    super(message);
    this.name = "SessionError";
    this.kind = kind;
    if (cause !== undefined) this.cause = cause;
  }
}
