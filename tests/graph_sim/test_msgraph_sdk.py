"""The unchanged msgraph-sdk client against the simulator: shapes must deserialize as Graph's do."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph.generated.models.contact import Contact
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.event import Event
from msgraph.generated.models.linked_resource import LinkedResource
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.single_value_legacy_extended_property import SingleValueLegacyExtendedProperty
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.models.todo_task import TodoTask
from msgraph.generated.users.item.events.events_request_builder import EventsRequestBuilder
from msgraph.generated.users.item.messages.item.move.move_post_request_body import MovePostRequestBody
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient

from simulators.graph.sink import NotificationSink
from simulators.sandbox import CONNECTOR_TOKEN
from tests.fixtures.graph_sim import GraphSim

# msgraph-sdk's generated request builders warn about their own deprecated config classes.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class SandboxCredential:
    """A static token: the simulator accepts any bearer token (this is not a mock of Graph)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("sandbox-token", 2**31)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> SandboxCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


@pytest.fixture
def sdk(graph_sim: GraphSim) -> GraphServiceClient:
    auth = AzureIdentityAuthenticationProvider(
        SandboxCredential(), scopes=["https://graph.microsoft.com/.default"], allowed_hosts=["127.0.0.1"]
    )
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = graph_sim.base_url
    return GraphServiceClient(request_adapter=adapter)


def _prefer(value: str) -> RequestConfiguration[Any]:
    headers = HeadersCollection()
    headers.add("Prefer", value)
    return RequestConfiguration(headers=headers)


async def test_sdk_contacts_crud_delta_and_errors(sdk: GraphServiceClient, graph_user: str) -> None:
    """user-post-contacts, contact-delta (@removed lands in additional_data), errors as ODataError."""
    user = sdk.users.by_user_id(graph_user)
    created = await user.contacts.post(
        Contact(given_name="Bob", surname="Ray", email_addresses=[EmailAddress(address="b@fabrikam.test")])
    )
    assert created is not None
    assert created.id is not None
    assert created.display_name == "Bob Ray"
    assert isinstance(created.created_date_time, dt.datetime)
    first = await user.contacts.delta.get()
    assert first is not None
    assert [c.id for c in first.value or []] == [created.id]
    assert first.odata_delta_link is not None
    await user.contacts.by_contact_id(created.id).delete()
    second = await user.contacts.delta.with_url(first.odata_delta_link).get()
    assert second is not None
    [removed] = second.value or []
    assert removed.id == created.id
    assert removed.additional_data["@removed"] == {"reason": "deleted"}
    with pytest.raises(ODataError) as raised:
        await user.contacts.by_contact_id(created.id).get()
    assert raised.value.response_status_code == 404
    assert raised.value.error is not None
    assert raised.value.error.code == "ErrorItemNotFound"


