"""Batched reads against the simulator: ``get_many`` reads a delta page's records in one ``$batch`` of
GETs (powerapps-docs "Execute batch operations using the Web API": at most 1000 requests per batch)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from shared.crm.dataverse import DataverseClient
from shared.crm.dataverse.wire import lookup_ref
from shared.crm.errors import CallerNotFound, PrivilegeDenied
from shared.crm.port import RecordRef, Upsert
from simulators.dataverse.launcher import DataverseSimulator
from tests.crm.conftest import UserFactory


def _batches(dataverse_sim: DataverseSimulator, token: str) -> list[dict[str, Any]]:
    return [entry for entry in dataverse_sim.requests(token) if entry["path"].endswith("$batch")]


async def _contacts(crm: DataverseClient, count: int, account: RecordRef) -> list[uuid.UUID]:
    """``count`` contacts of ``account`` (a lookup, to see its annotation come back), written as the app."""
    ops = [
        Upsert("contact", {"lastname": f"Batch {n}", "parentcustomerid": account}, id=uuid.uuid4())
        for n in range(count)
    ]
    results = await crm.apply_batch(ops, caller=None)
    assert all(result.ok for result in results)
    return [op.id for op in ops if op.id is not None]


async def test_reads_250_records_in_one_request_as_get_reads_them(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str, make_user: UserFactory
) -> None:
    reader = make_user({"contact": {"read": "organization"}})
    account = await crm.create("account", {"name": "Fabrikam"}, caller=None)
    existing = await _contacts(crm, 200, account)
    missing = [uuid.uuid4() for _ in range(50)]
    ids = [*existing[:100], *missing[:25], *existing[100:], *missing[25:]]
    dataverse_sim.clear_requests()

    columns = ["lastname", "_parentcustomerid_value"]
    records = await crm.get_many("contact", ids, select=columns, caller=reader.object_id)

    [batch] = dataverse_sim.requests(dataverse_token)
    assert batch["path"].endswith("$batch")
    assert batch["batch_operations"] == 250
    assert batch["headers"]["callerobjectid"] == reader.object_id
    assert set(records) == set(ids)
    assert all(records[record_id] is None for record_id in missing)
    for index in (0, 99, 199):
        record_id = existing[index]
        row = records[record_id] or {}
        assert row["lastname"] == f"Batch {index}"
        assert row["@odata.etag"] == (dataverse_sim.record("contact", str(record_id)) or {})["@odata.etag"]
        assert lookup_ref(row, "parentcustomerid") == account
        assert row == await crm.get("contact", record_id, select=columns, caller=reader.object_id)


async def test_more_than_thousand_ids_take_one_batch_per_thousand(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    ids = [uuid.uuid4() for _ in range(1001)]
    records = await crm.get_many("task", [*ids, ids[0]], select=["subject"], caller=None)
    assert records == dict.fromkeys(ids)
    assert [batch["batch_operations"] for batch in _batches(dataverse_sim, dataverse_token)] == [1000, 1]


async def test_empty_list_sends_nothing(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    assert await crm.get_many("contact", [], caller=None) == {}
    assert dataverse_sim.requests(dataverse_token) == []


async def test_reader_without_privilege_gets_the_typed_error(
    crm: DataverseClient, make_user: UserFactory
) -> None:
    """Security roles apply per record read, as for ``get``: no prvReadContact raises, it is not "missing"."""
    account = await crm.create("account", {"name": "Contoso"}, caller=None)
    existing = await _contacts(crm, 3, account)
    task_only = make_user({"task": {"read": "organization"}})
    with pytest.raises(PrivilegeDenied) as raised:
        await crm.get_many("contact", [uuid.uuid4(), *existing], caller=task_only.object_id)
    assert raised.value.code == "0x80040220"
    assert not raised.value.retryable
    with pytest.raises(CallerNotFound):
        await crm.get_many("contact", existing, caller=str(uuid.uuid4()))


async def test_throttled_batch_is_retried_as_a_whole(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    account = await crm.create("account", {"name": "Northwind"}, caller=None)
    existing = await _contacts(crm, 5, account)
    dataverse_sim.clear_requests()
    dataverse_sim.fault("throttle", token=dataverse_token, count=1, retry_after=1, path_contains="$batch")
    started = time.monotonic()

    records = await crm.get_many("contact", existing, select=["lastname"], caller=None)

    assert time.monotonic() - started >= 1.0
    assert [(record or {})["lastname"] for record in records.values()] == [f"Batch {n}" for n in range(5)]
    assert [entry["status"] for entry in _batches(dataverse_sim, dataverse_token)] == [429, 200]
