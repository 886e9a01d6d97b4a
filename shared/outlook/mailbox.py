"""Reads (and the one move) on a mailbox that the sync engine and the admin CLI need.

- the user behind a mailbox id or UPN, with its SMTP address (to tell outgoing mail from incoming);
- well-known and tracked mail folders ("mailFolder resource type", learn.microsoft.com/graph/api/
  resources/mailfolder: inbox, sentitems, ... as folder ids);
- one message as an :class:`OutlookItem`, moving a message (its immutable id survives the move:
  learn.microsoft.com/graph/outlook-immutable-id), and the file attachments of tracked mail
  (learn.microsoft.com/graph/api/resources/fileattachment).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.serialization import Parsable, ParseNode, SerializationWriter
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.calendar_view.calendar_view_request_builder import (
    CalendarViewRequestBuilder,
)
from msgraph.generated.users.item.events.item.instances.instances_request_builder import (
    InstancesRequestBuilder,
)
from msgraph.generated.users.item.mail_folders.mail_folders_request_builder import MailFoldersRequestBuilder
from msgraph.generated.users.item.messages.item.message_item_request_builder import MessageItemRequestBuilder
from msgraph.generated.users.item.messages.item.move.move_post_request_body import MovePostRequestBody
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from shared.domain.model import OutlookItem
from shared.outlook.convert.events import appointment_item
from shared.outlook.convert.messages import email_item
from shared.outlook.delta import CRM_ID_EXPAND, MESSAGE_FIELDS, utc_iso
from shared.outlook.errors import GraphError, graph_errors
from shared.outlook.paging import all_pages


@dataclass(frozen=True)
class MailboxUser:
    id: str
    user_principal_name: str | None
    address: str | None  # the primary SMTP address (``mail``); never logged


@dataclass(frozen=True)
class MailFolder:
    id: str
    display_name: str
    parent_folder_id: str | None


@dataclass(frozen=True)
class Attachment:
    """A file attachment's name, type and bytes (item and reference attachments are skipped)."""

    id: str
    name: str
    content_type: str | None
    content: bytes


class AttachmentReader(Protocol):
    """Reads a message's file attachments (:class:`OutlookMailbox` does)."""

    async def attachments(self, mailbox: str, message_id: str) -> list[Attachment]: ...


@dataclass
class _UserIdentity(Parsable):
    """The three ``user`` properties crmsync reads, as a kiota model (see :meth:`OutlookMailbox.user`)."""

    id: str | None = None
    user_principal_name: str | None = None
    mail: str | None = None

    @staticmethod
    def create_from_discriminator_value(parse_node: ParseNode) -> _UserIdentity:
        return _UserIdentity()

    def get_field_deserializers(self) -> dict[str, Callable[[ParseNode], None]]:
        return {
            "id": lambda node: setattr(self, "id", node.get_str_value()),
            "userPrincipalName": lambda node: setattr(self, "user_principal_name", node.get_str_value()),
            "mail": lambda node: setattr(self, "mail", node.get_str_value()),
        }

    def serialize(self, writer: SerializationWriter) -> None:
        writer.write_str_value("id", self.id)
        writer.write_str_value("userPrincipalName", self.user_principal_name)
        writer.write_str_value("mail", self.mail)


