"""Typed internal messages between the processes of one host, and their msgpack codec.

Every record is a msgspec ``Struct`` encoded as a compact msgpack array whose
first item is the record's tag, so a record is decoded (and validated) once, by
type, at the edge of the process that receives it. Argument order is the same
everywhere: ``op``, then the target (keys, mids and their seqs, room, speed), then ``body``
(also in the router's and the worker's push methods). One exception: :class:`RemoteMids`
keeps the order hosts of earlier releases decode (``body`` before ``seqs``), so a
cluster can be upgraded one host at a time.

Two paths carry them:

- the **link** (:mod:`mpim.stream`), one ordered stream per worker to the router:
  upstream the worker's session events (:data:`WorkerRecord`), downstream unicast
  pushes, kicks, confirmations and counts (:data:`RouterRecord`);
- the **bus** (:mod:`mpim.bus`): room and broadcast pushes and the router's marks
  (:data:`BusRecord`) downstream; bus fences upstream (:class:`BusFence`).

A record that does not decode is the sender's bug or a stray peer: the receiver
counts it, logs one line and goes on with the next.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Record(msgspec.Struct, array_like=True, omit_defaults=True):
    """Base of every internal record (tagged msgpack arrays)."""


# -- worker -> router (the link) -------------------------------------------------------------
class Hello(Record, tag=1):
    """First record on a link: who is speaking. ``name`` is the worker slot."""

    host: str
    name: str
    pid: int


class Entry(msgspec.Struct, array_like=True):
    """One session as a worker holds it."""

    key: str
    mid: int
    room: str
    ip: str


class Connect(Record, tag=2):
    """A client authenticated: file it, then answer :class:`Confirmed` with ``req``.

    ``fence`` is the bus fence that follows the subscription to ``room`` (0 if the
    room was already live): the router confirms only once it has seen that fence,
    so a room push accepted after the client's Auth reply is never dropped.
    """

    req: int
    key: str
    mid: int
    room: str
    ip: str
    fence: int = 0


class RoomChange(Record, tag=3):
    """A client changed room ("" = left); answered with :class:`Confirmed` like a connect."""

    req: int
    key: str
    room: str
    fence: int = 0


class Disconnect(Record, tag=4):
    key: str


class Upstream(Record, tag=5):
    """A client message for the receive hook."""

    key: str
    mid: int
    op: int
    body: bytes


class Alive(Record, tag=6):
    """Liveness every report interval: connection count, keys that heart-beat; now and then
    (every online interval) the local room counts and the worker's counters."""

    conns: int
    beats: list[str]
    rooms: dict[str, int] | None = None
    stats: dict[str, int] | None = None


class Sync(Record, tag=7):
    """The worker's complete session list (after (re)connecting, or when asked)."""

    entries: list[Entry]


class Bye(Record, tag=8):
    """Clean exit: forget this worker now."""


class Draining(Record, tag=9):
    """The worker is about to tell its clients to go: route nothing more to it, then answer."""

    req: int


class BusSeen(Record, tag=10):
    """The highest router mark this worker has taken from the bus."""

    mark: int


class Resume(Record, tag=11):
    """A reliable client's op 20: replay its stream after (``epoch``, ``seq``), or after its
    device cursor when ``cursor`` is true (no position given). ``page``: a catch-up read of
    a connection already resumed: up to ``[delivery] replay_max`` messages after ``seq``,
    however far the stream went on (a resume missing more than that is not recovered)."""

    req: int
    key: str
    mid: int
    epoch: str
    seq: int
    cursor: bool
    page: bool = False


class AckEntry(msgspec.Struct, array_like=True):
    mid: int
    key: str
    seq: int


class Acked(Record, tag=12):
    """Cumulative acks (op 18) of this loop turn: the device (key) processed up to ``seq``."""

    acks: list[AckEntry]


class Chat(Record, tag=13):
    """A client message for the router: private chat when ``to`` > 0, else for the backend.

    ``reply``: the worker waits for a :class:`ChatAck` (acked modes, or a backend URL)."""

    req: int
    key: str
    mid: int
    op: int
    body: bytes
    id: str = ""
    to: int = 0
    reply: bool = False


class Presence(Record, tag=14):
    """Which of these users are online (a go-zero client's ``user.online``); answered by a
    :class:`ChatAck` whose body is the JSON list of those online, in the order asked."""

    req: int
    key: str
    mid: int
    mids: list[int]


