"""The worker's link to the rest of its host: what the worker tells the router and the bus.

The sessions tell their link about clients (register, room change, heartbeat,
disconnect, upstream messages) and the room table about rooms it starts or stops
serving. A link answers registrations and room changes by calling
``LinkTarget.confirmed(channel)`` once the router filed them. A standalone worker
(``mpim worker``) uses :class:`StandaloneLink`, which confirms at once; under the
master :class:`~mpim.worker.zlink.HostLink` talks to the router and the bus.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from mpim.records import ChatAck, Replayed

if TYPE_CHECKING:
    from mpim.records import Entry
    from mpim.worker.channel import Channel

OnReplayed = Callable[[Replayed], None]
OnAck = Callable[[ChatAck], None]

log = logging.getLogger("mpim.upstream")


class SessionTarget(Protocol):
    """What a link asks of the worker's sessions."""

    @property
    def online(self) -> int: ...
    def confirmed(self, channel: Channel) -> None: ...
    def denied(self, channel: Channel, reason: str) -> None: ...
    def kick(self, keys: list[str]) -> None: ...
    def lost(self, channel: Channel, why: str) -> None: ...
    def entries(self) -> list[Entry]: ...


class DeliveryTarget(Protocol):
    """What a link hands pushes to."""

    def push_keys(self, op: int, keys: list[str], body: bytes, at: float = 0.0) -> int: ...
    def push_mids(
        self, op: int, keys: list[str], seqs: Iterable[int], body: bytes, at: float = 0.0
    ) -> int: ...
    def push_room(self, op: int, room_id: str, body: bytes, at: float = 0.0) -> bool: ...
    def push_all(self, op: int, speed: int, body: bytes, at: float = 0.0) -> None: ...
    def set_room_online(self, counts: dict[str, int]) -> None: ...


class ClusterLink(Protocol):
    def attach(self, sessions: SessionTarget, delivery: DeliveryTarget, rooms: RoomCounter) -> None: ...
    async def close(self) -> None: ...
    def register(self, channel: Channel, room: str, ip: str) -> None: ...
    def change_room(self, channel: Channel, room: str) -> None: ...
    def cancel(self, channel: Channel) -> None: ...
    def disconnected(self, channel: Channel) -> None: ...
    def heartbeat(self, channel: Channel) -> None: ...
    def upstream(self, channel: Channel, op: int, body: bytes) -> None: ...
    def room_opened(self, room_id: str) -> None: ...
    def room_closed(self, room_id: str) -> None: ...
    async def drain_barrier(self, timeout: float) -> None: ...
    def resume(
        self, channel: Channel, epoch: str, seq: int, cursor: bool, done: OnReplayed, page: bool = False
    ) -> None: ...
    def ack(self, channel: Channel, seq: int) -> None: ...
    def chat(
        self, channel: Channel, op: int, body: bytes, msg_id: str, to: int, done: OnAck | None
    ) -> None: ...
    def online(self, channel: Channel, mids: list[int], done: OnAck) -> None: ...


class RoomCounter(Protocol):
    """The worker's own numbers for its reports."""

    def local_counts(self) -> dict[str, int]: ...
    def counters(self) -> dict[str, int]: ...


class StandaloneLink:
    """No router: requests are confirmed at once (never denied), upstream messages are logged."""

    def __init__(self) -> None:
        self.sessions: SessionTarget | None = None

    def attach(self, sessions: SessionTarget, delivery: DeliveryTarget, rooms: RoomCounter) -> None:
        self.sessions = sessions

    async def close(self) -> None:
        pass

    def register(self, channel: Channel, room: str, ip: str) -> None:
        assert self.sessions is not None
        self.sessions.confirmed(channel)

    def change_room(self, channel: Channel, room: str) -> None:
        assert self.sessions is not None
        self.sessions.confirmed(channel)

    def cancel(self, channel: Channel) -> None:
        pass

    def disconnected(self, channel: Channel) -> None:
        pass

    def heartbeat(self, channel: Channel) -> None:
        pass

    def upstream(self, channel: Channel, op: int, body: bytes) -> None:
        log.info("upstream mid=%d key=%s op=%d body=%d bytes", channel.mid, channel.key, op, len(body))

    def room_opened(self, room_id: str) -> None:
        pass

    def room_closed(self, room_id: str) -> None:
        pass

    async def drain_barrier(self, timeout: float) -> None:
        pass

    def resume(
        self, channel: Channel, epoch: str, seq: int, cursor: bool, done: OnReplayed, page: bool = False
    ) -> None:
        done(Replayed(0, [], "", 0, False))  # no inbox without a router: never recovered

    def ack(self, channel: Channel, seq: int) -> None:
        pass

    def chat(self, channel: Channel, op: int, body: bytes, msg_id: str, to: int, done: OnAck | None) -> None:
        if to:
            if done is not None:
                done(ChatAck(0, -501, "private chat needs the router (run mpim master)"))
            return
        self.upstream(channel, op, body)
        if done is not None:
            done(ChatAck(0, 0))

    def online(self, channel: Channel, mids: list[int], done: OnAck) -> None:
        done(ChatAck(0, -501, "presence needs the router (run mpim master)"))
