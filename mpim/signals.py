"""The signal set-up every mpim child process shares (inside its event loop)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from mpim import log as mlog


def install(
    loop: asyncio.AbstractEventLoop,
    graceful: Callable[[], None],
    fast: Callable[[], None],
    **others: Callable[[], None],
) -> None:
    """SIGTERM -> ``graceful``, SIGINT and SIGQUIT -> ``fast``, SIGUSR1 -> reopen the log file.

    ``others`` maps more signal names to handlers, e.g. ``SIGHUP=reload``.
    """
    loop.add_signal_handler(signal.SIGTERM, graceful)
    loop.add_signal_handler(signal.SIGINT, fast)
    loop.add_signal_handler(signal.SIGQUIT, fast)
    loop.add_signal_handler(signal.SIGUSR1, mlog.reopen)
    for name, handler in others.items():
        loop.add_signal_handler(signal.Signals[name], handler)
