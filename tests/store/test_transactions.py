"""Entity-group transactions through ``shared.store.azure.transactions`` on Azurite: the same results and
the same typed errors as ``TableClient.submit_transaction``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from azure.core import MatchConditions
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.store.azure.transactions import submit_transaction


@pytest.fixture
async def table(storage_connection_string: str, table_prefix: str) -> AsyncIterator[TableClient]:
    async with TableServiceClient.from_connection_string(storage_connection_string) as service:
        client = await service.create_table_if_not_exists(f"{table_prefix}tx{uuid.uuid4().hex[:6]}")
        yield client
        await service.delete_table(client.table_name)


async def _sdk_path(*_: object, **__: object) -> None:
    raise AssertionError("a successful transaction went through the SDK's multipart path")


async def test_a_transaction_writes_every_entity_and_returns_their_etags(
    table: TableClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TableClient, "submit_transaction", _sdk_path)  # success never needs it
    rows = [{"PartitionKey": "p", "RowKey": f"r{n}", "text": f"é {n}", "count": n} for n in range(100)]
    results = await submit_transaction(table, [("create", row) for row in rows])
    stored = {entity["RowKey"]: entity async for entity in table.list_entities()}
    assert len(stored) == 100
    assert stored["r7"]["text"] == "é 7"
    assert stored["r7"]["count"] == 7
    assert [result["etag"] for result in results] == [stored[f"r{n}"].metadata["etag"] for n in range(100)]

    replaced = await submit_transaction(
        table,
        [
            ("update", {"PartitionKey": "p", "RowKey": "r1", "text": "new"}, {"mode": UpdateMode.REPLACE}),
            ("upsert", {"PartitionKey": "p", "RowKey": "r100"}),
            ("delete", {"PartitionKey": "p", "RowKey": "r2"}),
        ],
    )
    assert replaced[0]["etag"] == (await table.get_entity("p", "r1")).metadata["etag"]
    assert len([entity async for entity in table.list_entities()]) == 100


async def test_a_failed_transaction_writes_nothing_and_raises_the_sdks_error(table: TableClient) -> None:
    first = await submit_transaction(table, [("create", {"PartitionKey": "p", "RowKey": "a"})])
    with pytest.raises(TableTransactionError) as conflict:
        await submit_transaction(
            table,
            [
                ("create", {"PartitionKey": "p", "RowKey": "b"}),
                ("create", {"PartitionKey": "p", "RowKey": "a"}),
            ],
        )
    assert conflict.value.status_code == 409
    assert conflict.value.index == 1
    stale = {"etag": first[0]["etag"].replace("T", "X"), "match_condition": MatchConditions.IfNotModified}
    with pytest.raises(TableTransactionError) as changed:
        await submit_transaction(table, [("update", {"PartitionKey": "p", "RowKey": "a", "x": 1}, stale)])
    assert changed.value.status_code == 412
    assert [entity["RowKey"] async for entity in table.list_entities()] == ["a"]
