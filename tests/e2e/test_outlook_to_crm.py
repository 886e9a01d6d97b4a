"""Outlook -> CRM through the local Functions runner: Graph notifies the webhook, the queue worker
runs the delta, the record lands in the Dataverse simulator. Each type's create, update and
delete, with the delete policy of "Deleting records that have been tracked with Dynamics 365 for
Outlook" (learn.microsoft.com/dynamics365/outlook-addin/user-guide/delete-records-that-have-been-tracked):
an Outlook delete keeps a tracked email or contact in the CRM and deletes the user's own
appointment or task; untracking an email deletes the user's CRM copy."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from tests.e2e.conftest import E2E, TRACKED, Mailbox, item_path, wait_for, when

Rows = list[dict[str, Any]]


def marker() -> str:
    return uuid.uuid4().hex[:12]


def wait_rows(e2e: E2E, entity_set: str, odata_filter: str, select: str, ok: Callable[[Rows], bool]) -> Rows:
    def probe() -> tuple[Rows] | None:
        rows = e2e.crm(entity_set, odata_filter, select)
        return (rows,) if ok(rows) else None  # a tuple, so an expected empty result counts as found

    (rows,) = wait_for(probe, f"{entity_set} where {odata_filter}")
    return rows


def one(rows: Rows) -> bool:
    return len(rows) == 1


def none(rows: Rows) -> bool:
    return not rows


def one_with(column: str, value: object) -> Callable[[Rows], bool]:
    return lambda rows: len(rows) == 1 and rows[0][column] == value


def links(e2e: E2E, mailbox: Mailbox) -> dict[str, int]:
    code, out = e2e.cli("status", mailbox.id, "--json")
    assert code == 0, out
    counts: dict[str, int] = json.loads(out)[0]["links"]
    return counts


def wait_links(e2e: E2E, mailbox: Mailbox, kind: str, count: int) -> None:
    wait_for(lambda: links(e2e, mailbox)[kind] == count, f"{count} linked {kind}(s)")


def test_contact_create_update_delete(e2e: E2E) -> None:
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    name = marker()

    (contact_id,) = e2e.seed(mailbox, contacts=[{"givenName": "Ada", "surname": name}])["contacts"]
    (created,) = wait_rows(e2e, "contacts", f"lastname eq '{name}'", "contactid,firstname", one)
    assert created["firstname"] == "Ada"

    e2e.outlook("PATCH", mailbox, item_path("contacts", contact_id), {"givenName": "Augusta"})
    (updated,) = wait_rows(
        e2e,
        "contacts",
        f"lastname eq '{name}'",
        "contactid,firstname",
        one_with("firstname", "Augusta"),
    )
    assert updated["contactid"] == created["contactid"]

    e2e.outlook("DELETE", mailbox, item_path("contacts", contact_id))
    wait_links(e2e, mailbox, "contact", 0)
    remaining = e2e.crm("contacts", f"lastname eq '{name}'", "contactid")
    assert [row["contactid"] for row in remaining] == [created["contactid"]]


def test_event_create_update_delete(e2e: E2E) -> None:
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    subject = marker()

    (event_id,) = e2e.seed(mailbox, events=[{"subject": subject, "start": when(3, 10), "end": when(3, 11)}])[
        "events"
    ]
    (created,) = wait_rows(e2e, "appointments", f"subject eq '{subject}'", "activityid,location", one)

    e2e.outlook("PATCH", mailbox, item_path("events", event_id), {"location": {"displayName": "Room 4"}})
    (updated,) = wait_rows(
        e2e,
        "appointments",
        f"subject eq '{subject}'",
        "activityid,location",
        one_with("location", "Room 4"),
    )
    assert updated["activityid"] == created["activityid"]

    e2e.outlook("DELETE", mailbox, item_path("events", event_id))
    wait_rows(e2e, "appointments", f"subject eq '{subject}'", "activityid", none)


def test_task_create_update_delete(e2e: E2E) -> None:
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    title = marker()
    tasks = f"{item_path('todo/lists', mailbox.todo_list)}/tasks"

    (task_id,) = e2e.seed(mailbox, todo={"defaultList": [{"title": title}]})["todo"]["defaultList"]
    (created,) = wait_rows(e2e, "tasks", f"subject eq '{title}'", "activityid", one)

    e2e.outlook("PATCH", mailbox, item_path(tasks, task_id), {"title": f"{title}-v2"})
    (updated,) = wait_rows(e2e, "tasks", f"subject eq '{title}-v2'", "activityid", one)
    assert updated["activityid"] == created["activityid"]

    e2e.outlook("DELETE", mailbox, item_path(tasks, task_id))
    wait_rows(e2e, "tasks", f"subject eq '{title}-v2'", "activityid", none)


def test_tracked_email_create_untrack_and_delete(e2e: E2E) -> None:
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    kept, untracked, private = marker(), marker(), marker()

    ids = e2e.seed(
        mailbox,
        messages={
            "inbox": [
                {
                    "subject": subject,
                    "categories": categories,
                    "internetMessageId": f"<{subject}@fabrikam.example>",
                }
                for subject, categories in ((kept, [TRACKED]), (untracked, [TRACKED]), (private, []))
            ]
        },
    )["messages"]["inbox"]
    wait_rows(
        e2e, "emails", f"subject eq '{kept}' or subject eq '{untracked}'", "activityid", lambda r: len(r) == 2
    )
    assert e2e.crm("emails", f"subject eq '{private}'", "activityid") == []

    e2e.outlook("PATCH", mailbox, item_path("messages", ids[1]), {"categories": []})
    wait_rows(e2e, "emails", f"subject eq '{untracked}'", "activityid", none)

    e2e.outlook("DELETE", mailbox, item_path("messages", ids[0]))
    wait_links(e2e, mailbox, "email", 0)
    assert len(e2e.crm("emails", f"subject eq '{kept}'", "activityid")) == 1


def test_duplicate_and_reordered_notifications_converge_on_one_record(e2e: E2E) -> None:
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    duplicated, reordered = marker(), marker()

    e2e.graph_control("POST", "faults", {"kind": "duplicate_notifications", "user": mailbox.id, "count": 2})
    (first,) = e2e.seed(mailbox, contacts=[{"givenName": "One", "surname": duplicated}])["contacts"]
    e2e.outlook("PATCH", mailbox, item_path("contacts", first), {"givenName": "Two"})
    wait_rows(e2e, "contacts", f"lastname eq '{duplicated}'", "firstname", one_with("firstname", "Two"))

    e2e.graph_control("POST", "faults", {"kind": "reorder_notifications", "user": mailbox.id, "count": 2})
    (second,) = e2e.seed(mailbox, contacts=[{"givenName": "Early", "surname": reordered}])["contacts"]
    e2e.outlook("PATCH", mailbox, item_path("contacts", second), {"givenName": "Late"})
    wait_rows(e2e, "contacts", f"lastname eq '{reordered}'", "firstname", one_with("firstname", "Late"))

    wait_for(lambda: all(d["outcome"] == "202" for d in e2e.deliveries(mailbox)), "every delivery answered")
    delivered = [d["payload"]["value"][0]["resource"] for d in e2e.deliveries(mailbox)]
    assert len(delivered) > len(set(delivered))  # the duplicates really arrived
    assert len(e2e.crm("contacts", f"lastname eq '{duplicated}'", "contactid")) == 1
    assert len(e2e.crm("contacts", f"lastname eq '{reordered}'", "contactid")) == 1


def test_moves_between_folders(e2e: E2E) -> None:
    """Only the inbox is tracked: a tracked message moved in is synced; moved out and back in, it
    still has exactly one CRM record (its immutable id does not change with the folder)."""
    subject = marker()
    mailbox = e2e.new_mailbox(
        messages={
            "archive": [
                {"subject": subject, "categories": [TRACKED], "internetMessageId": f"<{subject}@x.example>"}
            ]
        }
    )
    report = e2e.onboard(mailbox)
    assert report["items_synced"] == 0
    (message_id,) = mailbox.seeded["messages"]["archive"]

    e2e.outlook("POST", mailbox, item_path("messages", message_id) + "/move", {"destinationId": "inbox"})
    (synced,) = wait_rows(e2e, "emails", f"subject eq '{subject}'", "activityid", one)

    e2e.outlook("POST", mailbox, item_path("messages", message_id) + "/move", {"destinationId": "archive"})
    e2e.outlook("POST", mailbox, item_path("messages", message_id) + "/move", {"destinationId": "inbox"})
    e2e.run_timer("delta_sweep")
    wait_links(e2e, mailbox, "email", 1)
    wait_for(lambda: json.loads(e2e.cli("status", mailbox.id, "--json")[1])[0]["backlog"] == 0, "the backlog")
    assert [r["activityid"] for r in e2e.crm("emails", f"subject eq '{subject}'", "activityid")] == [
        synced["activityid"]
    ]


def _utc(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_all_day_and_time_zone_events(e2e: E2E) -> None:
    all_day, pacific, tokyo = marker(), marker(), marker()
    mailbox = e2e.new_mailbox(
        events=[
            {"subject": all_day, "isAllDay": True, "start": when(4, 0), "end": when(5, 0)},
            {
                "subject": pacific,
                "start": when(4, 10, "Pacific Standard Time"),
                "end": when(4, 11, "Pacific Standard Time"),
            },
        ]
    )
    e2e.onboard(mailbox)
    e2e.seed(
        mailbox,
        events=[{"subject": tokyo, "start": when(4, 10, "Asia/Tokyo"), "end": when(4, 11, "Asia/Tokyo")}],
    )
    select = "scheduledstart,scheduledend,isalldayevent"

    (day,) = wait_rows(e2e, "appointments", f"subject eq '{all_day}'", select, one)
    (west,) = wait_rows(e2e, "appointments", f"subject eq '{pacific}'", select, one)
    (east,) = wait_rows(e2e, "appointments", f"subject eq '{tokyo}'", select, one)

    date = dt.date.fromisoformat(when(4, 0)["dateTime"][:10])
    assert day["isalldayevent"] is True
    assert _utc(day["scheduledend"]) - _utc(day["scheduledstart"]) == dt.timedelta(days=1)
    assert _utc(day["scheduledstart"]).date() == date
    # Windows "Pacific Standard Time" is IANA America/Los_Angeles (CLDR windowsZones).
    for row, zone in ((west, "America/Los_Angeles"), (east, "Asia/Tokyo")):
        local = dt.datetime.combine(date, dt.time(10), ZoneInfo(zone))
        assert _utc(row["scheduledstart"]) == local.astimezone(dt.UTC)
    assert west["isalldayevent"] is False


def test_weekly_series_becomes_one_dynamics_series(e2e: E2E) -> None:
    """A weekly series on several days with an end date is one recurringappointmentmaster, its pattern
    mapped field by field; Dynamics' instances are linked, no one-off appointment is written; a moved
    occurrence becomes the instance's exception and a cancelled one removes its instance ("Create a
    recurring appointment series, instance, or exception"; Graph "event: delta", "patternedRecurrence")."""
    subject = marker()
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    today = dt.datetime.now(dt.UTC).date()
    monday = today + dt.timedelta(days=(7 - today.weekday()) % 7 or 7)
    last = monday + dt.timedelta(days=11)  # Mon, Wed, Fri of two weeks: six occurrences
    (master_id,) = e2e.seed(
        mailbox,
        events=[
            {
                "subject": subject,
                "start": {"dateTime": f"{monday}T09:00:00", "timeZone": "UTC"},
                "end": {"dateTime": f"{monday}T09:30:00", "timeZone": "UTC"},
                "recurrence": {
                    "pattern": {
                        "type": "weekly",
                        "interval": 1,
                        "daysOfWeek": ["monday", "wednesday", "friday"],
                        "firstDayOfWeek": "monday",
                    },
                    "range": {"type": "endDate", "startDate": str(monday), "endDate": str(last)},
                },
            }
        ],
    )["events"]
    pattern = (
        "activityid,recurrencepatterntype,interval,daysofweekmask,firstdayofweek,patternendtype,"
        "patternstartdate,patternenddate,starttime,endtime,duration,isalldayevent,instancetypecode"
    )
    (series,) = wait_rows(e2e, "recurringappointmentmasters", f"subject eq '{subject}'", pattern, one)
    assert (series["recurrencepatterntype"], series["interval"], series["daysofweekmask"]) == (1, 1, 0x2A)
    assert (series["firstdayofweek"], series["patternendtype"], series["duration"]) == (1, 3, 30)
    assert _utc(series["patternstartdate"]).date() == monday
    assert _utc(series["patternenddate"]).date() == last
    assert _utc(series["starttime"]) == dt.datetime.combine(monday, dt.time(9), dt.UTC)
    assert (series["isalldayevent"], series["instancetypecode"]) == (False, 1)

    select = "activityid,seriesid,instancetypecode,scheduledstart,originalstartdate"
    instances = wait_rows(e2e, "appointments", f"subject eq '{subject}'", select, lambda r: len(r) == 6)
    assert {row["seriesid"] for row in instances} == {series["activityid"]}
    assert {row["instancetypecode"] for row in instances} == {2}  # no one-off appointment
    days = sorted(_utc(row["scheduledstart"]).date() for row in instances)
    assert days == [monday + dt.timedelta(days=d) for d in (0, 2, 4, 7, 9, 11)]
    wait_links(e2e, mailbox, "appointment", 6)

    window = {
        "startDateTime": f"{monday}T00:00:00Z",
        "endDateTime": f"{last + dt.timedelta(days=1)}T00:00:00Z",
    }
    query = "&".join(f"{k}={v}" for k, v in window.items())
    occurrences = e2e.outlook("GET", mailbox, f"{item_path('events', master_id)}/instances?{query}")["value"]
    assert len(occurrences) == 6
    wednesday = monday + dt.timedelta(days=2)
    e2e.outlook(
        "PATCH",
        mailbox,
        item_path("events", occurrences[1]["id"]),
        {
            "start": {"dateTime": f"{wednesday}T14:00:00", "timeZone": "UTC"},
            "end": {"dateTime": f"{wednesday}T14:30:00", "timeZone": "UTC"},
        },
    )
    by_original = {_utc(row["originalstartdate"]): row for row in instances}
    moved_id = by_original[dt.datetime.combine(wednesday, dt.time(9), dt.UTC)]["activityid"]
    (moved,) = wait_rows(
        e2e,
        "appointments",
        f"activityid eq {moved_id}",
        select,
        lambda r: len(r) == 1 and r[0]["instancetypecode"] == 3,
    )
    assert _utc(moved["scheduledstart"]) == dt.datetime.combine(wednesday, dt.time(14), dt.UTC)
    assert moved["seriesid"] == series["activityid"]

    friday = monday + dt.timedelta(days=4)
    cancelled_id = by_original[dt.datetime.combine(friday, dt.time(9), dt.UTC)]["activityid"]
    e2e.outlook("DELETE", mailbox, item_path("events", occurrences[2]["id"]))
    wait_rows(e2e, "appointments", f"activityid eq {cancelled_id}", "activityid", none)
    left = e2e.crm("appointments", f"subject eq '{subject}'", select)
    assert len(left) == 5
    assert {row["instancetypecode"] for row in left} == {2, 3}
    (after,) = e2e.crm("recurringappointmentmasters", f"subject eq '{subject}'", "deletedexceptionslist")
    assert f"{friday}T09:00:00Z" in after["deletedexceptionslist"]

    # The exception stays linked to its instance (the CRM -> Outlook run that its update woke leaves
    # a series instance to its series): cancelling it removes that instance too.
    e2e.outlook("DELETE", mailbox, item_path("events", occurrences[1]["id"]))
    wait_rows(e2e, "appointments", f"activityid eq {moved_id}", "activityid", none)
    assert len(e2e.crm("appointments", f"subject eq '{subject}'", "activityid")) == 4
