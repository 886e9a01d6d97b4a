"""$batch against the simulator: powerapps-docs "Execute batch operations using the Web API"
(change sets are atomic, Prefer: odata.continue-on-error, at most 1000 requests per batch)."""

from __future__ import annotations

import time
import uuid

import pytest

from shared.crm.dataverse import DataverseClient
from shared.crm.errors import InvalidData
from shared.crm.port import Delete, Operation, Upsert
from simulators.dataverse.launcher import DataverseSimulator


def _tasks(count: int, prefix: str) -> list[Upsert]:
    """Create-only upserts: conditional, so they stay on ``$batch`` (plain ones may go in bulk:
    tests/crm/test_dataverse_bulk.py)."""
    ids = [uuid.uuid4() for _ in range(count)]
    return [Upsert("task", {"subject": f"{prefix} {n}"}, id=i, if_none_match=True) for n, i in enumerate(ids)]


async def test_thousand_operations_in_one_batch(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    ops = _tasks(1000, "bulk")
    started = time.monotonic()
    results = await crm.apply_batch(ops, caller=None)
    assert time.monotonic() - started < 30
    assert [r.ok for r in results] == [True] * 1000
    assert all(r.created for r in results)
    assert [r.ref.id if r.ref else None for r in results] == [op.id for op in ops]
    [batch] = [r for r in dataverse_sim.requests(dataverse_token) if r["path"].endswith("$batch")]
    assert batch["batch_operations"] == 1000
    for op in (ops[0], ops[499], ops[999]):
        assert (dataverse_sim.record("task", str(op.id)) or {})["subject"] == op.fields["subject"]


async def test_more_than_thousand_operations_are_split(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    ops: list[Operation] = [*_tasks(1001, "split"), Delete("task", uuid.uuid4())]
    results = await crm.apply_batch(ops, caller=None)
    assert all(r.ok for r in results)
    batches = [
        r["batch_operations"] for r in dataverse_sim.requests(dataverse_token) if r["path"].endswith("$batch")
    ]
    assert batches == [1000, 2]
    with pytest.raises(ValueError, match="at most 1000"):
        await crm.apply_batch(ops, atomic=True, caller=None)


async def test_change_set_is_all_or_nothing(crm: DataverseClient, dataverse_sim: DataverseSimulator) -> None:
    """Change sets: when one operation fails, every operation of the change set is rolled back."""
    ops = [*_tasks(2, "atomic"), Upsert("task", {"subject": "x" * 201}, id=uuid.uuid4())]
    results = await crm.apply_batch(ops, atomic=True, caller=None)
    assert [r.ok for r in results] == [False, False, False]
    assert all(isinstance(r.error, InvalidData) for r in results)
    assert all(dataverse_sim.record("task", str(op.id)) is None for op in ops)

    ok = await crm.apply_batch(_tasks(3, "atomic ok"), atomic=True, caller=None)
    assert [r.status for r in ok] == [201, 201, 201]


async def test_continue_on_error_reports_each_operation(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    """Prefer: odata.continue-on-error: a failure does not stop the rest; each operation has its result."""
    good_before, good_after = _tasks(2, "independent")
    existing = await crm.create("task", {"subject": "existing"}, caller=None)
    ops: list[Operation] = [
        good_before,
        Upsert("task", {"subject": "x" * 201}, id=uuid.uuid4()),
        Upsert("task", {"subject": "updated"}, id=existing.id),
        Delete("task", uuid.uuid4()),
        good_after,
    ]
    results = await crm.apply_batch(ops, caller=None)
    assert [r.ok for r in results] == [True, False, True, True, True]
    assert [r.created for r in results] == [True, False, False, False, True]
    bad = results[1].error
    assert isinstance(bad, InvalidData)
    assert bad.code == "0x80044331"
    assert results[2].etag == (dataverse_sim.record("task", str(existing.id)) or {})["@odata.etag"]
    assert (dataverse_sim.record("task", str(good_after.id)) or {})["subject"] == "independent 1"
    [batch] = [r for r in dataverse_sim.requests(dataverse_token) if r["path"].endswith("$batch")]
    assert "odata.continue-on-error" in batch["headers"]["prefer"]
