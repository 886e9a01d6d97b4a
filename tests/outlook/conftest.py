"""A real msgraph-sdk client, built by crmsync's factory, talking HTTP to the Graph simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from msgraph.graph_service_client import GraphServiceClient

from shared.outlook.client import build_graph_client
from shared.outlook.credentials import StaticTokenCredential
from tests.fixtures.graph_sim import GraphSim


def sandbox_client(base_url: str, http: httpx.AsyncClient, *, max_retries: int = 3) -> GraphServiceClient:
    return build_graph_client(
        StaticTokenCredential(base_url=base_url), base_url=base_url, http_client=http, max_retries=max_retries
    )


@pytest.fixture(scope="session")
async def graph_http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        yield http


@pytest.fixture(scope="session")
def graph(graph_sim: GraphSim, graph_http: httpx.AsyncClient) -> GraphServiceClient:
    return sandbox_client(graph_sim.base_url, graph_http)
