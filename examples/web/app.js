// @ts-check
// The example page: log in as a user, follow the user's stream, send private messages.
// It uses mpim-client as built in clients/js/dist (cd clients/js && npm ci && npm run build).

import { Session } from "../../clients/js/dist/index.js";

/** @typedef {import("../../clients/js/dist/index.js").Message} Message */

/** @param {string} id */
function $(id) {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`#${id} is missing`);
  return element;
}
/** @param {string} id */
const input = (id) => /** @type {HTMLInputElement} */ ($(id));

/** @type {Session | null} */
let session = null;
let me = 0;

const params = new URLSearchParams(location.search);
input("ws-url").value = params.get("ws") ?? `ws://${location.hostname || "127.0.0.1"}:3102/sub`;
input("mid").value = params.get("mid") ?? "";
// One device key per tab (sessionStorage: kept across reloads, not shared with other tabs): two
// connections with the same key kick each other.
input("key").value =
  params.get("key") ?? sessionStorage.getItem("mpim-example:key") ?? `web-${Math.random().toString(36).slice(2, 8)}`;
input("room").value = params.get("room") ?? "";

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  me = Number(input("mid").value);
  const key = input("key").value.trim();
  sessionStorage.setItem("mpim-example:key", key);
  const jwt = input("token").value.trim();
  const room = input("room").value.trim();
  // json auth (the server's default, for trying out): the page says who it is; jwt auth: the backend does
  const token = jwt || { mid: me, key, room_id: room, platform: "web", accepts: [1000, 1001, 1002] };
  session = new Session(input("ws-url").value.trim(), token, show);
  session.on("connected", () => status());
  session.on("disconnected", (info) => status(info.reconnectInMs === null ? "" : `(${info.reason}; again in ${info.reconnectInMs} ms)`));
  session.on("resumed", (info) => {
    if (!info.recovered) note(`the server could not replay everything (epoch ${info.epoch}): older messages may be missing`);
  });
  session.on("ready", () => status());
  session.on("heartbeat", (info) => ($("online").textContent = String(info.online)));
  session.on("error", (error) => console.warn("mpim:", error.kind, error.message));
  session.start();
  $("me").textContent = String(me);
  $("login").hidden = true;
  $("chat").hidden = false;
  status();
});

$("logout").addEventListener("click", async () => {
  await session?.close();
  session = null;
  $("stream").replaceChildren();
  $("chat").hidden = true;
  $("login").hidden = false;
});

$("send").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (session === null) return;
  const to = Number(input("to").value);
  const text = input("text").value;
  const result = $("send-result");
  result.className = "";
  result.textContent = "sending…";
  input("text").value = "";
  try {
    const ack = await session.send({ to, op: 1000, body: text });
    result.textContent = ack.seq ? `sent ✓ #${ack.seq}` : "sent ✓"; // (#seq: its place in your own stream)
  } catch (error) {
    const e = /** @type {{code?: number, reason?: string, message: string}} */ (error);
    result.className = "error";
    result.textContent = `not sent: ${e.code ?? ""} ${e.reason ?? e.message}`;
  }
});

/** Every message of the stream, once and in order (the SDK acks it once this returns). @param {Message} message */
function show(message) {
  const item = document.createElement("li");
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${message.seq ? `#${message.seq}` : "push"} op ${message.op} ${new Date().toLocaleTimeString()}`;
  item.append(meta);
  let text = message.text();
  try {
    const value = /** @type {unknown} */ (JSON.parse(text));
    if (value !== null && typeof value === "object" && "from" in value && "to" in value) {
      const chat = /** @type {{from: number, to: number, body: unknown}} */ (value);
      text = `${chat.from} → ${chat.to}: ${typeof chat.body === "string" ? chat.body : JSON.stringify(chat.body)}`;
      if (chat.from === me) item.className = "mine";
    }
  } catch {
    // not JSON: a plain push, shown as it is
  }
  item.append(text);
  item.dataset["seq"] = String(message.seq);
  $("stream").append(item);
  item.scrollIntoView({ block: "nearest" });
  queueMicrotask(() => status()); // (once this returned, the SDK counts the message handled: the position moves)
}

/** @param {string} text */
function note(text) {
  const item = document.createElement("li");
  item.className = "note";
  item.textContent = text;
  $("stream").append(item);
}

function status(extra = "") {
  if (session === null) return;
  const state = $("status");
  state.dataset["state"] = session.state;
  state.textContent = `${session.state} ${extra}`.trim();
  $("position").textContent = session.epoch ? `${session.epoch}:${session.seq}` : "–";
}
