"""Delta readers: one async generator per resource, one :class:`DeltaPage` per Graph page.

"Use delta query to track changes in Microsoft Graph data" (learn.microsoft.com/graph/
delta-query-overview): a round follows ``@odata.nextLink`` verbatim until a page carries
``@odata.deltaLink``; the next round starts from that delta link. Query options go on the first
call only (they are encoded in the links). The engine commits after every page and only then
stores the page's link (docs/ARCHITECTURE.md), so a crash re-reads one page, never skips one.

Privacy: the message ``$select`` leaves out ``body`` and ``bodyPreview`` (but for a tracked
folder's delta, where every message is tracked); the tracking decision uses only sender,
recipients, subject and ids. :meth:`DeltaReader.fetch_message_body` reads the
body of mail that will be tracked; :meth:`DeltaReader.fetch_message_bodies` reads many in JSON
batches (``shared.outlook.batch``): one HTTP request per 20 tracked messages instead of one each.
Graph's delta pages hold 200 items, its cap on ``odata.maxpagesize`` for delta ("contact: delta API
what limit can we use for odata.maxpagesize", learn.microsoft.com/en-us/answers/a/2052165); the reader
hands them out merged into pages of up to 1,000 (:func:`merged_pages`), Dataverse's limit per
``$batch``: the engine then pays one CRM state read and one ``$batch`` per 1,000 items, not per 200.

The calendar is read with ``calendarView/delta`` (learn.microsoft.com/graph/api/event-delta),
which takes a time window and supports neither ``$select`` nor ``$expand``: an event's stamped CRM
id is therefore not in its delta page (read it with ``OutlookWriter.read_crm_id`` when needed).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.contact import Contact
from msgraph.generated.models.event import Event
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.todo_task import TodoTask
from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import (
    DeltaRequestBuilder as CalendarViewDelta,
)
from msgraph.generated.users.item.contacts.delta.delta_request_builder import (
    DeltaRequestBuilder as ContactsDelta,
)
from msgraph.generated.users.item.contacts.item.contact_item_request_builder import ContactItemRequestBuilder
from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import (
    DeltaRequestBuilder as MessagesDelta,
)
from msgraph.generated.users.item.messages.item.message_item_request_builder import (
    MessageItemRequestBuilder,
)
from msgraph.generated.users.item.todo.lists.item.tasks.delta.delta_request_builder import (
    DeltaRequestBuilder as TasksDelta,
)
from msgraph.graph_service_client import GraphServiceClient

from shared.domain.model import ItemKind, OutlookItem
from shared.outlook.batch import GraphBatch
from shared.outlook.convert.common import CRM_ID_PROPERTY_ID, GraphJson
from shared.outlook.convert.contacts import contact_item
from shared.outlook.convert.events import appointment_item
from shared.outlook.convert.messages import email_item
from shared.outlook.convert.tasks import task_item
from shared.outlook.errors import graph_errors

# What the tracking decision and the neutral Email need; never body or bodyPreview.
MESSAGE_FIELDS = (
    "id",
    "changeKey",
    "categories",
    "parentFolderId",
    "subject",
    "from",
    "sender",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "sentDateTime",
    "receivedDateTime",
    "internetMessageId",
    "conversationId",
    "isDraft",
    "hasAttachments",
)
CONTACT_FIELDS = (
    "id",
    "changeKey",
    "categories",
    "parentFolderId",
    "givenName",
    "middleName",
    "surname",
    "displayName",
    "nickName",
    "emailAddresses",
    "businessPhones",
    "homePhones",
    "mobilePhone",
    "jobTitle",
    "department",
    "companyName",
    "businessAddress",
    "homeAddress",
    "birthday",
    "personalNotes",
)
_ERRORS: dict[str, Any] = {"XXX": ODataError}  # as the SDK's own request builders map Graph errors
CRM_ID_EXPAND = f"singleValueExtendedProperties($filter=id eq '{CRM_ID_PROPERTY_ID}')"


@dataclass(frozen=True)
class DeltaPage:
    """One page of changes; exactly one of ``next_link`` / ``delta_link`` is set."""

    items: list[OutlookItem]
    next_link: str | None
    delta_link: str | None


GRAPH_PAGE_SIZE = 200  # Graph's cap on odata.maxpagesize for delta


async def merged_pages(pages: AsyncIterator[DeltaPage], limit: int) -> AsyncIterator[DeltaPage]:
    """Consecutive delta pages as one page of up to ``limit`` items carrying the last page's link:
    storing it once the merged page is committed never skips an item (a crash re-reads the merged
    pages). An item listed twice keeps its last state. When reading the next page fails, the pages
    read so far are handed out first, so they are committed before the error surfaces."""
    items: dict[str, OutlookItem] = {}
    links: tuple[str | None, str | None] = (None, None)
    while True:
        try:
            page = await anext(pages)
        except StopAsyncIteration:
            return
        except Exception:
            if items:
                yield DeltaPage(list(items.values()), *links)
            raise
        links = (page.next_link, page.delta_link)
        for item in page.items:
            items.pop(item.item_id, None)
            items[item.item_id] = item
        # Hand out before the next page (as large as this one, at most) could go past ``limit``.
        if page.next_link is None or len(items) + len(page.items) > limit:
            yield DeltaPage(list(items.values()), *links)
            items = {}
            if page.next_link is None:
                return


@dataclass(frozen=True)
class MessageBody:
    """A tracked message's body, as Graph stores it (HTML for most mail)."""

    content: str
    is_html: bool


