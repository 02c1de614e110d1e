// examples/web in headless Chromium against a real `mpim master`: two people log in on the
// page (json auth), see pushes and write to each other. Started by tests/clients/test_js.py.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { launch, pushMid, staticServer, WS_URL } from "./support.mjs";

let browser;
let pages;
before(async () => {
  pages = await staticServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await pages?.close();
});

async function logIn(mid, key) {
  const page = await browser.context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(message.text());
  });
  await page.goto(`${pages.base}/examples/web/?ws=${encodeURIComponent(WS_URL())}`);
  await page.fill("#mid", String(mid));
  await page.fill("#key", key);
  await page.click("#login-button");
  await page.waitForSelector("#status[data-state=ready]");
  return { page, problems };
}

const lines = (page) => page.$$eval("#stream li", (items) => items.map((li) => li.lastChild?.textContent ?? ""));

async function write(page, to, text) {
  await page.fill("#to", String(to));
  await page.fill("#text", text);
  await page.click("#send-button");
  await page.waitForFunction(() => document.getElementById("send-result")?.textContent?.startsWith("sent"));
}

test("the example page: log in, see the stream, send private messages both ways", async () => {
  const alice = await logIn(5001, "alice-laptop");
  const bob = await logIn(5002, "bob-phone");

  const seq = await pushMid(5001, "welcome, alice");
  await alice.page.waitForFunction(
    (seq) => document.querySelector(`#stream li[data-seq="${seq}"]`)?.textContent?.includes("welcome, alice"),
    seq,
  );

  await write(alice.page, 5002, "hi bob");
  await bob.page.waitForFunction(() => document.getElementById("stream")?.textContent?.includes("5001 → 5002: hi bob"));
  await write(bob.page, 5001, "hi alice");
  await alice.page.waitForFunction(() => document.getElementById("stream")?.textContent?.includes("5002 → 5001: hi alice"));

  assert.deepEqual(await lines(alice.page), ["welcome, alice", "5001 → 5002: hi bob", "5002 → 5001: hi alice"]);
  assert.deepEqual(await lines(bob.page), ["5001 → 5002: hi bob", "5002 → 5001: hi alice"]);
  const last = await alice.page.$eval("#stream li:last-child", (li) => li.getAttribute("data-seq"));
  await alice.page.waitForFunction((last) => document.getElementById("position")?.textContent?.endsWith(`:${last}`), last);
  if (process.env.MPIM_SCREENSHOT) await alice.page.screenshot({ path: process.env.MPIM_SCREENSHOT });

  await alice.page.click("#logout");
  await alice.page.waitForSelector("#login:not([hidden])");
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
});
