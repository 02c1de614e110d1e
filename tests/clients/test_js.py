"""mpim-client, the TypeScript SDK in clients/js: its type check and unit tests, and its
end-to-end tests in headless Chromium (playwright-core driving Debian's ``chromium``) and in
Node, against a real ``mpim master`` started here.

The JavaScript side lives in clients/js/test: ``unit/`` runs on Node's test runner with a
fake server; ``e2e/`` gets the master's ports in the environment (``MPIM_WS_URL``,
``MPIM_HTTP``, ``MPIM_MASTER_PID`` to find the processes it kills). Node, npm and
clients/js/node_modules are required: run-tests.sh installs Debian's ``nodejs`` and ``npm``
when they are missing and runs ``npm ci`` there; without them these tests fail (they do not
skip) with what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.integration.cluster import Cluster, start_master
from tests.support import ROOT, ServerProcess, run

JS = ROOT / "clients" / "js"
NODE_MAJOR = 20  # the tests' oldest Node (mock timers, a WebSocket); the SDK itself runs on 18+


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` in clients/js; fail the test with its output unless it exits 0."""
    try:
        done = subprocess.run(
            cmd,
            check=False,
            cwd=JS,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout:g}s:\n{out[-6000:]}")
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-8000:]}")
    return done.stdout


def node_major() -> int:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail(
            "mpim-client's tests need Node.js and npm: apt-get install -y nodejs npm "
            "(./run-tests.sh installs them), then npm ci in clients/js"
        )
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
    match = re.match(r"v(\d+)\.", version.strip())
    major = int(match.group(1)) if match else 0
    if major < NODE_MAJOR:
        pytest.fail(
            f"mpim-client's tests need Node {NODE_MAJOR} or later (its test runner's mock timers, a global"
            f" WebSocket); this is {version.strip()}: install a newer nodejs"
        )
    return major


@pytest.fixture(scope="module")
def built() -> list[str]:
    """node_modules in place (npm ci, as run-tests.sh does), dist/ built; the node command to run tests."""
    major = node_major()
    if not (JS / "node_modules" / ".package-lock.json").exists():
        _run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], 300)
    _run(["npm", "run", "build", "--silent"], 180)
    # Node 22+ has a global WebSocket; 20 and 21 have it behind a flag (the SDK's Node test uses it)
    return ["node", "--experimental-websocket"] if major < 22 else ["node"]


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], ServerProcess]]:
    """A master (2 workers) per kind of test, started when a test first asks for it."""
    started: dict[str, ServerProcess] = {}
    kinds = {
        # a small window, so the replays of the tests take several rounds of acks
        "delivery": {"delivery": {"replay_max": 100, "max_unacked": 16}},
        "none": {"upstream": {"ack": "none"}},
        "only": {"upstream": {"ack": "only"}},
        "rigor": {"upstream": {"ack": "rigor"}},
    }

    def get(kind: str) -> ServerProcess:
        if kind not in started:
            srv = start_master(tmp_path_factory.mktemp(f"master-{kind}"), 2, **kinds[kind])
            started[kind] = srv
            run(Cluster(srv).wait_workers(2))
        return started[kind]

    yield get
    for srv in started.values():
        srv.stop()


def passed(out: str) -> int:
    """Node's spec reporter ends with lines ``<sign> pass N`` and ``<sign> fail N``: all passed, how many."""
    fails = re.findall(r"^\S+ fail (\d+)$", out, re.M)
    counts = re.findall(r"^\S+ pass (\d+)$", out, re.M)
    assert fails == ["0"] and counts, out[-4000:]
    return int(counts[-1])


def e2e(node: list[str], srv: ServerProcess, test_file: str, **extra: str) -> str:
    assert srv.proc is not None
    env = {
        "MPIM_WS_URL": srv.ws_url,
        "MPIM_HTTP": f"http://127.0.0.1:{srv.http_port}",
        "MPIM_MASTER_PID": str(srv.proc.pid),
        **extra,
    }
    return _run([*node, "--test", "--test-reporter=spec", f"test/e2e/{test_file}"], 240, env)


def test_the_sources_type_check_strictly(built: list[str]) -> None:
    """``tsc --noEmit`` in strict mode over src/ and the example page's checked JavaScript."""
    _run(["npm", "run", "check", "--silent"], 180)


def test_unit(built: list[str]) -> None:
    out = _run([*built, "--test", "--test-reporter=spec", "test/unit/"], 120)
    assert passed(out) >= 30


def test_browser_delivery(built: list[str], masters: Callable[[str], ServerProcess]) -> None:
    """Offline then resume, a reload resuming from localStorage, an unrecovered resume, a
    kill -9 of the router and of the user's worker during a stream (once, in order), and goim's
    pushes (room, key, everyone) with a changed room joined again after a reconnect."""
    out = e2e(built, masters("delivery"), "delivery.test.mjs")
    assert passed(out) == 6


@pytest.mark.parametrize("mode", ["none", "only", "rigor"])
def test_browser_chat(built: list[str], masters: Callable[[str], ServerProcess], mode: str) -> None:
    out = e2e(built, masters(mode), "chat.test.mjs", MPIM_ACK_MODE=mode)
    assert passed(out) == 3


def test_example_page(built: list[str], masters: Callable[[str], ServerProcess]) -> None:
    assert passed(e2e(built, masters("none"), "example.test.mjs")) == 1


def test_node(built: list[str], masters: Callable[[str], ServerProcess]) -> None:
    assert passed(e2e(built, masters("none"), "node.test.mjs")) == 1


def test_a_missing_node_fails_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y nodejs npm"):
        node_major()


def test_the_lock_names_only_dev_dependencies() -> None:
    """No runtime dependency: package.json has devDependencies only, all pinned in the lock."""
    import json

    package = json.loads((JS / "package.json").read_text())
    assert "dependencies" not in package
    lock = json.loads((JS / "package-lock.json").read_text())
    assert lock["packages"][""]["devDependencies"] == package["devDependencies"]
    assert all(entry.get("dev") for name, entry in lock["packages"].items() if name), "a non-dev package"


def test_build_output_is_an_es_module_with_declarations(built: list[str]) -> None:
    dist = JS / "dist"
    assert (dist / "index.d.ts").exists() and "export" in (dist / "index.js").read_text()
    assert (dist / "mpim-client.min.js").stat().st_size > 0


def test_the_tab_bench_runs(built: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m bench.js_tab`` (bench/RESULTS.md's figures), small: both phases counted, in order."""
    from bench import js_tab

    js_tab.main(["--messages", "300", "--no-build", "--timeout", "60"])
    out = capsys.readouterr().out
    assert "gzipped" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith(("| replay", "| live"))]
    assert [(r[0].strip(), r[1].strip(), r[-1].strip()) for r in rows] == [
        ("replay", "300", "1"),
        ("live", "300", "1"),
    ]
