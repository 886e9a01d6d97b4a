"""Tracking end to end: Azurite, the Graph simulator (msgraph-sdk), the Dataverse simulator
(DataverseClient), and the production MailboxSyncJob with its TrackingService."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from msgraph.graph_service_client import GraphServiceClient

from shared.crm.dataverse import DataverseClient
from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import ItemKind
from shared.outlook.delta import DeltaReader
from shared.outlook.mailbox import OutlookMailbox
from shared.outlook.subscriptions import ResourceKind, resource_path
from shared.outlook.writers import OutlookWriter
from shared.store.ports import Store
from shared.store.records import Mailbox
from shared.sync.job import MailboxSyncJob, SyncRunReport
from shared.sync.tracking import TrackingIndex, TrackingService, open_tracking_index
from simulators.dataverse.launcher import DataverseSimulator
from tests.engine.conftest import crm, graph, graph_http, store
from tests.fixtures.graph_sim import GraphSim

__all__ = ["crm", "graph", "graph_http", "store"]  # the engine's fixtures, shared

FULL = dict.fromkeys(("create", "read", "write", "delete", "append", "appendto"), "organization")
READ = dict.fromkeys(("read", "appendto"), "organization")
TRACKED = "Tracked to Dynamics 365"


@dataclass
class World:
    """One test's mailbox users, CRM users and the job over all of it."""

    graph_sim: GraphSim
    graph_client: GraphServiceClient
    dataverse: DataverseSimulator
    crm: DataverseClient
    store: Store
    index: TrackingIndex
    job: MailboxSyncJob
    token: str

    def crm_user(self, tables: tuple[str, ...] = ("email", "contact", "activitymimeattachment")) -> Any:
        role = f"role-{uuid.uuid4().hex[:8]}"
        grants = dict.fromkeys(("systemuser", "contact", "account", "lead"), READ)
        grants |= dict.fromkeys(tables, FULL)
        self.dataverse.add_role(role, tables=grants)
        return self.dataverse.add_user(
            internalemailaddress=f"u-{uuid.uuid4().hex[:8]}@contoso.example", roles=[role]
        )

    async def mailbox(self, settings: MailboxSettings | None = None) -> Mailbox:
        """A fresh Graph mailbox registered with a fresh CRM user."""
        upn = f"m-{uuid.uuid4().hex[:8]}@contoso.example"
        mailbox_id = self.graph_sim.add_user(upn=upn, mail=upn)
        user = self.crm_user()
        return await self.store.registry.register(
            mailbox_id=mailbox_id,
            upn=upn,
            crm_user_id=user["systemuserid"],
            crm_caller_object_id=user["azureactivedirectoryobjectid"],
            settings=settings or MailboxSettings(),
        )

    def folder_id(self, mailbox: Mailbox, name: str) -> str:
        return str(self.graph_sim.user_info(mailbox.mailbox_id)["mailFolders"][name])

    async def sync(self, mailbox: Mailbox, folder: str = "inbox") -> SyncRunReport:
        resource = resource_path(ResourceKind.MESSAGES, mailbox.mailbox_id, mail_folder=folder)
        return await self.job.run(mailbox.mailbox_id, resource)

    def graph(self, method: str, mailbox: Mailbox, path: str, body: Any = None) -> Any:
        response = self.graph_sim.client.request(
            method,
            f"{self.graph_sim.base_url}/users/{mailbox.mailbox_id}/{path}",
            json=body,
            headers=self.graph_sim.headers,
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def message_path(self, message_id: str) -> str:
        return f"messages/{quote(message_id, safe='')}"

    def set_categories(self, mailbox: Mailbox, message_id: str, categories: list[str]) -> None:
        self.graph("PATCH", mailbox, self.message_path(message_id), {"categories": categories})

    def move(self, mailbox: Mailbox, message_id: str, folder: str) -> str:
        moved = self.graph(
            "POST", mailbox, f"{self.message_path(message_id)}/move", {"destinationId": folder}
        )
        return str(moved["id"])

    def create_folder(self, mailbox: Mailbox, name: str, parent: str | None = None) -> str:
        path = f"mailFolders/{quote(parent, safe='')}/childFolders" if parent else "mailFolders"
        return str(self.graph("POST", mailbox, path, {"displayName": name})["id"])

    def attach(self, mailbox: Mailbox, message_id: str, name: str, content: bytes) -> None:
        body = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": name,
            "contentType": "application/octet-stream",
            "contentBytes": base64.b64encode(content).decode("ascii"),
        }
        self.graph("POST", mailbox, f"{self.message_path(message_id)}/attachments", body)

    def tracked(self, internet_message_id: str) -> bool:
        return bool(self.crm_emails(internet_message_id))

    def crm_emails(self, internet_message_id: str) -> list[dict[str, Any]]:
        """The CRM emails with this message id (Dynamics' ``messageid`` column)."""
        quoted = internet_message_id.replace("'", "''")
        return self.crm_query("emails", params={"$filter": f"messageid eq '{quoted}'"})

    def email_id(self, mail: dict[str, Any]) -> uuid.UUID:
        """The id of the one CRM email tracked for a seeded message."""
        [row] = self.crm_emails(str(mail["internetMessageId"]))
        return uuid.UUID(row["activityid"])

    async def linked(self, mailbox: Mailbox, message_id: str) -> bool:
        return (
            await self.store.links.get_by_outlook(mailbox.mailbox_id, ItemKind.EMAIL, message_id) is not None
        )

    def crm_query(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Rows as the application user reads them over the Web API."""
        response = httpx.get(
            f"{self.dataverse.api_url}/{path}",
            params=params,
            headers=self.dataverse.headers(self.token),
            trust_env=False,
        )
        response.raise_for_status()
        return list(response.json()["value"])


def unique_address(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@fabrikam.example"


def message(
    sender: str, subject: str = "Hello", *, conversation: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A received message as the Graph simulator seeds it."""
    body: dict[str, Any] = {
        "subject": subject,
        "from": {"emailAddress": {"address": sender}},
        "sender": {"emailAddress": {"address": sender}},
        "toRecipients": [{"emailAddress": {"address": "someone@contoso.example"}}],
        "body": {"contentType": "text", "content": f"body of {subject}"},
        "internetMessageId": f"<{uuid.uuid4().hex}@fabrikam.example>",
        **extra,
    }
    if conversation is not None:
        body["conversationId"] = conversation
    return body


@pytest.fixture
async def world(
    *,
    graph_sim: GraphSim,
    graph: GraphServiceClient,
    dataverse_sim: DataverseSimulator,
    dataverse_token: str,
    crm: DataverseClient,
    store: Store,
    storage_connection_string: str,
    table_prefix: str,
) -> AsyncIterator[World]:
    index, service = await open_tracking_index(
        connection_string=storage_connection_string, prefix=table_prefix
    )
    tracking = TrackingService(crm=crm, store=store, index=index, outlook=OutlookMailbox(graph))
    job = MailboxSyncJob(
        tracking=tracking, store=store, crm=crm, reader=DeltaReader(graph), writer=OutlookWriter(graph)
    )
    yield World(graph_sim, graph, dataverse_sim, crm, store, index, job, dataverse_token)
    await service.close()
