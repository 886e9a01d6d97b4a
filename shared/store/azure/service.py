"""Opening the Table Storage store: the service client, crmsync's tables, the repositories bundled."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.data.tables.aio import TableServiceClient

from shared.store.azure.audit import AzureAuditTrail
from shared.store.azure.common import Clock
from shared.store.azure.links import AzureLinkStore
from shared.store.azure.parked import AzureParkedStore
from shared.store.azure.registry import AzureRegistry
from shared.store.azure.subscriptions import AzureSubscriptionStore
from shared.store.azure.sync_state import AzureSyncStateStore
from shared.store.ports import Store
from shared.store.records import utc_now

# "tracking" belongs to shared.sync.tracking (the email tracking index); created here with the rest.
TABLES = ("registry", "links", "syncstate", "subscriptions", "parked", "audit", "tracking")
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,40}$")
# azure-core retry settings for every storage client (tables and the job queue): the one retry
# layer. Three retries with short back-off instead of azure-core's ten, so that when storage is
# down the webhook fails fast with a 5xx and Graph redelivers, rather than timing out.
PIPELINE_OPTIONS: dict[str, Any] = {
    "retry_total": 3,
    "retry_backoff_factor": 0.4,
    "retry_backoff_max": 4,
    "connection_timeout": 5,
    "read_timeout": 15,
    # aiohttp with trust_env looks proxies and ~/.netrc up in a worker thread on every request (~2 ms
    # per storage call on a busy 2-core host); trust the environment only when it names a proxy.
    "use_env_settings": bool(urllib.request.getproxies()),
}


def table_service(
    *,
    connection_string: str | None = None,
    account_url: str | None = None,
    credential: AsyncTokenCredential | None = None,
) -> TableServiceClient:
    """The Table service client: a connection string locally, ``account_url`` + credential in Azure."""
    if connection_string:
        return TableServiceClient.from_connection_string(connection_string, **PIPELINE_OPTIONS)
    if account_url and credential:
        return TableServiceClient(endpoint=account_url, credential=credential, **PIPELINE_OPTIONS)
    raise ValueError("storage needs a connection_string, or an account_url and a credential")


async def open_store(
    *,
    connection_string: str | None = None,
    account_url: str | None = None,
    credential: AsyncTokenCredential | None = None,
    prefix: str = "crmsync",
    clock: Clock = utc_now,
) -> Store:
    """Connect (a connection string locally; ``account_url`` + a managed-identity credential in
    Azure), create crmsync's tables if missing, and bundle the repositories."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError("table prefix must be 3-41 letters or digits, starting with a letter")
    service = table_service(
        connection_string=connection_string, account_url=account_url, credential=credential
    )
    try:
        registry, links, sync_state, subscriptions, parked, audit, _tracking = await asyncio.gather(
            *(service.create_table_if_not_exists(prefix + name) for name in TABLES)
        )
    except BaseException:
        await service.close()
        raise
    return Store(
        registry=AzureRegistry(registry, clock),
        links=AzureLinkStore(links, clock),
        sync_state=AzureSyncStateStore(sync_state, clock),
        subscriptions=AzureSubscriptionStore(subscriptions),
        parked=AzureParkedStore(parked, clock),
        audit=AzureAuditTrail(audit),
        closer=service.close,
    )
