"""Three-way merge per unit of columns: base fingerprints per side, directions, tie-break."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.bases import FieldBase
from shared.domain.model import FieldDirection
from shared.sync.fieldmaps import CrmValue
from shared.sync.merge import (
    MergeResult,
    ResolvedConflict,
    Side,
    decode_field_bases,
    encode_field_bases,
    merge_fields,
    unit_fingerprints,
)

UNITS = {"subject": ("subject",), "statuscode": ("statuscode", "statecode")}
TWO_WAY = {"subject": FieldDirection.TWO_WAY, "statuscode": FieldDirection.TWO_WAY}
SYNCED: dict[str, CrmValue] = {"subject": "Call", "statuscode": 2, "statecode": 0}


def _merge(
    outlook: dict[str, CrmValue],
    crm: dict[str, CrmValue],
    *,
    base: dict[str, FieldBase] | None = None,
    directions: dict[str, FieldDirection] | None = None,
    tie_break: Side = Side.CRM,
) -> MergeResult:
    return merge_fields(
        outlook=outlook,
        crm=crm,
        base=unit_fingerprints(SYNCED, SYNCED, UNITS) if base is None else base,
        units=UNITS,
        directions=TWO_WAY if directions is None else directions,
        tie_break=tie_break,
    )


def test_unchanged_on_both_sides_writes_nothing() -> None:
    assert _merge(SYNCED, SYNCED) == MergeResult()


def test_changed_in_outlook_flows_to_crm() -> None:
    assert _merge(SYNCED | {"subject": "Call Ann"}, SYNCED).to_crm == {"subject": "Call Ann"}


def test_changed_in_crm_flows_to_outlook() -> None:
    result = _merge(SYNCED, SYNCED | {"statuscode": 5, "statecode": 1})
    assert result.to_outlook == {"statuscode": 5, "statecode": 1}
    assert result.to_crm == {}


def test_same_change_on_both_sides_is_no_conflict() -> None:
    assert _merge(SYNCED | {"subject": "X"}, SYNCED | {"subject": "X"}) == MergeResult()


@pytest.mark.parametrize("tie_break", list(Side))
def test_different_changes_on_both_sides_go_to_the_tie_break(tie_break: Side) -> None:
    result = _merge(SYNCED | {"subject": "Outlook"}, SYNCED | {"subject": "CRM"}, tie_break=tie_break)
    assert result.conflicts == (ResolvedConflict("subject", tie_break, "tie_break"),)
    if tie_break is Side.CRM:
        assert (result.to_crm, result.to_outlook) == ({}, {"subject": "CRM"})
    else:
        assert (result.to_crm, result.to_outlook) == ({"subject": "Outlook"}, {})


@pytest.mark.parametrize(
    ("direction", "to_crm", "to_outlook", "winner"),
    [
        (FieldDirection.TO_CRM, {"subject": "Outlook"}, {}, Side.OUTLOOK),
        (FieldDirection.TO_OUTLOOK, {}, {"subject": "CRM"}, Side.CRM),
        (FieldDirection.NONE, {}, {}, None),
    ],
)
def test_a_one_way_field_is_settled_by_its_direction(
    direction: FieldDirection,
    to_crm: dict[str, CrmValue],
    to_outlook: dict[str, CrmValue],
    winner: Side | None,
) -> None:
    result = _merge(
        SYNCED | {"subject": "Outlook"},
        SYNCED | {"subject": "CRM"},
        directions=TWO_WAY | {"subject": direction},
        tie_break=Side.CRM if winner is Side.OUTLOOK else Side.OUTLOOK,  # the tie-break must not matter
    )
    assert (result.to_crm, result.to_outlook) == (to_crm, to_outlook)
    expected = () if winner is None else (ResolvedConflict("subject", winner, "direction"),)
    assert result.conflicts == expected


def test_a_change_against_the_direction_does_not_flow() -> None:
    result = _merge(
        SYNCED, SYNCED | {"subject": "CRM"}, directions=TWO_WAY | {"subject": FieldDirection.TO_CRM}
    )
    assert result == MergeResult()


def test_columns_of_a_unit_move_together() -> None:
    # Outlook completed the task (status 5, state 1); the CRM changed only the reason to 3 (state 0).
    result = _merge(
        SYNCED | {"statuscode": 5, "statecode": 1}, SYNCED | {"statuscode": 3}, tie_break=Side.OUTLOOK
    )
    assert result.to_crm == {"statuscode": 5, "statecode": 1}  # never 5 with state 0, or 3 with 1


def test_first_sync_takes_a_value_over_no_value_without_conflict() -> None:
    outlook: dict[str, CrmValue] = {"subject": "Call", "statuscode": None, "statecode": None}
    crm: dict[str, CrmValue] = {"subject": None, "statuscode": 3, "statecode": 0}
    result = _merge(outlook, crm, base={}, tie_break=Side.CRM)
    assert result.to_crm == {"subject": "Call"}
    assert result.to_outlook == {"statuscode": 3, "statecode": 0}
    assert result.conflicts == ()


def test_first_sync_with_two_different_values_is_a_conflict() -> None:
    result = _merge(SYNCED | {"subject": "A"}, SYNCED | {"subject": "B"}, base={}, tie_break=Side.OUTLOOK)
    assert result.to_crm == {"subject": "A"}
    assert result.conflicts == (ResolvedConflict("subject", Side.OUTLOOK, "tie_break"),)


def test_a_column_outlook_has_no_opinion_on_is_neither_written_nor_cleared() -> None:
    outlook: dict[str, CrmValue] = {
        "statuscode": 2,
        "statecode": 0,
    }  # no "subject": e.g. an email body not read yet
    assert _merge(outlook, SYNCED | {"subject": "CRM text"}, base={}).to_crm == {}


def test_lossy_mapping_is_not_mistaken_for_a_change() -> None:
    # The CRM stores a fitted subject; Outlook keeps the long one. Both are the synced state.
    outlook: dict[str, CrmValue] = SYNCED | {"subject": "S" * 250}
    crm: dict[str, CrmValue] = SYNCED | {"subject": "S" * 199 + "…"}
    base = unit_fingerprints(outlook, crm, UNITS)
    assert _merge(outlook, crm, base=base) == MergeResult()


def test_field_bases_round_trip_through_json() -> None:
    fields = unit_fingerprints(SYNCED, SYNCED | {"subject": "other"}, UNITS)
    assert decode_field_bases(encode_field_bases(fields)) == fields
    assert decode_field_bases(None) == {}
    assert decode_field_bases("") == {}
    with pytest.raises(ValueError, match="JSON object"):
        decode_field_bases("[1, 2]")


def test_link_rows_hold_digests_not_values() -> None:
    encoded = encode_field_bases(
        unit_fingerprints({"subject": "secret@example.com"}, {}, {"subject": ("subject",)})
    )
    assert "secret" not in encoded


_values = st.one_of(st.none(), st.sampled_from(["a", "b", "c"]))


@given(base_o=_values, base_c=_values, outlook=_values, crm=_values, tie_break=st.sampled_from(Side))
def test_after_a_two_way_merge_both_sides_agree(
    base_o: str | None, base_c: str | None, outlook: str | None, crm: str | None, tie_break: Side
) -> None:
    units = {"subject": ("subject",)}
    base = unit_fingerprints({"subject": base_o}, {"subject": base_c}, units)
    result = merge_fields(
        outlook={"subject": outlook},
        crm={"subject": crm},
        base=base,
        units=units,
        directions={"subject": FieldDirection.TWO_WAY},
        tie_break=tie_break,
    )
    outlook_after = result.to_outlook.get("subject", outlook)
    crm_after = result.to_crm.get("subject", crm)
    changed = outlook != base_o or crm != base_c
    if changed or outlook == crm:
        assert outlook_after == crm_after
    assert not (result.to_crm and result.to_outlook)


def test_equal_values_of_different_types_keep_different_fingerprints() -> None:
    """A side's fingerprint is reused for the other only when the values are the same, type and all:
    ``True == 1`` in Python, not in a record."""
    units = {"flag": ("flag",)}
    [base] = unit_fingerprints({"flag": True}, {"flag": 1}, units).values()
    [same] = unit_fingerprints({"flag": True}, {"flag": True}, units).values()
    assert base.outlook != base.crm
    assert same.outlook == same.crm == base.outlook
