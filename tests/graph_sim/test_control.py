"""The control API itself (simulators/graph/README.md): seeding, limits, validation timing, reset."""

from __future__ import annotations

import httpx

from simulators.graph import create_app
from simulators.graph.sink import NotificationSink
from tests.fixtures.graph_sim import GraphSim
from tests.graph_sim.conftest import subscribe


def test_seeding_bypasses_throttling_but_is_a_real_change(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """README, seed: seeding is not a Graph request (no budget, no log) but shows in the mailbox."""
    graph_sim.set_limits(graph_user, budget=1, window_seconds=600)
    assert graph.get(f"users/{graph_user}/contacts").status_code == 200
    assert graph.get(f"users/{graph_user}/contacts").status_code == 429
    seeded = graph_sim.seed(graph_user, contacts=[{"givenName": "Seeded"}])
    assert len(seeded["contacts"]) == 1
    assert [e["status"] for e in graph_sim.requests(user=graph_user)] == [200, 429]
    graph_sim.set_limits(graph_user, budget=None)
    assert [c["givenName"] for c in graph.get(f"users/{graph_user}/contacts").json()["value"]] == ["Seeded"]


def test_slow_validation_answer_refuses_the_subscription(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/api/subscription-post-subscriptions: the validation answer must come
    within 10 seconds (the fixture shortens this to validation_timeout_seconds)."""
    graph_sink.validation_delay = graph_sim.config()["validation_timeout_seconds"] + 0.5
    answer = subscribe(graph, graph_sink, f"users/{graph_user}/events")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ValidationError"


def test_bad_control_requests_are_400_and_unknown_endpoints_404(graph_sim: GraphSim) -> None:
    """README, control API: clear errors for bad input."""
    with httpx.Client(base_url=graph_sim.root_url, trust_env=False) as client:
        assert client.post("/_sim/faults", json={"kind": "gremlins"}).status_code == 400
        assert client.patch("/_sim/config", json={"no_such_setting": 1}).status_code == 400
        assert client.post("/_sim/users", json={"displayName": "no upn"}).status_code == 400
        assert client.get("/_sim/nothing-here").status_code == 404


async def test_reset_and_config_defaults() -> None:
    """README, reset: wipes users and restores Graph's documented defaults (3 s, 10 s, 10,000 / 600 s).
    Runs on a private in-process instance so the shared simulator is untouched."""
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        defaults = (await client.get("/_sim/config")).json()
        assert defaults["notification_timeout_seconds"] == 3.0
        assert defaults["validation_timeout_seconds"] == 10.0
        assert (defaults["mailbox_budget"], defaults["budget_window_seconds"]) == (10_000, 600.0)
        assert defaults["mailbox_concurrency"] == 4
        await client.patch("/_sim/config", json={"mailbox_budget": 5})
        await client.post("/_sim/users", json={"id": "u1", "userPrincipalName": "u1@sim.test"})
        assert (await client.post("/_sim/reset")).status_code == 204
        assert (await client.get("/_sim/users/u1")).status_code == 404
        assert (await client.get("/_sim/config")).json()["mailbox_budget"] == 10_000
