"""The audit's reason codes: the planner's reasons, made codes the audit record accepts."""

from __future__ import annotations

import pytest

from shared.store.records import check_reason_code
from shared.sync.applier import reason_code


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("new in the CRM", "new-in-the-crm"),
        (
            "changed in Outlook, CRM unchanged since last sync -> update CRM",
            "changed-in-outlook-crm-unchanged-since-last-sync-update-crm",
        ),
        (
            "written by crmsync after the last link -> update CRM",
            "written-by-crmsync-after-the-last-link-update-crm",
        ),
        (
            "one appointment per occurrence, from before series: replaced by its series instance",
            "one-appointment-per-occurrence-from-before-series-replaced-by-it",
        ),
        ("->", None),
    ],
)
def test_a_reason_becomes_a_code_the_audit_accepts(reason: str, code: str | None) -> None:
    assert reason_code(reason) == code
    if code is not None:
        assert check_reason_code(code) == code
