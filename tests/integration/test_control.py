"""`mpim reload` / `mpim stop` find the master that runs with a config (title or pid file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.cluster import start_master
from tests.support import ROOT, ServerProcess


def mpim(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpim", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )


def reload_then_stop(srv: ServerProcess, *how: str) -> None:
    assert srv.proc is not None
    pid = srv.proc.pid
    done = mpim("reload", *how)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"mpim reload: sent SIGHUP to the master (pid {pid})\n",
        "",
    )
    srv.wait_log("reload begin", timeout=15)
    srv.wait_log("reload done", timeout=30)
    done = mpim("stop", *how)
    assert (done.returncode, done.stdout) == (0, f"mpim stop: sent SIGTERM to the master (pid {pid})\n")
    assert srv.wait(30) == 0
    assert "drain begin" in srv.log()


def test_reload_and_stop_find_the_master_by_its_title(tmp_path: Path) -> None:
    srv = start_master(tmp_path, 1)
    try:
        assert srv.proc is not None
        title = Path(f"/proc/{srv.proc.pid}/cmdline").read_bytes().rstrip(b"\0")
        assert title == f"mpim: master -c {srv.config}".encode()
        elsewhere = mpim("reload", "-c", str(tmp_path / "other.toml"))
        assert elsewhere.returncode == 2  # no such config file: the usual config error
        reload_then_stop(srv, "-c", str(srv.config))
    finally:
        srv.stop()


def test_reload_and_stop_use_the_pid_file(tmp_path: Path) -> None:
    pid_path = tmp_path / "run" / "mpim.pid"
    pid_path.parent.mkdir()
    server = {"workers": 1, "graceful_timeout": 5.0, "pid_file": str(pid_path)}
    srv = start_master(tmp_path, 1, server=server)
    try:
        assert srv.proc is not None
        assert pid_path.read_text() == f"{srv.proc.pid}\n"
        not_a_master = mpim("reload", "--pid", str(os.getpid()))
        assert not_a_master.returncode == 1
        assert f"mpim reload: pid {os.getpid()}, which is not an mpim master" in not_a_master.stderr
        pid_path.rename(
            pid_path.with_suffix(".moved")
        )  # the title would still match: the pid file is what counts
        missing = mpim("reload", "-c", str(srv.config))
        assert missing.returncode == 1 and "no pid in the pid file" in missing.stderr
        pid_path.with_suffix(".moved").rename(pid_path)
        reload_then_stop(srv, "-c", str(srv.config))
        assert not pid_path.exists()
    finally:
        srv.stop()


def test_reload_by_pid(tmp_path: Path) -> None:
    srv = start_master(tmp_path, 1)
    try:
        assert srv.proc is not None
        reload_then_stop(srv, "--pid", str(srv.proc.pid))
    finally:
        srv.stop()
