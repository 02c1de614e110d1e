"""The child side of a fork: reset what the master set up, run the entry, ``os._exit``."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from types import FrameType
from typing import NoReturn

from setproctitle import setproctitle

from mpim import log as mlog
from mpim.master.children import BUS, ROUTER, WORKER, ChildSpec
from mpim.runtime import Endpoints

log = logging.getLogger("mpim.master")

_PR_SET_PDEATHSIG = 1
_MASTER_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR2,
    signal.SIGCHLD,
)


def _die_with_master(master_pid: int) -> None:
    """Linux: SIGTERM this child if the master dies, so no orphan keeps a port."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != master_pid:
        os._exit(1)


def _reopen_logs(signum: int, frame: FrameType | None) -> None:
    mlog.reopen()


def _exit_now(signum: int, frame: FrameType | None) -> None:
    """SIGQUIT before the entry installed its own handler: exit (its default would dump core)."""
    os._exit(128 + signum)


def _reset_signals(spec: ChildSpec) -> None:
    for sig in _MASTER_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, _exit_now)
    # Reload is the master's job, and a terminal hang-up must not kill the children.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Workers install their own handler once their loop runs; until then SIGUSR1 is harmless.
    # The helpers may install their own (the bus waits for it with sigwait).
    signal.signal(signal.SIGUSR1, signal.SIG_IGN if spec.kind == WORKER else _reopen_logs)
    if spec.kind == ROUTER:  # "refuse pushes" before its loop runs: nothing to refuse yet
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _run_entry(spec: ChildSpec, endpoints: Endpoints, status_fd: int, path: str | None) -> int:
    if spec.kind == WORKER:
        from mpim.worker.main import run_worker

        return run_worker(spec.cfg, endpoints, spec.slot, status_fd)
    if spec.kind == ROUTER:
        from mpim.router.main import run_router

        return run_router(spec.cfg, endpoints, path, spec.expect, spec.slot)
    if spec.kind == BUS:
        from mpim.bus import run_bus

        return run_bus(spec.cfg, endpoints)
    raise ValueError(f"unknown child kind {spec.kind!r}")


def run_child(
    spec: ChildSpec, endpoints: Endpoints, status_fd: int, close_fds: list[int], path: str | None = None
) -> NoReturn:
    """Runs in the forked child and never returns."""
    code = 1
    try:
        master_pid = os.getppid()
        for fd in close_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        _reset_signals(spec)
        _die_with_master(master_pid)
        setproctitle(spec.title)
        mlog.setup(spec.cfg.log.level, spec.cfg.log.file, spec.role)
        code = _run_entry(spec, endpoints, status_fd, path)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("%s crashed", spec.label)
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
