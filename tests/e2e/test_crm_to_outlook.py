"""CRM -> Outlook through the sandbox: records written in Dataverse (over its Web API, as a CRM user,
so Dataverse's webhook steps fire) reach the user's Outlook through the CRM webhook, or through the
change-tracking timer alone when the webhook call never came; the user's Outlook filters (userquery)
or else the default synchronization filters decide membership; prvSyncToOutlook gates the direction."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import E2E, CrmUser, Mailbox, item_path, wait_for

PARTY_ROLE = f"e2e-parties-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def connected(e2e: E2E) -> E2E:
    """The webhook registered (`crmsync crm connect`) and the change-tracking baseline taken."""
    code, out = e2e.cli("crm", "connect", "--json")
    assert code == 0, out
    assert json.loads(out)["steps_created"] + json.loads(out)["steps_kept"] == 15
    e2e.run_timer("crm_changes")
    # Naming users as activity parties needs AppendTo on systemuser; handing a contact over, Assign.
    e2e.dataverse_control(
        "POST",
        "roles",
        {
            "name": PARTY_ROLE,
            "tables": {
                "systemuser": {"read": "organization", "appendto": "organization"},
                "contact": {"assign": "organization"},
            },
        },
    )
    return e2e


def synced_user(e2e: E2E, mailbox: Mailbox, *, sync_to_outlook: bool = True) -> CrmUser:
    """The mailbox owner's CRM user; with "Salesperson" (which holds prvSyncToOutlook) when asked."""
    roles = [e2e.role, PARTY_ROLE, "Salesperson"] if sync_to_outlook else [e2e.role, PARTY_ROLE]
    row = e2e.dataverse_control(
        "POST",
        "users",
        {
            "systemuserid": str(uuid.uuid4()),
            "azureactivedirectoryobjectid": mailbox.id,
            # As in Dynamics, the user's primary email is the mailbox's address (conftest's new_mailbox).
            "internalemailaddress": f"e2e-{mailbox.id[:8]}@contoso.example",
            "fullname": "E2E synced user",
            "roles": roles,
        },
    )
    return CrmUser(row["systemuserid"], row["azureactivedirectoryobjectid"])


def as_user(e2e: E2E, user: CrmUser, method: str, path: str, body: Any = None) -> Any:
    """A change the CRM user makes in Dynamics (Web API with the user's own token: webhook steps
    fire, and no application acts on the user's behalf, as in the browser)."""
    token = f"person-{user.systemuserid}"
    e2e.dataverse_control("POST", "tokens", {"token": token, "systemuserid": user.systemuserid})
    response = e2e.http.request(
        method,
        f"{e2e.sandbox.dataverse_api_url}/{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Prefer": "return=representation"},
    )
    assert response.status_code < 300, (method, path, response.status_code, response.text[:300])
    return response.json() if response.content else None


def outlook_items(e2e: E2E, mailbox: Mailbox, collection: str) -> list[dict[str, Any]]:
    return list(e2e.outlook("GET", mailbox, collection)["value"])


def find(e2e: E2E, mailbox: Mailbox, collection: str, field: str, value: str) -> list[dict[str, Any]]:
    return [item for item in outlook_items(e2e, mailbox, collection) if item.get(field) == value]


def no_echo(e2e: E2E, mailbox: Mailbox, record_id: str, collection: str, since: str) -> None:
    """Once the mailbox's Outlook -> CRM run has synced the item crmsync created (the resource's last
    sync after ``since``, nothing dirty), crmsync wrote nothing back for that record: the run that
    saw its own write recognised the echo."""

    def synced() -> bool | None:
        code, out = e2e.cli("status", mailbox.id, "--json")
        assert code == 0, out
        (status,) = _listed(json.loads(out))
        runs = [r["last_sync_at"] for r in status["resources"] if r["resource"].endswith(collection)]
        return (status["backlog"] == 0 and any(at and at > since for at in runs)) or None

    wait_for(synced, "the echo of crmsync's own write to be synced")
    code, out = e2e.cli("audit", mailbox.id, "--item", record_id, "--json")
    assert code == 0, out
    records = json.loads(out)
    actions = {r["action"] for r in records}
    # The audit says why: the planner's reason, as a code.
    assert ("created_in_outlook", "new-in-the-crm") in {(r["action"], r["reason_code"]) for r in records}
    assert not actions & {"created_in_crm", "updated_in_crm", "deleted_in_crm"}, actions


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat()


