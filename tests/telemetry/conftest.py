"""Real clients on the shared simulators: msgraph-sdk built by crmsync's factory, the DataverseClient."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from msgraph.graph_service_client import GraphServiceClient

from shared.crm.dataverse import DataverseClient
from shared.outlook.client import build_graph_client
from shared.outlook.credentials import StaticTokenCredential
from simulators.dataverse.launcher import DataverseSimulator
from tests.crm.conftest import SCOPE, FixedTokenCredential
from tests.fixtures.graph_sim import GraphSim


@pytest.fixture
async def graph(graph_sim: GraphSim) -> AsyncIterator[GraphServiceClient]:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        credential = StaticTokenCredential(base_url=graph_sim.base_url)
        yield build_graph_client(credential, base_url=graph_sim.base_url, http_client=http, max_retries=1)


@pytest.fixture
async def crm(dataverse_sim: DataverseSimulator, dataverse_token: str) -> AsyncIterator[DataverseClient]:
    credential = FixedTokenCredential(dataverse_token)
    async with DataverseClient(dataverse_sim.api_url, credential, scope=SCOPE, max_retry_wait=1) as client:
        yield client
