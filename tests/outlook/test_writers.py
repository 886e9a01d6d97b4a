"""Writers and mailbox reads over HTTP against the simulator: contacts, events, tasks, categories, stamps."""

from __future__ import annotations

import datetime as dt

import pytest
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.graph_service_client import GraphServiceClient

from shared.domain.model import (
    Appointment,
    Contact,
    EmailAddress,
    EventKind,
    ItemKind,
    Task,
    TaskStatus,
)
from shared.outlook.delta import DeltaReader
from shared.outlook.errors import ItemNotFound
from shared.outlook.mailbox import OutlookMailbox
from shared.outlook.paging import all_pages
from shared.outlook.writers import OutlookWriter
from tests.fixtures.graph_sim import GraphSim

GRACE = Contact(
    given_name="Grace",
    surname="Hopper",
    email_addresses=(EmailAddress(address="grace@navy.example", name="Grace"),),
    mobile_phone="+1 555 0101",
    birthday=dt.date(1906, 12, 9),
)


async def test_contact_create_update_delete_with_crm_stamp(
    graph: GraphServiceClient, graph_user: str
) -> None:
    writer = OutlookWriter(graph)

    created = await writer.create_contact(graph_user, GRACE, crm_id="crm-42", categories=["CRM"])

    assert created.kind is ItemKind.CONTACT
    # Exchange fills in displayName from the name parts.
    assert created.item == GRACE.model_copy(update={"display_name": "Grace Hopper"})
    assert created.crm_id == "crm-42"
    assert created.categories == ("CRM",)
    assert await writer.read_crm_id(graph_user, ItemKind.CONTACT, created.item_id) == "crm-42"

    updated = await writer.update_contact(
        graph_user, created.item_id, GRACE.model_copy(update={"job_title": "RADM"})
    )
    assert updated.item_id == created.item_id
    assert updated.change_key != created.change_key
    assert isinstance(updated.item, Contact)
    assert updated.item.job_title == "RADM"
    cleared = await writer.update_contact(
        graph_user, created.item_id, GRACE.model_copy(update={"birthday": None})
    )
    assert isinstance(cleared.item, Contact)
    assert (cleared.item.job_title, cleared.item.birthday, cleared.item.mobile_phone) == (
        None,
        None,
        "+1 555 0101",
    )

    await writer.delete_contact(graph_user, created.item_id)
    await writer.delete_contact(graph_user, created.item_id)  # already gone: still done
    assert await _contact_ids(graph, graph_user) == []
    with pytest.raises(ItemNotFound):
        await writer.update_contact(graph_user, created.item_id, GRACE)


async def _contact_ids(graph: GraphServiceClient, mailbox: str) -> list[str]:
    pages = [page async for page in DeltaReader(graph).contacts(mailbox)]
    return [item.item_id for page in pages for item in page.items if not item.removed]


