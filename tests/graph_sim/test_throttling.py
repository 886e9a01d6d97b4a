"""Outlook throttling and injected request faults (learn.microsoft.com/graph/throttling-limits)."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.fixtures.graph_sim import GraphSim


async def test_fifth_concurrent_request_is_mailbox_concurrency_429(
    graph_sim: GraphSim, graph_user: str
) -> None:
    """throttling-limits, "Outlook service limits": 4 concurrent requests per app and mailbox; the
    rest get 429 with Retry-After in seconds. Latency keeps the first four in flight."""
    graph_sim.fault("latency", user=graph_user, seconds=1.0, count=4)
    async with httpx.AsyncClient(
        base_url=graph_sim.base_url, headers=graph_sim.headers, trust_env=False
    ) as client:
        slow = [asyncio.create_task(client.get(f"/users/{graph_user}/contacts")) for _ in range(4)]
        deadline = time.monotonic() + 10
        while graph_sim.user_info(graph_user)["inFlightRequests"] < 4:  # all four admitted and held
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        extra = await client.get(f"/users/{graph_user}/contacts")
        answers = await asyncio.gather(*slow)
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert extra.status_code == 429
    assert extra.json()["error"]["message"] == "Application is over its MailboxConcurrency limit."
    assert int(extra.headers["Retry-After"]) >= 1


def test_request_budget_per_window(graph: httpx.Client, graph_sim: GraphSim, graph_user: str) -> None:
    """throttling-limits: 10,000 requests per 10 minutes per mailbox (budget lowered here via the
    control API); over it, 429 with a whole-seconds Retry-After until the window frees up."""
    graph_sim.set_limits(graph_user, budget=3, window_seconds=2.0)
    statuses = [graph.get(f"users/{graph_user}/contacts").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    over = graph.get(f"users/{graph_user}/contacts")
    assert over.headers["Retry-After"] in {"1", "2"}
    time.sleep(2.05)
    assert graph.get(f"users/{graph_user}/contacts").status_code == 200
    other = graph_sim.add_user()
    assert graph.get(f"users/{other}/contacts").status_code == 200, "budgets are per mailbox"


def test_injected_errors_and_throttle_bursts(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/errors (503 ServiceUnavailable, 429 with Retry-After): the control
    API's status and throttle faults answer the next N matching requests."""
    graph_sim.fault("status", user=graph_user, status=503, retry_after=2, count=1, path_contains="/contacts")
    graph_sim.fault("throttle", user=graph_user, retry_after=3, count=2)
    answers = [graph.get(f"users/{graph_user}/contacts") for _ in range(4)]
    assert [a.status_code for a in answers] == [503, 429, 429, 200]
    assert answers[0].json()["error"]["code"] == "ServiceUnavailable"
    assert answers[0].headers["Retry-After"] == "2"
    assert answers[1].headers["Retry-After"] == "3"
    logged = [e["status"] for e in graph_sim.requests(user=graph_user)]
    assert logged[-4:] == [503, 429, 429, 200]


def test_faults_stay_with_their_mailbox(graph: httpx.Client, graph_sim: GraphSim, graph_user: str) -> None:
    """Faults are per mailbox (simulators/graph/README.md) so tests sharing the simulator don't collide."""
    other = graph_sim.add_user()
    graph_sim.fault("status", user=graph_user, status=500, count=None)
    assert graph.get(f"users/{other}/contacts").status_code == 200
    assert graph.get(f"users/{graph_user}/contacts").status_code == 500
    graph_sim.clear_faults(user=graph_user)
    assert graph.get(f"users/{graph_user}/contacts").status_code == 200


async def test_a_hang_answers_nobody_until_the_client_gives_up_or_the_fault_is_cleared(
    graph_sim: GraphSim, graph_user: str
) -> None:
    """README, fault kinds: ``hang`` accepts the request and does not answer. A client that stops
    waiting frees the mailbox's concurrency slot (logged 499, nothing carried out); clearing the fault
    lets a held request go on and be answered."""
    graph_sim.fault("hang", user=graph_user, path_contains="/contacts", count=None)
    impatient = httpx.AsyncClient(
        base_url=graph_sim.base_url, headers=graph_sim.headers, timeout=0.5, trust_env=False
    )
    async with (
        impatient,
        httpx.AsyncClient(
            base_url=graph_sim.base_url, headers=graph_sim.headers, timeout=10, trust_env=False
        ) as patient,
    ):
        started = time.monotonic()
        try:
            await impatient.get(f"/users/{graph_user}/contacts")
            raise AssertionError("a hung request was answered")
        except httpx.ReadTimeout:
            assert time.monotonic() - started < 2
        deadline = time.monotonic() + 5
        while graph_sim.user_info(graph_user)["inFlightRequests"]:  # the slot frees once it sees the close
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert [e["status"] for e in graph_sim.requests(user=graph_user)] == [499]
        assert (await patient.get(f"/users/{graph_user}/events")).status_code == 200  # only /contacts hangs

        held = asyncio.create_task(patient.get(f"/users/{graph_user}/contacts"))
        while not graph_sim.user_info(graph_user)["inFlightRequests"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert not held.done()
        graph_sim.clear_faults(user=graph_user)
        assert (await held).status_code == 200
