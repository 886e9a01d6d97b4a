"""Plain-HTTP clients for the simulator's own tests."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.fixtures.graph_sim import GraphSim


@pytest.fixture
def graph(graph_sim: GraphSim) -> Iterator[httpx.Client]:
    """An httpx client on the Graph base URL with a bearer token, as any Graph client sends."""
    with httpx.Client(
        base_url=graph_sim.base_url + "/", headers=graph_sim.headers, timeout=10, trust_env=False
    ) as c:
        yield c


def seg(value: str) -> str:
    """Percent-encode an id for a URL path segment ('/', '+', '=' included), as SDKs do."""
    return quote(value, safe="")
