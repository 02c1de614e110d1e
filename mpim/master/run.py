"""The master process: boot checks, the run directory, and the one event loop."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator

from setproctitle import setproctitle

from mpim import log as mlog
from mpim.config import Config
from mpim.listen import BindError, client_listeners, probe, zmq_tcp_address
from mpim.master.arbiter import Arbiter
from mpim.master.host import ForkHost
from mpim.master.status import EXIT_BOOT_ERROR
from mpim.master.statusfile import StatusFile, path_in
from mpim.runtime import Endpoints

log = logging.getLogger("mpim.master")

MAX_SLEEP = 5.0  # the loop wakes at least this often even with nothing scheduled


@contextlib.contextmanager
def run_directory(configured: str) -> Iterator[str]:
    """``[server] run_dir`` (created, kept), or a private temp dir removed at exit."""
    if configured:
        os.makedirs(configured, exist_ok=True)
        yield configured
        return
    path = tempfile.mkdtemp(prefix="mpim-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _preload() -> None:
    """Import the children's code once here, so a respawned worker is up at once (no loop is made)."""
    import mpim.bus
    import mpim.router.main
    import mpim.worker.main  # noqa: F401


def _loop(arbiter: Arbiter, host: ForkHost, status: StatusFile | None = None) -> int:
    while arbiter.exit_code is None:
        if status is not None:
            status.update(arbiter.status())  # for the router's metrics; written only when it changed
        deadline = arbiter.next_deadline()
        timeout = MAX_SLEEP if deadline is None else min(MAX_SLEEP, max(0.0, deadline - arbiter.clock()))
        signals, lines = host.wait(timeout)
        for pid, line in lines:
            arbiter.message(pid, line)
        for signum in signals:
            arbiter.signal(signum)
        for pid, code in host.reap():
            arbiter.exited(pid, code)
        arbiter.tick()
    return arbiter.exit_code


def run(cfg: Config, path: str | None) -> int:
    mlog.setup(cfg.log.level, cfg.log.file, "master")
    setproctitle(f"mpim: master -c {os.path.abspath(path)}" if path else "mpim: master")
    try:
        zmq_binds = (cfg.ingress.zmq_bind, cfg.router.endpoint, cfg.bus.in_endpoint, cfg.bus.out_endpoint)
        tcp_zmq = [a for a in map(zmq_tcp_address, zmq_binds) if a]
        probe([*(lis.addr for lis in client_listeners(cfg)), cfg.http.bind, *tcp_zmq])
    except BindError as exc:
        log.error("cannot start: %s", exc)
        if cfg.log.file:
            print(f"mpim master: cannot start: {exc}", file=sys.stderr)
        return EXIT_BOOT_ERROR
    _preload()
    with run_directory(cfg.server.run_dir) as run_dir:
        host = ForkHost(path, Endpoints.in_dir(run_dir, secrets.token_hex(8)))
        arbiter = Arbiter(cfg, host)
        host.install_signals()
        log.info(
            "master started (pid %d): %d workers, config %s, run dir %s",
            os.getpid(),
            arbiter.serving.workers_wanted,
            cfg.source,
            run_dir,
        )
        try:
            arbiter.start()
            return _loop(arbiter, host, StatusFile(path_in(run_dir)))
        except BaseException:
            log.exception("master failed; killing every child")
            for pid in arbiter.children:
                host.kill(pid, signal.SIGKILL)
            raise
        finally:
            host.close()
