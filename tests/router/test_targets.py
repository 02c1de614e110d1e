"""Who a push names: mids are user ids (1 .. 2**63 - 1), at most ``[router] max_targets`` of them,
at every ingress (HTTP ``/goim/push/mids``, ``POST /mpim/push`` items, the ZeroMQ ingress)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpim.limits import BadRequest
from mpim.records import PushKeys, PushMids
from mpim.router.api import PushApi
from mpim.router.http import HttpProtocol, HttpState
from mpim.router.targets import MID_MAX, check_keys, check_mids, parse_mid
from mpim.router.zingress import Ingress
from tests.router.fakes import Harness, MockTransport, RecordingInbox

RULE = f"is not a user id (a mid is an integer from 1 to {MID_MAX})"


def test_parse_mid_takes_user_ids_and_names_anything_else() -> None:
    assert parse_mid("1") == 1 and parse_mid(str(MID_MAX)) == MID_MAX
    for text, message in [
        ("0", f"mids: 0 {RULE}"),
        ("-3", f"mids: -3 {RULE}"),
        (str(MID_MAX + 1), f"mids: {MID_MAX + 1} {RULE}"),
        ("x", "mids: 'x' is not an integer"),
        ("", "mids: '' is not an integer"),
    ]:
        with pytest.raises(BadRequest, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
            parse_mid(text)
    with pytest.raises(BadRequest, match=f"^mid: 0 {RULE[:14]}"):
        parse_mid("0", "mid")
    with pytest.raises(BadRequest, match=r"^mids: 10000000000000000000\.\.\.00000000 is not a user id"):
        parse_mid("1" + "0" * 60)  # a long value is shortened in the message


def test_check_mids_names_the_first_bad_mid_wherever_it_is() -> None:
    check_mids([1, MID_MAX], 10)
    for mids, bad in [([0], 0), ([5, 6, -1, 0], -1), ([5, MID_MAX + 1], MID_MAX + 1)]:
        with pytest.raises(BadRequest) as info:
            check_mids(mids, 10)
        assert str(info.value) == f"mids: {bad} {RULE}" and info.value.code == -400
    with pytest.raises(BadRequest, match="at least one mid"):
        check_mids([], 10)


def test_the_limit_counts_distinct_targets() -> None:
    check_mids([1, 2, 3], 3)
    check_mids([1, 2, 3, 3, 2, 1, 1], 3)  # duplicates are stored once: they count once
    with pytest.raises(BadRequest, match=r"^4 mids in one push; the limit is 3 \(\[router\] max_targets\)$"):
        check_mids([1, 2, 3, 4, 4], 3)
    check_keys(["a", "b", "a"], 2)
    with pytest.raises(BadRequest, match=r"^3 keys in one push; the limit is 2 \(\[router\] max_targets\)$"):
        check_keys(["a", "b", "c"], 2)


# -- the property: a mid <= 0 or > int64 anywhere in a push is refused, and nothing is stored ------

GOOD = st.integers(1, MID_MAX)
BAD = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=MID_MAX + 1),
    st.sampled_from([0, -1, -(1 << 63), MID_MAX + 1, (1 << 64) - 1, -(1 << 64)]),
)


def _http(state: HttpState, target: str, body: bytes) -> MockTransport:
    """One request on a new connection of the router's HTTP handler; its transport."""
    transport = MockTransport()
    proto = HttpProtocol(state)
    proto.connection_made(transport)
    head = f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    proto.data_received(head + body)
    return transport


def _answer(transport: MockTransport) -> Any:
    return json.loads(bytes(transport.data).partition(b"\r\n\r\n")[2])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(good=st.lists(GOOD, max_size=6), bad=BAD, where=st.integers(0, 6), online=st.booleans())
def test_a_mid_out_of_range_anywhere_in_a_push_is_refused_and_nothing_is_stored(
    good: list[int], bad: int, where: int, online: bool
) -> None:
    mids = [*good[:where], bad, *good[where:]]
    h = Harness()
    try:
        inbox = RecordingInbox()
        h.router.streams.inbox = inbox
        link = h.worker("w1")
        if online and good:  # a user of the push is connected: nothing may reach it either
            h.connect(link, "k", good[0])
            link.take()
        state = HttpState(h.cfg, PushApi(h.cfg, h.router), h.loop)
        query = "&".join(f"mids={m}" for m in mids)
        by_mid = _http(state, f"/goim/push/mids?operation=1000&{query}", b"m")
        item = {"kind": "mids", "op": 1000, "mids": mids, "body": "m"}
        batch = _http(state, "/mpim/push", json.dumps([item]).encode())
        for _ in range(3):  # the batch runs as a task on the router's loop
            h.settle()
        mids_answer, batch_answer = _answer(by_mid), _answer(batch)
        assert mids_answer == {"code": -400, "message": f"mids: {bad} {RULE}"}
        assert batch_answer == {"code": 0, "message": "", "data": [mids_answer]}
        if -(1 << 63) <= bad < 1 << 64:  # what msgpack can carry
            reply, _ = Ingress(h.router, 1 << 20).handle(msgpack.packb({**item, "body": b"m"}))
            assert reply == {"id": None, **mids_answer}
        assert inbox.appended == [] and h.router.streams.stats["appends"] == 0
        assert [r for r in link.take() if isinstance(r, (PushKeys, PushMids))] == []
    finally:
        h.close()
