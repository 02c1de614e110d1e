"""The worker's link to the rest of the cluster.

The hub tells its link about sessions (connect, room change, heartbeat,
disconnect), rooms it starts or stops serving, and upstream client messages.
A standalone worker (``mpim worker``) uses :class:`StandaloneLink`; under the
master the link reports to the router and subscribes on the bus.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mpim.auth import Identity
    from mpim.worker.channel import Channel
    from mpim.worker.hub import Hub

log = logging.getLogger("mpim.upstream")


class ClusterLink(Protocol):
    def attach(self, hub: Hub) -> None: ...
    async def close(self) -> None: ...
    def connected(self, channel: Channel, identity: Identity) -> None: ...
    def disconnected(self, channel: Channel) -> None: ...
    def room_changed(self, channel: Channel, old: str, new: str) -> None: ...
    def heartbeat(self, channel: Channel) -> None: ...
    def upstream(self, channel: Channel, op: int, body: bytes) -> None: ...
    def room_opened(self, room_id: str) -> None: ...
    def room_closed(self, room_id: str) -> None: ...


class StandaloneLink:
    """No router: upstream messages are logged, everything else is local."""

    def attach(self, hub: Hub) -> None:
        pass

    async def close(self) -> None:
        pass

    def connected(self, channel: Channel, identity: Identity) -> None:
        pass

    def disconnected(self, channel: Channel) -> None:
        pass

    def room_changed(self, channel: Channel, old: str, new: str) -> None:
        pass

    def heartbeat(self, channel: Channel) -> None:
        pass

    def upstream(self, channel: Channel, op: int, body: bytes) -> None:
        log.info("upstream mid=%d key=%s op=%d body=%d bytes", channel.mid, channel.key, op, len(body))

    def room_opened(self, room_id: str) -> None:
        pass

    def room_closed(self, room_id: str) -> None:
        pass
