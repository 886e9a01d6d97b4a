"""The engine over real components: Azurite, the Graph simulator with msgraph-sdk, the Dataverse
simulator with DataverseClient. Each test gets its own tables, mailbox, CRM user and CRM token."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from azure.core.credentials import AccessToken
from msgraph.graph_service_client import GraphServiceClient

from shared.crm.dataverse import DataverseClient
from shared.crm.port import RecordRef
from shared.domain.model import ItemKind
from shared.outlook.client import build_graph_client
from shared.outlook.credentials import StaticTokenCredential
from shared.outlook.delta import DeltaReader
from shared.outlook.mailbox import OutlookMailbox
from shared.outlook.subscriptions import SubscriptionManager
from shared.outlook.writers import OutlookWriter
from shared.store.azure.service import open_store
from shared.store.ports import Store
from shared.store.records import Mailbox
from shared.sync.job import MailboxSyncJob
from shared.sync.maintenance import Maintenance, RenewalReport
from shared.sync.onboarding import OffboardingReport, Onboarding, OnboardingReport
from shared.sync.run import SyncRunReport
from shared.sync.status import MailboxStatus, mailbox_statuses
from simulators.dataverse.launcher import DataverseSimulator
from simulators.graph.sink import NotificationSink
from tests.fixtures.graph_sim import GraphSim

FULL_ACCESS = dict.fromkeys(("create", "read", "write", "delete", "append", "appendto"), "organization")
SYNCED_TABLES = ("contact", "email", "appointment", "task")
READ_ONLY = {"read": "organization", "appendto": "organization"}  # activity parties bind to these rows
# The simulator transcribes only some documented email columns of account and lead (extra-tables.json);
# shared.crm.tables lists all three of each, which the simulator answers with 400 0x80060888.
SIMULATED_EMAIL_COLUMNS = {"account": ("emailaddress1", "emailaddress2"), "lead": ("emailaddress1",)}


class FixedToken:
    """The sandbox credential for Dataverse: this test's own bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_token(self, *scopes: str) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


@dataclass(frozen=True)
class CrmUser:
    systemuserid: str
    object_id: str
    role: str  # re-adding a role by name replaces its privileges (the simulator's /_sim/roles)


@pytest.fixture(scope="session")
async def graph_http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        yield http


@pytest.fixture(scope="session")
def graph(graph_sim: GraphSim, graph_http: httpx.AsyncClient) -> GraphServiceClient:
    credential = StaticTokenCredential(base_url=graph_sim.base_url)
    return build_graph_client(credential, base_url=graph_sim.base_url, http_client=graph_http, max_retries=2)


@pytest.fixture
async def crm(dataverse_sim: DataverseSimulator, dataverse_token: str) -> AsyncIterator[DataverseClient]:
    async with DataverseClient(
        dataverse_sim.api_url,
        FixedToken(dataverse_token),
        scope="http://127.0.0.1/.default",
        application_writes=True,  # tests seed records as the application
        max_retry_wait=2,
        email_columns=SIMULATED_EMAIL_COLUMNS,
    ) as client:
        yield client


@pytest.fixture
async def store(storage_connection_string: str, table_prefix: str) -> AsyncIterator[Store]:
    opened = await open_store(connection_string=storage_connection_string, prefix=table_prefix)
    yield opened
    await opened.close()


CrmUserFactory = Callable[..., CrmUser]


def grant_role(dataverse_sim: DataverseSimulator, role: str, tables: tuple[str, ...]) -> None:
    """(Re)define ``role``: full access to ``tables``, read access to the tables parties resolve against."""
    grants = dict.fromkeys(("systemuser", "contact", "account", "lead"), READ_ONLY)
    grants |= dict.fromkeys(tables, FULL_ACCESS)
    dataverse_sim.add_role(role, tables=grants)


