"""A receive hook for the integration tests: appends each upstream message to $MPIM_TEST_HOOK_FILE."""

from __future__ import annotations

import json
import os


def record(mid: int, key: str, op: int, body: bytes) -> None:
    with open(os.environ["MPIM_TEST_HOOK_FILE"], "a", encoding="utf-8") as out:
        out.write(json.dumps({"mid": mid, "key": key, "op": op, "body": body.decode()}) + "\n")
