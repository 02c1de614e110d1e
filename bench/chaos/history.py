"""The history of a chaos run: one JSON line per operation, in the order they completed.

Jepsen's model, flattened to one line per operation: ``process`` (who did it: a client,
a backend pusher, the nemesis, the harness), ``kind`` (what), ``time`` (when it was
invoked, seconds since the run started), ``end`` (when its outcome was known; ``null``
when it never was), ``outcome`` and ``values`` (seqs, ids, answers). Outcomes:

- ``ok`` — it happened, and the answer says how;
- ``fail`` — it certainly did not happen (a definite refusal);
- ``info`` — unknown: no answer, a timeout, a refusal that says "may have been
  delivered". It may or may not have happened, and the checker allows both.

Observations a client makes without invoking anything (a pushed frame arriving, op 21,
a closed connection) are events: ``time == end``, outcome ``ok``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

OK, FAIL, INFO = "ok", "fail", "info"
OUTCOMES = (OK, FAIL, INFO)


@dataclass
class Op:
    index: int
    process: str
    kind: str
    time: float
    end: float | None
    outcome: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "process": self.process,
                "kind": self.kind,
                "time": round(self.time, 4),
                "end": None if self.end is None else round(self.end, 4),
                "outcome": self.outcome,
                "values": self.values,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, line: str) -> Op:
        raw = json.loads(line)
        return cls(
            int(raw["index"]),
            str(raw["process"]),
            str(raw["kind"]),
            float(raw["time"]),
            None if raw["end"] is None else float(raw["end"]),
            str(raw["outcome"]),
            dict(raw.get("values") or {}),
        )

    def brief(self, width: int = 200) -> str:
        """One line for a report: index, process, kind, times, outcome and the values."""
        end = "?" if self.end is None else f"{self.end:.3f}"
        values = json.dumps(self.values, separators=(",", ":"), ensure_ascii=False)
        if len(values) > width:
            values = values[: width - 3] + "..."
        return f"#{self.index} {self.process} {self.kind} t={self.time:.3f}..{end} {self.outcome} {values}"


class History:
    """Records operations (in memory, and as JSON lines in ``path`` when given)."""

    def __init__(self, path: Path | None = None) -> None:
        self.t0 = time.monotonic()
        self.ops: list[Op] = []
        self._file: IO[str] | None = None
        if path is not None:  # (line-buffered: what happened is on disk even if the run is killed)
            self._file = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115

    def now(self) -> float:
        return time.monotonic() - self.t0

    def record(
        self,
        process: str,
        kind: str,
        outcome: str,
        values: dict[str, Any] | None = None,
        *,
        time: float | None = None,
        end: float | None = -1.0,
    ) -> Op:
        """An operation that completed now (``end`` defaults to now; ``None`` = never known)."""
        now = self.now()
        assert outcome in OUTCOMES, outcome
        op = Op(
            len(self.ops),
            process,
            kind,
            now if time is None else time,
            now if end is not None and end < 0 else end,
            outcome,
            values or {},
        )
        self.ops.append(op)
        if self._file is not None:
            self._file.write(op.to_json() + "\n")
        return op

    def event(self, process: str, kind: str, values: dict[str, Any]) -> Op:
        """An observation (a frame arrived, a connection closed): invoked and known at once."""
        return self.record(process, kind, OK, values)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load(path: Path) -> list[Op]:
    with open(path, encoding="utf-8") as f:
        return list(parse(f))


def parse(lines: Iterable[str]) -> Iterator[Op]:
    for line in lines:
        if line.strip():
            yield Op.from_json(line)
