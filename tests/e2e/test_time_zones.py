"""All-day events through the sandbox, for a CRM user in "W. Europe Standard Time" (timezonecode 110).

appointment.scheduledstart / scheduledend are UserLocal columns, so an all-day event is the CRM
user's local midnights; Graph returns all-day events floating (midnight to midnight, whatever zone
labels them). The weekend is the one of Europe's next change to summer time, so the two midnights
have different offsets (+01:00, then +02:00).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import E2E, CrmUser, Mailbox, wait_for
from tests.e2e.test_crm_to_outlook import no_echo

BERLIN = "W. Europe Standard Time"
W_EUROPE_CODE = 110  # timezonedefinition: "(GMT+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"
ROLE = f"e2e-tz-{uuid.uuid4().hex[:6]}"


def _dst_saturday() -> dt.date:
    """The Saturday before the next last Sunday of March (the EU's change to summer time)."""
    today = dt.datetime.now(dt.UTC).date()
    for year in (today.year, today.year + 1):
        last = dt.date(year, 3, 31)
        saturday = last - dt.timedelta(days=(last.weekday() - 6) % 7) - dt.timedelta(days=1)
        if saturday > today + dt.timedelta(days=1):
            return saturday
    raise AssertionError("unreachable")


def _utc(day: dt.date, offset_hours: int) -> str:
    return (dt.datetime.combine(day, dt.time()) - dt.timedelta(hours=offset_hours)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


@pytest.fixture(scope="module")
def connected(e2e: E2E) -> E2E:
    code, out = e2e.cli("crm", "connect", "--json")
    assert code == 0, out
    e2e.run_timer("crm_changes")
    e2e.dataverse_control(
        "POST",
        "roles",
        {"name": ROLE, "tables": {"systemuser": {"read": "organization", "appendto": "organization"}}},
    )
    return e2e


def _berlin_user(e2e: E2E, mailbox: Mailbox) -> CrmUser:
    row = e2e.dataverse_control(
        "POST",
        "users",
        {
            "systemuserid": str(uuid.uuid4()),
            "azureactivedirectoryobjectid": mailbox.id,
            "internalemailaddress": f"e2e-{mailbox.id[:8]}@contoso.example",
            "fullname": "E2E Berlin user",
            "roles": [e2e.role, ROLE, "Salesperson"],
        },
    )
    user = CrmUser(row["systemuserid"], row["azureactivedirectoryobjectid"])
    # The user's personal options (Dynamics: Set Personal Options > Time Zone).
    response = e2e.http.patch(
        f"{e2e.sandbox.dataverse_api_url}/usersettingscollection({user.systemuserid})",
        json={"timezonecode": W_EUROPE_CODE},
        headers={"Authorization": f"Bearer {e2e.crm_token}"},
    )
    assert response.status_code == 204, response.text[:300]
    return user


def _rows(e2e: E2E, subject: str) -> list[dict[str, Any]] | None:
    select = "activityid,scheduledstart,scheduledend,isalldayevent"
    return e2e.crm("appointments", f"subject eq '{subject}'", select) or None


def test_outlook_all_day_event_is_the_crm_users_local_midnights(connected: E2E) -> None:
    e2e = connected
    saturday = _dst_saturday()
    monday = saturday + dt.timedelta(days=2)
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox, _berlin_user(e2e, mailbox))
    subject = f"allday-{uuid.uuid4().hex[:8]}"
    e2e.seed(
        mailbox,
        events=[
            {
                "subject": subject,
                "isAllDay": True,
                "start": {"dateTime": f"{saturday.isoformat()}T00:00:00", "timeZone": BERLIN},
                "end": {"dateTime": f"{monday.isoformat()}T00:00:00", "timeZone": BERLIN},
            }
        ],
    )
    (row,) = wait_for(lambda: _rows(e2e, subject), "the all-day appointment in the CRM")
    assert row["isalldayevent"] is True
    # Saturday 00:00 CET (+01:00) to Monday 00:00 CEST (+02:00): 2027-03-26T23:00Z / 2027-03-28T22:00Z.
    assert (row["scheduledstart"], row["scheduledend"]) == (_utc(saturday, 1), _utc(monday, 2))


def test_crm_all_day_appointment_reaches_outlook_on_the_same_dates(connected: E2E) -> None:
    e2e = connected
    saturday = _dst_saturday()
    monday = saturday + dt.timedelta(days=2)
    mailbox = e2e.new_mailbox()
    user = _berlin_user(e2e, mailbox)
    assert e2e.onboard(mailbox, user)["sync_to_outlook"] is True
    subject = f"allday-{uuid.uuid4().hex[:8]}"
    since = dt.datetime.now(dt.UTC).isoformat()
    response = e2e.http.post(
        f"{e2e.sandbox.dataverse_api_url}/appointments",
        json={
            "subject": subject,
            "isalldayevent": True,
            "scheduledstart": _utc(saturday, 1),
            "scheduledend": _utc(monday, 2),
            "appointment_activity_parties": [
                {
                    "partyid_systemuser@odata.bind": f"/systemusers({user.systemuserid})",
                    "participationtypemask": 7,
                }
            ],
        },
        headers={
            "Authorization": f"Bearer {e2e.crm_token}",
            "CallerObjectId": user.object_id,
            "Prefer": "return=representation",
        },
    )
    assert response.status_code < 300, response.text[:300]
    record_id = response.json()["activityid"]

    def events() -> list[dict[str, Any]] | None:
        found = e2e.outlook("GET", mailbox, "events")["value"]
        return [event for event in found if event.get("subject") == subject] or None

    (event,) = wait_for(events, "the all-day event in Outlook")
    assert event["isAllDay"] is True
    assert event["start"]["dateTime"].startswith(f"{saturday.isoformat()}T00:00:00")
    assert event["end"]["dateTime"].startswith(f"{monday.isoformat()}T00:00:00")
    # crmsync's own write, read back by the Outlook -> CRM run, is an echo: nothing goes to the CRM.
    no_echo(e2e, mailbox, record_id, "/events", since)
    (row,) = wait_for(lambda: _rows(e2e, subject), "the appointment")
    assert (row["scheduledstart"], row["scheduledend"]) == (_utc(saturday, 1), _utc(monday, 2))