async def synced_user(engine: Engine) -> tuple[Mailbox, RecordRef]:
    """A registered mailbox whose CRM user may sync to Outlook (Salesperson), and that user as an owner."""
    role = f"role-{uuid.uuid4().hex[:8]}"
    grant_role(engine.dataverse, role, SYNCED_TABLES)
    address = f"u-{uuid.uuid4().hex[:8]}@contoso.example"  # the mailbox's, as Exchange and Dynamics know it
    row = engine.dataverse.add_user(internalemailaddress=address, roles=[role, "Salesperson"])
    mailbox = await engine.store.registry.register(
        mailbox_id=engine.graph_sim.add_user(row["azureactivedirectoryobjectid"], upn=address),
        upn=address,
        crm_user_id=row["systemuserid"],
        crm_caller_object_id=row["azureactivedirectoryobjectid"],
    )
    return mailbox, RecordRef("systemuser", uuid.UUID(row["systemuserid"]))


@pytest.fixture
def make_crm_user(dataverse_sim: DataverseSimulator) -> CrmUserFactory:
    """A CRM user whose role gives full access to ``tables`` (default: all four synced tables) and
    read access to the tables parties resolve against."""

    def make(tables: tuple[str, ...] = SYNCED_TABLES) -> CrmUser:
        role = f"role-{uuid.uuid4().hex[:8]}"
        grant_role(dataverse_sim, role, tables)
        row = dataverse_sim.add_user(
            internalemailaddress=f"u-{uuid.uuid4().hex[:8]}@contoso.example", roles=[role]
        )
        return CrmUser(row["systemuserid"], row["azureactivedirectoryobjectid"], role)

    return make


@dataclass
class EngineServices:
    """The engine's mailbox operations as the CLI and the timers reach them, wired like shared/runtime.py."""

    store: Store
    onboarding: Onboarding
    maintenance: Maintenance
    job: MailboxSyncJob

    async def onboard(self, mailbox: str, crm_user_id: str, **options: Any) -> OnboardingReport:
        return await self.onboarding.onboard(mailbox, crm_user_id, **options)

    async def offboard(self, mailbox_id: str) -> OffboardingReport:
        return await self.onboarding.offboard(mailbox_id)

    async def status(self, mailbox_id: str | None = None) -> list[MailboxStatus]:
        return await mailbox_statuses(self.store, mailbox_id)

    async def renew_subscriptions(self, *, before: dt.datetime) -> RenewalReport:
        return await self.maintenance.renew_subscriptions(before=before)

    async def retry_parked(self, mailbox_id: str | None = None) -> tuple[SyncRunReport, ...]:
        return await self.maintenance.retry_parked(mailbox_id)

    async def resync(self, mailbox_id: str, **options: Any) -> tuple[SyncRunReport, ...]:
        return await self.maintenance.run_full_resync(mailbox_id, **options)


@pytest.fixture
def service(
    store: Store, crm: DataverseClient, graph: GraphServiceClient, graph_sink: NotificationSink
) -> EngineServices:
    writer = OutlookWriter(graph)
    subscriptions = SubscriptionManager(graph, notification_url=graph_sink.url, lifecycle_url=graph_sink.url)
    job = MailboxSyncJob(store=store, crm=crm, reader=DeltaReader(graph), writer=writer)
    onboarding = Onboarding(
        store=store,
        crm=crm,
        graph=graph,
        mailboxes=OutlookMailbox(graph),
        writer=writer,
        subscriptions=subscriptions,
        job=job,
    )
    maintenance = Maintenance(store=store, subscriptions=subscriptions, job=job)
    return EngineServices(store, onboarding, maintenance, job)


