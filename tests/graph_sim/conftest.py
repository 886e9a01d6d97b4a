"""Plain-HTTP clients and helpers for the simulator's own tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from simulators.graph.sink import NotificationSink
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


def minutes_from_now(minutes: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def subscribe(
    graph: httpx.Client, sink: NotificationSink, resource: str, minutes: float = 60, **extra: Any
) -> httpx.Response:
    """POST /subscriptions for ``resource`` to ``sink`` (both URLs), asking for immutable ids."""
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": sink.url,
        "lifecycleNotificationUrl": sink.lifecycle_url,
        "resource": resource,
        "expirationDateTime": minutes_from_now(minutes),
        "clientState": "secret-client-state",
        **extra,
    }
    return graph.post("subscriptions", json=body, headers={"Prefer": 'IdType="ImmutableId"'})