class OutlookMailbox:
    def __init__(self, client: GraphServiceClient) -> None:
        self._client = client

    async def user(self, mailbox: str) -> MailboxUser:
        """The user for an object id or userPrincipalName (raises ``MailboxNotFound``).

        Sent through the SDK's own request adapter, but parsed into :class:`_UserIdentity` instead of
        msgraph's ``User``: the first ``User`` deserialisation imports hundreds of directory models
        (about 6 s), a cold-start cost a Functions worker should not pay for three fields.
        """
        query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
            select=["id", "userPrincipalName", "mail"]
        )
        request = self._client.users.by_user_id(mailbox).to_get_request_information(
            RequestConfiguration(query_parameters=query)
        )
        with graph_errors():
            found = await self._client.request_adapter.send_async(request, _UserIdentity, {"XXX": ODataError})
        if found is None or not found.id:
            raise GraphError("Graph returned a user without an id")
        return MailboxUser(found.id, found.user_principal_name, found.mail)

    async def folder(self, mailbox: str, folder: str) -> MailFolder:
        """A folder by id or well-known name (``inbox``, ``sentitems``, ...), with its real id."""
        with graph_errors():
            found = await self._client.users.by_user_id(mailbox).mail_folders.by_mail_folder_id(folder).get()
        if found is None or not found.id:
            raise GraphError("Graph returned a folder without an id")
        return MailFolder(found.id, found.display_name or "", found.parent_folder_id)

    async def folders(self, mailbox: str) -> list[MailFolder]:
        """The top-level mail folders, all pages (for choosing tracked folders)."""
        query = MailFoldersRequestBuilder.MailFoldersRequestBuilderGetQueryParameters(
            select=["id", "displayName", "parentFolderId"]
        )
        builder = self._client.users.by_user_id(mailbox).mail_folders
        found = await all_pages(builder, RequestConfiguration(query_parameters=query))
        return [MailFolder(f.id, f.display_name or "", f.parent_folder_id) for f in found if f.id]

    async def message(
        self, mailbox: str, message_id: str, *, mailbox_address: str | None = None
    ) -> OutlookItem:
        """One message without its body (same fields as the delta reader), with its CRM stamp."""
        query = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
            select=list(MESSAGE_FIELDS), expand=[CRM_ID_EXPAND]
        )
        with graph_errors():
            found = await (
                self._client.users.by_user_id(mailbox)
                .messages.by_message_id(message_id)
                .get(request_configuration=RequestConfiguration(query_parameters=query))
            )
        if found is None:
            raise GraphError("Graph returned no message")
        return email_item(mailbox, found, mailbox_address=mailbox_address)

    async def calendar_view(self, mailbox: str, start: dt.datetime, end: dt.datetime) -> list[OutlookItem]:
        """Every event occurring in a window, series expanded into occurrences and exceptions
        (learn.microsoft.com/graph/api/user-list-calendarview): the full-resync read of a calendar."""
        query = CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
            start_date_time=utc_iso(start), end_date_time=utc_iso(end)
        )
        builder = self._client.users.by_user_id(mailbox).calendar_view
        found = await all_pages(builder, RequestConfiguration(query_parameters=query))
        return [appointment_item(mailbox, event) for event in found]

    async def event_instances(
        self, mailbox: str, series_id: str, start: dt.datetime, end: dt.datetime
    ) -> list[OutlookItem]:
        """The occurrences and exceptions of one series in a window (learn.microsoft.com/graph/api/
        event-list-instances)."""
        query = InstancesRequestBuilder.InstancesRequestBuilderGetQueryParameters(
            start_date_time=utc_iso(start), end_date_time=utc_iso(end)
        )
        builder = self._client.users.by_user_id(mailbox).events.by_event_id(series_id).instances
        found = await all_pages(builder, RequestConfiguration(query_parameters=query))
        return [appointment_item(mailbox, event) for event in found]

    async def move_message(self, mailbox: str, message_id: str, destination: str) -> OutlookItem:
        """Move a message to a folder (id or well-known name); returns it as it now is."""
        body = MovePostRequestBody(destination_id=destination)
        with graph_errors():
            moved = (
                await self._client.users.by_user_id(mailbox)
                .messages.by_message_id(message_id)
                .move.post(body)
            )
        if moved is None:
            raise GraphError("Graph returned no moved message")
        return email_item(mailbox, moved)

    async def attachments(self, mailbox: str, message_id: str) -> list[Attachment]:
        """The file attachments of a message (read only for tracked mail)."""
        builder = self._client.users.by_user_id(mailbox).messages.by_message_id(message_id).attachments
        return [
            Attachment(found.id, found.name or "", found.content_type, found.content_bytes or b"")
            for found in await all_pages(builder)
            if isinstance(found, FileAttachment) and found.id
        ]
