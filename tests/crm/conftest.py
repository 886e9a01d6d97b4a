"""Fixtures for the CRM adapter's contract tests: a DataverseClient on the shared simulator over HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken

from shared.crm.dataverse import DataverseClient
from shared.store import Store, open_store
from shared.store.crm_jobs import CrmWork, CrmWorkQueue
from shared.store.jobs import open_job_queue
from simulators.dataverse.launcher import DataverseSimulator


class FixedTokenCredential:
    """The sandbox credential: a fixed bearer token; counts how often the adapter asked for one."""

    def __init__(self, token: str, *, lifetime_s: int = 3600) -> None:
        self.token = token
        self.lifetime_s = lifetime_s
        self.requested_scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str) -> AccessToken:
        self.requested_scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + self.lifetime_s)


SCOPE = "http://127.0.0.1/.default"


@pytest.fixture
def credential(dataverse_token: str) -> FixedTokenCredential:
    return FixedTokenCredential(dataverse_token)


@pytest.fixture
async def crm(
    dataverse_sim: DataverseSimulator, credential: FixedTokenCredential
) -> AsyncIterator[DataverseClient]:
    """The adapter under test, as the application user of this test's own token."""
    async with DataverseClient(
        dataverse_sim.api_url, credential, application_writes=True, scope=SCOPE, max_retry_wait=5
    ) as client:
        yield client


@dataclass(frozen=True)
class SimUser:
    systemuserid: uuid.UUID
    object_id: str  # Entra object id: what the connector sends as CallerObjectId
    email: str


UserFactory = Callable[..., SimUser]


@pytest.fixture
def make_user(dataverse_sim: DataverseSimulator) -> UserFactory:
    """A fresh CRM user with a fresh role granting ``tables`` (e.g. {"contact": {"read": "organization"}})."""

    def make(tables: dict[str, dict[str, str]] | None = None, *, profiles: Sequence[str] = ()) -> SimUser:
        role = f"role-{uuid.uuid4().hex[:8]}"
        dataverse_sim.add_role(role, tables=tables or {})
        email = f"user-{uuid.uuid4().hex[:8]}@contoso.example"
        row = dataverse_sim.add_user(
            internalemailaddress=email, roles=[role], fieldsecurityprofiles=list(profiles)
        )
        return SimUser(uuid.UUID(row["systemuserid"]), row["azureactivedirectoryobjectid"], email)

    return make


ReadAsSystem = Callable[[str], dict[str, Any]]


@pytest.fixture
def read_as_system(dataverse_sim: DataverseSimulator, dataverse_token: str) -> ReadAsSystem:
    """GET a Web API path as the application user, straight over HTTP (to check what the adapter wrote)."""

    def read(path: str) -> dict[str, Any]:
        response = httpx.get(
            f"{dataverse_sim.api_url}/{path}", headers=dataverse_sim.headers(dataverse_token), timeout=30
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    return read


@pytest.fixture
async def store(storage_connection_string: str, table_prefix: str) -> AsyncIterator[Store]:
    """The connector's store on Azurite (change feed and routing read and write it)."""
    opened = await open_store(connection_string=storage_connection_string, prefix=table_prefix)
    yield opened
    await opened.close()


@pytest.fixture
async def queue(storage_connection_string: str, table_prefix: str) -> AsyncIterator[CrmWorkQueue]:
    """The CRM -> Outlook work queue on Azurite."""
    jobs = await open_job_queue(
        queue_name=f"crm-{table_prefix}".lower(), connection_string=storage_connection_string
    )
    yield CrmWorkQueue(jobs)
    await jobs.client.delete_queue()
    await jobs.close()


async def queued(queue: CrmWorkQueue) -> list[CrmWork]:
    """Take every message off the queue (up to 32), parsed."""
    client = queue._queue.client
    found = []
    async for message in client.receive_messages(max_messages=32):
        found.append(CrmWork.parse(message.content))
        await client.delete_message(message)
    return found
