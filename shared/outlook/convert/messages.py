"""Messages: Graph ``message`` -> the neutral :class:`~shared.domain.model.Email` (read only)."""

from __future__ import annotations

from msgraph.generated.models.message import Message

from shared.domain.model import Email, ItemKind, OutlookItem
from shared.outlook.convert.common import (
    email_address_of,
    email_addresses_of,
    enum_value,
    is_removed,
    item_envelope,
    removed_item,
)


def email_from_graph(message: Message, *, mailbox_address: str | None = None) -> Email:
    """The tracking-relevant view of a message; ``body`` only if the message was read with it.

    ``is_outgoing`` compares the sender with ``mailbox_address`` (the mailbox's own SMTP address).
    """
    sender = email_address_of(message.from_) or email_address_of(message.sender)
    body = message.body.content if message.body else None
    return Email(
        subject=message.subject,
        body=body,
        body_is_html=bool(message.body and enum_value(message.body.content_type) == "html"),
        sender=sender,
        to=email_addresses_of(message.to_recipients),
        cc=email_addresses_of(message.cc_recipients),
        bcc=email_addresses_of(message.bcc_recipients),
        sent=message.sent_date_time,
        received=message.received_date_time,
        internet_message_id=message.internet_message_id,
        conversation_id=message.conversation_id,
        is_outgoing=bool(
            sender and mailbox_address and sender.address.casefold() == mailbox_address.casefold()
        ),
        is_draft=bool(message.is_draft),
        has_attachments=bool(message.has_attachments),
    )


def email_item(mailbox_id: str, message: Message, *, mailbox_address: str | None = None) -> OutlookItem:
    if is_removed(message):
        return removed_item(mailbox_id, message, ItemKind.EMAIL)
    envelope = item_envelope(mailbox_id, message, ItemKind.EMAIL)
    return OutlookItem(**envelope, item=email_from_graph(message, mailbox_address=mailbox_address))