async def test_sdk_message_delta_and_move(
    sdk: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    """message-delta and message-move through the SDK (which sends DestinationId), immutable ids."""
    [seeded] = graph_sim.seed(
        graph_user,
        messages={"inbox": [{"subject": "PO 7", "from": {"emailAddress": {"address": "x@y.test"}}}]},
    )["messages"]["inbox"]
    user = sdk.users.by_user_id(graph_user)
    immutable = _prefer('IdType="ImmutableId"')
    page = await user.mail_folders.by_mail_folder_id("inbox").messages.delta.get(
        request_configuration=immutable
    )
    assert page is not None
    [message] = page.value or []
    assert message.id == seeded
    assert message.subject == "PO 7"
    assert message.from_ is not None
    assert message.from_.email_address is not None
    assert message.from_.email_address.address == "x@y.test"
    assert message.conversation_index
    moved = await user.messages.by_message_id(seeded).move.post(
        MovePostRequestBody(destination_id="archive"), request_configuration=immutable
    )
    assert moved is not None
    assert moved.id == seeded


async def test_sdk_events_in_a_preferred_time_zone(sdk: GraphServiceClient, graph_user: str) -> None:
    """event-get with Prefer: outlook.timezone through the SDK's DateTimeTimeZone model."""
    user = sdk.users.by_user_id(graph_user)
    created = await user.events.post(
        Event(
            subject="Call",
            start=DateTimeTimeZone(date_time="2030-05-01T09:00:00", time_zone="Eastern Standard Time"),
            end=DateTimeTimeZone(date_time="2030-05-01T10:00:00", time_zone="Eastern Standard Time"),
        )
    )
    assert created is not None
    assert created.id is not None
    assert created.start is not None
    assert created.start.date_time == "2030-05-01T13:00:00.0000000"
    assert created.original_start_time_zone == "Eastern Standard Time"
    local = await user.events.by_event_id(created.id).get(
        request_configuration=_prefer('outlook.timezone="Pacific Standard Time"')
    )
    assert local is not None
    assert local.start is not None
    assert local.start.date_time == "2030-05-01T06:00:00.0000000"


async def test_sdk_todo_tasks(sdk: GraphServiceClient, graph_sim: GraphSim, graph_user: str) -> None:
    """todotasklist-post-tasks and todotask-delta through the SDK."""
    list_id = graph_sim.user_info(graph_user)["defaultTodoList"]
    tasks = sdk.users.by_user_id(graph_user).todo.lists.by_todo_task_list_id(list_id).tasks
    created = await tasks.post(
        TodoTask(
            title="Send quote",
            due_date_time=DateTimeTimeZone(date_time="2030-05-02T00:00:00", time_zone="UTC"),
        )
    )
    assert created is not None
    assert created.title == "Send quote"
    delta = await tasks.delta.get()
    assert delta is not None
    assert [t.id for t in delta.value or []] == [created.id]


async def test_sdk_subscription(
    sdk: GraphServiceClient, graph_user: str, graph_sink: NotificationSink
) -> None:
    """subscription-post-subscriptions through the SDK, including the validation handshake."""
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    created = await sdk.subscriptions.post(
        Subscription(
            change_type="created,updated,deleted",
            notification_url=graph_sink.url,
            resource=f"users/{graph_user}/events",
            expiration_date_time=expiry,
            client_state="state",
        )
    )
    assert created is not None
    assert created.id is not None
    assert created.expiration_date_time is not None
    assert abs((created.expiration_date_time - expiry).total_seconds()) < 1
    assert graph_sink.validations


class ConnectorCredential(SandboxCredential):
    """The token crmsync sends in the sandbox; the fixtures give it the roles README step 2 grants."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(CONNECTOR_TOKEN, 2**31)


async def test_sdk_writes_stamped_items_once_with_the_connectors_roles(
    graph_sim: GraphSim, graph_user: str
) -> None:
    """What CRM -> Outlook sends through the SDK: an event with a transactionId and a stamp (a retry
    returns the same event; the stamp is found by $filter), a task with a linkedResource
    (todotasklist-post-tasks), and the linkedResources sub-resource refusing an app's POST
    (todotask-post-linkedresources, "Application: Not supported")."""
    auth = AzureIdentityAuthenticationProvider(
        ConnectorCredential(), scopes=["https://graph.microsoft.com/.default"], allowed_hosts=["127.0.0.1"]
    )
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = graph_sim.base_url
    user = GraphServiceClient(request_adapter=adapter).users.by_user_id(graph_user)
    stamp = "String {8a8d3a3e-3c2f-4f0f-9a63-2a3d8d0c5b11} Name crmsync.crmId"

    def event() -> Event:
        return Event(
            subject="Review",
            transaction_id="crm-appointment-1",
            start=DateTimeTimeZone(date_time="2030-03-04T09:00:00", time_zone="UTC"),
            end=DateTimeTimeZone(date_time="2030-03-04T10:00:00", time_zone="UTC"),
            single_value_extended_properties=[SingleValueLegacyExtendedProperty(id=stamp, value="crm-1")],
        )

    first = await user.events.post(event())
    retry = await user.events.post(event())
    assert first is not None
    assert retry is not None
    assert retry.id == first.id
    assert first.transaction_id == "crm-appointment-1"
    query = EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(
        filter=f"singleValueExtendedProperties/Any(ep: ep/id eq '{stamp}' and ep/value eq 'crm-1')"
    )
    found = await user.events.get(RequestConfiguration(query_parameters=query))
    assert found is not None
    assert [e.id for e in found.value or []] == [first.id]

    list_id = graph_sim.user_info(graph_user)["defaultTodoList"]
    tasks = user.todo.lists.by_todo_task_list_id(list_id).tasks
    link = LinkedResource(
        application_name="Dynamics 365",
        external_id="task-1",
        display_name="Call",
        web_url="https://crm.test/t",
    )
    task = await tasks.post(TodoTask(title="Call", linked_resources=[link]))
    assert task is not None
    assert task.id is not None
    assert [r.external_id for r in task.linked_resources or []] == ["task-1"]
    linked = tasks.by_todo_task_id(task.id).linked_resources
    listed = await linked.get()
    assert listed is not None
    assert [(r.application_name, r.web_url) for r in listed.value or []] == [
        ("Dynamics 365", "https://crm.test/t")
    ]
    with pytest.raises(ODataError) as refused:
        await linked.post(LinkedResource(application_name="x", external_id="y", display_name="z"))
    assert refused.value.response_status_code == 403
