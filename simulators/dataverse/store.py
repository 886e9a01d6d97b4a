"""In-memory rows with dict indexes, row versions, a change log and savepoints.

Every write gets the next organization-wide version number (the ``versionnumber`` column
Dataverse exposes and puts in ``@odata.etag`` as ``W/"<versionnumber>"``: "Perform conditional
operations using the Web API"). The change log per table backs change tracking ("Use change
tracking to synchronize data with external systems"); savepoints give change sets their
all-or-nothing behaviour ("Execute batch operations using the Web API", Change sets).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from simulators.dataverse import errors

Record = dict[str, Any]

# Columns answered from an index on `eq` (the connector looks rows up by them).
INDEXED_COLUMNS: dict[str, tuple[str, ...]] = {
    "contact": ("emailaddress1", "emailaddress2", "emailaddress3", "parentcustomerid", "ownerid"),
    "account": ("emailaddress1", "emailaddress2", "emailaddress3", "ownerid"),
    "lead": ("emailaddress1", "emailaddress2", "emailaddress3", "ownerid"),
    "email": ("messageid", "regardingobjectid", "ownerid"),
    "appointment": ("globalobjectid", "regardingobjectid", "ownerid", "seriesid"),
    "recurringappointmentmaster": ("globalobjectid", "regardingobjectid", "ownerid"),
    "task": ("regardingobjectid", "ownerid"),
    "systemuser": ("azureactivedirectoryobjectid", "internalemailaddress"),
    "activityparty": ("activityid", "partyid"),
    "activitymimeattachment": ("objectid",),
}


@dataclass(frozen=True)
class Ref:
    """A lookup value: the target table and row id."""

    table: str
    id: str


def index_key(value: Any) -> Any:
    """Strings compare case-insensitively in Dataverse; lookups compare by id."""
    if isinstance(value, Ref):
        return value.id.lower()
    if isinstance(value, str):
        return value.lower()
    return value


@dataclass
class Savepoint:
    journal_length: int
    change_lengths: dict[str, int]


class Store:
    """Rows by table and id; O(1) by id and by indexed column value."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Record]] = defaultdict(dict)
        self.indexes: dict[str, dict[str, dict[Any, set[str]]]] = defaultdict(lambda: defaultdict(dict))
        self.alternate_keys: dict[str, dict[str, tuple[str, ...]]] = defaultdict(dict)
        self.key_index: dict[str, dict[str, dict[tuple[Any, ...], str]]] = defaultdict(
            lambda: defaultdict(dict)
        )
        self.version = 1000
        self.changes: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.token_floor: dict[str, int] = defaultdict(int)
        self._journal: list[tuple[str, str, Record | None]] = []
        self._open_savepoints = 0

    # -- reads ---------------------------------------------------------------------------------
    def get(self, table: str, record_id: str) -> Record | None:
        return self.rows[table].get(record_id.lower())

    def indexed_columns(self, table: str) -> tuple[str, ...]:
        keyed = tuple(c for cols in self.alternate_keys[table].values() for c in cols)
        return INDEXED_COLUMNS.get(table, ()) + keyed

    def find(self, table: str, column: str, value: Any) -> set[str] | None:
        """Ids whose ``column`` equals ``value``, or None when the column has no index."""
        if column not in self.indexed_columns(table):
            return None
        return set(self.indexes[table][column].get(index_key(value), ()))

    def find_by_key(self, table: str, values: dict[str, Any]) -> str | None:
        """The id of the row an alternate key (or the primary key) names, if any."""
        for name, columns in self.alternate_keys[table].items():
            if set(columns) == set(values):
                return self.key_index[table][name].get(tuple(index_key(values[c]) for c in columns))
        raise errors.bad_request(
            f"The key attributes {sorted(values)} do not match a key defined on entity {table}.",
        )

    # -- writes --------------------------------------------------------------------------------
    def next_version(self) -> int:
        self.version += 1
        return self.version

    def put(self, table: str, record: Record, primary_id: str) -> None:
        """Insert or replace a row (its ``versionnumber`` already set by the caller)."""
        record_id = str(record[primary_id]).lower()
        old = self.rows[table].get(record_id)
        self._check_keys(table, record, record_id)
        self._journal.append((table, record_id, old))
        self._unindex(table, record_id, old)
        self.rows[table][record_id] = record
        self._index(table, record_id, record)
        self.changes[table].append((int(record["versionnumber"]), record_id))

    def delete(self, table: str, record_id: str) -> None:
        record_id = record_id.lower()
        old = self.rows[table].pop(record_id, None)
        if old is None:
            return
        self._journal.append((table, record_id, old))
        self._unindex(table, record_id, old)
        self.changes[table].append((self.next_version(), record_id))

    def define_key(self, table: str, name: str, columns: tuple[str, ...]) -> None:
        """Add an alternate key and index the existing rows under it; existing duplicates refuse the key
        (creating a key fails while rows share its values: "Define alternate keys to reference rows").
        Defining the same key again changes nothing."""
        if self.alternate_keys[table].get(name) == columns:
            return
        index: dict[tuple[Any, ...], str] = {}
        for record_id, record in self.rows[table].items():
            values = tuple(index_key(record.get(c)) for c in columns)
            if None in values:
                continue
            if values in index:
                raise errors.bad_request(
                    f"Rows {index[values]} and {record_id} share the values of key {name}."
                )
            index[values] = record_id
        self.alternate_keys[table][name] = columns
        self.key_index[table][name] = index
        for column in columns:
            self.indexes[table][column] = {}
        for record_id, record in self.rows[table].items():
            self._index(table, record_id, record)

    # -- savepoints ----------------------------------------------------------------------------
    def savepoint(self) -> Savepoint:
        self._open_savepoints += 1
        return Savepoint(len(self._journal), {t: len(c) for t, c in self.changes.items()})

    def release(self, point: Savepoint) -> None:
        self._open_savepoints -= 1
        if self._open_savepoints == 0:
            self._journal.clear()

    def rollback(self, point: Savepoint) -> None:
        """Undo every write since ``point`` (journal replayed backwards)."""
        while len(self._journal) > point.journal_length:
            table, record_id, old = self._journal.pop()
            current = self.rows[table].pop(record_id, None)
            self._unindex(table, record_id, current)
            if old is not None:
                self.rows[table][record_id] = old
                self._index(table, record_id, old)
        for table, log in self.changes.items():
            del log[point.change_lengths.get(table, 0) :]
        self.release(point)

    # -- internals -----------------------------------------------------------------------------
    def _check_keys(self, table: str, record: Record, record_id: str) -> None:
        for name, columns in self.alternate_keys[table].items():
            values = tuple(index_key(record.get(c)) for c in columns)
            holder = self.key_index[table][name].get(values)
            if None not in values and holder is not None and holder != record_id:
                raise errors.DataverseError(
                    412,
                    errors.DUPLICATE_ENTITY_KEY,
                    f"Entity Key {name} violated. A record with the same value for "
                    f"{', '.join(columns)} already exists. A duplicate record cannot be created.",
                )

    def _index(self, table: str, record_id: str, record: Record | None) -> None:
        if record is None:
            return
        for column in self.indexed_columns(table):
            value = record.get(column)
            if value is not None:
                self.indexes[table][column].setdefault(index_key(value), set()).add(record_id)
        for name, columns in self.alternate_keys[table].items():
            values = tuple(index_key(record.get(c)) for c in columns)
            if None not in values:
                self.key_index[table][name][values] = record_id

    def _unindex(self, table: str, record_id: str, record: Record | None) -> None:
        if record is None:
            return
        for column in self.indexed_columns(table):
            value = record.get(column)
            if value is not None:
                self.indexes[table][column].get(index_key(value), set()).discard(record_id)
        for name, columns in self.alternate_keys[table].items():
            values = tuple(index_key(record.get(c)) for c in columns)
            if self.key_index[table][name].get(values) == record_id:
                del self.key_index[table][name][values]
