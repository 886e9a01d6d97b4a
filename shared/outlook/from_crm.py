"""Outlook items that start in the CRM: creates that carry the CRM id, and reads of linked items.

An item crmsync creates from a CRM record carries the record's id in the creating POST, so a lost
link is rebuilt from the item and a retried POST duplicates nothing:

- contacts and events: single-value extended properties, the CRM id and an origin marker ("Create
  single-value extended property", learn.microsoft.com/graph/api/singlevaluelegacyextendedproperty-
  post-singlevalueextendedproperties: "in the same POST ... when creating the resource");
- events: a ``transactionId`` derived from the CRM id ("event resource type": "A custom identifier
  specified by a client app for the server to avoid redundant POST operations in case of client
  retries to create the same event");
- To Do tasks: a ``linkedResource`` with ``externalId`` = the CRM id and ``applicationName``
  crmsync, created with the task ("Create todoTask": linkedResources in the request body).

The origin marker (and the task's linkedResource) lets a run tell an item crmsync created from the
CRM from one the user made in Outlook: only the former is removed when its record leaves the user's
synchronization filter.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.models.linked_resource import LinkedResource
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)
from msgraph.generated.users.item.contacts.item.contact_item_request_builder import ContactItemRequestBuilder
from msgraph.generated.users.item.events.item.event_item_request_builder import EventItemRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from shared.domain.model import Appointment, Contact, ItemKind, OutlookItem, Task
from shared.outlook.convert.common import (
    CRM_ID_PROPERTY_ID,
    FROM_CRM,
    ORIGIN_PROPERTY_ID,
    TODO_APPLICATION,
    created_from_crm,
    crm_id_of,
)
from shared.outlook.convert.contacts import contact_item, contact_to_graph
from shared.outlook.convert.events import appointment_item, appointment_to_graph
from shared.outlook.convert.tasks import task_item, task_to_graph
from shared.outlook.errors import GraphError, graph_errors
from shared.outlook.paging import all_pages

_TRANSACTION_NAMESPACE = uuid.UUID("8f6d2b61-3c1e-4b7a-9d0e-6a2f5c4b3e19")
_EXPAND = (
    f"singleValueExtendedProperties($filter=id eq '{CRM_ID_PROPERTY_ID}' or id eq '{ORIGIN_PROPERTY_ID}')"
)

_CREATE_ATTEMPTS = 3


def _no_retry() -> RequestConfiguration[Any]:
    """A create without a transactionId: not retried by the retry handler (CrmOriginWriter._create_once)."""
    return RequestConfiguration(options=[RetryHandlerOption(max_retries=0)])


def transaction_id(crm_id: uuid.UUID) -> str:
    """The event's transactionId: the same for every POST of one CRM appointment."""
    return str(uuid.uuid5(_TRANSACTION_NAMESPACE, str(crm_id)))


def _stamps(crm_id: uuid.UUID) -> list[SingleValueLegacyExtendedProperty]:
    return [
        SingleValueLegacyExtendedProperty(id=CRM_ID_PROPERTY_ID, value=str(crm_id)),
        SingleValueLegacyExtendedProperty(id=ORIGIN_PROPERTY_ID, value=FROM_CRM),
    ]


def _returned(model: Any) -> Any:
    if model is None:
        raise GraphError("Graph answered a write without the item")
    return model


