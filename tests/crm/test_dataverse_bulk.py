"""Plain upserts through UpsertMultiple ("Use bulk operation messages"), everything else through ``$batch``.

Against the simulator over HTTP: which requests the adapter sends (the simulator's request log), what
Dataverse holds afterwards, and the fallback when Dataverse refuses a bulk request (on standard
tables a bulk message fails whole).
"""

from __future__ import annotations

import uuid
from typing import Any

from shared.crm.dataverse import DataverseClient
from shared.crm.dataverse.bulk import MIN_BULK, BulkWrites
from shared.crm.errors import InvalidData, PrivilegeDenied
from shared.crm.port import Delete, Operation, RecordRef, Upsert
from simulators.dataverse.launcher import DataverseSimulator
from tests.crm.conftest import UserFactory


def _contacts(count: int, name: str) -> list[Upsert]:
    return [Upsert("contact", {"lastname": f"{name} {n}"}, id=uuid.uuid4()) for n in range(count)]


def _sent(dataverse_sim: DataverseSimulator, token: str) -> list[tuple[str, int, Any]]:
    """(action, status, operations) of each request: UpsertMultiple, a $batch of writes, or a
    $batch of reads (the versions of records written in bulk)."""
    sent = []
    for entry in dataverse_sim.requests(token):
        if entry["path"].endswith("UpsertMultiple"):
            sent.append(("UpsertMultiple", entry["status"], None))
        elif entry["path"].endswith("$batch"):
            reads = all(part.startswith("GET ") for part in entry["batch_parts"])
            sent.append(("reads" if reads else "$batch", entry["status"], entry["batch_operations"]))
    return sent


