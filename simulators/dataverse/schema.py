"""Table definitions: columns, types, maximum lengths, choices and navigation properties.

tables/dataverse-tables.json transcribes Microsoft's table reference pages (contact, email,
appointment, task, activityparty; see tables/CONTRACT.md); tables/extra-tables.json adds the
commonly used documented columns of account, lead, systemuser and activitymimeattachment
(powerapps-docs reference/entities/<table>.md, cited per table under ``doc``); tables/platform-tables.json
the platform tables (roles, user settings, time zones, webhook registration, field sync mappings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

TABLES_DIR = Path(__file__).resolve().parent / "tables"
LOOKUP_TYPES = frozenset({"Lookup", "Customer", "Owner"})
ACTIVITY_TABLES = frozenset({"email", "appointment", "task", "recurringappointmentmaster"})
# Web API: party lists are written through <activity>_activity_parties, never as columns.
NOT_A_PROPERTY_TYPES = frozenset({"PartyList"}) | LOOKUP_TYPES


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    max_length: int | None
    writable: bool
    options: frozenset[int]
    option_state: dict[int, int]
    default_status: dict[int, int]
    targets: tuple[str, ...]
    min_value: float | None
    max_value: float | None
    labels: dict[int, str] = field(default_factory=dict)
    schema_name: str = ""


@dataclass(frozen=True)
class Table:
    logical_name: str
    entity_set: str
    primary_id: str
    primary_name: str | None
    ownership: str
    columns: dict[str, Column]
    # navigation property -> (lookup column, allowed target tables)
    navigation: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    parties_collection: str | None = None
    privilege_name: str | None = None
    schema_name: str = ""

    @property
    def privilege_suffix(self) -> str:
        """Privilege name part: activities share the "Activity" privileges (Security roles and privileges)."""
        if self.privilege_name:
            return self.privilege_name
        if self.logical_name in ACTIVITY_TABLES or self.logical_name in {
            "activityparty",
            "activitymimeattachment",
        }:
            return "Activity"
        return {"systemuser": "User"}.get(self.logical_name, self.logical_name.capitalize())


def _column(name: str, raw: dict[str, Any]) -> Column:
    options = raw.get("options") or []
    return Column(
        name=name,
        type=raw["type"],
        max_length=raw.get("maxLength"),
        writable=bool(raw.get("writable", True)),
        options=frozenset(int(o["value"]) for o in options),
        option_state={int(o["value"]): int(o["state"]) for o in options if "state" in o},
        default_status={int(o["value"]): int(o["defaultStatus"]) for o in options if "defaultStatus" in o},
        targets=tuple(raw.get("targets") or ()),
        min_value=raw.get("minValue"),
        max_value=raw.get("maxValue"),
        labels={int(o["value"]): str(o["label"]) for o in options if "label" in o},
        schema_name=str(raw.get("schemaName") or name),
    )


def _navigation(
    raw: dict[str, Any], columns: dict[str, Column]
) -> tuple[dict[str, tuple[str, tuple[str, ...]]], str | None]:
    """Single-target lookups bind by column name; multi-target ones by <column>_<target>[_<table>]."""
    nav: dict[str, tuple[str, tuple[str, ...]]] = {}
    for column in columns.values():
        if column.type in LOOKUP_TYPES and column.writable:
            nav[column.name] = (column.name, column.targets)
    bindings = raw.get("bindings") or (raw.get("navigation") or {}).get("bindings") or {}
    for column_name, per_target in bindings.items():
        if column_name in columns and isinstance(per_target, dict):
            for target, nav_name in per_target.items():
                nav[nav_name] = (column_name, (target,))
            if len(columns[column_name].targets) > 1:
                nav.pop(column_name, None)
    return nav, bindings.get("activityPartiesCollection")


def _table(raw: dict[str, Any]) -> Table:
    columns = {name: _column(name, col) for name, col in raw["columns"].items()}
    nav, parties = _navigation(raw, columns)
    if raw["logicalName"] in ACTIVITY_TABLES:
        # Dynamics 365 Sales adds lead to every activity's regarding targets (lead.md, "One-to-Many
        # relationships": Lead_Emails, Lead_Appointments, Lead_Tasks); the base-platform pages omit it.
        nav[f"regardingobjectid_lead_{raw['logicalName']}"] = ("regardingobjectid", ("lead",))
    if raw["logicalName"] == "activityparty":
        # Likewise a lead can be an email sender/recipient or attendee (lead.md, "One-to-Many
        # relationships": lead_activity_parties, navigation partyid_lead).
        nav["partyid_lead"] = ("partyid", ("lead",))
    return Table(
        logical_name=raw["logicalName"],
        entity_set=raw["entitySetName"],
        primary_id=raw["primaryId"],
        primary_name=raw.get("primaryName"),
        ownership=raw.get("ownershipType") or "None",
        columns=columns,
        navigation=nav,
        parties_collection=parties if raw["logicalName"] in ACTIVITY_TABLES else None,
        privilege_name=raw.get("privilegeSuffix"),
        schema_name=str(raw.get("schemaName") or raw["logicalName"]),
    )


@cache
def load_tables() -> dict[str, Table]:
    """All simulated tables by logical name."""
    tables: dict[str, Table] = {}
    for file_name in ("dataverse-tables.json", "extra-tables.json", "platform-tables.json"):
        data = json.loads((TABLES_DIR / file_name).read_text(encoding="utf-8"))
        for raw in data["tables"].values():
            table = _table(raw)
            tables[table.logical_name] = table
    return tables


@cache
def tables_by_entity_set() -> dict[str, Table]:
    return {table.entity_set: table for table in load_tables().values()}


# activityparty.md, ParticipationTypeMask: which roles each activity's party list takes.
# 8 Regarding and 9 Owner are system-maintained on every activity.
PARTICIPATION_MASKS: dict[str, frozenset[int]] = {
    "email": frozenset({1, 2, 3, 4, 8, 9, 13}),
    "appointment": frozenset({5, 6, 7, 8, 9, 10}),
    "recurringappointmentmaster": frozenset({5, 6, 7, 8, 9, 10}),
    "task": frozenset({8, 9}),
}