class CrmOriginWriter:
    """Creates Outlook items from CRM records and reads linked items back, for one mailbox."""

    def __init__(self, client: GraphServiceClient, mailbox_id: str, *, task_list_id: str | None) -> None:
        self._user = client.users.by_user_id(mailbox_id)
        self._mailbox = mailbox_id
        self._list = task_list_id

    def _tasks(self) -> Any:
        if self._list is None:
            raise ValueError("To Do tasks are written within a list: pass task_list_id")
        return self._user.todo.lists.by_todo_task_list_id(self._list).tasks

    async def create(self, item: Contact | Appointment | Task, crm_id: uuid.UUID) -> OutlookItem:
        """One POST carrying the CRM id (see the module docstring)."""
        with graph_errors():
            if isinstance(item, Contact):
                contact = contact_to_graph(item)
                contact.single_value_extended_properties = _stamps(crm_id)
                created = await self._create_contact(contact, crm_id)
            elif isinstance(item, Appointment):
                event = appointment_to_graph(item)
                event.single_value_extended_properties = _stamps(crm_id)
                event.transaction_id = transaction_id(crm_id)
                created = appointment_item(self._mailbox, _returned(await self._user.events.post(event)))
            else:
                task = task_to_graph(item)
                task.linked_resources = [
                    LinkedResource(
                        application_name=TODO_APPLICATION,
                        external_id=str(crm_id),
                        display_name="Dynamics 365",
                    )
                ]
                created = await self._create_task(task, crm_id)
        return created.model_copy(update={"crm_id": str(crm_id)})

    async def _create_contact(self, contact: Any, crm_id: uuid.UUID) -> OutlookItem:
        """A contact has no transactionId: see :meth:`_create_once`."""
        return await self._create_once(
            lambda config: self._user.contacts.post(contact, request_configuration=config),
            lambda answer: contact_item(self._mailbox, answer),
            lambda: self.find(ItemKind.CONTACT, crm_id),
        )

    async def _create_task(self, task: Any, crm_id: uuid.UUID) -> OutlookItem:
        """A To Do task has no transactionId either: see :meth:`_create_once` and :meth:`find_task`."""
        return await self._create_once(
            lambda config: self._tasks().post(task, request_configuration=config),
            lambda answer: task_item(self._mailbox, answer, list_id=self._list or ""),
            lambda: self.find_task(str(task.title or ""), crm_id),
        )

    async def _create_once(
        self,
        post: Callable[[RequestConfiguration[Any] | None], Awaitable[Any]],
        convert: Callable[[Any], OutlookItem],
        find: Callable[[], Awaitable[OutlookItem | None]],
    ) -> OutlookItem:
        """A POST whose outcome is unknown (a 5xx or a dropped connection after Graph may have
        committed it) is not retried blindly: the item is looked up by its CRM id first, and posted
        again only when it is not there."""
        for _ in range(_CREATE_ATTEMPTS - 1):
            try:
                with graph_errors():
                    answer = await post(_no_retry())
                return convert(_returned(answer))
            except (GraphError, httpx.TransportError) as error:
                status = error.status if isinstance(error, GraphError) else None
                if status == 429:
                    break  # refused, so not created: the retry handler waits out Retry-After
                if status is not None and status < 500:
                    raise  # Graph refused it: nothing was created
                found = await find()
                if found is not None:
                    return found
        with graph_errors():
            answer = await post(None)
        return convert(_returned(answer))

    async def find_task(self, title: str, crm_id: uuid.UUID) -> OutlookItem | None:
        """The To Do task of the list whose crmsync linkedResource has ``externalId`` = ``crm_id``.
        A list cannot be filtered on linkedResources ("List tasks" documents only some query
        options), so the list is read (a request per page) and each task with the posted title is
        asked for its linkedResources ("List linkedResources", learn.microsoft.com/graph/api/
        todotask-list-linkedresources): a request per same-titled task, after an unknown outcome only."""
        for model in await all_pages(self._tasks()):
            if model.title != title or not model.id:
                continue
            linked = await self._tasks().by_todo_task_id(model.id).linked_resources.get()
            for resource in linked.value if linked and linked.value else []:
                if resource.application_name == TODO_APPLICATION and resource.external_id == str(crm_id):
                    item = task_item(self._mailbox, model, list_id=self._list or "")
                    return item.model_copy(update={"crm_id": str(crm_id)})
        return None

    async def find(self, kind: ItemKind, crm_id: uuid.UUID) -> OutlookItem | None:
        """The contact or event stamped with ``crm_id`` (one GET filtered on the extended property,
        "Get singleValueExtendedProperty", learn.microsoft.com/graph/api/singlevaluelegacyextended
        property-get: ``$filter=singleValueExtendedProperties/Any(ep: ep/id eq '...' and ep/value eq
        '...')``), ``None`` when there is none."""
        found = await self._stamped(kind, CRM_ID_PROPERTY_ID, str(crm_id), top=1, pages=False)
        return found.get(crm_id)

    async def created_items(self, kind: ItemKind) -> dict[uuid.UUID, OutlookItem]:
        """Every contact or event crmsync created from a CRM record in this mailbox (its origin
        marker), by CRM id: a fill links one whose link write was lost instead of creating it twice.
        One request per 1,000 items; To Do tasks have no extended properties (none are listed)."""
        if kind is ItemKind.TASK:
            return {}
        return await self._stamped(kind, ORIGIN_PROPERTY_ID, FROM_CRM, top=1000, pages=True)

    async def _stamped(
        self, kind: ItemKind, property_id: str, value: str, *, top: int, pages: bool
    ) -> dict[uuid.UUID, OutlookItem]:
        condition = (
            f"singleValueExtendedProperties/any(ep: ep/id eq '{property_id}' and ep/value eq '{value}')"
        )
        if kind is ItemKind.CONTACT:
            builder: Any = self._user.contacts
            query: Any = builder.ContactsRequestBuilderGetQueryParameters(
                filter=condition, expand=[_EXPAND], top=top
            )
            convert: Any = contact_item
        elif kind is ItemKind.APPOINTMENT:
            builder = self._user.events
            query = builder.EventsRequestBuilderGetQueryParameters(
                filter=condition, expand=[_EXPAND], top=top
            )
            convert = appointment_item
        else:
            return {}
        config = RequestConfiguration(query_parameters=query)
        if pages:
            models = await all_pages(builder, config)
        else:
            with graph_errors():
                page = await builder.get(request_configuration=config)
            models = list(page.value or ()) if page is not None else []
        items: dict[uuid.UUID, OutlookItem] = {}
        for model in models:
            stamp = crm_id_of(model.single_value_extended_properties)
            if stamp:
                items[uuid.UUID(stamp)] = convert(self._mailbox, model).model_copy(update={"crm_id": stamp})
        return items

    async def read(
        self, kind: ItemKind, item_id: str, *, origin: bool = False
    ) -> tuple[OutlookItem | None, bool]:
        """The item as Graph has it (``None``: gone) and, when ``origin`` is asked for, whether
        crmsync created it from a CRM record (a task's linkedResources cost one more request)."""
        try:
            with graph_errors():
                if kind is ItemKind.CONTACT:
                    query: Any = ContactItemRequestBuilder.ContactItemRequestBuilderGetQueryParameters(
                        expand=[_EXPAND]
                    )
                    found: Any = await self._user.contacts.by_contact_id(item_id).get(
                        request_configuration=RequestConfiguration(query_parameters=query)
                    )
                    return self._with_stamp(contact_item(self._mailbox, _returned(found)), found)
                if kind is ItemKind.APPOINTMENT:
                    query = EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters(
                        expand=[_EXPAND]
                    )
                    found = await self._user.events.by_event_id(item_id).get(
                        request_configuration=RequestConfiguration(query_parameters=query)
                    )
                    return self._with_stamp(appointment_item(self._mailbox, _returned(found)), found)
                task = self._tasks().by_todo_task_id(item_id)
                read = task_item(self._mailbox, _returned(await task.get()), list_id=self._list or "")
                if not origin:
                    return read, False
                linked = await task.linked_resources.get()
                ours = [
                    r
                    for r in (linked.value if linked and linked.value else [])
                    if r.application_name == TODO_APPLICATION and r.external_id
                ]
                crm_id = ours[0].external_id if ours else None
                return read.model_copy(update={"crm_id": crm_id}), bool(ours)
        except GraphError as error:
            if error.status in (404, 410):
                return None, False
            raise

    @staticmethod
    def _with_stamp(item: OutlookItem, model: Any) -> tuple[OutlookItem, bool]:
        properties = model.single_value_extended_properties
        return item.model_copy(update={"crm_id": crm_id_of(properties)}), created_from_crm(properties)
