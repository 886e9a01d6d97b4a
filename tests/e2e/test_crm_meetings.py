"""Meetings made in Dynamics, end to end: created in the organizer's calendar with their attendees
(Graph then delivers the invitations to the attendees' mailboxes in the tenant), an invited synced
user's copy linked to the same CRM appointment (never a second one, never written over the
organizer's record), and attendees changed in Dynamics reaching the organizer's event."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from shared.config import Settings
from shared.runtime import Runtime
from tests.e2e.conftest import E2E, CrmUser, Mailbox, wait_for
from tests.e2e.test_crm_to_outlook import _future_slot, as_user, connected, find, onboarded

__all__ = ["connected"]  # the module fixture: the webhook registered and the baseline taken
GUEST = "guest@fabrikam.example"  # outside the tenant: Exchange would email it, the simulator does not


def address(mailbox: Mailbox) -> str:
    """The mailbox's address, which is also its CRM user's primary email (test_crm_to_outlook)."""
    return f"e2e-{mailbox.id[:8]}@contoso.example"


def party(mask: int, where: str, user: CrmUser | None = None) -> dict[str, Any]:
    """An activity party: a synced user (resolved, with the address used) or an outside address."""
    row: dict[str, Any] = {"participationtypemask": mask, "addressused": where}
    if user is not None:
        row["partyid_systemuser@odata.bind"] = f"/systemusers({user.systemuserid})"
    return row


def attendees(event: dict[str, Any]) -> set[tuple[str, str]]:
    return {(a["emailAddress"]["address"].lower(), a["type"]) for a in event.get("attendees") or []}


def linked_subject(e2e: E2E, mailbox: Mailbox, record_id: str) -> str | None:
    """The subject of the mailbox's event its link map pairs with the CRM record (None: none)."""

    async def read() -> str | None:
        runtime = Runtime(Settings.model_validate(e2e.sandbox.app_settings()))
        try:
            store = await runtime.store()
            link = await store.links.get_by_crm(mailbox.id, "appointment", record_id)
            if link is None:
                return None
            event = (
                await (await runtime.graph())
                .users.by_user_id(mailbox.id)
                .events.by_event_id(link.outlook_id)
                .get()
            )
            return event.subject if event is not None else None
        finally:
            await runtime.close()

    return asyncio.run(read())


def test_a_meeting_made_in_dynamics_invites_its_attendees_and_stays_one_appointment(connected: E2E) -> None:
    e2e = connected
    organizer, organizer_user = onboarded(e2e)
    attendee, attendee_user = onboarded(e2e)
    subject = f"dyn-meeting-{uuid.uuid4().hex[:8]}"
    start, end = _future_slot()
    appointment = as_user(
        e2e,
        organizer_user,
        "POST",
        "appointments",
        {
            "subject": subject,
            "scheduledstart": start,
            "scheduledend": end,
            "appointment_activity_parties": [
                party(7, address(organizer), organizer_user),
                party(5, address(attendee), attendee_user),
                party(6, GUEST),
            ],
        },
    )
    record_id = appointment["activityid"]
    # The organizer's event carries the attendees, so Exchange sends the invitations.
    (event,) = wait_for(
        lambda: [e for e in find(e2e, organizer, "events", "subject", subject) if e.get("attendees")] or None,
        "the meeting with its attendees in the organizer's calendar",
    )
    assert attendees(event) == {(address(attendee), "required"), (GUEST, "optional")}
    assert event["isOrganizer"] is True
    # The invitation is in the attendee's calendar (same iCalUId), and their mailbox links it to the
    # same CRM appointment.
    (invited,) = wait_for(lambda: find(e2e, attendee, "events", "subject", subject), "the invitation")
    assert invited["iCalUId"] == event["iCalUId"]
    assert invited["isOrganizer"] is False
    wait_for(lambda: linked_subject(e2e, attendee, record_id) == subject or None, "the copy linked")
    (row,) = e2e.crm("appointments", f"subject eq '{subject}'", "activityid,globalobjectid,statuscode")
    assert row["activityid"] == record_id  # one appointment, the organizer's
    assert row["globalobjectid"] == event["iCalUId"]
    assert row["statuscode"] == appointment["statuscode"]  # the copy's "tentative" was not written over it
    code, out = e2e.cli("audit", attendee.id, "--item", record_id, "--json")
    assert code == 0, out
    written = {"created_in_crm", "updated_in_crm", "updated_in_outlook"}
    assert not {r["action"] for r in json.loads(out)} & written  # the attendee's mailbox wrote nothing

    # Attendees changed in Dynamics: the organizer's event follows (Exchange sends the updates).
    other = "colleague@fabrikam.example"
    as_user(
        e2e,
        organizer_user,
        "PATCH",
        f"appointments({record_id})",
        {
            "appointment_activity_parties": [
                party(7, address(organizer), organizer_user),
                party(5, address(attendee), attendee_user),
                party(5, other),
            ]
        },
    )
    wait_for(
        lambda: (
            [
                e
                for e in find(e2e, organizer, "events", "subject", subject)
                if attendees(e) == {(address(attendee), "required"), (other, "required")}
            ]
            or None
        ),
        "the new attendee list on the organizer's event",
    )
    assert len(e2e.crm("appointments", f"subject eq '{subject}'", "activityid")) == 1
    assert len(find(e2e, attendee, "events", "subject", subject)) == 1