def onboarded(e2e: E2E, *, sync_to_outlook: bool = True) -> tuple[Mailbox, CrmUser]:
    mailbox = e2e.new_mailbox()
    user = synced_user(e2e, mailbox, sync_to_outlook=sync_to_outlook)
    report = e2e.onboard(mailbox, user)
    assert report["sync_to_outlook"] is sync_to_outlook  # RetrieveUserPrivileges at onboarding
    return mailbox, user


def test_contact_created_and_updated_in_crm_reaches_outlook_then_delete_keeps_owned_copy(
    connected: E2E,
) -> None:
    e2e = connected
    mailbox, user = onboarded(e2e)
    name = f"crm-{uuid.uuid4().hex[:8]}"
    since = _now()
    contact = as_user(e2e, user, "POST", "contacts", {"lastname": name, "firstname": "Ada"})
    (created,) = wait_for(lambda: find(e2e, mailbox, "contacts", "surname", name), "the contact in Outlook")
    assert created["givenName"] == "Ada"
    no_echo(e2e, mailbox, contact["contactid"], "/contacts", since)
    as_user(e2e, user, "PATCH", f"contacts({contact['contactid']})", {"firstname": "Grace"})
    wait_for(
        lambda: [c for c in find(e2e, mailbox, "contacts", "surname", name) if c["givenName"] == "Grace"],
        "the update in Outlook",
    )
    # The Outlook -> CRM job saw crmsync's own create and update: nothing written back (echo).
    (row,) = e2e.crm("contacts", f"lastname eq '{name}'", "contactid,firstname")
    assert row["firstname"] == "Grace"
    # A CRM delete of a contact the user owns leaves the Outlook contact (Dynamics' rule), unlinked.
    as_user(e2e, user, "DELETE", f"contacts({contact['contactid']})")
    e2e.run_timer("crm_changes")
    assert len(find(e2e, mailbox, "contacts", "surname", name)) == 1


def test_status_shows_the_last_hour_s_latency_both_ways(connected: E2E) -> None:
    """A CRM create reaching Outlook and an Outlook edit reaching the CRM are counted in the
    mailbox's last-hour figures that ``crmsync status`` (and the status page) show."""
    e2e = connected
    mailbox, user = onboarded(e2e)
    name = f"lat-{uuid.uuid4().hex[:8]}"
    as_user(e2e, user, "POST", "contacts", {"lastname": name, "firstname": "Ada"})
    (created,) = wait_for(lambda: find(e2e, mailbox, "contacts", "surname", name), "the contact in Outlook")
    e2e.outlook("PATCH", mailbox, item_path("contacts", created["id"]), {"givenName": "Grace"})
    wait_for(
        lambda: e2e.crm("contacts", f"lastname eq '{name}' and firstname eq 'Grace'", "contactid") or None,
        "the Outlook edit in the CRM",
    )

    def figures() -> dict[str, Any] | None:
        code, out = e2e.cli("status", mailbox.id, "--json")
        assert code == 0, out
        (status,) = _listed(json.loads(out))
        latency = status["latency"]
        return latency if latency["to_crm"]["count"] and latency["to_outlook"]["count"] else None

    latency = wait_for(figures, "both latencies in the status")
    for direction in ("to_crm", "to_outlook"):
        assert latency[direction]["count"] >= 1
        assert latency[direction]["p95_s"] is not None
        assert latency[direction]["p95_s"] <= 60
    code, out = e2e.cli("status", mailbox.id)
    assert code == 0, out
    assert "last hour, change to CRM: " in out
    assert "last hour, change to Outlook: " in out


def test_task_created_updated_and_deleted_in_crm(connected: E2E) -> None:
    e2e = connected
    mailbox, user = onboarded(e2e)
    subject = f"task-{uuid.uuid4().hex[:8]}"
    path = item_path("todo/lists", mailbox.todo_list) + "/tasks"
    since = _now()
    task = as_user(e2e, user, "POST", "tasks", {"subject": subject})
    (created,) = wait_for(lambda: find(e2e, mailbox, path, "title", subject), "the task in To Do")
    linked = e2e.outlook("GET", mailbox, item_path(path, created["id"]) + "/linkedResources")["value"]
    assert [(r["applicationName"], r["externalId"]) for r in linked] == [("crmsync", task["activityid"])]
    no_echo(e2e, mailbox, task["activityid"], "/tasks", since)
    renamed = subject + "-renamed"
    as_user(e2e, user, "PATCH", f"tasks({task['activityid']})", {"subject": renamed})
    wait_for(lambda: find(e2e, mailbox, path, "title", renamed), "the renamed task")
    as_user(e2e, user, "DELETE", f"tasks({task['activityid']})")
    wait_for(lambda: not find(e2e, mailbox, path, "title", renamed) or None, "the task removed from To Do")


