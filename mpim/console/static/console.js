"use strict";
// The console: reads the router's event stream (/console/events, Server-Sent Events read with
// fetch so the API key can travel as a header), renders each snapshot, and pushes test messages
// through the push API. Everything the server sends is written with textContent, never as HTML:
// room ids and keys come from clients.
(function () {
  const $ = (id) => document.getElementById(id);
  const KEY = "mpim-api-key";
  let apiKey = sessionStorage.getItem(KEY) || ""; // asked for when the server says 401
  const headers = () => (apiKey ? { "X-API-Key": apiKey } : {});
  const number = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  const chart = new MpimChart($("chart"), [
    { name: "pushes in / s", color: "#3b7cf6" },
    { name: "deliveries / s", color: "#1fa971" },
  ], 300);
  let retryTimer = null;
  let controller = null;

  function setStatus(text, kind) {
    const pill = $("status");
    pill.textContent = text;
    pill.className = "pill" + (kind ? " " + kind : "");
  }

  function askKey() {
    $("keybox").hidden = false;
    $("key-input").focus();
  }

  $("keybox").addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey = $("key-input").value;
    sessionStorage.setItem(KEY, apiKey);
    $("keybox").hidden = true;
    connect();
  });

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "–" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function fill(tableId, rows, columns) {
    const body = $(tableId).tBodies[0];
    const fresh = document.createElement("tbody");
    for (const item of rows) {
      const tr = document.createElement("tr");
      for (const [value, cls] of columns(item)) cell(tr, value, cls);
      fresh.appendChild(tr);
    }
    body.replaceWith(fresh);
  }

  function render(s) {
    $("host").textContent = s.host;
    $("total").textContent = number.format(s.total);
    $("ips").textContent = number.format(s.ips);
    $("rate-pushes").textContent = number.format(s.rates.pushes);
    $("rate-deliveries").textContent = number.format(s.rates.deliveries);
    $("room-total").textContent = number.format(s.room_total);
    $("worker-count").textContent = s.workers.length;
    $("generation").textContent = s.generation === null ? "–" : s.generation;
    $("bus").textContent = s.bus ? "up" : "DOWN";
    fill("workers", s.workers, (w) => {
      const state = w.draining ? "draining" : w.bus ? "serving" : "off the bus";
      return [
        [`${w.host}/${w.slot}`], [w.pid], [number.format(w.conns), "num"], [number.format(w.tcp), "num"],
        [number.format(w.ws), "num"], [number.format(w.rooms), "num"],
        [w.cpu === null || w.cpu === undefined ? "–" : number.format(w.cpu), "num"],
        [state, w.draining ? "state-draining" : w.bus ? "" : "state-offbus"],
      ];
    });
    fill("hosts", s.hosts, (h) => [[h.host], [h.workers, "num"], [number.format(h.conns), "num"]]);
    fill("processes", s.processes, (p) => [
      [p.role], [p.pid], [p.cpu === null || p.cpu === undefined ? "–" : number.format(p.cpu), "num"],
    ]);
    fill("rooms", s.rooms, (r) => [[r.room, "room"], [number.format(r.count), "num"]]);
    if (s.point) chart.add(s.point);
    addEvents(s.events);
  }

  function addEvents(events) {
    if (!events || !events.length) return;
    const list = $("events");
    const none = $("no-events");
    if (none) none.remove();
    for (const e of events) {
      const li = document.createElement("li");
      li.className = e.level;
      const time = document.createElement("time");
      time.textContent = new Date(e.t * 1000).toLocaleTimeString();
      li.appendChild(time);
      li.appendChild(document.createTextNode(e.text));
      list.insertBefore(li, list.firstChild);
    }
    while (list.children.length > 100) list.removeChild(list.lastChild);
  }

  function dispatch(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length) return;
    const payload = JSON.parse(data.join("\n"));
    if (event === "hello") {
      chart.setPoints(payload.history);
      addEvents(payload.events);
      render(Object.assign({}, payload.snapshot, { events: [], point: null }));
    } else if (event === "snapshot") {
      render(payload);
    }
  }

  function retry() {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, 2000);
  }

  async function connect() {
    if (controller) controller.abort();
    controller = new AbortController();
    setStatus("connecting…", "");
    let response;
    try {
      response = await fetch("/console/events", { headers: headers(), cache: "no-store", signal: controller.signal });
    } catch (err) {
      setStatus("offline", "bad");
      retry();
      return;
    }
    if (response.status === 401 || response.status === 403) {
      setStatus("API key needed", "bad");
      askKey();
      return;
    }
    if (!response.ok) {
      setStatus(`HTTP ${response.status}`, "bad");
      retry();
      return;
    }
    setStatus("live", "ok");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          dispatch(block);
        }
      }
    } catch (err) {
      // the connection dropped: reconnect below
    }
    setStatus("reconnecting…", "bad");
    retry();
  }

  $("push-kind").addEventListener("change", () => {
    const room = $("push-kind").value === "room";
    $("push-target").placeholder = room ? "live://1000" : "123, 456";
    $("push-target").value = room ? "live://1000" : "";
  });

  $("push").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = $("push-result");
    const kind = $("push-kind").value;
    const target = $("push-target").value.trim();
    const op = $("push-op").value;
    const q = new URLSearchParams({ operation: op });
    let path;
    if (kind === "room") {
      const at = target.indexOf("://");
      if (at <= 0) {
        out.textContent = "a room id is type://id, e.g. live://1000";
        return;
      }
      q.set("type", target.slice(0, at));
      q.set("room", target.slice(at + 3));
      path = "/goim/push/room";
    } else {
      const mids = target.split(/[\s,]+/).filter(Boolean);
      if (!mids.length) {
        out.textContent = "give one or more mids, e.g. 123, 456";
        return;
      }
      mids.forEach((mid) => q.append("mids", mid));
      path = "/goim/push/mids";
    }
    out.textContent = "pushing…";
    try {
      const response = await fetch(`${path}?${q}`, { method: "POST", headers: headers(), body: $("push-body").value });
      out.textContent = `HTTP ${response.status} ${await response.text()}`;
      if (response.status === 401 || response.status === 403) askKey();
    } catch (err) {
      out.textContent = `failed: ${err}`;
    }
  });

  window.addEventListener("resize", () => chart.draw());
  chart.draw();
  connect();
})();
