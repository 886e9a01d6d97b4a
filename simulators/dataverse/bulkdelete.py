"""BulkDelete: a system job that deletes the rows a set of queries selects.

"Delete data in bulk" (power-apps/developer/data-platform/delete-data-bulk) and the Web API
reference (BulkDelete Action, BulkDeleteResponse ComplexType, the asyncoperation and
bulkdeleteoperation table references):

- ``POST BulkDelete`` (unbound) with ``QuerySet`` (a collection of QueryExpression), ``JobName``,
  ``SendEmailNotification``, ``ToRecipients``, ``CCRecipients``, ``RecurrencePattern`` and
  ``StartDateTime``, all required (Microsoft's Python client sends them all, empty where unused).
  The answer is ``200 {"JobId": <guid>}``: the id of the system job (``asyncoperation``,
  ``operationtype`` 13 "Bulk Delete"). The job "runs asynchronously in the background": the
  answer comes first, the deletes after it.
- A ``bulkdeleteoperation`` row records the job: its ``asyncoperationid``, ``successcount`` and
  ``failurecount``. Both rows go from Ready / Waiting For Resources (0/0) to Completed / Succeeded
  (3/30) when the job has run; a row the user may not delete counts as a failure, not an error.
- The job deletes as the user who submitted it: its privileges, cascades, change tracking and
  Delete events (webhooks) are those of single deletes. Submitting needs ``prvBulkDelete`` (the
  "Bulk Delete" privilege of System Administrator; the simulator's application user holds it too).

Simulator's choices where the docs publish no code: a QueryExpression's ``Criteria`` may hold
``Conditions`` (Equal, NotEqual, In, NotIn, Null, NotNull) and nested ``Filters`` joined by
``FilterOperator`` And/Or; anything else, a missing parameter or an unknown table answers 400
0x80048d19 and starts no job. Recurring jobs (a non-empty ``RecurrencePattern``) are refused.
The job's rows are read-only through the Web API here (Dataverse lets a user cancel a job).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simulators.dataverse import errors
from simulators.dataverse.engine import ApiRequest, ApiResponse, now
from simulators.dataverse.schema import Table, load_tables
from simulators.dataverse.security import SYSTEM, Caller
from simulators.dataverse.store import Record, Ref, index_key

if TYPE_CHECKING:
    from simulators.dataverse.engine import Engine

PATH = "BulkDelete"
PRIVILEGE = "prvBulkDelete"
REQUIRED = (
    "QuerySet",
    "JobName",
    "SendEmailNotification",
    "ToRecipients",
    "CCRecipients",
    "RecurrencePattern",
    "StartDateTime",
)
BULK_DELETE_OPERATION_TYPE = 13
READY, COMPLETED = 0, 3
WAITING_FOR_RESOURCES, SUCCEEDED = 0, 30

Predicate = Callable[[Record], bool]


@dataclass(frozen=True)
class Job:
    """A submitted job: who runs it, its rows, and what each query selects."""

    operation_id: str
    bulk_id: str
    caller: Caller
    queries: tuple[tuple[Table, Predicate], ...]
    base_url: str


def submit(engine: Engine, request: ApiRequest, caller: Caller) -> tuple[ApiResponse, Job]:
    """Validate the request, write the job's rows (Ready) and answer its JobId; run it with ``run``."""
    if request.method != "POST":
        raise errors.DataverseError(405, errors.BAD_PAYLOAD, "BulkDelete is an action: use POST.")
    if caller.depth(PRIVILEGE) == 0:
        raise errors.DataverseError(
            403,
            errors.PRIVILEGE_DENIED,
            f"Principal user (Id={caller.user_id}) is missing {PRIVILEGE} privilege.",
        )
    body = _body(request.body)
    name = body["JobName"]
    if not isinstance(name, str) or not name.strip():
        raise errors.bad_request("JobName must be a non-empty string.")
    if body["RecurrencePattern"]:
        raise errors.bad_request("The simulator runs a bulk delete once: RecurrencePattern must be empty.")
    queries = tuple(_query(raw, index) for index, raw in enumerate(body["QuerySet"]))
    operation_id, bulk_id = str(uuid.uuid4()), str(uuid.uuid4())
    owner = Ref("systemuser", caller.user_id)
    _write(
        engine,
        "asyncoperation",
        operation_id,
        {
            "name": name[:256],
            "operationtype": BULK_DELETE_OPERATION_TYPE,
            "messagename": PATH,
            "ownerid": owner,
            "statecode": READY,
            "statuscode": WAITING_FOR_RESOURCES,
        },
    )
    _write(
        engine,
        "bulkdeleteoperation",
        bulk_id,
        {
            "name": name[:256],
            "asyncoperationid": Ref("asyncoperation", operation_id),
            "isrecurring": False,
            "successcount": 0,
            "failurecount": 0,
            "statecode": READY,
            "statuscode": WAITING_FOR_RESOURCES,
        },
    )
    answer = ApiResponse(
        200,
        {},
        {
            "@odata.context": f"{request.base_url}/$metadata#Microsoft.Dynamics.CRM.BulkDeleteResponse",
            "JobId": operation_id,
        },
    )
    return answer, Job(operation_id, bulk_id, caller, queries, request.base_url)