def _message_body(message: Message | None) -> MessageBody:
    body = message.body if message else None
    content_type = getattr(body.content_type, "value", None) if body else None
    return MessageBody(content=(body.content or "") if body else "", is_html=content_type == "html")


def _body_only() -> RequestConfiguration[Any]:
    """``$select=body`` only: the privacy rule of the module docstring, for single and batched reads."""
    query = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(select=["body"])
    return RequestConfiguration(query_parameters=query)


def _event(model: GraphJson) -> Any:
    """A series master's recurrence is kept as the SDK serialises it: such an event goes through the SDK."""
    if model.has("recurrence"):
        return model.to_model(Event)
    return model


def utc_iso(value: dt.datetime) -> str:
    """A window bound as Graph's calendarView wants it: ISO 8601 UTC."""
    if value.tzinfo is None:
        raise ValueError("calendar window bounds must be timezone-aware")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DeltaReader:
    """Reads Outlook changes of one mailbox at a time in pages of up to ``page_size`` items (Graph's
    pages of up to 200, ``Prefer: odata.maxpagesize``, merged)."""

    def __init__(self, client: GraphServiceClient, *, page_size: int = 1000) -> None:
        if page_size < 1:
            raise ValueError("page_size must be positive")
        self._client = client
        self._page_size = page_size

    def _configuration(self, query: Any = None) -> RequestConfiguration[Any]:
        config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
        config.headers.add("Prefer", f"odata.maxpagesize={min(self._page_size, GRAPH_PAGE_SIZE)}")
        return config

    def _pages(
        self,
        builder: Any,
        query: Any,
        link: str | None,
        convert: Callable[[Any], OutlookItem],
    ) -> AsyncIterator[DeltaPage]:
        return merged_pages(self._graph_pages(builder, query, link, convert), self._page_size)

    async def _graph_pages(
        self,
        builder: Any,
        query: Any,
        link: str | None,
        convert: Callable[[Any], OutlookItem],
    ) -> AsyncIterator[DeltaPage]:
        """Page from ``link`` (or a first call with ``query``) until Graph hands out a delta link."""
        while True:
            if link is None:
                info = builder.to_get_request_information(self._configuration(query))
            else:
                info = builder.with_url(link).to_get_request_information(self._configuration())
            # The SDK sends (auth, retries, throttling); the page's JSON goes straight to the neutral
            # model (GraphJson), without an msgraph object graph per item: that parsing was the
            # client's biggest CPU cost on an initial sync.
            with graph_errors():
                raw: Any = await self._client.request_adapter.send_primitive_async(info, "bytes", _ERRORS)
            if not raw:
                raise ValueError("Graph answered a delta call without a body")
            response = json.loads(raw)
            items = [convert(GraphJson(model)) for model in response.get("value") or ()]
            page = DeltaPage(items, response.get("@odata.nextLink"), response.get("@odata.deltaLink"))
            yield page
            if page.next_link is None:
                return
            link = page.next_link

    def messages(
        self,
        mailbox: str,
        *,
        folder: str = "inbox",
        link: str | None = None,
        mailbox_address: str | None = None,
        with_body: bool = False,
    ) -> AsyncIterator[DeltaPage]:
        """Changes to the messages of one mail folder (Graph's message delta is per folder).

        ``with_body``: only for a tracked folder, whose every message is tracked - the page then
        carries the bodies, and none is read on its own (the inbox never: privacy)."""
        builder = self._client.users.by_user_id(mailbox).mail_folders.by_mail_folder_id(folder).messages.delta
        query = MessagesDelta.DeltaRequestBuilderGetQueryParameters(
            select=[*MESSAGE_FIELDS, *(("body",) if with_body else ())], expand=[CRM_ID_EXPAND]
        )
        return self._pages(
            builder, query, link, lambda model: email_item(mailbox, model, mailbox_address=mailbox_address)
        )

    def contacts(self, mailbox: str, *, link: str | None = None) -> AsyncIterator[DeltaPage]:
        """Changes to the contacts of the mailbox's default contacts folder."""
        builder = self._client.users.by_user_id(mailbox).contacts.delta
        query = ContactsDelta.DeltaRequestBuilderGetQueryParameters(
            select=list(CONTACT_FIELDS), expand=[CRM_ID_EXPAND]
        )
        return self._pages(builder, query, link, lambda model: contact_item(mailbox, model))

    def events(
        self,
        mailbox: str,
        *,
        window_start: dt.datetime | None = None,
        window_end: dt.datetime | None = None,
        link: str | None = None,
    ) -> AsyncIterator[DeltaPage]:
        """Changes to events in a calendar window; the window is required without a ``link``.

        Occurrences of a series appear as single items; an event leaving the window comes back as
        ``@removed``.
        """
        builder = self._client.users.by_user_id(mailbox).calendar_view.delta
        query = None
        if link is None:
            if window_start is None or window_end is None:
                raise ValueError("a first calendar delta needs window_start and window_end")
            query = CalendarViewDelta.DeltaRequestBuilderGetQueryParameters(
                start_date_time=utc_iso(window_start), end_date_time=utc_iso(window_end)
            )
        return self._pages(builder, query, link, lambda model: appointment_item(mailbox, _event(model)))

    def tasks(self, mailbox: str, list_id: str, *, link: str | None = None) -> AsyncIterator[DeltaPage]:
        """Changes to the tasks of one To Do list."""
        builder = self._client.users.by_user_id(mailbox).todo.lists.by_todo_task_list_id(list_id).tasks.delta
        query = TasksDelta.DeltaRequestBuilderGetQueryParameters()
        return self._pages(builder, query, link, lambda model: task_item(mailbox, model, list_id=list_id))

    def _message(self, mailbox: str, message_id: str) -> MessageItemRequestBuilder:
        return self._client.users.by_user_id(mailbox).messages.by_message_id(message_id)

    async def fetch_message_body(self, mailbox: str, message_id: str) -> MessageBody:
        """The body of one message: call only for mail the tracking policy decided to track."""
        with graph_errors():
            message = await self._message(mailbox, message_id).get(request_configuration=_body_only())
        return _message_body(message)

    async def fetch_message_bodies(
        self, mailbox: str, message_ids: Sequence[str]
    ) -> dict[str, MessageBody | None]:
        """The bodies of many tracked messages in JSON batches; ``None`` for a message deleted meanwhile
        (404). Any other failure raises the typed error a single :meth:`fetch_message_body` would."""
        requests = {
            message_id: self._message(mailbox, message_id).to_get_request_information(_body_only())
            for message_id in dict.fromkeys(message_ids)
        }
        answers = await GraphBatch(self._client).send_or_missing(requests)
        return {
            message_id: None if answer is None else _message_body(answer.model(Message))
            for message_id, answer in answers.items()
        }

    async def read_items(
        self,
        mailbox: str,
        kind: ItemKind,
        item_ids: Sequence[str],
        *,
        task_list_id: str | None = None,
        mailbox_address: str | None = None,
    ) -> list[OutlookItem]:
        """Items by id, as their delta pages would list them (a parked item's targeted retry), in JSON
        batches; an item gone meanwhile comes back ``removed``. Messages without their body."""
        user = self._client.users.by_user_id(mailbox)
        requests: dict[str, RequestInformation] = {}
        for item_id in dict.fromkeys(item_ids):
            if kind is ItemKind.CONTACT:
                query: Any = ContactItemRequestBuilder.ContactItemRequestBuilderGetQueryParameters(
                    select=list(CONTACT_FIELDS), expand=[CRM_ID_EXPAND]
                )
                info = user.contacts.by_contact_id(item_id).to_get_request_information(
                    RequestConfiguration(query_parameters=query)
                )
            elif kind is ItemKind.EMAIL:
                query = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
                    select=list(MESSAGE_FIELDS), expand=[CRM_ID_EXPAND]
                )
                info = self._message(mailbox, item_id).to_get_request_information(
                    RequestConfiguration(query_parameters=query)
                )
            elif kind is ItemKind.TASK:
                tasks = user.todo.lists.by_todo_task_list_id(task_list_id or "").tasks
                info = tasks.by_todo_task_id(item_id).to_get_request_information()
            else:
                info = user.events.by_event_id(item_id).to_get_request_information()
            requests[item_id] = info
        answers = await GraphBatch(self._client).send_or_missing(requests)
        found: list[OutlookItem] = []
        for item_id, answer in answers.items():
            if answer is None:
                found.append(OutlookItem(mailbox_id=mailbox, item_id=item_id, kind=kind, removed=True))
            elif kind is ItemKind.CONTACT:
                found.append(contact_item(mailbox, answer.model(Contact)))
            elif kind is ItemKind.EMAIL:
                found.append(email_item(mailbox, answer.model(Message), mailbox_address=mailbox_address))
            elif kind is ItemKind.TASK:
                found.append(task_item(mailbox, answer.model(TodoTask), list_id=task_list_id or ""))
            else:
                found.append(appointment_item(mailbox, answer.model(Event)))
        return found
