"""The connector's collaborators, built once per process from settings and reused by every trigger.

Azure Functions runs a Python worker's async functions on one event loop, so connection pools
(Table/Queue clients, the Graph and Dataverse HTTP clients) are created on first use and kept:
a webhook must not pay for TLS handshakes and token requests on Graph's 3-second clock. The
webhook only touches storage; Graph and Dataverse clients are built only when a trigger needs them.

Imports follow the same rule: this module imports what the webhook needs (settings, storage, the
intake's caches) and each builder imports its own adapter (msgraph-sdk, the Dataverse client, the
sync engine, azure-identity) when it first runs, so a cold instance answers Graph's first
notification without loading them (tests/test_cold_imports.py keeps it so).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from shared.config import CredentialKind, Settings, get_settings
from shared.store.factory import open_job_queue_from_settings, open_store_from_settings, storage_account_url
from shared.store.jobs import JobQueue, open_job_queue
from shared.store.ports import Store
from shared.sync.intake import SharedMarks, SubscriptionCache
from shared.sync.lease import LeaseWaiters

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from msgraph.graph_service_client import GraphServiceClient

    from shared.admin_ops import AdminOperations
    from shared.crm.dataverse import DataverseClient
    from shared.outlook.claim import ClaimGuard
    from shared.outlook.subscriptions import SubscriptionManager
    from shared.store.crm_jobs import CrmWorkQueue
    from shared.sync.crm_changes import ChangeFeed
    from shared.sync.crm_dispatch import SharedRoutes, SharedRuns
    from shared.sync.crm_run import CrmToOutlookRun
    from shared.sync.job import MailboxSyncJob
    from shared.sync.maintenance import Maintenance
    from shared.sync.onboarding import Onboarding
    from shared.sync.routing import Router

T = TypeVar("T")


@dataclass
class Runtime:
    """Lazily opened, process-wide clients; ``close()`` releases whatever was opened."""

    settings: Settings
    subscription_cache: SubscriptionCache = field(default_factory=SubscriptionCache)
    dirty_marks: SharedMarks = field(default_factory=SharedMarks)
    # CRM -> Outlook runs waiting for a mailbox lease, which the Outlook -> CRM jobs yield to
    lease_waiters: LeaseWaiters = field(default_factory=LeaseWaiters)
    _opened: dict[str, Any] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def _once(self, name: str, build: Callable[[], Awaitable[T]]) -> T:
        if name in self._opened:
            return self._opened[name]  # type: ignore[no-any-return]
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name not in self._opened:
                self._opened[name] = await build()
        return self._opened[name]  # type: ignore[no-any-return]

    async def _storage_credential(self) -> AsyncTokenCredential | None:
        if self.settings.storage_connection_string:
            return None

        async def build() -> AsyncTokenCredential:
            from azure.identity.aio import ManagedIdentityCredential

            credential = ManagedIdentityCredential(client_id=self.settings.storage_client_id)
            self._closers.append(credential.close)
            return credential

        return await self._once("storage_credential", build)

    async def store(self) -> Store:
        async def build() -> Store:
            store = await open_store_from_settings(self.settings, credential=await self._storage_credential())
            self._closers.append(store.close)
            return store

        return await self._once("store", build)

    async def jobs(self) -> JobQueue:
        async def build() -> JobQueue:
            queue = await open_job_queue_from_settings(
                self.settings, credential=await self._storage_credential()
            )
            self._closers.append(queue.close)
            return queue

        return await self._once("jobs", build)

    async def _sibling_queue(self, name: str) -> JobQueue:
        if self.settings.storage_connection_string:
            queue = await open_job_queue(
                queue_name=name, connection_string=self.settings.storage_connection_string
            )
        else:
            queue = await open_job_queue(
                queue_name=name,
                account_url=storage_account_url(self.settings, "queue"),
                credential=await self._storage_credential(),
            )
        self._closers.append(queue.close)
        return queue

    async def crm_work(self) -> CrmWorkQueue:
        """The CRM -> Outlook queue (routing work and per-mailbox runs), named after the job queue."""

        async def build() -> CrmWorkQueue:
            from shared.store.crm_jobs import CrmWorkQueue, crm_queue_name

            return CrmWorkQueue(await self._sibling_queue(crm_queue_name(self.settings.job_queue)))

        return await self._once("crm_work", build)

    async def router(self) -> Router:
        async def build() -> Router:
            from shared.sync.routing import Router

            return Router(
                store=await self.store(),
                crm=await self.crm(),
                queue=await self.crm_work(),
                filter_ttl_seconds=self.settings.field_settings_ttl_seconds,
            )

        return await self._once("router", build)

    async def crm_routes(self) -> SharedRoutes:
        """The worker's routing, the routing work of one table handed in at once routed as one."""

        async def build() -> SharedRoutes:
            from shared.sync.crm_dispatch import SharedRoutes

            return SharedRoutes(await self.router())

        return await self._once("crm_routes", build)

    async def change_feed(self) -> ChangeFeed:
        async def build() -> ChangeFeed:
            from shared.sync.crm_changes import ChangeFeed

            return ChangeFeed(store=await self.store(), crm=await self.crm(), queue=await self.crm_work())

        return await self._once("change_feed", build)

    async def crm_run(self) -> CrmToOutlookRun:
        async def build() -> CrmToOutlookRun:
            from shared.sync.crm_run import CrmToOutlookRun
            from shared.sync.job import JobOptions

            return CrmToOutlookRun(
                store=await self.store(),
                crm=await self.crm(),
                graph=await self.graph(),
                options=JobOptions.from_settings(self.settings),
                claims=await self.claims(),
                waiters=self.lease_waiters,
            )

        return await self._once("crm_run", build)

    async def crm_runs(self) -> SharedRuns:
        """The worker's CRM -> Outlook runs, those of one mailbox and table handed in at once shared."""

        async def build() -> SharedRuns:
            from shared.sync.crm_dispatch import SharedRuns

            return SharedRuns(await self.crm_run())

        return await self._once("crm_runs", build)

    async def lifecycle_jobs(self) -> JobQueue:
        """The lifecycle-notification queue, named after the job queue (created if missing)."""

        async def build() -> JobQueue:
            from shared.sync.lifecycle import lifecycle_queue_name

            name = lifecycle_queue_name(self.settings.job_queue)
            if self.settings.storage_connection_string:
                queue = await open_job_queue(
                    queue_name=name, connection_string=self.settings.storage_connection_string
                )
            else:
                queue = await open_job_queue(
                    queue_name=name,
                    account_url=storage_account_url(self.settings, "queue"),
                    credential=await self._storage_credential(),
                )
            self._closers.append(queue.close)
            return queue

        return await self._once("lifecycle_jobs", build)

    async def _app_credential(self) -> AsyncTokenCredential:
        async def build() -> AsyncTokenCredential:
            from shared.outlook.credentials import credential_from_settings

            credential = credential_from_settings(self.settings)
            self._closers.append(credential.close)
            return credential

        return await self._once("app_credential", build)

    async def graph(self) -> GraphServiceClient:
        async def build() -> GraphServiceClient:
            import httpx

            from shared.outlook.client import build_graph_client
            from shared.outlook.pacing import MailboxPacer

            http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.graph_timeout_seconds, connect=10.0), http2=True
            )
            self._closers.append(http.aclose)
            credential = await self._app_credential()
            pacer = MailboxPacer(
                budget=self.settings.graph_mailbox_budget,
                window_seconds=self.settings.graph_budget_window_seconds,
                share=self.settings.graph_budget_share,
            )
            return build_graph_client(
                credential, base_url=str(self.settings.graph_url), http_client=http, pacer=pacer
            )

        return await self._once("graph", build)

    async def crm(self) -> DataverseClient:
        async def build() -> DataverseClient:
            from shared.crm.dataverse import DataverseClient
            from shared.outlook.credentials import StaticTokenCredential
            from shared.sync.field_rules import field_rules
            from shared.sync.user_reads import user_reads

            if self.settings.credential_kind is CredentialKind.SANDBOX:
                credential: AsyncTokenCredential = StaticTokenCredential(
                    base_url=str(self.settings.dataverse_url)
                )
            else:
                credential = await self._app_credential()
            client = DataverseClient.from_settings(self.settings, credential)
            field_rules(client, ttl=self.settings.field_settings_ttl_seconds)
            user_reads(client, ttl=self.settings.field_settings_ttl_seconds)
            self._closers.append(client.aclose)
            return client

        return await self._once("crm", build)

    async def subscriptions(self) -> SubscriptionManager:
        """Graph subscriptions with this deployment's webhook URLs."""

        async def build() -> SubscriptionManager:
            from shared.outlook.subscriptions import SubscriptionManager

            return SubscriptionManager(
                await self.graph(),
                notification_url=str(self.settings.notification_url),
                lifecycle_url=str(self.settings.lifecycle_url),
            )

        return await self._once("subscriptions", build)

    async def sync_job(self) -> MailboxSyncJob:
        """The sync job on this process's clients (queue worker, onboarding, timers)."""

        async def build() -> MailboxSyncJob:
            from shared.outlook.delta import DeltaReader
            from shared.outlook.mailbox import OutlookMailbox
            from shared.outlook.writers import OutlookWriter
            from shared.sync.job import JobOptions, MailboxSyncJob
            from shared.sync.tracking import TrackingService, open_tracking_index

            store, crm, graph = await self.store(), await self.crm(), await self.graph()
            index, service = await open_tracking_index(
                connection_string=self.settings.storage_connection_string,
                account_url=None
                if self.settings.storage_connection_string
                else storage_account_url(self.settings, "table"),
                credential=await self._storage_credential(),
                prefix=self.settings.table_prefix,
            )
            self._closers.append(service.close)
            mailbox_reads = OutlookMailbox(graph)
            return MailboxSyncJob(
                store=store,
                crm=crm,
                reader=DeltaReader(graph),
                writer=OutlookWriter(graph),
                options=JobOptions.from_settings(self.settings),
                tracking=TrackingService(crm=crm, store=store, index=index, outlook=mailbox_reads),
                mailbox_reads=mailbox_reads,
                claims=await self.claims(),
                waiters=self.lease_waiters,
            )

        return await self._once("sync_job", build)

    async def onboarding(self) -> Onboarding:
        """Adding and removing mailboxes."""

        async def build() -> Onboarding:
            from shared.outlook.mailbox import OutlookMailbox
            from shared.outlook.writers import OutlookWriter
            from shared.sync.onboarding import Onboarding

            graph = await self.graph()
            return Onboarding(
                store=await self.store(),
                crm=await self.crm(),
                graph=graph,
                mailboxes=OutlookMailbox(graph),
                writer=OutlookWriter(graph),
                subscriptions=await self.subscriptions(),
                job=await self.sync_job(),
                claims=await self.claims(),
            )

        return await self._once("onboarding", build)

    async def claims(self) -> ClaimGuard:
        """Which deployment synchronizes a mailbox (the claim on the mailbox; one per worker)."""

        async def build() -> ClaimGuard:
            from shared.outlook.claim import ClaimGuard, MailboxClaims

            claims = MailboxClaims(await self.graph())
            organization = str(self.settings.dataverse_url).rstrip("/")
            return ClaimGuard(
                claims,
                deployment=self.settings.deployment,
                organization=organization,
                ttl=dt.timedelta(seconds=self.settings.claim_check_seconds),
            )

        return await self._once("claims", build)

    async def maintenance(self) -> Maintenance:
        """Subscription renewal, parked-item retries and full resyncs."""

        async def build() -> Maintenance:
            from shared.sync.maintenance import Maintenance

            return Maintenance(
                store=await self.store(),
                subscriptions=await self.subscriptions(),
                job=await self.sync_job(),
                parked_max_attempts=self.settings.parked_max_attempts,
            )

        return await self._once("maintenance", build)

    async def admin_operations(self) -> AdminOperations:
        """The admin queue and the operations table (onboarding over HTTP runs from there)."""

        async def build() -> AdminOperations:
            from shared.admin_ops import open_admin_operations

            operations = await open_admin_operations(
                self.settings, credential=await self._storage_credential()
            )
            self._closers.append(operations.close)
            return operations

        return await self._once("admin_operations", build)

    async def close(self) -> None:
        closers, self._closers = self._closers[::-1], []
        self._opened.clear()
        for close in closers:
            await close()


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process-wide runtime (settings are validated on first use, naming every problem)."""
    global _runtime  # noqa: PLW0603 - one runtime per worker process, by design
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime


async def close_runtime() -> None:
    """Close the process-wide runtime's clients, if it was opened."""
    global _runtime
    if _runtime is not None:
        runtime, _runtime = _runtime, None
        await runtime.close()
