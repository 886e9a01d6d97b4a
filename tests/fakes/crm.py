"""An in-memory CRM that implements :class:`shared.crm.port.CrmPort` the way
:class:`shared.crm.dataverse.DataverseClient` behaves against Dataverse (tests only).

tests/contract/test_crm_port_contract.py runs the same behaviours against this fake and against the
real client on the Dataverse simulator, so the engine's property test (tests/sync/
test_engine_state_machine.py) runs on a CRM that answers as the real adapter does:

- records read back as the Web API returns them: ``@odata.etag`` (``W/"<version>"``, new on every
  write), the primary id, the selected columns (``None`` where unset), date-times as ISO 8601 UTC
  with ``Z``, lookups as ``_<column>_value`` plus the lookup-logical-name annotation, the owner as
  ``_ownerid_value`` (the calling user on create, the application user for ``caller=None``);
- upsert by id or alternate key; ``If-Match: <etag>`` -> 412 :class:`ConcurrencyMismatch`,
  ``If-Match: *`` on a missing record -> :class:`RecordNotFound`, ``If-None-Match: *`` on an
  existing one -> :class:`DuplicateRecord`; create with a taken id -> :class:`DuplicateRecord`;
- a delete of a missing record is ``False`` (in a batch: ``ok`` with status 404);
- ``apply_batch``: a change set (``atomic``) is all or nothing and a failure is reported for every
  operation; otherwise every operation runs and is answered (continue-on-error);
- party lists are replaced whole when an upsert carries parties and are never read back (the
  adapter does not read them either); :meth:`FakeCrm.parties` shows them to tests;
- an unknown ``CallerObjectId`` -> :class:`CallerNotFound`.

Fault injection (:meth:`FakeCrm.inject`): the next call of a named method raises a 429
(:class:`ServiceProtectionLimit`, retryable: what the client raises once its retries gave up) or a
412, or, for ``apply_batch``, one operation of the next batch fails with it.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shared.crm.errors import (
    CONCURRENCY_VERSION_MISMATCH,
    DUPLICATE_RECORD,
    OBJECT_DOES_NOT_EXIST,
    REQUESTS_LIMIT_EXCEEDED,
    STRING_LENGTH_TOO_LONG,
    CallerNotFound,
    ConcurrencyMismatch,
    CrmError,
    DuplicateRecord,
    InvalidData,
    RecordNotFound,
    ServiceProtectionLimit,
)
from shared.crm.limits import MAX_LENGTHS, utf16_length
from shared.crm.port import (
    EMAIL_RESOLUTION_ORDER,
    ChangePage,
    ColumnPermission,
    ColumnSecurity,
    Delete,
    FieldSyncMapping,
    FieldValue,
    KeyValue,
    Operation,
    OperationResult,
    Party,
    RecordRef,
    Upsert,
    UpsertResult,
    WhoAmI,
)
from shared.crm.tables import table_info

LOOKUP_TYPE = "Microsoft.Dynamics.CRM.lookuplogicalname"
_NAMESPACE = uuid.UUID("5f1c3a2e-7b8d-4e0f-9a6b-2c4d6e8f0a1b")
OWNER_COLUMN = "_ownerid_value"
FaultStatus = Literal[412, 429]
CallName = Literal[
    "upsert",
    "create",
    "get",
    "get_many",
    "delete",
    "find_by_email",
    "find_where",
    "series_instances",
    "party_addresses",
    "apply_batch",
    "read_changes",
]


@dataclass
class FakeRecord:
    """One row: its columns in Web API JSON form, its version, owner and (write-only) party list."""

    table: str
    id: uuid.UUID
    columns: dict[str, Any]
    version: int
    owner: uuid.UUID
    parties: tuple[Party, ...] = ()

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass(frozen=True)
class FakeUser:
    systemuserid: uuid.UUID
    object_id: str  # Entra object id: the caller
    email: str


@dataclass
class _Fault:
    call: CallName
    status: FaultStatus
    op_index: int | None


@dataclass
class _Change:
    version: int
    table: str
    id: uuid.UUID
    deleted: bool


def _json_value(value: FieldValue) -> Any:
    """A value as the Web API returns it (what DataverseClient sends, read back)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("Dataverse date-times must be timezone-aware")
        return value.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _error(status: FaultStatus | int, kind: type[CrmError], code: str, message: str) -> CrmError:
    return kind(message, code=code, status=status, retry_after=1.0 if status == 429 else None)


def _throttled() -> CrmError:
    return _error(
        429, ServiceProtectionLimit, REQUESTS_LIMIT_EXCEEDED, "Number of requests exceeded the limit"
    )


