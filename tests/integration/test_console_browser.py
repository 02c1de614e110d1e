"""The console in a real headless Chromium (DevTools protocol) against a real ``mpim master``.

Chromium is required: run-tests.sh installs Debian's ``chromium`` when it is missing, and this
test fails (it does not skip) with the reason when the browser cannot start.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cdp import Browser, BrowserError, Page
from mpim.client import connect_tcp
from mpim.proto import Op
from tests.integration.cluster import Cluster, start_master
from tests.support import run

ERRORS = (
    "window.__errors = []; window.addEventListener('error', e => window.__errors.push(String(e.message)));"
)


def text(element_id: str) -> str:
    return f"document.getElementById({json.dumps(element_id)}).textContent"


def table(element_id: str) -> str:
    rows = f"[...document.querySelectorAll('#{element_id} tbody tr')]"
    return f"{rows}.map(r => [...r.cells].map(c => c.textContent))"


async def launch() -> Browser:
    try:
        return await Browser.launch()
    except BrowserError as exc:
        pytest.fail(f"the console test needs a headless Chromium (apt-get install -y chromium): {exc}")


async def push_from_page(page: Page, kind: str, target: str, body: str) -> str:
    await page.evaluate(
        f"(() => {{ const k = document.getElementById('push-kind'); k.value = {json.dumps(kind)};"
        " k.dispatchEvent(new Event('change'));"
        f" document.getElementById('push-target').value = {json.dumps(target)};"
        f" document.getElementById('push-body').value = {json.dumps(body)};"
        " document.getElementById('push-result').textContent = '';"
        " document.getElementById('push-send').click(); })()"
    )
    result = text("push-result")
    return str(await page.wait_for(f"{result} !== '' && {result} !== 'pushing…' && {result}"))


def test_the_console_shows_the_host_live_and_pushes(tmp_path: Path) -> None:
    srv = start_master(tmp_path, 2)

    async def main() -> None:
        c = Cluster(srv)
        browser = await launch()
        try:
            await c.wait_workers(2)
            clients = [(await c.join(f"b{i}", 500 + i, "live://42", ws=i % 2 == 1))[0] for i in range(3)]
            page = await browser.new_page("about:blank")
            await page.send("Page.addScriptToEvaluateOnNewDocument", {"source": ERRORS})
            await page.goto(f"http://127.0.0.1:{srv.http_port}/console")
            await page.wait_for(f"{text('status')} === 'live'", what="the event stream")
            await page.wait_for(f"{text('total')} === '3'", what="3 connections on the page")
            assert await page.evaluate(table("rooms")) == [["live://42", "3"]]
            workers = await page.evaluate(table("workers"))
            assert len(workers) == 2 and sum(int(row[2]) for row in workers) == 3

            for i in range(3, 5):  # two more clients: the page follows
                clients.append((await c.join(f"b{i}", 500 + i, "live://42"))[0])
            await page.wait_for(f"{text('total')} === '5'", what="5 connections on the page")
            await page.wait_for(f"{table('rooms')}[0][1] === '5'", what="the room at 5")

            bad = await connect_tcp("127.0.0.1", srv.tcp_port)  # a refused token: a line under warnings
            await bad.send(Op.AUTH, b"not a token")
            await page.wait_for(f"{text('events')}.includes('auth failure')", what="the auth failure shown")
            await bad.close()

            answer = await push_from_page(page, "room", "live://42", "from the console")
            assert answer.startswith("HTTP 200") and '"code":0' in answer
            for client in clients:
                frame = await client.recv_push()
                assert (frame.op, frame.body) == (1000, b"from the console")

            answer = await push_from_page(page, "mids", "501", "to one user")
            assert '"connections":1' in answer
            frame = await clients[1].recv_push()
            assert frame.body == b"to one user"

            answer = await push_from_page(page, "room", "no-type", "x")
            assert answer == "a room id is type://id, e.g. live://1000"  # refused in the page itself
            await page.wait_for(f"{text('rate-pushes')} !== '\\u2013'", what="the rates")
            assert await page.evaluate("window.__errors") == []
        finally:
            await browser.close()
            await c.close()

    try:
        run(main(), timeout=120)
    finally:
        srv.stop()


def test_with_an_api_key_the_page_asks_for_it(tmp_path: Path) -> None:
    key = "console-test-key-" + "k" * 20
    srv = start_master(tmp_path, 1, http={"api_key": key})

    async def main() -> None:
        browser = await launch()
        client = await connect_tcp("127.0.0.1", srv.tcp_port)
        try:
            await client.auth({"mid": 77, "key": "keyed", "room_id": "live://5", "accepts": [1000]})
            page = await browser.new_page(f"http://127.0.0.1:{srv.http_port}/console")  # opens: no data
            await page.wait_for(f"{text('status')} === 'API key needed'", what="the stream refused")
            assert await page.evaluate("!document.getElementById('keybox').hidden")

            async def enter(value: str) -> None:
                await page.evaluate(
                    f"document.getElementById('key-input').value = {json.dumps(value)};"
                    " document.getElementById('keybox').requestSubmit()"
                )

            await enter("wrong")
            await page.wait_for(
                f"{text('status')} === 'API key needed' && !document.getElementById('keybox').hidden",
                what="a wrong key refused again",
            )
            await enter(key)
            await page.wait_for(f"{text('status')} === 'live'", what="the stream with the key")
            await page.wait_for(f"{text('total')} === '1'", what="the one connection")
            answer = await push_from_page(page, "room", "live://5", "keyed push")
            assert answer.startswith("HTTP 200")
            frame = await client.recv_push()
            assert frame.body == b"keyed push"
            assert key not in str(await page.evaluate("location.href"))
        finally:
            await client.close()
            await browser.close()

    try:
        run(main(), timeout=120)
    finally:
        srv.stop()
