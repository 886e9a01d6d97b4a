"""The field maps against the Dataverse column contract (dataverse-tables.json).

Fails if a map writes a column that does not exist or cannot be written (on create, on update),
if a value has the wrong type, a choice value the column does not define, a status reason that
does not belong to the state written with it, or if the limits table drifts from the contract.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from shared.crm.limits import MAX_LENGTHS
from shared.domain.model import Appointment, Contact, Email, ItemKind, Task
from shared.sync.fieldmaps import FIELD_MAPS, PartySpec
from tests.sync import samples

_REPO = Path(__file__).resolve().parents[2]
_CONTRACT_CANDIDATES = (
    _REPO / "simulators" / "dataverse" / "tables" / "dataverse-tables.json",
    Path("/work/shared/contracts/dataverse/dataverse-tables.json"),
)
_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SAMPLES: dict[ItemKind, Callable[[], Sequence[Contact | Appointment | Task | Email]]] = {
    ItemKind.CONTACT: samples.contacts,
    ItemKind.APPOINTMENT: samples.appointments,
    ItemKind.TASK: samples.tasks,
    ItemKind.EMAIL: samples.emails,
}


@cache
def _contract() -> dict[str, Any]:
    for candidate in _CONTRACT_CANDIDATES:
        if candidate.is_file():
            tables: dict[str, Any] = json.loads(candidate.read_text(encoding="utf-8"))["tables"]
            return tables
    raise AssertionError(f"dataverse-tables.json not found in {[str(c) for c in _CONTRACT_CANDIDATES]}")


def _column(table: str, column: str) -> dict[str, Any]:
    columns: dict[str, Any] = _contract()[table]["columns"]
    assert column in columns, f"{table}.{column} is not a column of the contract"
    found: dict[str, Any] = columns[column]
    return found


def _mapped() -> Iterator[tuple[str, str, bool]]:
    for field_map in FIELD_MAPS.values():
        for mapping in field_map.mappings:
            yield field_map.table, mapping.column, mapping.on_create


@pytest.mark.parametrize(("table", "column", "on_create"), list(_mapped()))
def test_mapped_column_exists_and_is_writable(table: str, column: str, on_create: bool) -> None:
    spec = _column(table, column)
    assert spec["writable"] is True, f"{table}.{column} is read-only"
    assert spec.get("isValidForUpdate") is not False, f"{table}.{column} cannot be updated"
    if on_create:
        assert spec.get("isValidForCreate") is not False, f"{table}.{column} is not valid for create"


@pytest.mark.parametrize(("table", "column", "on_create"), list(_mapped()))
def test_every_string_column_has_its_contract_limit(table: str, column: str, on_create: bool) -> None:
    spec = _column(table, column)
    if spec["type"] in ("String", "Memo"):
        assert MAX_LENGTHS[table][column] == spec["maxLength"]


def test_limits_table_has_no_stale_entries() -> None:
    for table, limits in MAX_LENGTHS.items():
        for column, limit in limits.items():
            assert _column(table, column)["maxLength"] == limit, f"{table}.{column}"


def _option_values(spec: dict[str, Any]) -> set[int]:
    return {option["value"] for option in spec["options"]}


def _check_value(table: str, column: str, value: object) -> None:
    spec = _column(table, column)
    kind = spec["type"]
    if value is None:
        return
    if kind in ("String", "Memo"):
        assert isinstance(value, str)
        assert len(value.encode("utf-16-le")) // 2 <= spec["maxLength"], f"{table}.{column} too long"
    elif kind == "Boolean":
        assert isinstance(value, bool), f"{table}.{column} must be a boolean"
    elif kind in ("Picklist", "State", "Status"):
        assert isinstance(value, int), f"{table}.{column} must be a choice value"
        assert value in _option_values(spec), f"{table}.{column}={value} is not one of its options"
    elif kind == "Integer":
        assert isinstance(value, int)
        assert spec.get("minValue", value) <= value <= spec.get("maxValue", value)
    elif kind == "DateTime":
        assert isinstance(value, str)
        pattern = _DATE if spec.get("dateTimeBehavior") == "DateOnly" else _UTC
        assert pattern.match(value), f"{table}.{column}={value!r}"
    elif kind == "PartyList":
        assert isinstance(value, tuple)
        masks = _option_values(_column("activityparty", "participationtypemask"))
        address_limit = _column("activityparty", "addressused")["maxLength"]
        for party in value:
            assert isinstance(party, PartySpec)
            assert party.participation in masks
            assert len(party.address) <= address_limit
    else:
        raise AssertionError(f"{table}.{column}: the maps do not write {kind} columns")


@pytest.mark.parametrize("kind", list(ItemKind))
def test_projected_values_fit_their_columns(kind: ItemKind) -> None:
    field_map = FIELD_MAPS[kind]
    for item in _SAMPLES[kind]():
        for column, value in field_map.project(item).values.items():
            _check_value(field_map.table, column, value)


@pytest.mark.parametrize("kind", list(ItemKind))
def test_status_reason_belongs_to_the_state_written_with_it(kind: ItemKind) -> None:
    field_map = FIELD_MAPS[kind]
    if "statuscode" not in field_map.columns:
        return
    status_spec = _column(field_map.table, "statuscode")
    state_of_status = {option["value"]: option["state"] for option in status_spec["options"]}
    seen = set()
    for item in _SAMPLES[kind]():
        values = field_map.project(item).values
        assert values["statecode"] == state_of_status[values["statuscode"]]
        seen.add(values["statuscode"])
    assert seen, "no sample produced a status"


def test_party_columns_use_their_documented_participation() -> None:
    expected = {
        ("appointment", "organizer"): 7,
        ("appointment", "requiredattendees"): 5,
        ("appointment", "optionalattendees"): 6,
        ("email", "from"): 1,
        ("email", "to"): 2,
        ("email", "cc"): 3,
        ("email", "bcc"): 4,
    }
    found: dict[tuple[str, str], set[int]] = {}
    for kind in (ItemKind.APPOINTMENT, ItemKind.EMAIL):
        field_map = FIELD_MAPS[kind]
        for item in _SAMPLES[kind]():
            for column, value in field_map.project(item).values.items():
                if isinstance(value, tuple):
                    found.setdefault((field_map.table, column), set()).update(p.participation for p in value)
    assert found == {key: {mask} for key, mask in expected.items()}
