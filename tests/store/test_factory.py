"""Opening the store and the job queue from app settings (the Azurite connection-string path)."""

from __future__ import annotations

import pytest

from shared.config import Settings, load_settings, setting_names
from shared.store.factory import open_job_queue_from_settings, open_store_from_settings, storage_account_url
from shared.store.jobs import JobReason, SyncJob

SANDBOX = {
    "CRMSYNC_TENANT_ID": "00000000-0000-0000-0000-000000000001",
    "CRMSYNC_CLIENT_ID": "00000000-0000-0000-0000-000000000002",
    "CRMSYNC_CREDENTIAL_KIND": "sandbox",
    "CRMSYNC_GRAPH_URL": "http://127.0.0.1:1/v1.0",
    "CRMSYNC_DATAVERSE_URL": "http://127.0.0.1:2",
    "CRMSYNC_NOTIFICATION_URL": "https://crmsync.example/api/notifications",
    "CRMSYNC_LIFECYCLE_URL": "https://crmsync.example/api/lifecycle",
}


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test passes counts, not the developer's environment."""
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)


def _settings(**storage: str) -> Settings:
    return load_settings(**SANDBOX, **storage)


async def test_store_and_queue_open_from_a_connection_string(
    storage_connection_string: str, table_prefix: str
) -> None:
    settings = _settings(
        AzureWebJobsStorage=storage_connection_string,
        CRMSYNC_TABLE_PREFIX=table_prefix,
        CRMSYNC_JOB_QUEUE=f"q-{table_prefix}",
    )
    store = await open_store_from_settings(settings)
    queue = await open_job_queue_from_settings(settings)
    try:
        assert await store.sync_state.mark_dirty("mailbox", "me/messages") is True
        await queue.enqueue(
            SyncJob(mailbox_id="mailbox", resource="me/messages", reason=JobReason.NOTIFICATION)
        )
        assert len([message async for message in queue.client.receive_messages()]) == 1
    finally:
        await queue.client.delete_queue()
        await queue.close()
        await store.close()


def test_identity_based_settings_name_the_account_endpoints() -> None:
    settings = _settings(AzureWebJobsStorage__accountName="crmsyncstore")
    assert storage_account_url(settings, "table") == "https://crmsyncstore.table.core.windows.net"
    assert storage_account_url(settings, "queue") == "https://crmsyncstore.queue.core.windows.net"


async def test_identity_based_settings_need_a_credential() -> None:
    with pytest.raises(ValueError, match="credential"):
        await open_store_from_settings(_settings(AzureWebJobsStorage__accountName="crmsyncstore"))
