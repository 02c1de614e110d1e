"""The worker's ZeroMQ link to the router and the bus (filled in by the router/bus work)."""

from __future__ import annotations

from mpim.config import Config
from mpim.runtime import Endpoints
from mpim.worker.link import ClusterLink, StandaloneLink


def make_cluster_link(cfg: Config, endpoints: Endpoints, name: str) -> ClusterLink:
    """The link a worker under the master uses. Placeholder: no router yet."""
    return StandaloneLink()
