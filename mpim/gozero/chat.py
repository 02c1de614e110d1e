"""What the go-zero chat server's methods carry, and how mpim's private messages look to its clients.

Sans-I/O. User ids: go-zero's are strings, mpim's are ``mid`` integers; a go-zero
client may name a user by its mid or by the mid's decimal string, and mpim writes
them back as strings (``formId``, ``sendId``, ``recvId``, ``user.online``).

- ``conversation.chat`` data ``{"conversationId", "chatType", "sendId", "recvId",
  "msg": {"mType", "content"}, "sendTime"}`` (single chat, ``chatType`` 2) becomes
  the body of an mpim private message to ``recvId`` (:func:`chat_body`): the
  server stamps ``sendId`` (never trusted from the client), fills in the
  conversation id (go-zero's: the two ids in ascending order joined by ``_``),
  ``chatType`` and, when absent, ``sendTime`` (milliseconds).
- A private message arrives as mpim's envelope ``{"id", "from", "to", "body"}``
  (whoever sent it: a go-zero client or a goim ``ack`` client); :func:`present`
  gives a go-zero client ``formId`` = the sender and ``data`` = the chat data,
  with the sender and recipient from the envelope (authoritative). A body that is
  not go-zero chat data (a goim client's own JSON) becomes ``msg.content`` (a
  string as it is, anything else as JSON text).
- ``user.online`` data: absent, a list of user ids, or ``{"uids": [...]}``
  (:func:`online_query`).
"""

from __future__ import annotations

import json
from typing import Any

from mpim.gozero.frames import dumps, dumps_utf8
from mpim.limits import INT64

SINGLE_CHAT, GROUP_CHAT = 2, 1
TEXT = 0  # msg.mType of a text message
MAX_ONLINE = 100  # users one user.online may ask about
_ENVELOPE = frozenset(("id", "from", "to", "body"))


def user_id(value: Any) -> int:
    """A user named by a client: a mid (1 .. 2**63 - 1) or its decimal string; ValueError otherwise."""
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if type(value) is not int or not 0 < value <= INT64[1]:
        raise ValueError(f"{json.dumps(value)[:40]} is not a user id (an integer > 0 or its decimal string)")
    return value


def conversation_id(a: int, b: int) -> str:
    """go-zero's single-chat conversation id: both user ids, ascending, joined by ``_``."""
    return f"{min(a, b)}_{max(a, b)}"


def chat_body(data: Any, sender: int, now_ms: int) -> tuple[int, bytes]:
    """``conversation.chat`` data -> (the recipient's mid, the chat data to store as JSON, sender
    stamped). ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("conversation.chat data must be a JSON object")
    chat_type = data.get("chatType", SINGLE_CHAT)
    if chat_type != SINGLE_CHAT or type(chat_type) is not int:
        raise ValueError(f"chatType must be {SINGLE_CHAT} (single chat); group chat is not served here")
    try:
        to = user_id(data.get("recvId"))
    except ValueError as exc:
        raise ValueError(f"recvId: {exc}") from None
    if not isinstance(data.get("msg"), dict):
        raise ValueError('msg must be a JSON object ({"mType": 0, "content": "..."})')
    send_time = data.get("sendTime")
    if send_time is not None and (type(send_time) is not int or not 0 <= send_time <= INT64[1]):
        raise ValueError("sendTime must be an integer (milliseconds)")
    body = dict(data)
    body["conversationId"] = data.get("conversationId") or conversation_id(sender, to)
    if not isinstance(body["conversationId"], str):
        raise ValueError("conversationId must be a string")
    body["chatType"] = SINGLE_CHAT
    body["sendId"] = str(sender)
    body["recvId"] = str(to)
    body["sendTime"] = send_time or now_ms
    try:
        return to, dumps_utf8(body)
    except UnicodeEncodeError:
        raise ValueError("conversation.chat data is not valid UTF-8 text (a lone surrogate)") from None


def present(envelope: bytes, now_ms: int) -> tuple[str, str, bytes] | None:
    """A pushed body that is mpim's private message envelope -> (formId, message id, data as JSON);
    None if the body is not one."""
    if not envelope.startswith(b'{"id":'):
        return None
    try:
        env: Any = json.loads(envelope)
    except (ValueError, RecursionError):
        return None
    if not isinstance(env, dict) or env.keys() != _ENVELOPE:
        return None
    msg_id, sender, to, body = env["id"], env["from"], env["to"], env["body"]
    if not isinstance(msg_id, str) or type(sender) is not int or type(to) is not int:
        return None
    data: dict[str, Any]
    if isinstance(body, dict) and isinstance(body.get("msg"), dict):
        data = dict(body)
        if not isinstance(data.get("conversationId"), str) or not data["conversationId"]:
            data["conversationId"] = conversation_id(sender, to)
        data.setdefault("chatType", SINGLE_CHAT)
        data.setdefault("sendTime", now_ms)
    else:
        content = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        data = {
            "conversationId": conversation_id(sender, to),
            "chatType": SINGLE_CHAT,
            "msg": {"mType": TEXT, "content": content},
            "sendTime": now_ms,
        }
    data["sendId"], data["recvId"] = str(sender), str(to)
    try:
        return str(sender), msg_id, dumps(data)
    except ValueError:  # (NaN or Infinity in a body stored by a goim client: shown as a plain push)
        return None


def online_query(data: Any, caller: int) -> list[int]:
    """``user.online`` data -> the users asked about, in order, once each: none named = the caller.
    ValueError says what is wrong."""
    if data is None:
        return [caller]
    if isinstance(data, dict):
        data = data.get("uids")
    if not isinstance(data, list):
        raise ValueError('user.online data must be a list of user ids (or {"uids": [...]})')
    if len(data) > MAX_ONLINE:
        raise ValueError(f"user.online asks about {MAX_ONLINE} users at most")
    return list(dict.fromkeys(user_id(value) for value in data))
