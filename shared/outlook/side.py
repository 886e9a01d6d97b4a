"""The engine's Outlook side for one mailbox, on the Graph writers and mailbox reads.

Implements the ``OutlookSide`` protocol of shared/sync/ports.py: the writes a plan may contain
(creates, updates, deletes, a message's categories) and the attachment reads of a tracked
message. To Do tasks are addressed within a list, so a side is bound to the run's task list.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from shared.domain.model import Appointment, Contact, Email, ItemKind, OutlookItem, Task
from shared.outlook.from_crm import CrmOriginWriter
from shared.outlook.mailbox import Attachment, AttachmentReader
from shared.outlook.writers import OutlookWriter

NeutralContent = Contact | Appointment | Task | Email


class GraphOutlookSide:
    """One mailbox's Outlook writes (and attachment reads) through Microsoft Graph."""

    def __init__(
        self,
        writer: OutlookWriter,
        mailbox_id: str,
        *,
        reader: AttachmentReader | None = None,
        task_list_id: str | None = None,
        from_crm: CrmOriginWriter | None = None,
    ) -> None:
        self._writer = writer
        self._from_crm = from_crm
        self._reader = reader
        self._mailbox = mailbox_id
        self._task_list = task_list_id

    def _list(self) -> str:
        if self._task_list is None:
            raise ValueError("To Do tasks are written within a list: pass task_list_id")
        return self._task_list

    async def create(self, kind: ItemKind, item: NeutralContent, crm_id: uuid.UUID) -> OutlookItem:
        if self._from_crm is not None and not isinstance(item, Email):
            return await self._from_crm.create(item, crm_id)  # the CRM -> Outlook run's creates
        if isinstance(item, Contact):
            return await self._writer.create_contact(self._mailbox, item, crm_id=str(crm_id))
        if isinstance(item, Appointment):
            return await self._writer.create_event(self._mailbox, item, crm_id=str(crm_id))
        if isinstance(item, Task):
            return await self._writer.create_task(self._mailbox, self._list(), item)
        raise ValueError("emails are never created in Outlook from the CRM")

    async def update(self, kind: ItemKind, item_id: str, item: NeutralContent) -> OutlookItem:
        if isinstance(item, Contact):
            return await self._writer.update_contact(self._mailbox, item_id, item, crm_id=None)
        if isinstance(item, Appointment):
            return await self._writer.update_event(self._mailbox, item_id, item, crm_id=None)
        if isinstance(item, Task):
            return await self._writer.update_task(self._mailbox, self._list(), item_id, item)
        raise ValueError("emails are never changed in Outlook from the CRM")

    async def delete(self, kind: ItemKind, item_id: str) -> None:
        if kind is ItemKind.CONTACT:
            await self._writer.delete_contact(self._mailbox, item_id)
        elif kind is ItemKind.APPOINTMENT:
            await self._writer.delete_event(self._mailbox, item_id)
        elif kind is ItemKind.TASK:
            await self._writer.delete_task(self._mailbox, self._list(), item_id)
        else:
            raise ValueError("emails are never deleted in Outlook by the sync")

    async def set_categories(self, message_id: str, categories: Sequence[str]) -> None:
        await self._writer.set_message_categories(self._mailbox, message_id, list(categories))

    async def attachments(self, message_id: str) -> list[Attachment]:
        if self._reader is None:
            raise ValueError("reading attachments needs the mailbox reader")
        return await self._reader.attachments(self._mailbox, message_id)