# -- router -> worker (the link) -------------------------------------------------------------
class PushKeys(Record, tag=20):
    """Write one frame to the connections with these keys (those watching ``op``).

    ``at`` (on every push record): when the router accepted the push, ``time.monotonic()``
    (one clock for every process of a host), for the push -> write latency metric; 0 = not
    measured (the router stamps every room and broadcast push, one push by key or mid in eight)."""

    op: int
    keys: list[str]
    body: bytes
    at: float = 0.0


class PushMids(Record, tag=30):
    """A stored push by mid: one frame to these connections of its users (those watching ``op``),
    one record per worker and push however many users it names.

    ``seqs[i]`` is the stream seq of the user holding ``keys[i]`` (0: not stored): clients
    that asked for ``ack`` get it in the frame header, others get goim's 0. The router names
    a user once per push (the API folds repeated mids)."""

    op: int
    keys: list[str]
    seqs: list[int]
    body: bytes
    at: float = 0.0


class Kick(Record, tag=21):
    """A newer connection took these keys elsewhere: tell op 6 and close."""

    keys: list[str]


class Resync(Record, tag=22):
    """Send a :class:`Sync` again: the router's view drifted from the worker's."""


class RoomCounts(Record, tag=23):
    """Cluster-wide online counts of the rooms this worker has members in."""

    rooms: dict[str, int]


class Confirmed(Record, tag=24):
    """These :class:`Connect` / :class:`RoomChange` requests are filed (and their rooms live)."""

    reqs: list[int]


class FenceRequest(Record, tag=25):
    """Send a bus fence now (the router has not seen one since its bus came back)."""


class Drained(Record, tag=26):
    """Answer to :class:`Draining`: every push for this worker was sent before bus mark ``mark``."""

    req: int
    mark: int


class Denied(Record, tag=27):
    """These :class:`Connect` requests are refused (``reason`` for the log): close those clients.

    A connection key names one user's connection: a key held by another ``mid`` is not taken over.
    """

    reqs: list[int]
    reason: str


class InboxEntry(msgspec.Struct, array_like=True):
    seq: int
    op: int
    body: bytes


class Replayed(Record, tag=28):
    """Answer to :class:`Resume`: the missing messages in order, then the stream's position."""

    req: int
    messages: list[InboxEntry]
    epoch: str
    top: int
    recovered: bool


class ChatAck(Record, tag=29):
    """Answer to a :class:`Chat` with ``reply`` (or to a :class:`Presence`): code 0 and the stream
    seq it got (or the backend's answer body), or an error code and message."""

    req: int
    code: int
    message: str = ""
    seq: int = 0
    body: bytes = b""


# -- the bus ------------------------------------------------------------------------------
class PushRoom(Record, tag=40):
    """Room push; the room id is the bus topic."""

    op: int
    body: bytes
    at: float = 0.0


class PushAll(Record, tag=41):
    """Push to everyone watching ``op``; ``speed`` connections per second per worker (0 = unpaced)."""

    op: int
    speed: int
    body: bytes
    at: float = 0.0


class Mark(Record, tag=42):
    """The router's numbered mark: the last bus message of a router loop turn that published.
    With several router shards each numbers its own: ``shard`` says whose (reported back on
    the link to that shard)."""

    mark: int
    shard: int = 0


class BusFence(Record, tag=43):
    """Upstream on the bus (worker -> router), after the worker's subscriptions, in order."""

    worker: str
    fence: int


# -- host -> host (Redis pub/sub, several hosts) ------------------------------------------------
class RemoteKeys(Record, tag=60):
    """Write to these keys' connections on the receiving host."""

    op: int
    keys: list[str]
    body: bytes


class RemoteMids(Record, tag=61):
    """A stored push by mid: the receiving host hands it to its connections of these users."""

    op: int
    mids: list[int]
    body: bytes
    seqs: list[int]


class RemoteRoom(Record, tag=62):
    op: int
    room: str
    body: bytes


class RemoteAll(Record, tag=63):
    """``speed``: this host's share, connections per second."""

    op: int
    speed: int
    body: bytes


class RemoteKick(Record, tag=64):
    """A newer connection took these keys on another host."""

    keys: list[str]


RemoteRecord = RemoteKeys | RemoteMids | RemoteRoom | RemoteAll | RemoteKick


# -- between the router shards of one host (mpim.router.shardlink) ---------------------------------
class ShardKeys(Record, tag=70):
    """Hand a push by key to this shard's connections with these keys; answered with the count."""

    req: int
    op: int
    keys: list[str]
    body: bytes


