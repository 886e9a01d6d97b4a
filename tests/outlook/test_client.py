"""The client factory against the simulator: bearer token, immutable ids on every call, retries."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from msgraph.graph_service_client import GraphServiceClient

from shared.outlook.credentials import StaticTokenCredential
from shared.outlook.errors import GraphError, GraphThrottled, MailboxNotFound
from shared.outlook.mailbox import OutlookMailbox
from tests.fixtures.graph_sim import GraphSim
from tests.outlook.conftest import sandbox_client


async def test_every_request_prefers_immutable_ids_and_carries_the_token(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    mailbox = OutlookMailbox(graph)
    user = await mailbox.user(graph_user)
    inbox = await mailbox.folder(graph_user, "inbox")
    await mailbox.folders(graph_user)

    assert user.id == graph_user
    assert user.address == graph_sim.user_info(graph_user)["mail"]
    assert inbox.id == graph_sim.user_info(graph_user)["mailFolders"]["inbox"]
    log = graph_sim.requests(user=graph_user)
    assert len(log) == 3
    assert all('IdType="ImmutableId"' in entry["prefer"] for entry in log), log


def test_sandbox_credential_refuses_real_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        StaticTokenCredential(base_url="https://graph.microsoft.com/v1.0")


async def test_unknown_mailbox_is_a_typed_error(graph: GraphServiceClient) -> None:
    with pytest.raises(MailboxNotFound) as caught:
        await OutlookMailbox(graph).user("nobody@sim.crmsync.test")
    assert caught.value.status == 404
    assert caught.value.code == "Request_ResourceNotFound"


async def test_throttling_is_ridden_out_by_the_retry_handler(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    graph_sim.fault("throttle", user=graph_user, count=1, retry_after=1)
    graph_sim.clear_requests(user=graph_user)

    started = time.monotonic()
    user = await OutlookMailbox(graph).user(graph_user)

    assert user.id == graph_user
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    statuses = [entry["status"] for entry in graph_sim.requests(user=graph_user)]
    assert statuses == [429, 200]


async def test_service_unavailable_is_retried_too(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    graph_sim.fault("status", user=graph_user, count=1, status=503, retry_after=1)
    graph_sim.clear_requests(user=graph_user)

    await OutlookMailbox(graph).folder(graph_user, "inbox")

    assert [entry["status"] for entry in graph_sim.requests(user=graph_user)] == [503, 200]


async def test_throttling_beyond_the_retry_budget_is_graph_throttled(
    graph_sim: GraphSim, graph_http: httpx.AsyncClient, graph_user: str
) -> None:
    impatient = sandbox_client(graph_sim.base_url, graph_http, max_retries=1)
    graph_sim.fault("throttle", user=graph_user, count=2, retry_after=1)

    with pytest.raises(GraphThrottled) as caught:
        await OutlookMailbox(impatient).user(graph_user)

    assert caught.value.status == 429
    assert caught.value.retry_after == "1"
    assert isinstance(caught.value, GraphError)


async def test_mailbox_concurrency_limit_is_ridden_out(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    """Graph allows 4 concurrent requests per mailbox; the 5th gets 429 with Retry-After and is retried."""
    graph_sim.fault("latency", user=graph_user, count=None, seconds=0.3)
    mailbox = OutlookMailbox(graph)
    try:
        folders = await asyncio.gather(*(mailbox.folder(graph_user, "inbox") for _ in range(6)))
    finally:
        graph_sim.clear_faults(user=graph_user)

    assert len({folder.id for folder in folders}) == 1
    statuses = [entry["status"] for entry in graph_sim.requests(user=graph_user)]
    assert statuses.count(429) >= 2
    assert statuses.count(200) == 6


def test_entity_fields_match_the_sdks_generated_method() -> None:
    # shared.outlook.client replaces Entity.get_field_deserializers with an import-free copy: it
    # must return the same fields, and each must set the same attribute.
    from msgraph.generated.models.entity import Entity

    from shared.outlook.client import _SDK_ENTITY_DESERIALIZERS

    class Value:
        def get_str_value(self) -> str:
            return "v"

    ours, sdks = Entity(), Entity()
    fast, generated = Entity.get_field_deserializers(ours), _SDK_ENTITY_DESERIALIZERS(sdks)
    assert Entity.get_field_deserializers is not _SDK_ENTITY_DESERIALIZERS
    assert fast.keys() == generated.keys()
    for name in fast:
        fast[name](Value())  # type: ignore[arg-type]
        generated[name](Value())  # type: ignore[arg-type]
    assert (ours.id, ours.odata_type) == (sdks.id, sdks.odata_type) == ("v", "v")
