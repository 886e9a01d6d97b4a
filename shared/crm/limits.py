"""Fit values to the CRM's column limits instead of failing the item.

Dataverse rejects a string longer than its column's ``MaxLength`` (an appointment subject over
200 characters, a contact first name over 50) and the whole item would be parked for a cosmetic
reason. crmsync truncates instead and reports what it fitted - the column and the original length,
never the value - so the caller can log it.

Dataverse counts a string's length the way .NET does, in UTF-16 code units, so an emoji counts
twice. Truncation here measures in UTF-16 code units too and never cuts between the two halves of
a surrogate pair (it cuts whole code points), then ends the text with an ellipsis.

The maximum lengths are transcribed from the column contract ``dataverse-tables.json``
(powerapps-docs ``developer/data-platform/reference/entities/{contact,appointment,task,email,
activityparty}.md``) for exactly the string and memo columns the field maps write; the contract
test ``tests/sync/test_fieldmap_contract.py`` keeps the two in agreement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

ELLIPSIS = "…"

# table -> column -> MaxLength (UTF-16 code units), for the columns shared.sync.fieldmaps writes.
MAX_LENGTHS: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        "contact": MappingProxyType(
            {
                "firstname": 50,
                "middlename": 50,
                "lastname": 50,
                "nickname": 100,
                "emailaddress1": 100,
                "emailaddress2": 100,
                "emailaddress3": 100,
                "telephone1": 50,
                "telephone2": 50,
                "mobilephone": 50,
                "fax": 50,
                "jobtitle": 100,
                "department": 100,
                "company": 50,
                "address1_line1": 250,
                "address1_city": 80,
                "address1_stateorprovince": 50,
                "address1_postalcode": 20,
                "address1_country": 80,
                "address2_line1": 250,
                "address2_city": 80,
                "address2_stateorprovince": 50,
                "address2_postalcode": 20,
                "address2_country": 80,
                "description": 2000,
            }
        ),
        "appointment": MappingProxyType(
            {"subject": 200, "location": 200, "description": 1048576, "globalobjectid": 300}
        ),
        "task": MappingProxyType({"subject": 200, "description": 2000}),
        "email": MappingProxyType({"subject": 800, "description": 1073741823, "messageid": 320}),
        "activityparty": MappingProxyType({"addressused": 320}),
    }
)


@dataclass(frozen=True, slots=True)
class Fitted:
    """One value that was shortened: safe to log (no content, only sizes)."""

    table: str
    column: str
    original_length: int
    max_length: int


def utf16_length(text: str) -> int:
    """Length as Dataverse counts it: UTF-16 code units (a code point above U+FFFF counts 2)."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def fit_text(text: str, max_length: int) -> str:
    """Return ``text`` unchanged if it fits, else its longest prefix that fits with an ellipsis.

    Cuts only between code points, so a surrogate pair (an emoji) is never split in half.
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    if utf16_length(text) <= max_length:
        return text
    budget = max_length - utf16_length(ELLIPSIS)
    kept: list[str] = []
    for char in text:
        width = 2 if ord(char) > 0xFFFF else 1
        if width > budget:
            break
        kept.append(char)
        budget -= width
    return "".join(kept) + ELLIPSIS


def fit_value(table: str, column: str, value: str) -> tuple[str, Fitted | None]:
    """Fit one string column value; columns without a known limit pass unchanged."""
    limit = MAX_LENGTHS.get(table, {}).get(column)
    if limit is None:
        return value, None
    fitted = fit_text(value, limit)
    if fitted == value:
        return value, None
    return fitted, Fitted(table, column, utf16_length(value), limit)
