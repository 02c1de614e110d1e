"""The one stand-in for the router behind ``PushApi``: exactly what the API calls today.

The router is being reworked; when the API starts calling something else, this is
the only file to follow. Push calls are recorded so tests can check arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


@dataclass
class StubTable:
    room_count: dict[str, int] = field(
        default_factory=lambda: {"live://1000": 3, "live://7": 1, "test://a": 2}
    )
    by_key: dict[str, Any] = field(default_factory=dict)
    sessions: dict[int, Any] = field(default_factory=dict)
    workers: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        worker = SimpleNamespace(
            id="w1", host="h", name="worker 1", pid=11, conns={}, room_count={}, last_seen=0.0
        )
        conn = SimpleNamespace(key="k1", mid=1, seq=1, worker=worker, room="live://1000", ip="127.0.0.1")
        worker.conns["k1"] = conn
        self.by_key["k1"] = conn
        self.sessions[1] = SimpleNamespace(conns={"k1": conn})
        self.workers["w1"] = worker

    @property
    def ip_total(self) -> int:
        return 1

    def __len__(self) -> int:
        return len(self.by_key)

    def top_rooms(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        rooms = [(room, n) for room, n in self.room_count.items() if room.startswith(prefix)]
        return sorted(rooms, key=lambda item: (-item[1], item[0]))[:limit]


@dataclass
class StubRouter:
    table: StubTable = field(default_factory=StubTable)
    now: float = 0.0
    pushes: list[tuple[Any, ...]] = field(default_factory=list)

    def push_keys(self, op: int, keys: list[str], body: bytes) -> int:
        self.pushes.append(("keys", op, keys, body))
        return sum(1 for key in keys if key in self.table.by_key)

    def push_mids(self, op: int, mids: list[int], body: bytes) -> int:
        self.pushes.append(("mids", op, mids, body))
        return sum(len(self.table.sessions[mid].conns) for mid in mids if mid in self.table.sessions)

    def push_room(self, op: int, room: str, body: bytes) -> None:
        self.pushes.append(("room", op, room, body))

    def push_all(self, op: int, speed: int, body: bytes) -> None:
        self.pushes.append(("all", op, speed, body))
