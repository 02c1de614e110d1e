"""Collects the contract suite for every store in conftest.FACTORIES."""

from tests.inbox.contract import *  # noqa: F403
