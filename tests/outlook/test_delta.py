"""Delta readers over HTTP against the simulator: paging to completion, @removed, moves, 410."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from msgraph.generated.models.message import Message
from msgraph.generated.models.single_value_legacy_extended_property import SingleValueLegacyExtendedProperty
from msgraph.graph_service_client import GraphServiceClient

from shared.domain.model import Appointment, Contact, Email, EventKind, ItemKind, Task
from shared.outlook.convert.common import CRM_ID_PROPERTY_ID
from shared.outlook.delta import DeltaPage, DeltaReader
from shared.outlook.errors import DeltaTokenExpired
from shared.outlook.mailbox import OutlookMailbox
from shared.outlook.writers import OutlookWriter
from tests.fixtures.graph_sim import GraphSim


async def drain(pages: AsyncIterator[DeltaPage]) -> list[DeltaPage]:
    return [page async for page in pages]


def contact_json(index: int) -> dict[str, object]:
    return {
        "givenName": f"Given{index}",
        "surname": "Delta",
        "emailAddresses": [{"address": f"c{index}@x.example"}],
    }


async def test_contacts_page_to_completion_then_report_changes_and_removals(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    ids = graph_sim.seed(graph_user, contacts=[contact_json(i) for i in range(5)])["contacts"]
    reader = DeltaReader(graph, page_size=2)

    first_round = await drain(reader.contacts(graph_user))

    assert [len(page.items) for page in first_round] == [2, 2, 1]
    assert all(page.next_link and not page.delta_link for page in first_round[:-1])
    assert first_round[-1].next_link is None
    assert first_round[-1].delta_link is not None
    seen = [item for page in first_round for item in page.items]
    assert sorted(item.item_id for item in seen) == sorted(ids)
    assert all(isinstance(item.item, Contact) and item.change_key for item in seen)

    writer = OutlookWriter(graph)
    await writer.update_contact(graph_user, ids[0], Contact(given_name="Renamed", surname="Delta"))
    await writer.delete_contact(graph_user, ids[1])
    second_round = await drain(reader.contacts(graph_user, link=first_round[-1].delta_link))

    changes = {item.item_id: item for page in second_round for item in page.items}
    assert set(changes) == {ids[0], ids[1]}
    renamed = changes[ids[0]].item
    assert isinstance(renamed, Contact)
    assert renamed.given_name == "Renamed"
    assert changes[ids[1]].removed
    assert changes[ids[1]].item is None


async def test_following_a_page_link_resumes_the_round(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    graph_sim.seed(graph_user, contacts=[contact_json(i) for i in range(3)])
    reader = DeltaReader(graph, page_size=2)
    first_page = await anext(aiter(reader.contacts(graph_user)))
    assert first_page.next_link is not None

    rest = await drain(reader.contacts(graph_user, link=first_page.next_link))

    assert [len(page.items) for page in rest] == [1]
    assert rest[-1].delta_link is not None


async def test_expired_delta_token_is_delta_token_expired(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    reader = DeltaReader(graph)
    link = (await drain(reader.contacts(graph_user)))[-1].delta_link
    graph_sim.expire_delta_tokens(graph_user)

    with pytest.raises(DeltaTokenExpired) as caught:
        await drain(reader.contacts(graph_user, link=link))
    assert (caught.value.status, caught.value.code) == (410, "syncStateNotFound")


async def test_message_delta_never_asks_for_bodies_and_body_is_fetched_separately(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    address = graph_sim.user_info(graph_user)["mail"]
    seeded = graph_sim.seed(
        graph_user,
        messages={
            "inbox": [
                {
                    "subject": "Quote request",
                    "body": {"contentType": "html", "content": "<p>confidential</p>"},
                    "from": {"emailAddress": {"address": "client@fabrikam.example", "name": "Client"}},
                    "toRecipients": [{"emailAddress": {"address": address}}],
                    "categories": ["Blue"],
                }
            ]
        },
    )
    message_id = seeded["messages"]["inbox"][0]
    graph_sim.clear_requests(user=graph_user)
    reader = DeltaReader(graph)

    pages = await drain(reader.messages(graph_user, mailbox_address=address))

    [item] = [item for page in pages for item in page.items]
    assert item.item_id == message_id
    assert item.kind is ItemKind.EMAIL
    assert item.categories == ("Blue",)
    email = item.item
    assert isinstance(email, Email)
    assert email.subject == "Quote request"
    assert email.body is None
    assert not email.is_outgoing
    [request] = graph_sim.requests(user=graph_user)
    assert "odata.maxpagesize=200" in request["prefer"]
    assert 'IdType="ImmutableId"' in request["prefer"]
    assert request["select"], request
    assert not {"body", "bodyPreview", "uniqueBody"} & set(request["select"])

    body = await reader.fetch_message_body(graph_user, message_id)
    assert (body.content, body.is_html) == ("<p>confidential</p>", True)


async def test_moved_message_keeps_its_immutable_id_and_leaves_the_old_folder_delta(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    message_id = graph_sim.seed(graph_user, messages={"inbox": [{"subject": "File me"}]})["messages"][
        "inbox"
    ][0]
    reader = DeltaReader(graph)
    inbox_link = (await drain(reader.messages(graph_user)))[-1].delta_link
    archive_link = (await drain(reader.messages(graph_user, folder="archive")))[-1].delta_link

    moved = await OutlookMailbox(graph).move_message(graph_user, message_id, "archive")

    archive = await OutlookMailbox(graph).folder(graph_user, "archive")
    assert moved.item_id == message_id
    assert moved.folder_id == archive.id
    inbox_changes = [
        item for page in await drain(reader.messages(graph_user, link=inbox_link)) for item in page.items
    ]
    archive_changes = [
        item
        for page in await drain(reader.messages(graph_user, folder="archive", link=archive_link))
        for item in page.items
    ]
    assert [(item.item_id, item.removed) for item in inbox_changes] == [(message_id, True)]
    assert [(item.item_id, item.removed) for item in archive_changes] == [(message_id, False)]


async def test_calendar_delta_expands_a_series_in_the_window(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    start = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)  # a Monday
    series = Appointment(
        subject="Stand-up",
        start=start,
        end=start + dt.timedelta(minutes=15),
        time_zone="UTC",
        recurrence=(
            '{"pattern":{"type":"daily","interval":1},'
            '"range":{"type":"numbered","startDate":"2026-03-02","numberOfOccurrences":3}}'
        ),
    )
    master = await OutlookWriter(graph).create_event(graph_user, series)
    reader = DeltaReader(graph, page_size=2)

    pages = await drain(
        reader.events(
            graph_user, window_start=start - dt.timedelta(days=1), window_end=start + dt.timedelta(days=7)
        )
    )

    occurrences = [item.item for page in pages for item in page.items]
    assert len(occurrences) == 3
    assert all(isinstance(o, Appointment) and o.event_kind is EventKind.OCCURRENCE for o in occurrences)
    assert {o.series_master_id for o in occurrences if isinstance(o, Appointment)} == {master.item_id}
    assert sorted(o.start for o in occurrences if isinstance(o, Appointment)) == [
        start + dt.timedelta(days=day) for day in range(3)
    ]
    assert pages[-1].delta_link is not None


def test_calendar_delta_needs_a_window_to_start(graph: GraphServiceClient) -> None:
    with pytest.raises(ValueError, match="window"):
        DeltaReader(graph).events("someone")


async def test_task_delta_reads_a_todo_list(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    list_id = graph_sim.user_info(graph_user)["defaultTodoList"]
    graph_sim.seed(graph_user, todo={"defaultList": [{"title": "Call back", "status": "inProgress"}]})

    pages = await drain(DeltaReader(graph).tasks(graph_user, list_id))

    [item] = [item for page in pages for item in page.items]
    assert item.folder_id == list_id
    assert isinstance(item.item, Task)
    assert item.item.subject == "Call back"


async def test_stamped_crm_ids_come_back_in_delta_pages(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    writer = OutlookWriter(graph)
    contact = await writer.create_contact(graph_user, Contact(given_name="Linked"), crm_id="crm-contact")
    message_id = graph_sim.seed(graph_user, messages={"inbox": [{"subject": "Linked"}]})["messages"]["inbox"][
        0
    ]
    stamp = SingleValueLegacyExtendedProperty(id=CRM_ID_PROPERTY_ID, value="crm-email")
    await (
        graph.users.by_user_id(graph_user)
        .messages.by_message_id(message_id)
        .patch(Message(single_value_extended_properties=[stamp]))
    )  # a message stamped by hand or by an earlier crmsync
    reader = DeltaReader(graph)

    contacts = [item for page in await drain(reader.contacts(graph_user)) for item in page.items]
    messages = [item for page in await drain(reader.messages(graph_user)) for item in page.items]

    assert [(item.item_id, item.crm_id) for item in contacts] == [(contact.item_id, "crm-contact")]
    assert [(item.item_id, item.crm_id) for item in messages] == [(message_id, "crm-email")]