async def test_event_is_written_in_its_own_time_zone_and_read_back_in_utc(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    writer = OutlookWriter(graph)
    start = dt.datetime(2026, 7, 1, 7, 0, tzinfo=dt.UTC)  # 09:00 in Berlin
    meeting = Appointment(
        subject="Review",
        start=start,
        end=start + dt.timedelta(hours=1),
        time_zone="W. Europe Standard Time",
        location="Room 4",
    )

    created = await writer.create_event(graph_user, meeting, crm_id="crm-appt")

    assert isinstance(created.item, Appointment)
    # Exchange assigns the organizer (the mailbox) and the iCalUId.
    assert created.item.model_copy(update={"organizer": None, "ical_uid": None}) == meeting
    [posted] = [r for r in graph_sim.requests(user=graph_user) if r["method"] == "POST"]
    assert posted["path"].endswith("/events")
    view = await OutlookMailbox(graph).calendar_view(
        graph_user, start - dt.timedelta(hours=1), start + dt.timedelta(hours=2)
    )
    [seen] = view
    assert isinstance(seen.item, Appointment)
    assert (seen.item.start, seen.item.time_zone) == (start, "W. Europe Standard Time")
    assert await writer.read_crm_id(graph_user, ItemKind.APPOINTMENT, created.item_id) == "crm-appt"

    moved = meeting.model_copy(
        update={"start": start + dt.timedelta(hours=2), "end": start + dt.timedelta(hours=3)}
    )
    updated = await writer.update_event(graph_user, created.item_id, moved)
    assert isinstance(updated.item, Appointment)
    assert updated.item.start == start + dt.timedelta(hours=2)
    unplaced = await writer.update_event(
        graph_user, created.item_id, moved.model_copy(update={"location": None})
    )
    assert isinstance(unplaced.item, Appointment)
    assert unplaced.item.location is None

    await writer.delete_event(graph_user, created.item_id)
    await writer.delete_event(graph_user, created.item_id)
    assert await OutlookMailbox(graph).calendar_view(graph_user, start, start + dt.timedelta(days=1)) == []


async def test_recurring_series_lists_its_instances(graph: GraphServiceClient, graph_user: str) -> None:
    start = dt.datetime(2026, 1, 5, 15, 0, tzinfo=dt.UTC)  # a Monday, 07:00 in Los Angeles
    weekly = Appointment(
        subject="1:1",
        start=start,
        end=start + dt.timedelta(minutes=30),
        time_zone="Pacific Standard Time",
        recurrence=(
            '{"pattern":{"type":"weekly","interval":1,"daysOfWeek":["monday"],"firstDayOfWeek":"sunday"},'
            '"range":{"type":"endDate","startDate":"2026-01-05","endDate":"2026-01-26",'
            '"recurrenceTimeZone":"Pacific Standard Time"}}'
        ),
    )
    series = await OutlookWriter(graph).create_event(graph_user, weekly)
    assert isinstance(series.item, Appointment)
    assert series.item.event_kind is EventKind.SERIES_MASTER

    instances = await OutlookMailbox(graph).event_instances(
        graph_user, series.item_id, start - dt.timedelta(days=1), start + dt.timedelta(days=60)
    )

    starts = sorted(i.item.start for i in instances if isinstance(i.item, Appointment))
    assert starts == [start + dt.timedelta(weeks=week) for week in range(4)]
    assert all(
        isinstance(i.item, Appointment) and i.item.series_master_id == series.item_id for i in instances
    )


async def test_todo_tasks_create_update_delete(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    writer = OutlookWriter(graph)
    list_id = await writer.default_task_list(graph_user)
    assert list_id == graph_sim.user_info(graph_user)["defaultTodoList"]
    task = Task(subject="Send contract", due=dt.datetime(2026, 12, 1, tzinfo=dt.UTC))

    created = await writer.create_task(graph_user, list_id, task, categories=["CRM"])
    assert created.item == task
    assert created.folder_id == list_id

    done = task.model_copy(update={"status": TaskStatus.COMPLETED})
    updated = await writer.update_task(graph_user, list_id, created.item_id, done)
    assert isinstance(updated.item, Task)
    assert updated.item.status is TaskStatus.COMPLETED

    await writer.delete_task(graph_user, list_id, created.item_id)
    await writer.delete_task(graph_user, list_id, created.item_id)
    pages = [page async for page in DeltaReader(graph).tasks(graph_user, list_id)]
    assert [item for page in pages for item in page.items] == []
    assert await writer.read_crm_id(graph_user, ItemKind.TASK, created.item_id) is None  # no stamps on To Do


async def test_categories_master_list_and_message_categories(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    writer = OutlookWriter(graph)
    graph_sim.seed(
        graph_user, categories=[{"displayName": f"Other {n}", "color": "preset1"} for n in range(12)]
    )
    message_id = graph_sim.seed(graph_user, messages={"inbox": [{"subject": "Track me"}]})["messages"][
        "inbox"
    ][0]

    await writer.ensure_master_category(graph_user, "Tracked to Dynamics 365")
    await writer.ensure_master_category(graph_user, "tracked to dynamics 365")  # exists: nothing to do
    await writer.set_message_categories(graph_user, message_id, ["Tracked to Dynamics 365"])

    names = [
        c.display_name for c in await all_pages(graph.users.by_user_id(graph_user).outlook.master_categories)
    ]
    assert len(names) == 13
    # The second ensure found the category on page 2 instead of trying (and failing) to create it again.
    creations = [
        r
        for r in graph_sim.requests(user=graph_user)
        if r["method"] == "POST" and "masterCategories" in r["path"]
    ]
    assert len(creations) == 1
    assert names.count("Tracked to Dynamics 365") == 1
    message = await OutlookMailbox(graph).message(graph_user, message_id)
    assert message.categories == ("Tracked to Dynamics 365",)
    assert message.crm_id is None  # crmsync never stamps a message


async def test_file_attachments_of_tracked_mail_are_read(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    message_id = graph_sim.seed(graph_user, messages={"inbox": [{"subject": "Contract"}]})["messages"][
        "inbox"
    ][0]
    attachment = FileAttachment(
        name="contract.pdf", content_type="application/pdf", content_bytes=b"%PDF-1.7 x"
    )
    attachment.odata_type = "#microsoft.graph.fileAttachment"
    await graph.users.by_user_id(graph_user).messages.by_message_id(message_id).attachments.post(attachment)

    [found] = await OutlookMailbox(graph).attachments(graph_user, message_id)

    assert (found.name, found.content_type, found.content) == (
        "contract.pdf",
        "application/pdf",
        b"%PDF-1.7 x",
    )


async def test_all_day_event_keeps_its_dates_in_any_zone(graph: GraphServiceClient, graph_user: str) -> None:
    day = dt.datetime(2026, 5, 14, tzinfo=dt.UTC)
    holiday = Appointment(
        subject="Ascension Day",
        start=day,
        end=day + dt.timedelta(days=1),
        is_all_day=True,
        time_zone="W. Europe Standard Time",
    )

    created = await OutlookWriter(graph).create_event(graph_user, holiday)

    assert isinstance(created.item, Appointment)
    assert (created.item.start, created.item.end, created.item.is_all_day) == (
        day,
        day + dt.timedelta(days=1),
        True,
    )
    assert created.item.time_zone == "W. Europe Standard Time"