def test_appointment_created_updated_and_deleted_in_crm(connected: E2E) -> None:
    e2e = connected
    mailbox, user = onboarded(e2e)
    subject = f"appt-{uuid.uuid4().hex[:8]}"
    start, end = _future_slot()
    since = _now()
    appointment = as_user(
        e2e,
        user,
        "POST",
        "appointments",
        {
            "subject": subject,
            "scheduledstart": start,
            "scheduledend": end,
            "appointment_activity_parties": [
                {
                    "partyid_systemuser@odata.bind": f"/systemusers({user.systemuserid})",
                    "participationtypemask": 7,
                }
            ],
        },
    )
    (event,) = wait_for(lambda: find(e2e, mailbox, "events", "subject", subject), "the event in Outlook")
    assert event["transactionId"]
    no_echo(e2e, mailbox, appointment["activityid"], "/events", since)
    as_user(e2e, user, "PATCH", f"appointments({appointment['activityid']})", {"location": "Room 7"})
    wait_for(
        lambda: [
            e
            for e in find(e2e, mailbox, "events", "subject", subject)
            if e["location"]["displayName"] == "Room 7"
        ],
        "the new location in Outlook",
    )
    # Dynamics' own view of the organizer (the party's address) matches Outlook's: no conflict.
    code, out = e2e.cli("audit", mailbox.id, "--json")
    assert code == 0, out
    assert "conflict" not in {record["action"] for record in json.loads(out)}
    # Deleted at once, while the echo of crmsync's write and the change it wrote back (the event's
    # iCalUId) are still on their way: the change, run after the delete, must not read the missing
    # record as the meeting leaving the filter (kept unlinked, then made again from Outlook).
    as_user(e2e, user, "DELETE", f"appointments({appointment['activityid']})")
    wait_for(lambda: not find(e2e, mailbox, "events", "subject", subject) or None, "the event removed")
    assert not e2e.crm("appointments", f"subject eq '{subject}'", "activityid")


def test_contact_entering_and_leaving_the_default_filter(connected: E2E) -> None:
    e2e = connected
    mailbox, user = onboarded(e2e)
    other = e2e.new_crm_user()
    name = f"filter-{uuid.uuid4().hex[:8]}"
    contact = as_user(
        e2e,
        user,
        "POST",
        "contacts",
        {"lastname": name, "ownerid@odata.bind": f"/systemusers({other.systemuserid})"},
    )
    # Owned by someone else: not in "My Contacts". The positive control below proves runs happen.
    control = f"control-{uuid.uuid4().hex[:8]}"
    as_user(e2e, user, "POST", "contacts", {"lastname": control})
    wait_for(lambda: find(e2e, mailbox, "contacts", "surname", control), "the control contact")
    assert find(e2e, mailbox, "contacts", "surname", name) == []
    # Assigned to the user: it enters the filter.
    as_user(
        e2e,
        user,
        "PATCH",
        f"contacts({contact['contactid']})",
        {"ownerid@odata.bind": f"/systemusers({user.systemuserid})"},
    )
    wait_for(lambda: find(e2e, mailbox, "contacts", "surname", name), "the contact entering the filter")
    # Deactivated: it leaves the filter; crmsync created it and nobody changed it: removed.
    as_user(e2e, user, "PATCH", f"contacts({contact['contactid']})", {"statecode": 1, "statuscode": 2})
    wait_for(lambda: not find(e2e, mailbox, "contacts", "surname", name) or None, "the contact leaving")
    assert e2e.crm("contacts", f"lastname eq '{name}'", "statecode")[0]["statecode"] == 1


