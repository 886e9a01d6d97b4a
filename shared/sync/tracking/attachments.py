"""Attachments of tracked mail -> Dataverse ``activitymimeattachment`` rows.

Only file attachments are copied ("fileAttachment resource type", learn.microsoft.com/graph/api/
resources/fileattachment: ``contentBytes``); item and reference attachments are not. Each becomes an
``activitymimeattachment`` bound to the email (``objectid_email@odata.bind``, ``objecttypecode`` =
``email``; ``body`` = base64, ``filename``, ``mimetype``: "ActivityMimeAttachment table reference",
learn.microsoft.com/power-apps/developer/data-platform/reference/entities/activitymimeattachment).
The row id is derived from the email id and the Graph attachment id, so a rerun upserts the same rows.

A file larger than the mailbox's ``max_attachment_bytes`` (default 5 MB, Dynamics' default maximum
file size for attachments) is not copied; the email's ``subcategory`` column records it as
``crmsync skipped attachments: <file name> (<reason>); ...`` (250 characters at most), so CRM users
see on the email itself that a file is missing and why.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.crm.port import CrmPort, FieldValue, RecordRef, Upsert
from shared.outlook.mailbox import Attachment

ATTACHMENT_TABLE = "activitymimeattachment"
SKIPPED_COLUMN = "subcategory"
SKIPPED_PREFIX = "crmsync skipped attachments: "
_SKIPPED_MAX = 250
_NAMESPACE = uuid.UUID("5f0b1d1e-8f0e-4b8e-9a57-2d8c3c1c7a11")


class AttachmentSource(Protocol):
    """Reads a message's file attachments (``shared.outlook.mailbox.OutlookMailbox`` implements it)."""

    async def attachments(self, message_id: str) -> list[Attachment]: ...


@dataclass(frozen=True, slots=True)
class SkippedAttachment:
    file_name: str
    reason: str


@dataclass(frozen=True, slots=True)
class CopiedAttachments:
    copied: int
    skipped: tuple[SkippedAttachment, ...]


def attachment_record_id(email_id: uuid.UUID, attachment_id: str) -> uuid.UUID:
    """The deterministic ``activitymimeattachmentid`` of one attachment of one CRM email."""
    return uuid.uuid5(_NAMESPACE, f"{email_id}|{attachment_id}")


def skipped_note(skipped: Sequence[SkippedAttachment]) -> str:
    """What the email's ``subcategory`` says about files not copied (fitted to the column)."""
    note = SKIPPED_PREFIX + "; ".join(f"{entry.file_name} ({entry.reason})" for entry in skipped)
    return note if len(note) <= _SKIPPED_MAX else note[: _SKIPPED_MAX - 3] + "..."


async def copy_attachments(
    *,
    crm: CrmPort,
    caller: str,
    source: AttachmentSource,
    message_id: str,
    email_id: uuid.UUID,
    max_bytes: int,
) -> CopiedAttachments:
    """Copy the message's file attachments to the CRM email; record the ones too large to copy."""
    copied = 0
    skipped: list[SkippedAttachment] = []
    for attachment in await source.attachments(message_id):
        if len(attachment.content) > max_bytes:
            skipped.append(
                SkippedAttachment(attachment.name, f"{len(attachment.content)} bytes > limit {max_bytes}")
            )
            continue
        fields: dict[str, FieldValue] = {
            "objectid": RecordRef("email", email_id),
            "objecttypecode": "email",
            "filename": attachment.name,
            "mimetype": attachment.content_type or "application/octet-stream",
            "body": base64.b64encode(attachment.content).decode("ascii"),
        }
        record_id = attachment_record_id(email_id, attachment.id)
        await crm.upsert(Upsert(ATTACHMENT_TABLE, fields, id=record_id), caller=caller)
        copied += 1
    if skipped:
        note = Upsert("email", {SKIPPED_COLUMN: skipped_note(skipped)}, id=email_id, if_match="*")
        await crm.upsert(note, caller=caller)
    return CopiedAttachments(copied, tuple(skipped))