def _mismatch() -> CrmError:
    return _error(412, ConcurrencyMismatch, CONCURRENCY_VERSION_MISMATCH, "The version of the record changed")


def _fault_error(status: FaultStatus) -> CrmError:
    return _throttled() if status == 429 else _mismatch()


class FakeCrm:
    """The in-memory CRM (see the module docstring). Not thread-safe; one event loop."""

    def __init__(self) -> None:
        self._versions = itertools.count(1000)
        self._ids = itertools.count(1)  # ids the server chooses: deterministic, so runs repeat
        self.records: dict[tuple[str, uuid.UUID], FakeRecord] = {}
        self.time_zones: dict[uuid.UUID, str] = {}  # systemuserid -> Windows zone name
        self.keys: dict[str, tuple[str, ...]] = {}  # table -> alternate key columns
        self.users: dict[str, FakeUser] = {}  # by object id
        self.app_user = self.new_id()
        self.business_unit = self.new_id()
        self.organization = self.new_id()
        self.calls: list[CallName] = []
        self._faults: list[_Fault] = []
        self._changes: list[_Change] = []
        #: Records deleted through the port (not by :meth:`remove`), in order.
        self.deletions: list[tuple[str, uuid.UUID]] = []
        #: Called with the method's name before every call (a test's tripwire: it may raise).
        self.before_call: Callable[[CallName], None] | None = None
        #: The organization's field synchronization rows (syncattributemapping); none: defaults.
        self.sync_mappings: list[FieldSyncMapping] = []
        #: Secured columns -> systemuserid -> what that user may do (field security profiles).
        self.secured: dict[tuple[str, str], dict[uuid.UUID, ColumnPermission]] = {}

    def new_id(self) -> uuid.UUID:
        """A fresh id, the same sequence in every run of a test."""
        return uuid.uuid5(_NAMESPACE, str(next(self._ids)))

    # -- test set-up and inspection -------------------------------------------------------------

    def add_user(self, email: str | None = None) -> FakeUser:
        """A CRM user (a systemuser row) the engine can impersonate by its object id."""
        systemuserid, object_id = self.new_id(), self.new_id()
        user = FakeUser(systemuserid, str(object_id), email or f"u-{systemuserid.hex[:8]}@contoso.example")
        self.users[user.object_id] = user
        self._store(
            FakeRecord(
                "systemuser", user.systemuserid, {"internalemailaddress": user.email}, 0, self.app_user
            )
        )
        return user

    def secure(self, table: str, column: str, **grants: ColumnPermission) -> None:
        """Secure a column; ``grants``: systemuserid (hex) -> the user's permission."""
        self.secured[(table, column)] = {uuid.UUID(user): grant for user, grant in grants.items()}

    def define_key(self, table: str, columns: Sequence[str]) -> None:
        self.keys[table] = tuple(columns)

    def inject(self, call: CallName, status: FaultStatus, *, op_index: int | None = None) -> None:
        """The next ``call`` fails with ``status``; for ``apply_batch`` with ``op_index``, only that
        operation of the next batch fails (a change set then fails whole)."""
        self._faults.append(_Fault(call, status, op_index))

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    def rows(self, table: str) -> dict[uuid.UUID, FakeRecord]:
        return {record_id: record for (name, record_id), record in self.records.items() if name == table}

    def parties(self, table: str, record_id: uuid.UUID) -> tuple[Party, ...]:
        return self.records[(table, record_id)].parties

    def edit(self, table: str, record_id: uuid.UUID, fields: Mapping[str, FieldValue]) -> None:
        """Someone changes the record in Dynamics (new version, owner unchanged)."""
        record = self.records[(table, record_id)]
        self._write_columns(record, fields)
        self._bump(record)

    def remove(self, table: str, record_id: uuid.UUID) -> None:
        """Someone deletes the record in Dynamics."""
        self._drop(table, record_id)

    # -- internals -------------------------------------------------------------------------------

    def _take_fault(self, call: CallName, *, whole: bool) -> _Fault | None:
        for fault in self._faults:
            if fault.call == call and (fault.op_index is None) == whole:
                self._faults.remove(fault)
                return fault
        return None

    def _enter(self, call: CallName, caller: str | None) -> uuid.UUID:
        """Every call: record it, raise an injected whole-call fault, resolve the caller."""
        self.calls.append(call)
        if self.before_call is not None:
            self.before_call(call)
        fault = self._take_fault(call, whole=True)
        if fault is not None:
            raise _fault_error(fault.status)
        return self._user(caller)

    def _user(self, caller: str | None) -> uuid.UUID:
        if caller is None:
            return self.app_user
        user = self.users.get(caller)
        if user is None:
            raise CallerNotFound(
                f"systemuser With Id = {caller} Does Not Exist", code=OBJECT_DOES_NOT_EXIST, status=404
            )
        return user.systemuserid

    def _store(self, record: FakeRecord) -> None:
        self.records[(record.table, record.id)] = record
        self._changes.append(_Change(next(self._versions), record.table, record.id, deleted=False))

    def _bump(self, record: FakeRecord) -> None:
        record.version = next(self._versions)
        self._changes.append(_Change(record.version, record.table, record.id, deleted=False))

    def _drop(self, table: str, record_id: uuid.UUID) -> bool:
        if self.records.pop((table, record_id), None) is None:
            return False
        self._changes.append(_Change(next(self._versions), table, record_id, deleted=True))
        return True

    @staticmethod
    def _write_columns(record: FakeRecord, fields: Mapping[str, FieldValue]) -> None:
        limits = MAX_LENGTHS.get(record.table, {})
        for column, value in fields.items():  # validate all before writing any
            if isinstance(value, str) and column in limits and utf16_length(value) > limits[column]:
                raise InvalidData(
                    f"A validation error occurred. The length of the '{column}' attribute of the "
                    f"'{record.table}' entity exceeded the maximum allowed length of '{limits[column]}'.",
                    code=STRING_LENGTH_TOO_LONG,
                    status=400,
                )
            if isinstance(value, dt.datetime) and value.tzinfo is None:
                raise ValueError("Dataverse date-times must be timezone-aware")
        for column, value in fields.items():
            if isinstance(value, RecordRef):
                table_info(value.table)  # an unknown target table fails as the adapter does
                record.columns[f"_{column}_value"] = str(value.id)
                record.columns[f"_{column}_value@{LOOKUP_TYPE}"] = value.table
            elif value is None and f"_{column}_value" in record.columns:
                record.columns.pop(f"_{column}_value")
                record.columns.pop(f"_{column}_value@{LOOKUP_TYPE}", None)
            else:
                record.columns[column] = _json_value(value)

    def _find_by_key(self, table: str, key: Mapping[str, KeyValue]) -> FakeRecord | None:
        if tuple(sorted(key)) != tuple(sorted(self.keys.get(table, ()))):
            raise CrmError(f"{table} has no alternate key on these columns", status=400)
        for record in self.rows(table).values():
            if all(record.columns.get(column) == value for column, value in key.items()):
                return record
        return None

    def _read(self, record: FakeRecord, select: Sequence[str] | None) -> dict[str, Any]:
        primary = table_info(record.table).primary_id
        columns = {
            **record.columns,
            OWNER_COLUMN: str(record.owner),
            f"{OWNER_COLUMN}@{LOOKUP_TYPE}": "systemuser",
        }
        if select is None:
            row = copy.deepcopy(columns)
        else:
            row = {}
            for column in select:
                if column in columns:
                    row[column] = copy.deepcopy(columns[column])
                    if f"{column}@{LOOKUP_TYPE}" in columns:
                        row[f"{column}@{LOOKUP_TYPE}"] = columns[f"{column}@{LOOKUP_TYPE}"]
                else:
                    row[column] = None
        return {"@odata.etag": record.etag, **row, primary: str(record.id)}

    def _upsert(self, op: Upsert, user: uuid.UUID) -> UpsertResult:
        info = table_info(op.table)
        if op.parties and info.party_collection is None:
            raise ValueError(f"{op.table} records have no activity parties")
        record = self.records.get((op.table, op.id)) if op.id is not None else None
        if op.key is not None:
            record = self._find_by_key(op.table, op.key)
        if record is not None:
            if op.if_none_match:
                raise _error(
                    412, DuplicateRecord, DUPLICATE_RECORD, "A record with matching key values already exists"
                )
            if op.if_match not in (None, "*") and op.if_match != record.etag:
                raise _mismatch()
            self._write_columns(record, op.fields)
            if op.parties:
                record.parties = tuple(op.parties)
            self._bump(record)
            return UpsertResult(RecordRef(op.table, record.id), record.etag, created=False)
        if op.if_match is not None:
            raise RecordNotFound(
                f"{op.table} With Id = {op.id} Does Not Exist", code=OBJECT_DOES_NOT_EXIST, status=404
            )
        record_id = op.id or self.new_id()
        record = FakeRecord(op.table, record_id, {}, next(self._versions), user, tuple(op.parties))
        if op.key is not None:
            self._write_columns(record, dict(op.key))
        self._write_columns(record, op.fields)
        self._store(record)
        return UpsertResult(RecordRef(op.table, record_id), record.etag, created=True)

    def _delete(self, op: Delete) -> bool:
        record = self.records.get((op.table, op.id))
        if record is None:
            table_info(op.table)
            return False
        if op.if_match is not None and op.if_match not in ("*", record.etag):
            raise _mismatch()
        self.deletions.append((op.table, op.id))
        return self._drop(op.table, op.id)

    def _run_op(self, op: Operation, user: uuid.UUID, fault: _Fault | None) -> OperationResult:
        if fault is not None:
            error = _fault_error(fault.status)
            return OperationResult(ok=False, status=error.status, error=error)
        try:
            if isinstance(op, Delete):
                found = self._delete(op)
                return OperationResult(ok=True, status=204 if found else 404, ref=RecordRef(op.table, op.id))
            result = self._upsert(op, user)
        except CrmError as error:
            return OperationResult(ok=False, status=error.status, error=error)
        status = 201 if result.created else 200
        return OperationResult(
            ok=True, status=status, ref=result.ref, etag=result.etag, created=result.created
        )

    # -- CrmPort ---------------------------------------------------------------------------------

    async def upsert(self, op: Upsert, *, caller: str | None) -> UpsertResult:
        return self._upsert(op, self._enter("upsert", caller))

    async def create(
        self,
        table: str,
        fields: Mapping[str, FieldValue],
        *,
        id: uuid.UUID | None = None,
        parties: Sequence[Party] = (),
        caller: str | None,
    ) -> RecordRef:
        user = self._enter("create", caller)
        record_id = id or self.new_id()
        if (table, record_id) in self.records:
            raise _error(409, DuplicateRecord, DUPLICATE_RECORD, "Cannot insert duplicate key")
        result = self._upsert(Upsert(table, fields, id=record_id, parties=tuple(parties)), user)
        assert result.ref is not None
        return result.ref

    async def get(
        self, table: str, id: uuid.UUID, *, select: Sequence[str] | None = None, caller: str | None
    ) -> dict[str, Any] | None:
        self._enter("get", caller)
        table_info(table)
        record = self.records.get((table, id))
        return None if record is None else self._read(record, select)

    async def get_many(
        self, table: str, ids: Sequence[uuid.UUID], *, select: Sequence[str] | None = None, caller: str | None
    ) -> dict[uuid.UUID, dict[str, Any] | None]:
        self._enter("get_many", caller)
        table_info(table)
        found: dict[uuid.UUID, dict[str, Any] | None] = {}
        for record_id in dict.fromkeys(ids):
            record = self.records.get((table, record_id))
            found[record_id] = None if record is None else self._read(record, select)
        return found

    async def delete(
        self, table: str, id: uuid.UUID, *, if_match: str | None = None, caller: str | None
    ) -> bool:
        self._enter("delete", caller)
        return self._delete(Delete(table, id, if_match))

    async def find_by_email(
        self, address: str, *, tables: Sequence[str] = EMAIL_RESOLUTION_ORDER, caller: str | None
    ) -> list[RecordRef]:
        self._enter("find_by_email", caller)
        wanted = address.casefold()
        found: list[RecordRef] = []
        for table in tables:
            columns = table_info(table).email_columns
            for record_id, record in self.rows(table).items():
                if any(str(record.columns.get(column) or "").casefold() == wanted for column in columns):
                    found.append(RecordRef(table, record_id))
        return found

    def _party_rows(self) -> list[dict[str, Any]]:
        """The activityparty rows of every activity: parties are rows of their own in Dataverse."""
        rows = []
        for record in self.records.values():
            for index, party in enumerate(record.parties):
                row: dict[str, Any] = {
                    "activitypartyid": str(uuid.uuid5(record.id, str(index))),
                    "_activityid_value": str(record.id),
                    f"_activityid_value@{LOOKUP_TYPE}": record.table,
                    "participationtypemask": int(party.participation),
                    "addressused": party.address,
                    "_partyid_value": str(party.ref.id) if party.ref else None,
                }
                if party.ref is not None:
                    row[f"_partyid_value@{LOOKUP_TYPE}"] = party.ref.table
                rows.append(row)
        return rows

    async def find_where(
        self,
        table: str,
        columns: Sequence[str],
        values: Sequence[str],
        *,
        select: Sequence[str],
        caller: str | None,
    ) -> list[dict[str, Any]]:
        """Rows where any of ``columns`` equals any of ``values`` (string ``eq``: case-insensitive)."""
        self._enter("find_where", caller)
        table_info(table)
        wanted = {value.casefold() for value in values}

        def matches(row: Mapping[str, Any]) -> bool:
            return any(str(row.get(column) or "").casefold() in wanted for column in columns)

        if table == "activityparty":
            return [{c: row.get(c) for c in select} for row in self._party_rows() if matches(row)]
        found = []
        for record in self.rows(table).values():
            row = self._read(record, None)
            if matches(row):
                found.append(self._read(record, select))
        return found

    async def series_instances(
        self, series_id: uuid.UUID, *, select: Sequence[str], caller: str | None
    ) -> list[dict[str, Any]]:
        """Appointments whose ``seriesid`` is ``series_id`` (the fake does not expand series itself:
        a test gives rows a ``seriesid`` with :meth:`edit`)."""
        self._enter("series_instances", caller)
        return [
            self._read(record, [*select, "activityid"])
            for record in self.rows("appointment").values()
            if str(record.columns.get("seriesid") or "").lower() == str(series_id)
        ]

    async def party_addresses(
        self, activity_ids: Sequence[uuid.UUID], *, caller: str | None
    ) -> dict[uuid.UUID, frozenset[tuple[int, str]]]:
        self._enter("party_addresses", caller)
        rows = self._party_rows()
        return {
            activity_id: frozenset(
                (int(row["participationtypemask"]), str(row["addressused"] or "").lower())
                for row in rows
                if row["_activityid_value"] == str(activity_id)
            )
            for activity_id in activity_ids
        }

    async def apply_batch(
        self, ops: Sequence[Operation], *, atomic: bool = False, caller: str | None
    ) -> list[OperationResult]:
        user = self._enter("apply_batch", caller)
        if not ops:
            return []
        fault = self._take_fault("apply_batch", whole=False)
        faults = {min(fault.op_index or 0, len(ops) - 1): fault} if fault is not None else {}
        if not atomic:
            return [self._run_op(op, user, faults.get(index)) for index, op in enumerate(ops)]
        saved = (copy.deepcopy(self.records), len(self._changes))
        results = []
        for index, op in enumerate(ops):
            result = self._run_op(op, user, faults.get(index))
            if not result.ok:
                self.records, del_from = saved
                del self._changes[del_from:]
                return [OperationResult(ok=False, status=result.status, error=result.error) for _ in ops]
            results.append(result)
        return results

    async def read_changes(
        self, table: str, *, select: Sequence[str], link: str | None = None, caller: str | None
    ) -> ChangePage:
        """Every row first, then what changed after the version the link holds (one page each)."""
        self._enter("read_changes", caller)
        table_info(table)
        now = self._changes[-1].version if self._changes else 0
        delta_link = f"fake-crm:changes:{table}:{now}"
        if link is None:
            rows = tuple(self._read(record, select) for record in self.rows(table).values())
            return ChangePage(table, changed=rows, delta_link=delta_link)
        prefix, _, since = link.rpartition(":")
        if prefix != f"fake-crm:changes:{table}":
            raise ValueError("change-tracking link does not belong to this CRM")
        latest: dict[uuid.UUID, _Change] = {}
        for change in self._changes:
            if change.table == table and change.version > int(since):
                latest[change.id] = change
        changed = tuple(
            self._read(self.records[(table, record_id)], select)
            for record_id, change in latest.items()
            if not change.deleted and (table, record_id) in self.records
        )
        deleted = tuple(record_id for record_id, change in latest.items() if change.deleted)
        return ChangePage(table, changed=changed, deleted=deleted, delta_link=delta_link)

    async def whoami(self, *, caller: str | None) -> WhoAmI:
        return WhoAmI(self._user(caller), self.business_unit, self.organization)

    async def field_sync_mappings(
        self, tables: Sequence[str], *, caller: str | None
    ) -> list[FieldSyncMapping]:
        if caller is not None:
            raise ValueError("field settings are read as the application")
        return [row for row in self.sync_mappings if row.table in tables]

    async def column_security(
        self, user_id: uuid.UUID, tables: Sequence[str], *, caller: str | None
    ) -> ColumnSecurity:
        if caller is not None:
            raise ValueError("field settings are read as the application")
        return ColumnSecurity(
            {
                key: grants.get(user_id, ColumnPermission())
                for key, grants in self.secured.items()
                if key[0] in tables
            }
        )

    async def user_time_zone(self, user_id: uuid.UUID, *, caller: str | None) -> str | None:
        """The Windows zone name tests set in :attr:`time_zones`, else the organization's (UTC)."""
        self._user(caller)
        return self.time_zones.get(user_id, "UTC")


__all__ = ["FakeCrm", "FakeRecord", "FakeUser"]
