"""crmsync's msgraph-sdk flows through Stoplight Prism, validating every request and response
against Microsoft's Graph v1.0 OpenAPI slice (/work/shared/contracts/graph, see its README).

Prism (the session's ``graph_prism`` fixture; spec ``<repo>/../shared/contracts/graph/
graph-v1.0-sync-slice.yaml``) runs in proxy mode with ``--errors`` in front of the Graph simulator:
a request that breaks the contract is answered 422, a response that breaks it 500, and both surface
as SDK errors. The test's HTTP transport routes every call the client makes to the simulator's
origin (first calls and the opaque next/delta links alike) through Prism, and records anything
Prism flags.

Not covered, because the slice cannot validate them: ``POST /users/{id}/messages/{id}/move`` is
not in it (Prism answers ``NO_PATH_MATCHED_ERROR``), and calendarView delta follow-up links (see
the read-flow test); both are tested against the simulator in tests/outlook.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.graph_service_client import GraphServiceClient

from shared.domain.model import Appointment, Contact, EmailAddress, ItemKind, Task, TaskStatus
from shared.outlook.client import build_graph_client
from shared.outlook.credentials import StaticTokenCredential
from shared.outlook.delta import DeltaPage, DeltaReader
from shared.outlook.errors import DeltaTokenExpired
from shared.outlook.mailbox import OutlookMailbox
from shared.outlook.paging import all_pages
from shared.outlook.subscriptions import ResourceKind, SubscriptionManager
from shared.outlook.writers import OutlookWriter
from simulators.graph.sink import NotificationSink
from tests.fixtures.graph_sim import GraphSim


@dataclass
class PrismVerdicts(httpx.AsyncBaseTransport):
    """Sends requests for ``upstream`` to Prism instead and keeps every violation Prism reports."""

    upstream: str
    proxy: str
    inner: httpx.AsyncHTTPTransport = field(default_factory=httpx.AsyncHTTPTransport)
    violations: list[str] = field(default_factory=list)
    proxied: list[str] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        assert url.startswith(self.upstream), f"request outside the simulator: {url}"
        request.url = httpx.URL(self.proxy + url[len(self.upstream) :])
        request.headers["Host"] = request.url.netloc.decode()
        response = await self.inner.handle_async_request(request)
        self.proxied.append(f"{request.method} {request.url.path}")
        where = f"{request.method} {request.url.path}?{request.url.query.decode()}"
        if "sl-violations" in response.headers:
            self.violations.append(f"{where}: {response.headers['sl-violations']}")
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            body = await response.aread()
            self.violations.append(f"{where}: {response.status_code} {body.decode(errors='replace')}")
            return httpx.Response(
                response.status_code, headers=response.headers, content=body, request=request
            )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Contract:
    client: GraphServiceClient
    verdicts: PrismVerdicts

    def assert_clean(self) -> None:
        assert self.verdicts.proxied, "nothing went through Prism"
        assert self.verdicts.violations == []


@pytest.fixture
async def contract(graph_sim: GraphSim, graph_prism: str) -> AsyncIterator[Contract]:
    """A Graph client whose every request goes through the session's Prism (``graph_prism``)."""
    verdicts = PrismVerdicts(upstream=graph_sim.base_url, proxy=graph_prism)
    async with httpx.AsyncClient(transport=verdicts, timeout=30, trust_env=False) as http:
        client = build_graph_client(
            StaticTokenCredential(base_url=graph_sim.base_url), base_url=graph_sim.base_url, http_client=http
        )
        yield Contract(client, verdicts)


async def drain(pages: AsyncIterator[DeltaPage]) -> list[DeltaPage]:
    return [page async for page in pages]


async def test_read_flows_list_and_delta_to_completion(
    contract: Contract, graph_sim: GraphSim, graph_user: str
) -> None:
    seeded = graph_sim.seed(
        graph_user,
        contacts=[
            {"givenName": f"C{index}", "emailAddresses": [{"address": f"c{index}@x.example"}]}
            for index in range(5)
        ],
        messages={
            "inbox": [
                {"subject": f"M{index}", "from": {"emailAddress": {"address": "a@x.example"}}}
                for index in range(3)
            ]
        },
        todo={"defaultList": [{"title": "T1"}, {"title": "T2"}, {"title": "T3"}]},
        events=[
            {
                "subject": "Weekly",
                "start": {"dateTime": "2026-03-02T09:00:00", "timeZone": "W. Europe Standard Time"},
                "end": {"dateTime": "2026-03-02T09:30:00", "timeZone": "W. Europe Standard Time"},
                "recurrence": {
                    "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                    "range": {"type": "numbered", "startDate": "2026-03-02", "numberOfOccurrences": 3},
                },
            }
        ],
    )
    client = contract.client
    reader = DeltaReader(client, page_size=2)
    mailbox = OutlookMailbox(client)
    window = (dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 31, tzinfo=dt.UTC))

    user = await mailbox.user(graph_user)
    folders = await mailbox.folders(graph_user)
    contacts = await drain(reader.contacts(graph_user))
    messages = await drain(reader.messages(graph_user, mailbox_address=user.address))
    # One page: the slice requires startDateTime/endDateTime on every calendarView/delta call, but
    # Graph's next/delta links for it carry only the token (learn.microsoft.com/graph/api/event-delta),
    # so a follow-up call is a false 422 from Prism. Contacts, messages and tasks page below.
    events = await drain(
        DeltaReader(client, page_size=50).events(graph_user, window_start=window[0], window_end=window[1])
    )
    list_id = graph_sim.user_info(graph_user)["defaultTodoList"]
    tasks = await drain(reader.tasks(graph_user, list_id))
    await OutlookWriter(client).update_contact(
        graph_user, seeded["contacts"][0], Contact(given_name="Changed")
    )
    changes = await drain(reader.contacts(graph_user, link=contacts[-1].delta_link))
    view = await mailbox.calendar_view(graph_user, *window)
    instances = await mailbox.event_instances(graph_user, seeded["events"][0], *window)
    listed_contacts = await all_pages(client.users.by_user_id(graph_user).contacts)
    body = await reader.fetch_message_body(graph_user, seeded["messages"]["inbox"][0])

    assert user.id == graph_user
    assert folders
    assert [len(page.items) for page in contacts] == [2, 2, 1]
    assert sum(len(page.items) for page in messages) == 3
    assert sum(len(page.items) for page in events) == 3
    assert sum(len(page.items) for page in tasks) == 3
    assert [item.item_id for page in changes for item in page.items] == [seeded["contacts"][0]]
    assert len(view) == len(instances) == 3
    assert len(listed_contacts) == 5
    assert body.content == ""
    contract.assert_clean()


