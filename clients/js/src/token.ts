/**
 * The Auth token: goim's JSON object (json auth: `{"mid", "key", "room_id", "accepts"}`), to
 * which the session adds its `caps`, or a JWT string minted by your backend (its claims carry
 * `caps` themselves). A function is called before every connection, so an expiring JWT can be
 * fetched anew.
 */

export type TokenValue = string | Readonly<Record<string, unknown>>;
export type Token = TokenValue | (() => TokenValue | Promise<TokenValue>);

/** What a token says about the connection, as far as the client can read it. */
export interface Claims {
  mid: string;
  key: string;
  room: string;
  caps: readonly string[] | null; // null: not readable (an opaque token)
}

/** The Auth frame's body. */
export function authBody(token: TokenValue, caps: readonly string[]): string {
  if (typeof token === "string") return token;
  const own = Array.isArray(token["caps"]) ? (token["caps"] as unknown[]) : [];
  const merged = [...new Set([...own.filter((c): c is string => typeof c === "string"), ...caps])];
  return JSON.stringify({ ...token, caps: merged });
}

/** The claims of a JSON token, or of a JWT's payload (read, not verified: the server does that). */
export function claimsOf(token: TokenValue, caps: readonly string[]): Claims {
  if (typeof token !== "string") return fromObject(token, caps);
  const parts = token.split(".");
  const payload = parts.length === 3 ? decodeBase64Url(parts[1] ?? "") : null;
  if (payload !== null) {
    try {
      const value: unknown = JSON.parse(payload);
      if (typeof value === "object" && value !== null) {
        return fromObject(value as Record<string, unknown>, null);
      }
    } catch {
      // an opaque token
    }
  }
  try {
    const value: unknown = JSON.parse(token); // (a JSON token passed as a string)
    if (typeof value === "object" && value !== null) return fromObject(value as Record<string, unknown>, null);
  } catch {
    // an opaque token
  }
  return { mid: "", key: "", room: "", caps: null };
}

function fromObject(value: Readonly<Record<string, unknown>>, added: readonly string[] | null): Claims {
  const text = (v: unknown): string => (typeof v === "string" || typeof v === "number" ? String(v) : "");
  const own = Array.isArray(value["caps"]) ? value["caps"].filter((c): c is string => typeof c === "string") : [];
  return {
    mid: text(value["mid"]),
    key: text(value["key"]),
    room: text(value["room_id"]),
    caps: added === null ? own : [...new Set([...own, ...added])],
  };
}

function decodeBase64Url(text: string): string | null {
  try {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}
