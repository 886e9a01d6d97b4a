"""MailboxSettings: Dynamics' defaults, strict validation with clear errors, JSON round trip."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from shared.domain.mailbox_settings import (
    CrmRecordRef,
    MailboxSettings,
    OutlookDeletePolicy,
    TieBreak,
)
from shared.domain.model import FieldDirection, ItemKind, TrackingRule

_OSLO = (
    "<fetch><entity name='contact'><filter><condition attribute='address1_city' operator='eq' value='Oslo'/>"
    "</filter></entity></fetch>"
)
_ACCOUNT = {"table": "account", "id": "0b7e5a8e-0000-4000-8000-000000000001"}


def test_defaults_are_dynamics_defaults() -> None:
    settings = MailboxSettings()
    assert settings.item_kinds == frozenset(ItemKind)
    assert (settings.tracking, settings.track_sent_items) == (TrackingRule.NONE, False)
    assert settings.tracked_category == "Tracked to Dynamics 365"
    assert settings.filter_for(ItemKind.CONTACT) is None  # the user's Outlook filters decide
    assert settings.direction_override(ItemKind.CONTACT, "firstname") is None
    assert (settings.conflict_tie_break, settings.outlook_delete_policy) == (
        TieBreak.CRM,
        OutlookDeletePolicy.DELETE_IF_OWNER,
    )


def test_a_full_configuration_round_trips_through_json() -> None:
    settings = MailboxSettings(
        tracking=TrackingRule.FROM_CRM_RECORDS,
        track_sent_items=True,
        tracked_folders={"AAMkAGI2=/+folder": CrmRecordRef(table="account", id=uuid.uuid4())},
        sync_filters={ItemKind.CONTACT: _OSLO},
        field_directions={ItemKind.CONTACT: {"telephone1": FieldDirection.TO_OUTLOOK}},
        conflict_tie_break=TieBreak.OUTLOOK,
        outlook_delete_policy=OutlookDeletePolicy.UNLINK,
    )
    assert MailboxSettings.model_validate_json(settings.model_dump_json()) == settings
    assert settings.direction_override(ItemKind.CONTACT, "telephone1") is FieldDirection.TO_OUTLOOK
    assert settings.filter_for(ItemKind.CONTACT) == _OSLO


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"item_kinds": []}, "item_kinds"),
        ({"item_kinds": ["contact"], "tracking": "all"}, "'email' item kind"),
        ({"tracking": "everything"}, "tracking"),
        (
            {"sync_filters": {"email": "<fetch><entity name='email'/></fetch>"}},
            "only contact, appointment and task",
        ),
        ({"sync_filters": {"contact": "<fetch><entity name='task'/></fetch>"}}, "not 'contact'"),
        ({"sync_filters": {"contact": "<fetch><entity name='contact'>"}}, "not well-formed"),
        ({"field_directions": {"contact": {"First Name": "two_way"}}}, "field_directions"),
        ({"field_directions": {"contact": {"firstname": "sideways"}}}, "field_directions"),
        ({"tracked_category": "bad\nname"}, "control characters"),
        ({"conflict_tie_break": "newest"}, "conflict_tie_break"),
        ({"unknown_option": True}, "unknown_option"),
        ({"tracked_folders": {"f": {"table": "account", "id": "not-a-guid"}}}, "tracked_folders"),
        (
            {"tracked_folders": {f"{index:03d}" + "x" * 400: _ACCOUNT for index in range(100)}},
            "larger than 30000 characters",
        ),
    ],
)
def test_bad_settings_are_refused_with_a_clear_error(fields: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        MailboxSettings.model_validate(fields)


def test_settings_are_frozen() -> None:
    settings = MailboxSettings()
    with pytest.raises(ValidationError):
        settings.tracking = TrackingRule.ALL  # type: ignore[misc]
