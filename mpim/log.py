"""Logging set-up shared by every mpim process: one readable line per event."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(role)s[%(process)d] %(name)s: %(message)s"


class _RoleFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.role = "mpim"

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        return True


_role = _RoleFilter()
_file = ""


def setup(level: str = "info", file: str = "", role: str = "mpim") -> None:
    """(Re)configure the root logger; safe to call again after a fork or reload."""
    global _file
    _role.role = role
    _file = file
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler: logging.Handler
    handler = logging.FileHandler(file, encoding="utf-8") if file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(_role)
    root.addHandler(handler)
    root.setLevel(level.upper())


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())


def reopen() -> None:
    """SIGUSR1: reopen the log file (after logrotate moved it)."""
    if _file:
        setup(logging.getLevelName(logging.getLogger().level).lower(), _file, _role.role)
