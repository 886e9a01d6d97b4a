"""Entity-group transactions through ``shared.store.azure.transactions`` on Azurite: the same results and
the same typed errors as ``TableClient.submit_transaction``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.data.tables import EdmType, EntityProperty, TableTransactionError, TransactionOperation, UpdateMode
from azure.data.tables._table_batch import TableBatchOperations
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.domain.model import ItemKind
from shared.store.azure.common import if_match
from shared.store.azure.transactions import (
    Operation,
    _request,
    at_most,
    operation_requests,
    submit_transaction,
)


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


# Every operation the store sends, and every property type its builder writes itself; keys with the
# characters URLs and OData quote (Table Storage refuses "/", "\\", "#" and "?" in keys).
_KEYS = {"PartitionKey": "mailbox a+b=", "RowKey": "o|contact|it's é %"}
_PROPERTIES = {
    "text": "é ✓",
    "empty": "",
    "flag": True,
    "count": -(2**31),
    "ratio": 0.25,
    "nan": math.nan,
    "at": dt.datetime(2026, 12, 5, 22, 0, 1, 7, tzinfo=dt.UTC),
    "local": dt.datetime(2026, 12, 5, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    "raw": b"\x00\xff",
    "guid": uuid.UUID(int=7),
    "gone": None,
}
_OPERATIONS: list[Operation] = [
    ("create", {**_KEYS, **_PROPERTIES}),
    ("upsert", {**_KEYS, **_PROPERTIES}, {"mode": UpdateMode.REPLACE}),
    ("upsert", {**_KEYS, "text": "merged"}),
    ("update", {**_KEYS, **_PROPERTIES}, {"mode": UpdateMode.REPLACE, **if_match("W/\"datetime'1'\"")}),
    ("update", {**_KEYS, "text": "merged"}, {"mode": UpdateMode.MERGE}),
    (TransactionOperation.UPDATE, {**_KEYS, "flag": False}, {"mode": "replace"}),
    ("delete", _KEYS),
    ("delete", {**_KEYS, "ignored": 1}, if_match('W/"x"')),
]


def _sdk_requests(
    table: TableClient, operations: list[Operation]
) -> list[tuple[str, str, dict[str, str], Any]]:
    batch = TableBatchOperations(
        config=table._client._config,
        endpoint=f"{table.scheme}://{table._primary_hostname}",
        table_name=table.table_name,
        is_cosmos_endpoint=False,
    )
    for operation in operations:
        batch.add_operation(operation)
    return [
        (request.method, request.url, dict(request.headers), request.content and json.loads(request.content))
        for request in batch.requests
    ]


@pytest.mark.parametrize("operation", _OPERATIONS, ids=lambda operation: str(operation[0]))
def test_each_operation_is_the_request_the_sdk_builds(table: TableClient, operation: Operation) -> None:
    built = [
        (request.method, request.url, dict(request.headers), request.body and json.loads(request.body))
        for request in operation_requests(table, [operation])
    ]
    assert built == _sdk_requests(table, [operation])
    assert [_request_built_here(table, operation)] == [True]


def _request_built_here(table: TableClient, operation: Operation) -> bool:
    base = f"{table.scheme}://{table._primary_hostname}/{table.table_name}"
    return _request(base, table._client._config.version, operation) is not None


@pytest.mark.parametrize(
    "value",
    [2**40, dt.datetime(2026, 1, 1), EntityProperty(5, EdmType.INT64), ItemKind.CONTACT, [1]],
    ids=["int64", "naive datetime", "EntityProperty", "enum", "list"],
)
def test_a_value_the_builder_does_not_know_is_left_to_the_sdk(table: TableClient, value: Any) -> None:
    """Including the SDK's refusal of a type it cannot store."""
    operation: Operation = ("create", {**_KEYS, "value": value})
    assert not _request_built_here(table, operation)
    try:
        expected = _sdk_requests(table, [operation])
    except TypeError:
        with pytest.raises(TypeError):
            operation_requests(table, [operation])
        return
    built = operation_requests(table, [operation])
    assert [(r.method, r.url, dict(r.headers), json.loads(r.body or b"")) for r in built] == expected


async def test_both_paths_store_the_same_entities(
    storage_connection_string: str, table_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's rows written through this module and through ``TableClient.submit_transaction``."""
    rows = [{**_KEYS, "RowKey": f"{_KEYS['RowKey']}{n}", **_PROPERTIES, "count": n} for n in range(50)]
    entities = []
    async with TableServiceClient.from_connection_string(storage_connection_string) as service:
        for path in ("here", "sdk"):
            table = await service.create_table(f"{table_prefix}{path}")
            try:
                creates: list[Operation] = [("create", row) for row in rows]
                updates: list[Operation] = [
                    ("upsert", {**rows[0], "text": "upserted"}, {"mode": UpdateMode.REPLACE}),
                    ("update", {**_KEYS, "RowKey": rows[1]["RowKey"], "text": "merged"}),
                    ("delete", {**_KEYS, "RowKey": rows[2]["RowKey"]}),
                ]
                for operations in (creates, updates):
                    if path == "here":
                        with monkeypatch.context() as patched:
                            patched.setattr(TableClient, "submit_transaction", _sdk_path)
                            await submit_transaction(table, operations)
                    else:
                        await table.submit_transaction(operations)
                entities.append(
                    [
                        (dict(entity), {name: type(value) for name, value in entity.items()})
                        async for entity in table.list_entities()
                    ]
                )
            finally:
                await service.delete_table(table.table_name)
    here, sdk = entities
    assert len(here) == 49
    assert repr(here) == repr(sdk)  # NaN != NaN: compared as text, with each property's type


async def test_at_most_keeps_the_order_the_limit_and_the_first_error() -> None:
    running, most = 0, 0
    cancelled: list[int] = []

    async def step(n: int, *, fail: bool = False) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.01 * (n % 3))
            if fail:
                raise LookupError(n)
            return n
        except asyncio.CancelledError:
            cancelled.append(n)
            raise
        finally:
            running -= 1

    assert await at_most(3, (step(n) for n in range(10))) == list(range(10))
    assert most == 3
    with pytest.raises(LookupError, match=r"^1$"):  # itself, not in an exception group
        await at_most(2, [step(0), step(1, fail=True), step(2), step(5)])
    assert set(cancelled) <= {2, 5}  # steps still running are cancelled (a never-started one is closed)
    assert 2 in cancelled
