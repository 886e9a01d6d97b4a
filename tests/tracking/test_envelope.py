"""The privacy rule is structural: the tracking decision's input cannot carry content."""

from __future__ import annotations

import dataclasses

from shared.domain.model import Email, EmailAddress, ItemKind, OutlookItem
from shared.sync.tracking import Envelope

ENVELOPE_FIELDS = {
    "item_id",
    "sender",
    "to",
    "cc",
    "subject",
    "internet_message_id",
    "conversation_id",
    "folder_id",
    "categories",
    "is_outgoing",
}


def test_the_envelope_has_no_field_for_body_bcc_or_attachments() -> None:
    assert {field.name for field in dataclasses.fields(Envelope)} == ENVELOPE_FIELDS


def test_the_envelope_of_a_message_leaves_its_body_behind() -> None:
    email = Email(
        subject="Offer",
        body="confidential terms",
        sender=EmailAddress(address="Buyer@Fabrikam.example"),
        to=(EmailAddress(address="me@contoso.example"),),
        bcc=(EmailAddress(address="hidden@contoso.example"),),
        internet_message_id="<m1@fabrikam.example>",
        conversation_id="conv-1",
        has_attachments=True,
    )
    item = OutlookItem(mailbox_id="mb", item_id="m1", kind=ItemKind.EMAIL, folder_id="inbox", item=email)

    envelope = Envelope.of(item)

    assert envelope is not None
    assert envelope.sender == "buyer@fabrikam.example"
    assert envelope.counterparts() == ("buyer@fabrikam.example",)
    assert "confidential terms" not in repr(envelope)
    assert "hidden@contoso.example" not in repr(envelope)


def test_a_removed_message_has_no_envelope() -> None:
    removed = OutlookItem(mailbox_id="mb", item_id="m1", kind=ItemKind.EMAIL, removed=True)
    assert Envelope.of(removed) is None