def test_a_custom_outlook_filter_in_userquery_decides_what_reaches_outlook(connected: E2E) -> None:
    """The user's own Outlook filter (userquery, querytype 256) replaces Dynamics' default "My
    Contacts": of the user's active contacts only those in one city reach Outlook."""
    e2e = connected
    mailbox, user = onboarded(e2e)
    city = f"city-{uuid.uuid4().hex[:8]}"
    as_user(
        e2e,
        user,
        "POST",
        "userqueries",
        {
            "name": f"Contacts in {city}",
            "returnedtypecode": "contact",
            "querytype": 256,
            "fetchxml": (
                "<fetch><entity name='contact'><attribute name='fullname'/><filter>"
                "<condition attribute='ownerid' operator='eq-userid'/>"
                f"<condition attribute='address1_city' operator='eq' value='{city}'/>"
                "</filter></entity></fetch>"
            ),
        },
    )
    elsewhere = f"elsewhere-{uuid.uuid4().hex[:8]}"
    as_user(e2e, user, "POST", "contacts", {"lastname": elsewhere, "address1_city": "Elsewhere"})
    # The positive control: in the filter, so runs happen and reach Outlook.
    local = f"local-{uuid.uuid4().hex[:8]}"
    contact = as_user(e2e, user, "POST", "contacts", {"lastname": local, "address1_city": city})
    wait_for(lambda: find(e2e, mailbox, "contacts", "surname", local), "the contact in the custom filter")
    assert find(e2e, mailbox, "contacts", "surname", elsewhere) == []  # "My Contacts" would take it
    # Moved to another city: it leaves the filter; crmsync created it and nobody changed it: removed.
    as_user(e2e, user, "PATCH", f"contacts({contact['contactid']})", {"address1_city": "Elsewhere"})
    wait_for(lambda: not find(e2e, mailbox, "contacts", "surname", local) or None, "the contact leaving")


def test_lost_webhook_call_is_caught_by_the_change_tracking_timer(connected: E2E) -> None:
    e2e = connected
    mailbox, user = onboarded(e2e)
    name = f"lost-{uuid.uuid4().hex[:8]}"
    # Written through the simulator's control API: committed (change tracking sees it) but no
    # webhook step runs - the call Dataverse never made.
    e2e.dataverse_control(
        "POST",
        "seed",
        {
            "table": "contact",
            "records": [{"lastname": name, "ownerid@odata.bind": f"/systemusers({user.systemuserid})"}],
        },
    )
    wait_for(lambda: e2e.crm("contacts", f"lastname eq '{name}'", "contactid"), "the seeded contact")
    assert find(e2e, mailbox, "contacts", "surname", name) == []
    e2e.run_timer("crm_changes")
    wait_for(lambda: find(e2e, mailbox, "contacts", "surname", name), "the contact through the timer")


def test_user_without_sync_to_outlook_gets_nothing_and_status_says_why(connected: E2E) -> None:
    e2e = connected
    mailbox, user = onboarded(e2e, sync_to_outlook=False)
    name = f"noprv-{uuid.uuid4().hex[:8]}"
    contact = as_user(e2e, user, "POST", "contacts", {"lastname": name})

    def refused() -> list[dict[str, Any]]:
        # The run for this very record audits why it wrote nothing: proof that it ran.
        code, out = e2e.cli("audit", mailbox.id, "--item", contact["contactid"], "--json")
        assert code == 0, out
        return [r for r in json.loads(out) if r["reason_code"] == "crm_no_sync_to_outlook_privilege"]

    wait_for(refused, "the run refusing to write to Outlook")
    assert find(e2e, mailbox, "contacts", "surname", name) == []
    code, out = e2e.cli("status", mailbox.id, "--json")
    assert code == 0, out
    (status,) = _listed(json.loads(out))
    assert status["crm_to_outlook_stopped"]["contact"] == "crm_no_sync_to_outlook_privilege"


def _listed(report: Any) -> list[dict[str, Any]]:
    return report if isinstance(report, list) else [report]


def _future_slot() -> tuple[str, str]:
    import datetime as dt

    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)
    return f"{day.isoformat()}T10:00:00Z", f"{day.isoformat()}T11:00:00Z"


