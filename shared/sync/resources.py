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

from shared.domain.model import ItemKind
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


def delta_pages(
    reader: OutlookReader,
    mailbox: Mailbox,
    ref: ResourceRef,
    link: str | None,
    window: tuple[dt.datetime, dt.datetime],
) -> AsyncIterator[DeltaPage]:
    """The resource's delta pages from ``link`` (a full read without one; events in ``window``)."""
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
