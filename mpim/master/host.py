"""The arbiter's hands: fork, signal, reap, and wait for the next event.

Signal handlers only append the signal number to a queue and write one byte to a
wake-up pipe; :meth:`ForkHost.wait` sleeps in ``select`` on that pipe and on the
workers' status pipes, so the master's one loop sees signals, status lines and
deaths as they happen.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from types import FrameType

from mpim import config as config_mod
from mpim import log as mlog
from mpim.config import Config
from mpim.master.children import WORKER, ChildSpec
from mpim.master.entry import run_child
from mpim.master.status import StatusReader
from mpim.runtime import Endpoints

# Signals the master handles; children reset them to the default.
SIGNALS = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCHLD,
)


class ForkHost:
    def __init__(self, path: str | None, endpoints: Endpoints) -> None:
        self.path = path
        self.endpoints = endpoints
        self.signals: list[int] = []
        self._readers: dict[int, StatusReader] = {}  # read fd -> the worker writing to it
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- signals ---------------------------------------------------------------------
    def install_signals(self) -> None:
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    # -- Host protocol ---------------------------------------------------------------
    def spawn(self, spec: ChildSpec) -> int:
        read_fd, write_fd = os.pipe() if spec.kind == WORKER else (-1, -1)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            inherited = [self._wake_r, self._wake_w, read_fd, *self._readers]
            run_child(spec, self.endpoints, write_fd, [fd for fd in inherited if fd >= 0], self.path)
        if read_fd >= 0:
            os.close(write_fd)
            os.set_blocking(read_fd, False)
            self._readers[read_fd] = StatusReader(pid)
        return pid

    def kill(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def load_config(self) -> Config:
        return config_mod.load(self.path)

    def configure_logging(self, cfg: Config) -> None:
        mlog.setup(cfg.log.level, cfg.log.file, "master")

    def reopen_logs(self) -> None:
        mlog.reopen()

    # -- the loop's inputs -----------------------------------------------------------
    def wait(self, timeout: float | None) -> tuple[list[int], list[tuple[int, str]]]:
        """Sleep until a signal, a status line or the timeout; returns (signals, (pid, line)s)."""
        fds = [self._wake_r, *self._readers]
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            ready = []
        lines: list[tuple[int, str]] = []
        for fd in ready:
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 4096)
                continue
            reader = self._readers[fd]
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not data:  # the worker is gone; reap() will say how
                os.close(fd)
                del self._readers[fd]
                continue
            lines.extend((reader.pid, line) for line in reader.feed(data))
        signals, self.signals = self.signals, []
        return signals, lines

    def reap(self) -> list[tuple[int, int]]:
        """Every child that exited: (pid, exit code, or -signal)."""
        done: list[tuple[int, int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            done.append((pid, os.waitstatus_to_exitcode(status)))
        return done

    def close(self) -> None:
        for fd in [self._wake_r, self._wake_w, *self._readers]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._readers.clear()