async def test_plain_upserts_go_in_upsert_multiple_requests_of_at_most_a_thousand(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    ops = _contacts(1200, "Bulk")
    results = await crm.apply_batch(ops, caller=None)

    assert [r.ok for r in results] == [True] * 1200
    assert [r.ref for r in results] == [RecordRef("contact", op.id) for op in ops if op.id]
    assert _sent(dataverse_sim, dataverse_token) == [
        ("UpsertMultiple", 204, None),
        ("reads", 200, 4),  # the 204 carries no versions: one $batch of queries of 250 ids each
        ("UpsertMultiple", 204, None),
        ("reads", 200, 1),
    ]
    first, _, second, _ = dataverse_sim.requests(dataverse_token)
    assert len(first["batch_parts"]) == 1000  # the log names each record written, as a $batch's parts
    assert second["batch_parts"][-1] == f"UpsertMultiple contacts({ops[-1].id})"
    for index in (0, 999, 1199):
        record = dataverse_sim.record("contact", str(ops[index].id)) or {}
        assert record["lastname"] == ops[index].fields["lastname"]
        # each record's version, for its link, as a $batch's answer gives it
        assert results[index].etag == record["@odata.etag"]

    # Replayed (a job retried after a lost answer): the same ids are updated, nothing is created twice.
    again = [Upsert("contact", {"lastname": "Replayed"}, id=op.id) for op in ops[:3]]
    assert all(r.ok for r in await crm.apply_batch(again, caller=None))
    assert (dataverse_sim.record("contact", str(ops[0].id)) or {})["lastname"] == "Replayed"
    assert (dataverse_sim.record("contact", str(ops[3].id)) or {})["lastname"] == "Bulk 3"


async def test_a_mixed_call_sends_its_large_plain_group_in_bulk_and_the_rest_in_order_in_a_batch(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    existing = await crm.create("task", {"subject": "edited in Dynamics"}, caller=None)
    stale = Upsert("task", {"subject": "stale"}, id=existing.id, if_match='W/"1"')
    created_then_updated = uuid.uuid4()
    dataverse_sim.clear_requests()
    plain = [Upsert("task", {"subject": f"Task {n}"}, id=uuid.uuid4()) for n in range(MIN_BULK)]
    ops: list[Operation] = [
        *plain[:50],
        stale,
        Upsert("task", {"subject": "new"}, id=created_then_updated),
        Upsert("task", {"scheduledend": "2026-12-24T00:00:00Z"}, id=created_then_updated, if_match="*"),
        Delete("task", uuid.uuid4()),
        *plain[50:],
    ]
    results = await crm.apply_batch(ops, caller=None)

    assert _sent(dataverse_sim, dataverse_token) == [
        ("UpsertMultiple", 204, None),
        ("reads", 200, 1),
        ("$batch", 200, 4),
    ]
    assert [r.ok for r in results[50:54]] == [False, True, True, True]
    assert results[50].status == 412  # the per-record condition a bulk message cannot carry
    assert all(r.ok for r in results[:50] + results[54:])
    written = dataverse_sim.record("task", str(created_then_updated)) or {}
    assert (written["subject"], written["scheduledend"][:10]) == ("new", "2026-12-24")
    assert (dataverse_sim.record("task", str(plain[-1].id)) or {})["subject"] == f"Task {MIN_BULK - 1}"


async def test_a_few_plain_upserts_stay_in_one_batch(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    """Fewer than MIN_BULK: a bulk message and the read of the versions would be two requests."""
    assert all(r.ok and r.etag for r in await crm.apply_batch(_contacts(MIN_BULK - 1, "Few"), caller=None))
    ops: list[Operation] = [*_contacts(3, "Few"), Delete("contact", uuid.uuid4())]
    assert all(r.ok for r in await crm.apply_batch(ops, caller=None))
    assert _sent(dataverse_sim, dataverse_token) == [("$batch", 200, MIN_BULK - 1), ("$batch", 200, 4)]


async def test_a_refused_bulk_request_is_sent_again_as_a_batch_that_answers_each_record(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    """Standard tables: one bad record fails the whole bulk message and nothing of it is written;
    the ``$batch`` that replaces it writes the good records and reports the bad one."""
    ops = _contacts(150, "Refused")
    ops[70] = Upsert("contact", {"lastname": "x" * 51}, id=uuid.uuid4())  # lastname holds 50
    results = await crm.apply_batch(ops, caller=None)

    assert _sent(dataverse_sim, dataverse_token) == [("UpsertMultiple", 400, None), ("$batch", 200, 150)]
    assert [r.ok for r in results] == [True] * 70 + [False] + [True] * 79
    assert isinstance(results[70].error, InvalidData)
    assert dataverse_sim.record("contact", str(ops[70].id)) is None
    assert (dataverse_sim.record("contact", str(ops[149].id)) or {})["lastname"] == "Refused 149"


async def test_the_callers_roles_decide_a_bulk_write_as_they_decide_a_batch(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str, make_user: UserFactory
) -> None:
    reader = make_user({"contact": {"read": "organization"}})
    ops = _contacts(MIN_BULK, "Denied")
    results = await crm.apply_batch(ops, caller=reader.object_id)

    assert _sent(dataverse_sim, dataverse_token) == [("UpsertMultiple", 403, None), ("$batch", 200, MIN_BULK)]
    assert all(not r.ok and isinstance(r.error, PrivilegeDenied) for r in results)
    assert all(dataverse_sim.record("contact", str(op.id)) is None for op in ops)


async def test_a_table_without_the_bulk_message_is_not_asked_again(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    """Not every table supports the bulk messages (their sdkmessagefilter rows say which): one that
    answers "not a bound action" is written through ``$batch`` from then on."""
    dataverse_sim.fault(
        "status",
        token=dataverse_token,
        path_contains="UpsertMultiple",
        status=404,
        code="0x80060888",
        message="Resource not found for the segment 'Microsoft.Dynamics.CRM.UpsertMultiple'.",
    )
    assert all(r.ok for r in await crm.apply_batch(_contacts(MIN_BULK, "First"), caller=None))
    assert all(r.ok for r in await crm.apply_batch(_contacts(MIN_BULK, "Second"), caller=None))
    assert _sent(dataverse_sim, dataverse_token) == [
        ("UpsertMultiple", 404, None),
        ("$batch", 200, MIN_BULK),
        ("$batch", 200, MIN_BULK),
    ]


def test_only_plain_upserts_of_records_no_other_operation_writes_or_binds_go_in_bulk() -> None:
    bulk = BulkWrites(transport=None)  # type: ignore[arg-type]  # groups() sends nothing
    account, contact = uuid.uuid4(), uuid.uuid4()
    ops: list[Operation] = [
        Upsert("contact", {"lastname": "a"}, id=contact),
        Upsert("contact", {"lastname": "b", "parentcustomerid": RecordRef("contact", contact)}, id=account),
        Upsert("contact", {"lastname": "c"}, id=uuid.uuid4(), if_match="*"),
        Upsert("contact", {"lastname": "d"}, id=uuid.uuid4(), if_none_match=True),
        Upsert("account", {"name": "e"}, id=uuid.uuid4()),
        Upsert("contact", {"lastname": "f"}, key={"emailaddress1": "f@example.com"}),
        *_contacts(MIN_BULK, "plain"),
    ]
    twice = uuid.uuid4()
    ops += [Upsert("contact", {"lastname": "g"}, id=twice), Upsert("contact", {"lastname": "h"}, id=twice)]

    groups = bulk.groups(ops)

    assert groups == {"contact": list(range(6, 6 + MIN_BULK))}
    assert bulk.groups(ops[:-3]) == {}  # MIN_BULK - 1 plain ones: all of them to the batch
