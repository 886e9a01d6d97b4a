"""Writes to Outlook from the neutral model: contacts, events, To Do tasks, categories, the CRM id stamp.

Every create/update returns the item as Graph now has it (:class:`OutlookItem`, immutable id and
new change key), which the engine stores in the link row to recognise the echo of its own write.
Deletes treat 404/410 as done (the item is gone either way), so a retried job is harmless.

The CRM id is a single-value extended property ("Add custom data to resources using extended
properties", learn.microsoft.com/graph/extensibility-overview; "Create single-value extended
property", learn.microsoft.com/graph/api/singlevaluelegacyextendedproperty-post-
singlevalueextendedproperties):
written in the same POST/PATCH as the item, read back with ``$expand=singleValueExtendedProperties
($filter=id eq '...')``. To Do tasks have no extended properties in Graph v1.0, so tasks carry no
stamp. Master categories: learn.microsoft.com/graph/api/outlookuser-post-mastercategories.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.category_color import CategoryColor
from msgraph.generated.models.contact import Contact as GraphContact
from msgraph.generated.models.event import Event
from msgraph.generated.models.message import Message
from msgraph.generated.models.outlook_category import OutlookCategory
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)
from msgraph.generated.users.item.contacts.item.contact_item_request_builder import ContactItemRequestBuilder
from msgraph.generated.users.item.events.item.event_item_request_builder import EventItemRequestBuilder
from msgraph.generated.users.item.messages.item.message_item_request_builder import MessageItemRequestBuilder
from msgraph.generated.users.item.outlook.master_categories.master_categories_request_builder import (
    MasterCategoriesRequestBuilder,
)
from msgraph.graph_service_client import GraphServiceClient

from shared.domain.model import Appointment, Contact, ItemKind, OutlookItem, Task
from shared.outlook.convert.common import CRM_ID_PROPERTY_ID, crm_id_of
from shared.outlook.convert.contacts import contact_item, contact_to_graph
from shared.outlook.convert.events import appointment_item, appointment_to_graph
from shared.outlook.convert.tasks import task_item, task_to_graph
from shared.outlook.delta import CRM_ID_EXPAND
from shared.outlook.errors import GraphError, gone_is_done, graph_errors
from shared.outlook.from_crm import CrmOriginWriter
from shared.outlook.paging import all_pages

STAMPABLE_KINDS = frozenset({ItemKind.EMAIL, ItemKind.CONTACT, ItemKind.APPOINTMENT})
_ITEM_QUERY: dict[ItemKind, Any] = {
    ItemKind.EMAIL: MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters,
    ItemKind.CONTACT: ContactItemRequestBuilder.ContactItemRequestBuilderGetQueryParameters,
    ItemKind.APPOINTMENT: EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters,
}
_ITEM_MODEL: dict[ItemKind, Any] = {
    ItemKind.EMAIL: Message,
    ItemKind.CONTACT: GraphContact,
    ItemKind.APPOINTMENT: Event,
}


def _stamp(crm_id: str | None) -> list[SingleValueLegacyExtendedProperty] | None:
    if crm_id is None:
        return None
    return [SingleValueLegacyExtendedProperty(id=CRM_ID_PROPERTY_ID, value=crm_id)]


def _decorate(model: Any, *, crm_id: str | None, categories: Sequence[str] | None) -> None:
    """Add the CRM id stamp and categories to an outgoing contact/event body."""
    stamp = _stamp(crm_id)
    if stamp is not None:
        model.single_value_extended_properties = stamp
    if categories is not None:
        model.categories = list(categories)


def _returned(model: Any) -> Any:
    if model is None:
        raise GraphError("Graph answered a write without the item")
    return model


class OutlookWriter:
    """Writes one mailbox's Outlook items on behalf of the sync engine."""

    def __init__(self, client: GraphServiceClient) -> None:
        self._client = client

    def _user(self, mailbox: str) -> Any:
        return self._client.users.by_user_id(mailbox)

    def _item(self, mailbox: str, kind: ItemKind, item_id: str, *, list_id: str | None = None) -> Any:
        user = self._user(mailbox)
        if kind is ItemKind.EMAIL:
            return user.messages.by_message_id(item_id)
        if kind is ItemKind.CONTACT:
            return user.contacts.by_contact_id(item_id)
        if kind is ItemKind.APPOINTMENT:
            return user.events.by_event_id(item_id)
        if list_id is None:
            raise ValueError("To Do tasks are addressed within a list: pass list_id")
        return user.todo.lists.by_todo_task_list_id(list_id).tasks.by_todo_task_id(item_id)

    # --- contacts --------------------------------------------------------------------------------

    async def create_contact(
        self,
        mailbox: str,
        contact: Contact,
        *,
        crm_id: str | None = None,
        categories: Sequence[str] | None = None,
    ) -> OutlookItem:
        body = contact_to_graph(contact)
        _decorate(body, crm_id=crm_id, categories=categories)
        with graph_errors():
            created = _returned(await self._user(mailbox).contacts.post(body))
        return contact_item(mailbox, created).model_copy(update={"crm_id": crm_id})

    async def update_contact(
        self,
        mailbox: str,
        item_id: str,
        contact: Contact,
        *,
        crm_id: str | None = None,
        categories: Sequence[str] | None = None,
    ) -> OutlookItem:
        body = contact_to_graph(contact)
        _decorate(body, crm_id=crm_id, categories=categories)
        with graph_errors():
            updated = _returned(await self._item(mailbox, ItemKind.CONTACT, item_id).patch(body))
        return contact_item(mailbox, updated).model_copy(update={"crm_id": crm_id})

    async def delete_contact(self, mailbox: str, item_id: str) -> None:
        with gone_is_done():
            await self._item(mailbox, ItemKind.CONTACT, item_id).delete()

    # --- events ----------------------------------------------------------------------------------

    async def create_event(
        self,
        mailbox: str,
        appointment: Appointment,
        *,
        crm_id: str | None = None,
        categories: Sequence[str] | None = None,
    ) -> OutlookItem:
        body = appointment_to_graph(appointment)
        _decorate(body, crm_id=crm_id, categories=categories)
        with graph_errors():
            created = _returned(await self._user(mailbox).events.post(body))
        return appointment_item(mailbox, created).model_copy(update={"crm_id": crm_id})

    async def update_event(
        self,
        mailbox: str,
        item_id: str,
        appointment: Appointment,
        *,
        crm_id: str | None = None,
        categories: Sequence[str] | None = None,
    ) -> OutlookItem:
        body = appointment_to_graph(appointment)
        _decorate(body, crm_id=crm_id, categories=categories)
        with graph_errors():
            updated = _returned(await self._item(mailbox, ItemKind.APPOINTMENT, item_id).patch(body))
        return appointment_item(mailbox, updated).model_copy(update={"crm_id": crm_id})

    async def delete_event(self, mailbox: str, item_id: str) -> None:
        with gone_is_done():
            await self._item(mailbox, ItemKind.APPOINTMENT, item_id).delete()

    # --- To Do tasks -----------------------------------------------------------------------------

    async def default_task_list(self, mailbox: str) -> str:
        """The id of the mailbox's default To Do list ("Tasks"), where CRM tasks go."""
        for task_list in await all_pages(self._user(mailbox).todo.lists):
            if getattr(task_list.wellknown_list_name, "value", None) == "defaultList" and task_list.id:
                return str(task_list.id)
        raise GraphError("the mailbox has no default To Do list", status=404, code="defaultListMissing")

    async def create_task(
        self, mailbox: str, list_id: str, task: Task, *, categories: Sequence[str] | None = None
    ) -> OutlookItem:
        body = task_to_graph(task)
        if categories is not None:
            body.categories = list(categories)
        with graph_errors():
            created = _returned(
                await self._user(mailbox).todo.lists.by_todo_task_list_id(list_id).tasks.post(body)
            )
        return task_item(mailbox, created, list_id=list_id)

    async def update_task(
        self, mailbox: str, list_id: str, item_id: str, task: Task, *, categories: Sequence[str] | None = None
    ) -> OutlookItem:
        body = task_to_graph(task)
        if categories is not None:
            body.categories = list(categories)
        with graph_errors():
            updated = _returned(
                await self._item(mailbox, ItemKind.TASK, item_id, list_id=list_id).patch(body)
            )
        return task_item(mailbox, updated, list_id=list_id)

    async def delete_task(self, mailbox: str, list_id: str, item_id: str) -> None:
        with gone_is_done():
            await self._item(mailbox, ItemKind.TASK, item_id, list_id=list_id).delete()

    # --- categories ------------------------------------------------------------------------------

    async def set_message_categories(self, mailbox: str, message_id: str, categories: Sequence[str]) -> None:
        """Replace a message's categories (e.g. add the "Tracked to CRM" category)."""
        with graph_errors():
            await self._item(mailbox, ItemKind.EMAIL, message_id).patch(Message(categories=list(categories)))

    async def ensure_master_category(
        self, mailbox: str, name: str, color: CategoryColor = CategoryColor.Preset4
    ) -> None:
        """Make sure the mailbox's master category list has ``name`` (case-insensitive, as Outlook)."""
        categories = self._user(mailbox).outlook.master_categories
        query = MasterCategoriesRequestBuilder.MasterCategoriesRequestBuilderGetQueryParameters(
            select=["displayName"]
        )
        existing = await all_pages(categories, RequestConfiguration(query_parameters=query))
        if any((category.display_name or "").casefold() == name.casefold() for category in existing):
            return
        try:
            with graph_errors():
                await categories.post(OutlookCategory(display_name=name, color=color))
        except GraphError as exc:
            if exc.status != 409:  # created meanwhile by another writer: fine
                raise

    # --- the CRM id stamp (set by the creating request; read to find a pair again) -------------

    async def find_created(
        self, mailbox: str, kind: ItemKind, crm_id: uuid.UUID, *, title: str, task_list_id: str | None
    ) -> OutlookItem | None:
        """The item a CRM -> Outlook run created for ``crm_id`` (found by the CRM id it carries; a
        To Do task by the title it was posted with, see :meth:`CrmOriginWriter.find_task`)."""
        origin = CrmOriginWriter(self._client, mailbox, task_list_id=task_list_id)
        if kind is ItemKind.TASK:
            return await origin.find_task(title, crm_id)
        return await origin.find(kind, crm_id)

    async def read_crm_id(self, mailbox: str, kind: ItemKind, item_id: str) -> str | None:
        """The CRM id stamped on an item, or ``None`` if it has none."""
        if kind not in STAMPABLE_KINDS:
            return None
        parameters = _ITEM_QUERY[kind](select=["id"], expand=[CRM_ID_EXPAND])
        with graph_errors():
            found = await self._item(mailbox, kind, item_id).get(
                request_configuration=RequestConfiguration(query_parameters=parameters)
            )
        return crm_id_of(found.single_value_extended_properties if found else None)