class ShardMids(Record, tag=71):
    """Hand a stored push (each user's seq, 0 = none) to this shard's connections of these
    users (all owned by it); answered with the count."""

    req: int
    op: int
    mids: list[int]
    seqs: list[int]
    body: bytes


class ShardPush(Record, tag=80):
    """A push by user to users this shard owns: store it in their streams and hand it to their
    connections; answered with the connections (``count``) and each user's seq."""

    req: int
    op: int
    mids: list[int]
    body: bytes


class ShardPresence(Record, tag=72):
    """Which of these users (owned by this shard) have a session; answered with their mids."""

    req: int
    mids: list[int]


class ShardNumbers(Record, tag=73):
    """This shard's counts (rooms, connections, client IPs, connections per worker); ``brief``:
    only the pushes it took in (the console asks every second)."""

    req: int
    brief: bool = False


class ShardSessions(Record, tag=75):
    """This shard's connections with ``key`` (or, ``key`` empty, of user ``mid``)."""

    req: int
    key: str
    mid: int


class ShardClaim(Record, tag=76):
    """Shard ``shard`` files connection ``key`` of user ``mid`` (0 = none) with this shard, the
    keeper of the key's slot: answered with the mid of another user holding it (then nothing is
    filed and the connect is denied) or nothing."""

    req: int
    shard: int
    key: str
    mid: int


class ShardRelease(Record, tag=77):
    """Shard ``shard``'s connection ``key`` of user ``mid`` closed."""

    req: int
    shard: int
    key: str
    mid: int


class ShardClaims(Record, tag=78):
    """Every connection shard ``shard`` holds whose key this shard keeps: they replace what it
    filed before (after either shard restarted, or a bulk change of its sessions)."""

    req: int
    shard: int
    keys: list[str]
    mids: list[int]


class ShardExposition(Record, tag=79):
    """This shard's metrics families (and, from shard 0, the host's) in the text format."""

    req: int


class SessionRow(msgspec.Struct, array_like=True):
    key: str
    mid: int
    seq: int
    worker: str
    room: str
    ip: str


class ShardRooms(Record, tag=81):
    """These rooms got members on the asking shard: shard 0 listens on their channels across
    hosts (answered once the subscription is on its way to Redis)."""

    req: int
    rooms: list[str]


class ShardAnswer(Record, tag=74):
    """The answer to a shard call: ``code`` 0, or an mpim error code and its message."""

    req: int
    code: int = 0
    message: str = ""
    count: int = 0
    mids: list[int] = msgspec.field(default_factory=list)
    rooms: dict[str, int] = msgspec.field(default_factory=dict)
    ips: int = 0
    workers: dict[str, int] = msgspec.field(default_factory=dict)
    sessions: list[SessionRow] = msgspec.field(default_factory=list)
    seqs: list[int] = msgspec.field(default_factory=list)  # (ShardPush: the seq of each of ``mids``)
    text: str = ""  # (ShardExposition: this shard's families)
    host: str = ""  # (ShardExposition from shard 0: the host's families)
    pushes: int = 0  # (ShardNumbers: the pushes this shard took in since it started)


ShardCall = (
    ShardPush
    | ShardKeys
    | ShardMids
    | ShardPresence
    | ShardNumbers
    | ShardSessions
    | ShardClaim
    | ShardRelease
    | ShardClaims
    | ShardExposition
    | ShardRooms
)
ShardRecord = ShardCall | ShardAnswer

WorkerRecord = (
    Hello
    | Connect
    | RoomChange
    | Disconnect
    | Upstream
    | Alive
    | Sync
    | Bye
    | Draining
    | BusSeen
    | Resume
    | Acked
    | Chat
    | Presence
)
RouterRecord = (
    PushKeys
    | PushMids
    | Kick
    | Resync
    | RoomCounts
    | Confirmed
    | FenceRequest
    | Drained
    | Replayed
    | ChatAck
    | Denied
)
BusRecord = PushRoom | PushAll | Mark

_encoder = msgspec.msgpack.Encoder()
encode = _encoder.encode


def array(items: list[bytes]) -> bytes:
    """A msgpack array made of already-encoded items (a batch decodes as ``list[...]``)."""
    n = len(items)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 0x10000:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(items)


class BadRecord(ValueError):
    """Bytes that are not a record of the expected kind."""


class Decoder:
    """Decodes one value of a record type, e.g. ``Decoder(list[WorkerRecord])``.

    Raises :class:`BadRecord` if the bytes are malformed or of another type.
    """

    def __init__(self, kind: Any) -> None:
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(kind)

    def __call__(self, data: bytes | memoryview) -> Any:
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadRecord(str(exc)) from None
