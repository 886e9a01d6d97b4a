"""Subscription resource strings <-> what they mean: the item kind and where it lives.

Inverse of :func:`shared.outlook.subscriptions.resource_path` for one mailbox; a job naming any
other resource (another mailbox's, or one crmsync does not sync) is refused.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.domain.model import ItemKind, OutlookItem
from shared.outlook.delta import DeltaPage
from shared.store.records import Mailbox

if TYPE_CHECKING:
    from shared.sync.ports import OutlookReader

_RESOURCE = re.compile(
    r"^users/(?P<mailbox>[^/]+)/(?:"
    r"mailFolders\('(?P<folder>[^']+)'\)/messages"
    r"|(?P<plain>contacts|events)"
    r"|todo/lists/(?P<task_list>.+)/tasks)$"
)


class InvalidResource(ValueError):
    """A sync job names a resource crmsync does not sync (or another mailbox's)."""


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """What a subscription resource string means: the item kind and where it lives."""

    kind: ItemKind
    mail_folder: str | None = None
    task_list_id: str | None = None


def parse_resource(mailbox_id: str, resource: str) -> ResourceRef:
    """Inverse of :func:`~shared.outlook.subscriptions.resource_path` for one mailbox."""
    match = _RESOURCE.match(resource)
    if match is None or match["mailbox"] != mailbox_id:
        raise InvalidResource("not a resource of this mailbox that crmsync syncs")
    if match["folder"]:
        return ResourceRef(ItemKind.EMAIL, mail_folder=match["folder"])
    if match["task_list"]:
        return ResourceRef(ItemKind.TASK, task_list_id=match["task_list"])
    return ResourceRef(ItemKind.CONTACT if match["plain"] == "contacts" else ItemKind.APPOINTMENT)


# Delta pages are read 200 items at a time (Graph's cap) but processed up to this many at once: one
# CRM state read and one ``$batch`` per 1,000 items (Dataverse's limit per batch) instead of per 200.
MERGED_PAGE_ITEMS = 1000


async def merged_pages(
    pages: AsyncIterator[DeltaPage], limit: int = MERGED_PAGE_ITEMS
) -> AsyncIterator[DeltaPage]:
    """Consecutive delta pages as one page of up to about ``limit`` items, carrying the last page's
    link: storing it after the merged page commits still never skips an item (a crash re-reads at most
    the merged pages). An item listed twice in a round keeps its last state. When reading the next page
    fails, the pages read so far are handed out first, so they are committed before the error."""
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
        if page.next_link is None or len(items) + len(page.items) > limit:
            yield DeltaPage(list(items.values()), page.next_link, page.delta_link)
            items = {}
            if page.next_link is None:
                return


def delta_pages(
    reader: OutlookReader,
    mailbox: Mailbox,
    ref: ResourceRef,
    link: str | None,
    window: tuple[dt.datetime, dt.datetime],
) -> AsyncIterator[DeltaPage]:
    """The resource's delta pages from ``link`` (a full read without one; events in ``window``),
    merged (:func:`merged_pages`)."""
    return merged_pages(_graph_pages(reader, mailbox, ref, link, window))


def _graph_pages(
    reader: OutlookReader,
    mailbox: Mailbox,
    ref: ResourceRef,
    link: str | None,
    window: tuple[dt.datetime, dt.datetime],
) -> AsyncIterator[DeltaPage]:
    mailbox_id = mailbox.mailbox_id
    if ref.kind is ItemKind.EMAIL:
        folder = ref.mail_folder or "inbox"
        # A tracked folder's every message is tracked: its delta carries the bodies (a subfolder's
        # does not: tracking resolves its ancestry per message).
        with_body = folder != "inbox" and folder in mailbox.settings.tracked_folders
        return reader.messages(
            mailbox_id, folder=folder, link=link, mailbox_address=mailbox.upn, with_body=with_body
        )
    if ref.kind is ItemKind.CONTACT:
        return reader.contacts(mailbox_id, link=link)
    if ref.kind is ItemKind.TASK:
        return reader.tasks(mailbox_id, ref.task_list_id or "", link=link)
    start, end = window
    return reader.events(mailbox_id, window_start=start, window_end=end, link=link)
