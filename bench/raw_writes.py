"""The raw write rates an initial sync is compared with, measured on the same sandbox in the same run.

- Storage: entity-group transactions of 100 upserts (Table Storage's limit per transaction, "Performing
  entity group transactions", learn.microsoft.com/rest/api/storageservices/performing-entity-group-
  transactions) into a table of their own on the sandbox's Azurite, sent as crmsync sends them
  (``shared.store.azure.transactions``).
- Dataverse: ``$batch`` change sets of 1,000 contact POSTs (the limit per batch, "Execute batch operations
  using the Web API", learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-
  operations-using-web-api), as the mailbox's user, with the bench's observer token (its requests are
  not counted as crmsync's).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import httpx
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableServiceClient

from bench._common import OBSERVER_TOKEN, BenchTenant, BenchUser
from bench.dataverse_bulk import _batch
from shared.store.azure.transactions import submit_transaction

TRANSACTION = 100
DATAVERSE_BATCH = 1000


async def _storage_rate(connection_string: str, entities: int) -> float:
    async with TableServiceClient.from_connection_string(connection_string) as service:
        table = await service.create_table_if_not_exists(f"benchraw{uuid.uuid4().hex[:8]}")
        try:
            rows = [
                {
                    "PartitionKey": f"p{n // TRANSACTION}",
                    "RowKey": f"{uuid.uuid4()}",
                    "kind": "contact",
                    "crm_id": str(uuid.uuid4()),
                    "change_key": uuid.uuid4().hex,
                    "fingerprint": uuid.uuid4().hex,
                }
                for n in range(entities)
            ]
            started = time.perf_counter()
            for start in range(0, entities, TRANSACTION):
                chunk = rows[start : start + TRANSACTION]
                await submit_transaction(
                    table, [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in chunk]
                )
            return entities / (time.perf_counter() - started)
        finally:
            await service.delete_table(table.table_name)


def storage_rate(tenant: BenchTenant, entities: int = 3000) -> float:
    """Entities per second written in entity-group transactions of 100, one after another."""
    return asyncio.run(_storage_rate(tenant.endpoints["storage"], entities))


def dataverse_rate(tenant: BenchTenant, user: BenchUser, rounds: int = 3) -> float:
    """Contacts per second created in ``$batch`` requests of 1,000 (at the median request)."""
    api = tenant.sandbox.dataverse_api_url
    headers = {"Authorization": f"Bearer {OBSERVER_TOKEN}", "CallerObjectId": user.mailbox_id}
    samples = []
    with httpx.Client(headers=headers, timeout=300, trust_env=False) as client:
        for _ in range(rounds):
            ids = [str(uuid.uuid4()) for _ in range(DATAVERSE_BATCH)]
            content_type, body = _batch(api, "POST", ids, uuid.uuid4().hex[:6])
            started = time.perf_counter()
            response = client.post(f"{api}/$batch", content=body, headers={"Content-Type": content_type})
            samples.append(time.perf_counter() - started)
            response.raise_for_status()
            if response.text.count("HTTP/1.1 204") != DATAVERSE_BATCH:
                raise RuntimeError(f"a raw $batch write failed: {response.text[:300]}")
    return DATAVERSE_BATCH / statistics.median(samples)
