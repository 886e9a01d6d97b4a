"""The Outlook side's contract: what MailboxSyncJob relies on from the delta reader and the writer, run
against the in-memory fake (tests/fakes/outlook.py) and against DeltaReader / OutlookWriter with
msgraph-sdk on the Graph simulator over HTTP.

Behaviours from "Use delta query to track changes in Microsoft Graph data" (learn.microsoft.com/graph
/delta-query-overview: pages until a delta link, later rounds list changes and ``@removed`` entries,
410 for an expired state), "event: delta" (learn.microsoft.com/graph/api/event-delta: a calendarView
window, no ``$expand``), "Add custom data to resources using extended properties"
(learn.microsoft.com/graph/extensibility-overview: the CRM id stamp) and the resource pages of
contact, event, todoTask and message (displayName composed by Outlook, To Do's completion time).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from shared.domain.model import (
    Appointment,
    Contact,
    Email,
    EmailAddress,
    EventKind,
    ItemKind,
    OutlookItem,
    Task,
    TaskStatus,
)
from shared.outlook.client import build_graph_client
from shared.outlook.credentials import StaticTokenCredential
from shared.outlook.delta import DeltaPage, DeltaReader
from shared.outlook.errors import DeltaTokenExpired, GraphThrottled
from shared.outlook.writers import OutlookWriter
from tests.fakes.outlook import FakeDeltaReader, FakeOutlook, FakeOutlookWriter
from tests.fixtures.graph_sim import GraphSim

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
WINDOW = (NOW - dt.timedelta(days=30), NOW + dt.timedelta(days=365))
TRACKED = "Tracked to Dynamics 365"
Reader = DeltaReader | FakeDeltaReader
Writer = OutlookWriter | FakeOutlookWriter


class Mailbox:
    """One mailbox on one side: its reader and writer, and what its user does by hand."""

    mailbox_id: str
    address: str
    task_list: str
    reader: Reader
    writer: Writer

    def deliver(self, subject: str, *, categories: tuple[str, ...] = (), body: str = "hello") -> str:
        raise NotImplementedError

    def add_contact(self, given: str, surname: str) -> str:
        raise NotImplementedError

    def rename_contact(self, item_id: str, job_title: str) -> None:
        raise NotImplementedError

    def delete(self, kind: ItemKind, item_id: str) -> None:
        raise NotImplementedError

    def expire_delta_tokens(self) -> None:
        raise NotImplementedError


async def _round(pages: AsyncIterator[DeltaPage]) -> tuple[list[DeltaPage], str]:
    collected = [page async for page in pages]
    assert all(page.next_link and not page.delta_link for page in collected[:-1])
    assert collected[-1].delta_link
    assert not collected[-1].next_link
    return collected, collected[-1].delta_link


def _items(pages: list[DeltaPage]) -> dict[str, OutlookItem]:
    return {item.item_id: item for page in pages for item in page.items}


class OutlookContract:
    """The behaviours; a subclass provides the ``box`` fixture (a fresh mailbox, delta pages of 2)."""

    async def test_contact_delta_rounds(self, box: Mailbox) -> None:
        ids = [box.add_contact("Ada", f"Lovelace{n}") for n in range(5)]
        pages, link = await _round(box.reader.contacts(box.mailbox_id))
        assert len(pages) >= 3, "five contacts in pages of two"
        first = _items(pages)
        assert set(first) == set(ids)
        assert all(item.change_key and not item.removed for item in first.values())
        contact = first[ids[0]].item
        assert isinstance(contact, Contact)
        assert (contact.given_name, contact.surname, contact.display_name) == (
            "Ada",
            "Lovelace0",
            "Ada Lovelace0",
        )

        box.rename_contact(ids[1], "Countess")
        box.delete(ItemKind.CONTACT, ids[2])
        pages, link = await _round(box.reader.contacts(box.mailbox_id, link=link))
        changed = _items(pages)
        assert set(changed) == {ids[1], ids[2]}
        assert changed[ids[2]].removed
        assert changed[ids[2]].item is None
        renamed = changed[ids[1]]
        assert isinstance(renamed.item, Contact)
        assert renamed.item.job_title == "Countess"
        assert renamed.change_key != first[ids[1]].change_key

        pages, _ = await _round(box.reader.contacts(box.mailbox_id, link=link))
        assert _items(pages) == {}

    async def test_contact_writes(self, box: Mailbox) -> None:
        written = Contact(
            given_name="Grace",
            surname="Hopper",
            job_title="RADM",
            email_addresses=(EmailAddress(address="grace@navy.example", name="Grace"),),
            business_phone="+1 555 0100",
            notes="hello",
        )
        created = await box.writer.create_contact(box.mailbox_id, written, crm_id="crm-1")
        assert created.item == written.model_copy(update={"display_name": "Grace Hopper"})
        assert created.crm_id == "crm-1"
        cleared = written.model_copy(update={"job_title": None, "notes": None})
        updated = await box.writer.update_contact(box.mailbox_id, created.item_id, cleared)
        assert updated.item_id == created.item_id
        assert updated.change_key != created.change_key
        assert updated.item == cleared.model_copy(update={"display_name": "Grace Hopper"})
        pages, _ = await _round(box.reader.contacts(box.mailbox_id))
        listed = _items(pages)[created.item_id]
        assert (listed.item, listed.change_key, listed.crm_id) == (updated.item, updated.change_key, "crm-1")
        await box.writer.delete_contact(box.mailbox_id, created.item_id)
        await box.writer.delete_contact(box.mailbox_id, created.item_id)  # gone is done
        pages, _ = await _round(box.reader.contacts(box.mailbox_id))
        assert created.item_id not in _items(pages)

    async def test_events_in_the_window_without_stamps(self, box: Mailbox) -> None:
        start = NOW.replace(minute=0, second=0) + dt.timedelta(days=2)
        meeting = Appointment(
            subject="Review", start=start, end=start + dt.timedelta(hours=1), location="Room 1"
        )
        created = await box.writer.create_event(box.mailbox_id, meeting, crm_id="crm-2")
        assert isinstance(created.item, Appointment)
        assert created.crm_id == "crm-2"
        assert created.item.event_kind is EventKind.SINGLE
        assert created.item.ical_uid
        assert created.item.organizer is not None
        assert created.item.organizer.address.casefold() == box.address.casefold()
        assert (created.item.subject, created.item.start, created.item.end, created.item.location) == (
            "Review",
            meeting.start,
            meeting.end,
            "Room 1",
        )
        outside = NOW - dt.timedelta(days=90)
        old = Appointment(subject="Old", start=outside, end=outside + dt.timedelta(hours=1))
        before = await box.writer.create_event(box.mailbox_id, old)
        pages, link = await _round(
            box.reader.events(box.mailbox_id, window_start=WINDOW[0], window_end=WINDOW[1])
        )
        listed = _items(pages)
        assert set(listed) == {created.item_id}, "the event before the window is not listed"
        assert listed[created.item_id].crm_id is None, "calendarView delta cannot $expand the stamp"
        assert listed[created.item_id].item == created.item
        assert await box.writer.read_crm_id(box.mailbox_id, ItemKind.APPOINTMENT, created.item_id) == "crm-2"

        moved = meeting.model_copy(update={"subject": "Moved", "time_zone": "Pacific Standard Time"})
        updated = await box.writer.update_event(box.mailbox_id, created.item_id, moved)
        assert isinstance(updated.item, Appointment)
        assert (updated.item.subject, updated.item.ical_uid) == ("Moved", created.item.ical_uid)
        await box.writer.delete_event(box.mailbox_id, before.item_id)
        pages, _ = await _round(box.reader.events(box.mailbox_id, link=link))
        changed = _items(pages)
        assert changed[created.item_id].item == updated.item
        assert before.item_id not in changed or changed[before.item_id].removed

    async def test_tasks(self, box: Mailbox) -> None:
        due = NOW.replace(hour=0, minute=0, second=0) + dt.timedelta(days=3)
        created = await box.writer.create_task(box.mailbox_id, box.task_list, Task(subject="Call", due=due))
        assert isinstance(created.item, Task)
        assert (created.item.subject, created.item.due, created.item.status) == (
            "Call",
            due,
            TaskStatus.NOT_STARTED,
        )
        assert created.crm_id is None
        done = await box.writer.update_task(
            box.mailbox_id,
            box.task_list,
            created.item_id,
            Task(subject="Called", status=TaskStatus.COMPLETED),
        )
        assert isinstance(done.item, Task)
        assert (done.item.subject, done.item.due, done.item.status) == ("Called", due, TaskStatus.COMPLETED)
        assert done.item.completed is not None, "To Do sets the completion time"
        reopened = await box.writer.update_task(
            box.mailbox_id,
            box.task_list,
            created.item_id,
            done.item.model_copy(update={"status": TaskStatus.IN_PROGRESS}),
        )
        assert isinstance(reopened.item, Task)
        assert reopened.item.completed is None
        pages, link = await _round(box.reader.tasks(box.mailbox_id, box.task_list))
        listed = _items(pages)[created.item_id]
        assert (listed.item, listed.crm_id) == (reopened.item, None)
        await box.writer.delete_task(box.mailbox_id, box.task_list, created.item_id)
        pages, _ = await _round(box.reader.tasks(box.mailbox_id, box.task_list, link=link))
        assert _items(pages)[created.item_id].removed

    async def test_messages_bodies_and_categories(self, box: Mailbox) -> None:
        tracked = box.deliver("Quote", categories=(TRACKED,), body="the body")
        other = box.deliver("Lunch")
        pages, link = await _round(
            box.reader.messages(box.mailbox_id, folder="inbox", mailbox_address=box.address)
        )
        listed = _items(pages)
        assert set(listed) == {tracked, other}
        email = listed[tracked].item
        assert isinstance(email, Email)
        assert (email.subject, email.body, email.is_outgoing) == ("Quote", None, False)
        assert listed[tracked].categories == (TRACKED,)
        bodies = await box.reader.fetch_message_bodies(box.mailbox_id, [tracked])
        body = bodies[tracked]
        assert body is not None
        assert "the body" in body.content

        await box.writer.set_message_categories(box.mailbox_id, tracked, [])
        await box.writer.set_message_categories(box.mailbox_id, other, [TRACKED])
        box.delete(ItemKind.EMAIL, other)
        assert (await box.reader.fetch_message_bodies(box.mailbox_id, [other]))[other] is None
        pages, _ = await _round(box.reader.messages(box.mailbox_id, folder="inbox", link=link))
        changed = _items(pages)
        assert changed[tracked].categories == ()
        assert changed[tracked].change_key != listed[tracked].change_key
        assert changed[other].removed

    async def test_an_expired_delta_link_raises(self, box: Mailbox) -> None:
        box.add_contact("Ada", "Byron")
        _, link = await _round(box.reader.contacts(box.mailbox_id))
        box.expire_delta_tokens()
        with pytest.raises(DeltaTokenExpired):
            await _round(box.reader.contacts(box.mailbox_id, link=link))
        pages, _ = await _round(box.reader.contacts(box.mailbox_id))
        assert len(_items(pages)) == 1


# --- the fake ------------------------------------------------------------------------------------


class FakeBox(Mailbox):
    def __init__(self, outlook: FakeOutlook) -> None:
        self.outlook = outlook
        mailbox = outlook.add_mailbox()
        self.mailbox_id, self.address, self.task_list = (
            mailbox.mailbox_id,
            mailbox.address,
            mailbox.default_task_list,
        )
        self.reader, self.writer = outlook.reader(), outlook.writer()

    def deliver(self, subject: str, *, categories: tuple[str, ...] = (), body: str = "hello") -> str:
        email = Email(subject=subject, sender=EmailAddress(address="seller@contoso.example"))
        return self.outlook.user_create(self.mailbox_id, email, categories=categories, body=body)

    def add_contact(self, given: str, surname: str) -> str:
        return self.outlook.user_create(self.mailbox_id, Contact(given_name=given, surname=surname))

    def rename_contact(self, item_id: str, job_title: str) -> None:
        item = self.outlook.item(self.mailbox_id, item_id)
        assert item is not None
        self.outlook.user_update(
            self.mailbox_id, item_id, item.content.model_copy(update={"job_title": job_title})
        )

    def delete(self, kind: ItemKind, item_id: str) -> None:
        self.outlook.user_delete(self.mailbox_id, item_id)

    def expire_delta_tokens(self) -> None:
        self.outlook.expire_delta_tokens(self.mailbox_id)


class TestFakeOutlook(OutlookContract):
    @pytest.fixture
    def outlook(self) -> FakeOutlook:
        return FakeOutlook(page_size=2)

    @pytest.fixture
    def box(self, outlook: FakeOutlook) -> Mailbox:
        return FakeBox(outlook)

    async def test_injected_faults_raise_once(self, outlook: FakeOutlook, box: Mailbox) -> None:
        outlook.inject("delta", 503)
        with pytest.raises(GraphThrottled) as raised:
            await _round(box.reader.contacts(box.mailbox_id))
        assert raised.value.status == 503
        outlook.inject("create_contact", 429)
        with pytest.raises(GraphThrottled):
            await box.writer.create_contact(box.mailbox_id, Contact(surname="Throttled"))
        assert outlook.pending_faults == 0
        await _round(box.reader.contacts(box.mailbox_id))


# --- the Graph simulator -------------------------------------------------------------------------

_SIM_COLLECTION = {ItemKind.CONTACT: "contacts", ItemKind.EMAIL: "messages", ItemKind.APPOINTMENT: "events"}


class SimBox(Mailbox):
    def __init__(self, sim: GraphSim, http: httpx.AsyncClient) -> None:
        self.sim = sim
        self.mailbox_id = sim.add_user()
        info = sim.user_info(self.mailbox_id)
        self.address = str(info.get("mail") or info["userPrincipalName"])
        self.task_list = str(info["defaultTodoList"])
        client = build_graph_client(
            StaticTokenCredential(base_url=sim.base_url),
            base_url=sim.base_url,
            http_client=http,
            max_retries=1,
        )
        self.reader, self.writer = DeltaReader(client, page_size=2), OutlookWriter(client)

    def _send(self, method: str, path: str, body: Any = None) -> None:
        response = self.sim.client.request(
            method, f"{self.sim.base_url}/{path}", json=body, headers=self.sim.headers
        )
        response.raise_for_status()

    def deliver(self, subject: str, *, categories: tuple[str, ...] = (), body: str = "hello") -> str:
        message = {
            "subject": subject,
            "from": {"emailAddress": {"address": "seller@contoso.example"}},
            "toRecipients": [{"emailAddress": {"address": self.address}}],
            "categories": list(categories),
            "body": {"contentType": "text", "content": body},
        }
        return str(self.sim.seed(self.mailbox_id, messages={"inbox": [message]})["messages"]["inbox"][0])

    def add_contact(self, given: str, surname: str) -> str:
        return str(
            self.sim.seed(self.mailbox_id, contacts=[{"givenName": given, "surname": surname}])["contacts"][0]
        )

    def rename_contact(self, item_id: str, job_title: str) -> None:
        self._send(
            "PATCH", f"users/{self.mailbox_id}/contacts/{quote(item_id, safe='')}", {"jobTitle": job_title}
        )

    def delete(self, kind: ItemKind, item_id: str) -> None:
        self._send("DELETE", f"users/{self.mailbox_id}/{_SIM_COLLECTION[kind]}/{quote(item_id, safe='')}")

    def expire_delta_tokens(self) -> None:
        self.sim.expire_delta_tokens(self.mailbox_id)


class TestGraphOutlook(OutlookContract):
    @pytest.fixture
    async def http(self) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
            yield client

    @pytest.fixture
    def box(self, graph_sim: GraphSim, http: httpx.AsyncClient) -> Mailbox:
        return SimBox(graph_sim, http)