def run(engine: Engine, job: Job) -> None:
    """Delete what the job's queries select, as its submitter, and mark the job completed.

    A job whose rows are gone (its request's change set rolled back) does nothing."""
    if engine.store.get("asyncoperation", job.operation_id) is None:
        return
    started = now()
    deleted = failed = 0
    for table, predicate in job.queries:
        for record in [r for r in engine.store.rows[table.logical_name].values() if predicate(r)]:
            record_id = str(record[table.primary_id])
            if engine.store.get(table.logical_name, record_id) is None:
                continue  # a cascade of an earlier delete of this job took it
            delete = ApiRequest("DELETE", f"{table.entity_set}({record_id})", {}, {}, b"", job.base_url)
            try:
                engine.handle(delete, job.caller)
                deleted += 1
            except errors.DataverseError:
                failed += 1
    done = {"statecode": COMPLETED, "statuscode": SUCCEEDED}
    _write(engine, "asyncoperation", job.operation_id, {**done, "startedon": started, "completedon": now()})
    counts = {"successcount": deleted, "failurecount": failed}
    _write(engine, "bulkdeleteoperation", job.bulk_id, {**done, **counts})


def _write(engine: Engine, table_name: str, record_id: str, columns: dict[str, Any]) -> None:
    """Platform-maintained columns: written as ``computed`` (read-only to clients)."""
    table = load_tables()[table_name]
    existing = engine.store.get(table_name, record_id)
    engine.write(
        table, record_id, {}, existing=existing, caller=SYSTEM, request=_system_request(), computed=columns
    )


def _system_request() -> ApiRequest:
    return ApiRequest("POST", "", {}, {}, b"", "")


def _body(raw: bytes) -> dict[str, Any]:
    body = errors.json_object(raw)
    missing = [name for name in REQUIRED if name not in body]
    if missing:
        raise errors.bad_request(f"BulkDelete needs the parameter(s) {', '.join(missing)}.")
    if not isinstance(body["QuerySet"], list) or not body["QuerySet"]:
        raise errors.bad_request("QuerySet must hold at least one QueryExpression.")
    return body


def _query(raw: Any, index: int) -> tuple[Table, Predicate]:
    if not isinstance(raw, dict):
        raise errors.bad_request(f"QuerySet[{index}] must be a QueryExpression object.")
    table = load_tables().get(str(raw.get("EntityName", "")).lower())
    if table is None or table.ownership not in {"UserOwned", "OrganizationOwned"}:
        raise errors.bad_request(f"QuerySet[{index}].EntityName names no table a bulk delete can take.")
    criteria = raw.get("Criteria")
    return table, _filter(criteria, table, f"QuerySet[{index}].Criteria") if criteria else (lambda _: True)


def _filter(raw: Any, table: Table, where: str) -> Predicate:
    if not isinstance(raw, dict):
        raise errors.bad_request(f"{where} must be a FilterExpression object.")
    operator = str(raw.get("FilterOperator", "And"))
    if operator not in {"And", "Or"}:
        raise errors.bad_request(f"{where}.FilterOperator must be And or Or.")
    parts = [
        _condition(c, table, f"{where}.Conditions[{i}]") for i, c in enumerate(raw.get("Conditions") or [])
    ] + [_filter(f, table, f"{where}.Filters[{i}]") for i, f in enumerate(raw.get("Filters") or [])]
    if not parts:
        return lambda _: True
    if operator == "And":
        return lambda record: all(part(record) for part in parts)
    return lambda record: any(part(record) for part in parts)


def _condition(raw: Any, table: Table, where: str) -> Predicate:
    if not isinstance(raw, dict):
        raise errors.bad_request(f"{where} must be a ConditionExpression object.")
    column = str(raw.get("AttributeName", "")).lower()
    if column not in table.columns:
        raise errors.bad_request(f"{where}: {table.logical_name} has no column '{column}'.")
    operator = raw.get("Operator")
    values = {index_key(v.get("Value") if isinstance(v, dict) else v) for v in raw.get("Values") or []}

    def value(record: Record) -> Any:
        return index_key(record.get(column))

    tests: dict[Any, Predicate] = {
        "Equal": lambda r: value(r) in values,
        "In": lambda r: value(r) in values,
        "NotEqual": lambda r: value(r) not in values,
        "NotIn": lambda r: value(r) not in values,
        "Null": lambda r: value(r) is None,
        "NotNull": lambda r: value(r) is not None,
    }
    if operator not in tests:
        raise errors.bad_request(f"{where}: the simulator takes the operators {', '.join(tests)}.")
    if operator in {"Equal", "NotEqual"} and len(values) != 1:
        raise errors.bad_request(f"{where}: {operator} takes exactly one value.")
    return tests[operator]
