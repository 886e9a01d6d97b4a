"""Request bodies: powerapps-docs "Create a table row using the Web API" (@odata.bind, deep insert of
activity parties) and "Date and time columns" (UTC values with a Z suffix)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from shared.crm.dataverse.wire import record_payload
from shared.crm.port import Party, RecordRef
from shared.domain.model import Participation

ID = uuid.UUID("a59c24a0-b45b-e711-8130-e0071b6ac121")


def test_columns_lookups_and_typed_values() -> None:
    body = record_payload(
        "contact",
        {
            "lastname": "Lovelace",
            "parentcustomerid": RecordRef("account", ID),
            "birthdate": dt.date(1815, 12, 10),
            "lastusedincampaign": dt.datetime(
                2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5))
            ),
            "donotemail": False,
            "numberofchildren": 0,
            "description": None,
        },
    )
    assert body == {
        "lastname": "Lovelace",
        "parentcustomerid_account@odata.bind": f"/accounts({ID})",
        "birthdate": "1815-12-10",
        "lastusedincampaign": "2026-01-02T08:04:05Z",
        "donotemail": False,
        "numberofchildren": 0,
        "description": None,
    }


def test_party_list_is_deep_inserted() -> None:
    body = record_payload(
        "email",
        {"subject": "Hi"},
        [
            Party(Participation.SENDER, RecordRef("systemuser", ID)),
            Party(Participation.TO, RecordRef("lead", ID), "lead@fabrikam.example"),
            Party(Participation.CC, address="cc@fabrikam.example"),
        ],
    )
    assert body["email_activity_parties"] == [
        {"participationtypemask": 1, "partyid_systemuser@odata.bind": f"/systemusers({ID})"},
        {
            "participationtypemask": 2,
            "partyid_lead@odata.bind": f"/leads({ID})",
            "addressused": "lead@fabrikam.example",
        },
        {"participationtypemask": 3, "addressused": "cc@fabrikam.example"},
    ]


def test_bad_values_are_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        record_payload("task", {"scheduledend": dt.datetime(2026, 1, 1, 9)})
    with pytest.raises(ValueError, match="no activity parties"):
        record_payload("contact", {}, [Party(Participation.TO, address="a@b.example")])
    with pytest.raises(ValueError, match="cannot refer to a systemuser"):
        record_payload("task", {"regardingobjectid": RecordRef("systemuser", ID)})
