"""Catch what must never happen: an ERROR log record (tracebacks are logged at ERROR)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ErrorTrap(logging.Handler):
    """Collects every record at ERROR or above from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        with self._lock2:
            self.records.append(text)

    def take(self) -> list[str]:
        with self._lock2:
            out, self.records = self.records, []
        return out


@contextmanager
def trapped() -> Iterator[ErrorTrap]:
    """An ErrorTrap on the root logger for the duration of the block."""
    trap = ErrorTrap()
    root = logging.getLogger()
    root.addHandler(trap)
    try:
        yield trap
    finally:
        root.removeHandler(trap)


def assert_no_errors(trap: ErrorTrap) -> None:
    errors = trap.take()
    assert not errors, "ERROR records logged:\n" + "\n---\n".join(errors)