async def test_write_flows_create_update_delete(
    contract: Contract, graph_sim: GraphSim, graph_user: str
) -> None:
    client = contract.client
    writer = OutlookWriter(client)
    mailbox = OutlookMailbox(client)
    message_id = graph_sim.seed(graph_user, messages={"inbox": [{"subject": "Tracked"}]})["messages"][
        "inbox"
    ][0]
    start = dt.datetime(2026, 7, 1, 7, 0, tzinfo=dt.UTC)

    contact = await writer.create_contact(
        graph_user,
        Contact(given_name="Ada", email_addresses=(EmailAddress(address="ada@x.example"),)),
        crm_id="c1",
    )
    await writer.update_contact(graph_user, contact.item_id, Contact(given_name="Ada", surname="Lovelace"))
    event = await writer.create_event(
        graph_user,
        Appointment(
            subject="Call", start=start, end=start + dt.timedelta(hours=1), time_zone="Pacific Standard Time"
        ),
        crm_id="a1",
    )
    await writer.update_event(
        graph_user,
        event.item_id,
        Appointment(subject="Call 2", start=start, end=start + dt.timedelta(hours=2)),
    )
    list_id = await writer.default_task_list(graph_user)
    task = await writer.create_task(graph_user, list_id, Task(subject="Follow up", due=start))
    await writer.update_task(
        graph_user, list_id, task.item_id, Task(subject="Follow up", status=TaskStatus.COMPLETED)
    )
    await writer.ensure_master_category(graph_user, "Tracked to Dynamics 365")
    await writer.set_message_categories(graph_user, message_id, ["Tracked to Dynamics 365"])
    stamped = await writer.read_crm_id(graph_user, ItemKind.EMAIL, message_id)
    message = await mailbox.message(graph_user, message_id)
    attachment = FileAttachment(name="a.txt", content_type="text/plain", content_bytes=b"hello")
    attachment.odata_type = "#microsoft.graph.fileAttachment"
    await client.users.by_user_id(graph_user).messages.by_message_id(message_id).attachments.post(attachment)
    attachments = await mailbox.attachments(graph_user, message_id)
    await writer.delete_contact(graph_user, contact.item_id)
    await writer.delete_event(graph_user, event.item_id)
    await writer.delete_task(graph_user, list_id, task.item_id)
    await writer.delete_contact(graph_user, contact.item_id)  # 404 through Prism: still done

    assert stamped is None  # crmsync never stamps a message it did not create
    assert message.categories == ("Tracked to Dynamics 365",)
    assert [a.content for a in attachments] == [b"hello"]
    contract.assert_clean()


async def test_subscription_flows(contract: Contract, graph_sink: NotificationSink, graph_user: str) -> None:
    subscriptions = SubscriptionManager(
        contract.client, notification_url=graph_sink.url, lifecycle_url=graph_sink.lifecycle_url
    )

    created = await subscriptions.create(graph_user, ResourceKind.MESSAGES)
    renewed = await subscriptions.renew(created.id, ResourceKind.MESSAGES)
    await subscriptions.reauthorize(created.id)
    await subscriptions.delete(created.id)
    await subscriptions.delete(created.id)

    assert renewed >= created.expires
    contract.assert_clean()


async def test_expired_delta_token_error_matches_the_contract(
    contract: Contract, graph_sim: GraphSim, graph_user: str
) -> None:
    reader = DeltaReader(contract.client)
    link = (await drain(reader.contacts(graph_user)))[-1].delta_link
    graph_sim.expire_delta_tokens(graph_user)

    with pytest.raises(DeltaTokenExpired):
        await drain(reader.contacts(graph_user, link=link))
    contract.assert_clean()
