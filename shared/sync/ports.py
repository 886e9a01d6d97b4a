"""What the engine needs from the Outlook side, as protocols (the CRM side is
:class:`shared.crm.port.CrmPort`, the store :class:`shared.store.ports.Store`).

The Graph adapters in shared/outlook implement them (:class:`shared.outlook.delta.DeltaReader`,
:class:`shared.outlook.side.GraphOutlookSide`, :class:`shared.outlook.mailbox.OutlookMailbox`);
the tests' in-memory sides implement them too and pass the same contract suites.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from shared.domain.model import Appointment, Contact, Email, ItemKind, OutlookItem, Task
from shared.outlook.delta import DeltaPage, MessageBody
from shared.outlook.mailbox import Attachment

NeutralContent = Contact | Appointment | Task | Email


class OutlookReader(Protocol):
    """Delta reads of one mailbox's resources (pages with next / delta links) and tracked bodies."""

    def messages(
        self,
        mailbox: str,
        *,
        folder: str = "inbox",
        link: str | None = None,
        mailbox_address: str | None = None,
        with_body: bool = False,
    ) -> AsyncIterator[DeltaPage]: ...

    def contacts(self, mailbox: str, *, link: str | None = None) -> AsyncIterator[DeltaPage]: ...

    def events(
        self, mailbox: str, *, window_start: dt.datetime, window_end: dt.datetime, link: str | None = None
    ) -> AsyncIterator[DeltaPage]: ...

    def tasks(self, mailbox: str, list_id: str, *, link: str | None = None) -> AsyncIterator[DeltaPage]: ...

    async def fetch_message_bodies(
        self, mailbox: str, message_ids: Sequence[str]
    ) -> dict[str, MessageBody | None]: ...

    async def read_items(
        self,
        mailbox: str,
        kind: ItemKind,
        item_ids: Sequence[str],
        *,
        task_list_id: str | None = None,
        mailbox_address: str | None = None,
    ) -> list[OutlookItem]:
        """Items by id as a delta page lists them (``removed`` if gone): a parked item's retry."""
        ...


class OutlookSide(Protocol):
    """The Outlook writes a plan may contain, for one mailbox (and one To Do list for tasks)."""

    async def create(self, kind: ItemKind, item: NeutralContent, crm_id: uuid.UUID) -> OutlookItem: ...

    async def update(self, kind: ItemKind, item_id: str, item: NeutralContent) -> OutlookItem: ...

    async def delete(self, kind: ItemKind, item_id: str) -> None: ...

    async def set_categories(self, message_id: str, categories: Sequence[str]) -> None: ...

    async def attachments(self, message_id: str) -> list[Attachment]: ...
