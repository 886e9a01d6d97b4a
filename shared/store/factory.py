"""Open the store and the job queue from crmsync's app settings, locally or in Azure.

Locally ``AzureWebJobsStorage`` is a connection string (Azurite). In Azure only
``AzureWebJobsStorage__accountName`` is set and access is by managed identity: the caller passes
an async credential (e.g. ``azure.identity.aio.ManagedIdentityCredential(client_id=
settings.storage_client_id)``), which it also closes (learn.microsoft.com, "Tutorial: Create a
function app that connects to Azure services using identities instead of secrets").
"""

from __future__ import annotations

from typing import Literal

from azure.core.credentials_async import AsyncTokenCredential

from shared.config import Settings
from shared.store.azure.service import open_store
from shared.store.jobs import JobQueue, open_job_queue
from shared.store.ports import Store


def storage_account_url(settings: Settings, service: Literal["table", "queue"]) -> str:
    """``https://<account>.<service>.core.windows.net`` for the identity-based configuration."""
    if not settings.storage_account_name:
        raise ValueError("AzureWebJobsStorage__accountName is not set")
    return f"https://{settings.storage_account_name}.{service}.core.windows.net"


async def open_store_from_settings(
    settings: Settings, *, credential: AsyncTokenCredential | None = None
) -> Store:
    """The Table Storage store named by ``settings`` (tables created if missing)."""
    if settings.storage_connection_string:
        return await open_store(
            connection_string=settings.storage_connection_string, prefix=settings.table_prefix
        )
    return await open_store(
        account_url=storage_account_url(settings, "table"),
        credential=credential,
        prefix=settings.table_prefix,
    )


async def open_job_queue_from_settings(
    settings: Settings, *, credential: AsyncTokenCredential | None = None
) -> JobQueue:
    """The job queue named by ``settings`` (created if missing)."""
    if settings.storage_connection_string:
        return await open_job_queue(
            queue_name=settings.job_queue, connection_string=settings.storage_connection_string
        )
    return await open_job_queue(
        queue_name=settings.job_queue,
        account_url=storage_account_url(settings, "queue"),
        credential=credential,
    )
