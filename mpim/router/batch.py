"""``POST /mpim/push``: many pushes in one HTTP request, for backends that push in bulk.

The body is a JSON array of the ZeroMQ ingress's requests (:mod:`mpim.router.zingress`):

    [{"kind": "mids", "op": 1000, "mids": [1, 2], "body": "hello"},
     {"kind": "keys", "op": 1000, "keys": ["k1"], "body": "hi"},
     {"kind": "room", "op": 1000, "room": "live://1000", "body": "to the room"},
     {"kind": "all",  "op": 1001, "speed": 0, "body": "everyone"}]

Each item is started in order, as if it came alone (so, as for separate requests, a
push by mid — sent once stored — may reach a client after a later push by key); the
answer comes when all are
done: ``{"code": 0, "message": "", "data": [<one answer per item>]}`` where an item's
answer is goim's shape (``{"code": 0, "message": "", "data": ...}``, or its error code
and message). A malformed array is refused whole (-400), and so is one naming more
than ``[router] max_targets`` distinct mids or keys in one item, or more than that
over all its items (a mid in two items is two pushes: it counts twice). An item with a
bad mid (not 1 .. 2**63 - 1) is refused alone, like any bad item; the request's
refused items are logged in one INFO line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from mpim.limits import BadRequest
from mpim.router import targets
from mpim.router.core import Refused, Router
from mpim.router.streams import ChatError
from mpim.router.zingress import KeysRequest, MidsRequest, Request, execute, explain, outcome_data

log = logging.getLogger("mpim.http")

MAX_ITEMS = 10000
_decode = msgspec.json.Decoder(list[Request]).decode


def parse(body: bytes, max_targets: int) -> list[Request]:
    try:
        items = _decode(body)
    except msgspec.MsgspecError as exc:
        raise BadRequest(f"body: {explain(exc)}") from None
    if not items:
        raise BadRequest("body: an empty array")
    if len(items) > MAX_ITEMS:
        raise BadRequest(f"body: {len(items)} items, at most {MAX_ITEMS} in one request")
    _check_targets(items, max_targets)
    return items


def _named(item: Request) -> list[Any]:
    if isinstance(item, MidsRequest):
        return item.mids
    if isinstance(item, KeysRequest):
        return item.keys
    return []


def _check_targets(items: list[Request], limit: int) -> None:
    """At most ``limit`` distinct mids or keys per item, and over all the items (counted only
    when the lists are longer than that)."""
    if sum(len(_named(item)) for item in items) <= limit:
        return
    total = 0
    for i, item in enumerate(items):
        count = targets.distinct(_named(item))
        if count > limit:
            what = "mids" if isinstance(item, MidsRequest) else "keys"
            raise BadRequest(f"item {i}: {targets.over_limit(what, count, limit)}")
        total += count
    if total > limit:
        raise BadRequest(
            f"{total} mids and keys in one request (over its {len(items)} items); "
            f"the limit is {limit} ({targets.LIMIT_KEY})"
        )


def _answer(result: Any) -> dict[str, Any]:
    return {"code": 0, "message": "", "data": result}


def _failed(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, (Refused, ChatError)):
        return {"code": exc.code, "message": exc.message}
    if isinstance(exc, BadRequest):
        return {"code": exc.code, "message": str(exc)}
    return {"code": -500, "message": "internal error"}


async def push_batch(router: Router, items: list[Request], max_body: int) -> list[dict[str, Any]]:
    """Carry out every item in order (each one starts before the next); their answers in order."""
    started: list[Any] = []
    refused: list[str] = []
    for i, req in enumerate(items):
        try:
            started.append(execute(router, req, max_body))
        except (BadRequest, Refused) as exc:
            started.append(exc)
            if isinstance(exc, BadRequest):
                refused.append(f"item {i}: {exc}")
    if refused:
        log.info("refusing %d of %d items of POST /mpim/push: %s", len(refused), len(items), refused[0])
    answers = []
    for item in started:
        if isinstance(item, BaseException):
            answers.append(_failed(item))
        elif isinstance(item, asyncio.Future):
            try:
                answers.append(_answer(outcome_data(await item)))
            except (Refused, ChatError) as exc:
                answers.append(_failed(exc))
        else:
            answers.append(_answer(item))
    return answers
