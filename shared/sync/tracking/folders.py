"""Tracked folders: which CRM record a message's folder (or one of its ancestors) is tracked regarding.

Dynamics' folder-level tracking maps an Exchange folder to a record, and every message in it is
tracked regarding that record ("Configure Exchange folder-level tracking rules",
learn.microsoft.com/power-apps/developer/data-platform/configure-exchange-folder-level-tracking-rules).
crmsync lets subfolders inherit the mapping of their nearest mapped ancestor. The ancestry comes from
``parentFolderId`` ("mailFolder resource type", learn.microsoft.com/graph/api/resources/mailfolder),
one folder GET per folder not seen yet in this run; the tree is cached for the run.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Protocol

from msgraph.graph_service_client import GraphServiceClient

from shared.domain.mailbox_settings import CrmRecordRef, MailboxSettings
from shared.outlook.errors import ItemNotFound
from shared.outlook.mailbox import MailFolder
from shared.outlook.paging import all_pages
from shared.sync.concurrency import Memo

MAX_DEPTH = 32  # deeper than Outlook allows; stops a cycle in a broken tree


class FolderSource(Protocol):
    """What the tree reads (``shared.outlook.mailbox.OutlookMailbox`` implements it)."""

    async def folder(self, mailbox: str, folder: str) -> MailFolder: ...


class FolderTree:
    """One mailbox's folder ancestry, read lazily and cached for one run."""

    def __init__(self, source: FolderSource, mailbox_id: str) -> None:
        self._source = source
        self._mailbox = mailbox_id
        self._parents: Memo[str, str | None] = Memo()  # shared by a page's concurrent decisions

    async def ancestry(self, folder_id: str) -> list[str]:
        """``folder_id`` and its ancestors, nearest first."""
        chain: list[str] = []
        current: str | None = folder_id
        while current is not None and current not in chain and len(chain) < MAX_DEPTH:
            chain.append(current)
            current = await self._parents.get(current, functools.partial(self._parent, current))
        return chain

    async def _parent(self, folder_id: str) -> str | None:
        """The parent's id; ``None`` above the top (the root's parent is not a readable folder)."""
        try:
            return (await self._source.folder(self._mailbox, folder_id)).parent_folder_id
        except ItemNotFound:
            return None

    async def regarding(
        self, folder_id: str | None, tracked_folders: Mapping[str, CrmRecordRef]
    ) -> CrmRecordRef | None:
        """The record the nearest tracked folder at or above ``folder_id`` maps to, if any."""
        if folder_id is None or not tracked_folders:
            return None
        for folder in await self.ancestry(folder_id):
            if folder in tracked_folders:
                return tracked_folders[folder]
        return None


async def folders_to_watch(
    graph: GraphServiceClient, mailbox_id: str, settings: MailboxSettings
) -> list[str]:
    """The mail folders whose message delta tracking needs besides the inbox: every tracked folder
    and all its subfolders (Graph's message delta is per folder, not recursive: "message: delta",
    learn.microsoft.com/graph/api/message-delta), and Sent Items when sent mail may be tracked.

    Onboarding subscribes each (``resource_path(MESSAGES, mailbox, mail_folder=<id>)``); one
    ``childFolders`` listing per folder in a tracked subtree.
    """
    watched: list[str] = ["sentitems"] if settings.track_sent_items else []
    pending = list(settings.tracked_folders)
    while pending:
        folder = pending.pop(0)
        if folder in watched:
            continue
        watched.append(folder)
        children = graph.users.by_user_id(mailbox_id).mail_folders.by_mail_folder_id(folder).child_folders
        pending += [child.id for child in await all_pages(children) if child.id]
    return watched