class GraphEdits:
    """Changes a user makes in Outlook, straight over HTTP to the Graph simulator."""

    def __init__(self, sim: GraphSim) -> None:
        self._sim = sim

    def _send(self, method: str, path: str, body: Any = None) -> Any:
        response = self._sim.client.request(
            method, f"{self._sim.base_url}/{path}", json=body, headers=self._sim.headers
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def post(self, user: str, collection: str, body: dict[str, Any]) -> Any:
        return self._send("POST", f"users/{user}/{collection}", body)

    def patch(self, user: str, collection: str, item_id: str, body: dict[str, Any]) -> Any:
        return self._send("PATCH", f"users/{user}/{collection}/{quote(item_id, safe='')}", body)

    def list(self, user: str, collection: str) -> list[dict[str, Any]]:
        """The collection's items (one page: tests hold few)."""
        items: list[dict[str, Any]] = self._send("GET", f"users/{user}/{collection}")["value"]
        return items

    def get(self, user: str, collection: str, item_id: str) -> Any:
        return self._send("GET", f"users/{user}/{collection}/{quote(item_id, safe='')}")

    def delete(self, user: str, collection: str, item_id: str) -> None:
        self._send("DELETE", f"users/{user}/{collection}/{quote(item_id, safe='')}")

    def delete_task(self, user: str, list_id: str, task_id: str) -> None:
        self.delete(user, f"todo/lists/{quote(list_id, safe='')}/tasks", task_id)


@pytest.fixture
def outlook(graph_sim: GraphSim) -> GraphEdits:
    return GraphEdits(graph_sim)


@dataclass(frozen=True)
class Engine:
    """One test's world: the store, both simulators and clients, and helpers over them."""

    store: Store
    crm: DataverseClient
    graph: GraphServiceClient
    graph_sim: GraphSim
    outlook: GraphEdits
    dataverse: DataverseSimulator
    token: str
    make_crm_user: CrmUserFactory

    def job(
        self, store: Store | None = None, *, writer: OutlookWriter | None = None, **options: Any
    ) -> MailboxSyncJob:
        """A sync job over this world's clients; ``options``: the job's other arguments (waiters,
        options, clock)."""
        graph = self.graph
        return MailboxSyncJob(
            store=store or self.store,
            crm=self.crm,
            reader=DeltaReader(graph),
            writer=writer or OutlookWriter(graph),
            **options,
        )

    async def register(self, user: CrmUser | None = None) -> Mailbox:
        """A fresh Graph mailbox registered with ``user`` (a fresh, fully privileged one by default)."""
        user = user or self.make_crm_user()
        mailbox_id = self.graph_sim.add_user(user.object_id)
        return await self.store.registry.register(
            mailbox_id=mailbox_id,
            upn=f"user-{mailbox_id[:8]}@sim.crmsync.test",
            crm_user_id=user.systemuserid,
            crm_caller_object_id=user.object_id,
        )

    def task_list(self, mailbox_id: str) -> str:
        return str(self.graph_sim.user_info(mailbox_id)["defaultTodoList"])

    def query(self, path: str) -> list[dict[str, Any]]:
        """Rows of a Web API query, read as the application user straight over HTTP."""
        response = httpx.get(
            f"{self.dataverse.api_url}/{path}", headers=self.dataverse.headers(self.token), timeout=30
        )
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()["value"]
        return rows

    def delete_record(self, entity_set: str, record_id: str) -> None:
        """Delete a CRM row as the application user (someone deleting it in Dynamics)."""
        response = httpx.delete(
            f"{self.dataverse.api_url}/{entity_set}({record_id})",
            headers=self.dataverse.headers(self.token),
            timeout=30,
        )
        response.raise_for_status()

    async def crm_id(self, mailbox_id: str, kind: ItemKind, outlook_id: str) -> str:
        link = await self.store.links.get_by_outlook(mailbox_id, kind, outlook_id)
        assert link is not None, "the item is not linked"
        return link.crm_id


@pytest.fixture
def engine(
    *,
    store: Store,
    crm: DataverseClient,
    graph: GraphServiceClient,
    graph_sim: GraphSim,
    dataverse_sim: DataverseSimulator,
    dataverse_token: str,
    make_crm_user: CrmUserFactory,
) -> Engine:
    return Engine(
        store, crm, graph, graph_sim, GraphEdits(graph_sim), dataverse_sim, dataverse_token, make_crm_user
    )