def test_an_instance_changed_in_dynamics_changes_only_its_occurrence(connected: E2E) -> None:
    """A series made in Outlook is a Dynamics series; the user edits one instance in Dynamics (which
    makes it Dynamics' exception): that occurrence alone changes in Outlook (Graph: updating an
    occurrence makes it an exception), though the instance has no parties of its own to put it in the
    user's filter - it belongs to its series. Deleting another instance cancels its occurrence."""
    e2e = connected
    mailbox, user = onboarded(e2e)
    subject = f"series-{uuid.uuid4().hex[:8]}"
    first = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)
    (master_id,) = e2e.seed(
        mailbox,
        events=[
            {
                "subject": subject,
                "start": {"dateTime": f"{first}T08:00:00", "timeZone": "UTC"},
                "end": {"dateTime": f"{first}T08:30:00", "timeZone": "UTC"},
                "recurrence": {
                    "pattern": {"type": "daily", "interval": 1},
                    "range": {"type": "numbered", "startDate": str(first), "numberOfOccurrences": 3},
                },
            }
        ],
    )["events"]

    def instances() -> list[dict[str, Any]] | None:
        rows = e2e.crm("appointments", f"subject eq '{subject}'", "activityid,originalstartdate")
        return rows if len(rows) == 3 else None

    rows = wait_for(instances, "the series' instances in the CRM")
    second = next(r for r in rows if r["originalstartdate"].startswith(str(first + dt.timedelta(days=1))))
    wait_for(lambda: _linked(e2e, mailbox) == 3 or None, "the occurrences linked")
    as_user(e2e, user, "PATCH", f"appointments({second['activityid']})", {"location": "Room 9"})

    window = f"startDateTime={first}T00:00:00Z&endDateTime={first + dt.timedelta(days=4)}T00:00:00Z"
    path = f"{item_path('events', master_id)}/instances?{window}"

    def changed() -> list[dict[str, Any]] | None:
        occurrences = e2e.outlook("GET", mailbox, path)["value"]
        return occurrences if any(o["location"]["displayName"] == "Room 9" for o in occurrences) else None

    occurrences = wait_for(changed, "the occurrence changed in Outlook")
    assert [o["location"]["displayName"] for o in occurrences] == ["", "Room 9", ""]
    assert [o["type"] for o in occurrences] == ["occurrence", "exception", "occurrence"]

    # Deleting an instance in Dynamics cancels that occurrence in Outlook (the delete rules of an
    # appointment the user owns that is not over); the series and its other occurrences stay.
    third = next(r for r in rows if r["originalstartdate"].startswith(str(first + dt.timedelta(days=2))))
    as_user(e2e, user, "DELETE", f"appointments({third['activityid']})")

    def cancelled() -> list[dict[str, Any]] | None:
        left = e2e.outlook("GET", mailbox, path)["value"]
        return left if len(left) == 2 else None

    left = wait_for(cancelled, "the occurrence cancelled in Outlook")
    assert [o["location"]["displayName"] for o in left] == ["", "Room 9"]


def _linked(e2e: E2E, mailbox: Mailbox) -> int:
    code, out = e2e.cli("status", mailbox.id, "--json")
    assert code == 0, out
    (status,) = json.loads(out)
    return int(status["links"]["appointment"])


def test_records_an_initial_sync_wrote_in_bulk_take_dynamics_edits_back_to_outlook(connected: E2E) -> None:
    """ "Use bulk operation messages": an initial sync's plain contact and task creates go to
    Dataverse in UpsertMultiple requests (shared/crm/dataverse/bulk.py). Their links keep the
    versions read back after it, so Dataverse's reports of those creates change nothing in Outlook,
    and a Dynamics edit of such a record reaches Outlook."""
    e2e = connected
    tag = f"bulk{uuid.uuid4().hex[:8]}"
    mailbox = e2e.new_mailbox(
        contacts=[{"givenName": f"n{i:03d}", "surname": tag} for i in range(100)],
        todo={"defaultList": [{"title": tag} for _ in range(100)]},
    )
    user = synced_user(e2e, mailbox)
    e2e.onboard(mailbox, user)
    contacts = e2e.crm("contacts", f"lastname eq '{tag}'", "contactid")
    tasks = e2e.crm("tasks", f"subject eq '{tag}'", "activityid")
    assert (len(contacts), len(tasks)) == (100, 100)
    written = {
        part
        for entry in e2e.dataverse_control("GET", "requests")["value"]
        if entry["path"].endswith("Microsoft.Dynamics.CRM.UpsertMultiple") and entry["status"] == 204
        for part in entry["batch_parts"] or ()
    }
    assert {f"UpsertMultiple contacts({row['contactid']})" for row in contacts} <= written
    assert {f"UpsertMultiple tasks({row['activityid']})" for row in tasks} <= written

    edited = contacts[0]
    as_user(e2e, user, "PATCH", f"contacts({edited['contactid']})", {"firstname": "Grace"})
    wait_for(
        lambda: find(e2e, mailbox, "contacts?$top=500", "givenName", "Grace") or None,
        "the Dynamics edit in Outlook",
    )
    assert len(find(e2e, mailbox, "contacts?$top=500", "surname", tag)) == 100  # none copied back twice
