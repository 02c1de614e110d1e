"""The router behind ``PushApi`` in the HTTP fuzz tests: the real one, driven without sockets.

One worker holds a session (key ``k1``, user 1) in ``live://1000``, so every API
path has something to answer with.
"""

from __future__ import annotations

from mpim.config import Config
from mpim.router.core import Router
from tests.router.fakes import Harness


def fuzz_router(cfg: Config) -> Router:
    harness = Harness(cfg)
    link = harness.worker("w1")
    harness.connect(link, "k1", 1, "live://1000", "127.0.0.1")
    return harness.router
