"""The adapter's in-code table metadata agrees with the Dataverse column contract (a transcription of
powerapps-docs entity reference pages, vendored with the simulator under simulators/dataverse/tables)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared.crm.tables import bind_annotation, bind_path, known_tables, table_info

CONTRACT_DIR = Path(__file__).resolve().parents[2] / "simulators" / "dataverse" / "tables"
# Documented email columns (account.md, lead.md) the simulator's extra-tables.json does not carry yet.
CONTRACT_GAPS = {("account", "emailaddress3"), ("lead", "emailaddress2"), ("lead", "emailaddress3")}
ID = uuid.UUID("a59c24a0-b45b-e711-8130-e0071b6ac121")


def _contract() -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for name in ("dataverse-tables.json", "extra-tables.json"):
        tables |= json.loads((CONTRACT_DIR / name).read_text(encoding="utf-8"))["tables"]
    return {raw["logicalName"]: raw for raw in tables.values()}


@pytest.mark.parametrize(
    "table", ["contact", "email", "appointment", "task", "activityparty", "account", "lead", "systemuser"]
)
def test_names_and_bindings_match_contract(table: str) -> None:
    raw = _contract()[table]
    info = table_info(table)
    assert (info.entity_set, info.primary_id) == (raw["entitySetName"], raw["primaryId"])
    contract_bindings = raw.get("bindings") or raw.get("navigation", {}).get("bindings") or {}
    for column, per_target in info.bindings.items():
        for target, navigation in per_target.items():
            documented = contract_bindings.get(column, {})
            if target in documented:
                assert documented[target] == navigation
    assert info.party_collection == contract_bindings.get("activityPartiesCollection")
    for column in info.email_columns:
        assert column in raw["columns"] or (table, column) in CONTRACT_GAPS


def test_bind_annotations() -> None:
    assert bind_annotation("email", "regardingobjectid", "contact", ID) == (
        "regardingobjectid_contact_email@odata.bind",
        f"/contacts({ID})",
    )
    assert bind_annotation("contact", "parentcustomerid", "account", ID) == (
        "parentcustomerid_account@odata.bind",
        f"/accounts({ID})",
    )
    assert bind_annotation("activityparty", "partyid", "systemuser", ID)[0] == "partyid_systemuser@odata.bind"
    # a single-target lookup binds by its column name
    assert bind_annotation("account", "primarycontactid", "contact", ID)[0] == "primarycontactid@odata.bind"
    assert bind_path("lead", ID) == f"/leads({ID})"


def test_unknown_tables_and_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="no Dataverse metadata"):
        table_info("opportunity")
    with pytest.raises(ValueError, match="cannot refer to a systemuser"):
        bind_annotation("email", "regardingobjectid", "systemuser", ID)
    assert {"contact", "email", "appointment", "task", "account", "lead", "systemuser"} <= known_tables()
