"""The link map as the engine sees it: link rows <-> the planner's links, and a run's link reads.

A link row (:class:`shared.store.records.Link`) holds both sides' ids, versions and content
hashes; the planner's :class:`~shared.sync.plan.Link` is the same record with the per-field merge
bases and the ownership flag decoded.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence

from shared.domain.model import ItemKind, OutlookItem, content_hash
from shared.store.ports import LinkStore, SyncStateStore
from shared.store.records import Link as StoredLink
from shared.sync.fieldmaps import field_map
from shared.sync.plan import (
    Action,
    CreateInCrm,
    DropLink,
    Link,
    NeutralContent,
    UnlinkOnly,
    UpdateCrm,
    UpdateOutlook,
    WriteLink,
)


def unseen_links(
    mailbox_id: str, kind: ItemKind, loaded: Sequence[StoredLink], seen: set[str]
) -> list[OutlookItem]:
    """After a full read: linked items the read did not list are gone from this resource. Mail
    spans several folders: a message listed by another watched folder is told apart by the same
    moved-away check a delta's removal gets (the tracker reads it by id), so its link stays.
    The run's preloaded link map is enough: every link written since belongs to a listed item."""
    return [
        OutlookItem(mailbox_id=mailbox_id, item_id=link.outlook_id, kind=kind, removed=True)
        for link in loaded
        if link.outlook_id not in seen
    ]


def lost_link(item: OutlookItem, crm_id: uuid.UUID) -> Link:
    """The link a CRM -> Outlook create would have written for ``item`` had its link write not been
    lost (a crash between the Graph create and the link write): the item as created is the base, so
    the planner's delete rules treat it as an unchanged copy crmsync made for this user's filter."""
    return Link(
        outlook_id=item.item_id,
        crm_id=crm_id,
        outlook_change_key=item.change_key,
        crm_etag=None,
        outlook_hash=content_hash(item.item) if item.item is not None else "",
        crm_hash="",
        owned_by_user=True,  # made here for this user's filter: the usual owner's copy
    )


def _update_intents(table: str) -> str:
    """Update intents share the create intents' rows (``create|<table>:updates|<crm id>``, the
    content hash in the title), outside the table's own create range."""
    return f"{table}:updates"


async def note_updates(
    sync_state: SyncStateStore, mailbox_id: str, table: str, plans: Sequence[Sequence[Action]]
) -> list[str]:
    """Before a CRM -> Outlook run overwrites Outlook items: per record, the content hash it writes
    (the hash its link write records). A run dying between the Graph update and the link write leaves
    the intent. The CRM ids noted, to clear once their links are written."""
    writes: dict[str, str] = {}
    for actions in plans:
        updates = [a for a in actions if isinstance(a, UpdateOutlook)]
        linked = [a.link.crm_id for a in actions if isinstance(a, WriteLink)]
        if updates and linked:
            writes[str(linked[0])] = content_hash(updates[-1].item)
    return await _note(sync_state, mailbox_id, _update_intents(table), writes)


async def _note(sync_state: SyncStateStore, mailbox_id: str, rows: str, intents: dict[str, str]) -> list[str]:
    if intents:
        await sync_state.note_creates(mailbox_id, rows, intents)
    return list(intents)


async def _clear(sync_state: SyncStateStore, mailbox_id: str, rows: str, crm_ids: Sequence[str]) -> None:
    if crm_ids:
        await sync_state.clear_creates(mailbox_id, rows, crm_ids)


async def clear_updates(
    sync_state: SyncStateStore, mailbox_id: str, table: str, crm_ids: Sequence[str]
) -> None:
    await _clear(sync_state, mailbox_id, _update_intents(table), crm_ids)


async def as_written(
    sync_state: SyncStateStore,
    mailbox_id: str,
    table: str,
    copies: dict[uuid.UUID, tuple[Link, NeutralContent]],
) -> dict[uuid.UUID, Link]:
    """For copies of records deleted in the CRM: the link a CRM -> Outlook update would have left
    had its link write not been lost, when the copy holds exactly what that update wrote (its
    intent still recorded). The copy is then unchanged since crmsync's own write, and the delete
    rules remove it instead of taking crmsync's write for the user's edit and creating the record
    again. One storage read per call with copies."""
    if not copies:
        return {}
    pending = await sync_state.pending_creates(mailbox_id, _update_intents(table))
    return {
        record_id: dataclasses.replace(link, outlook_hash=pending[str(record_id)])
        for record_id, (link, item) in copies.items()
        if str(record_id) in pending and content_hash(item) == pending[str(record_id)]
    }


def _merge_intents(table: str) -> str:
    """Merge intents share the create intents' rows (``create|<table>:merges|<crm id>``, the
    record's content hash after the merge in the title), outside the table's own create range."""
    return f"{table}:merges"


async def note_merges(
    sync_state: SyncStateStore, mailbox_id: str, table: str, plans: Sequence[tuple[str, Sequence[Action]]]
) -> dict[str, str]:
    """Before an Outlook -> CRM run writes merges that update both sides: per record, the content
    hash the record holds once the CRM write commits (``UpdateCrm.merged_hash``). A run dying after
    the CRM write leaves the intent: the record then holds CRM changes the Outlook item never
    received, which only the intent tells once the item is deleted too. No storage call when no
    plan updates both sides. Outlook item id -> CRM id noted, to clear once the link is written."""
    noted: dict[str, str] = {}
    writes: dict[str, str] = {}
    for outlook_id, actions in plans:
        if not any(isinstance(a, UpdateOutlook) for a in actions):
            continue
        for action in actions:
            if isinstance(action, UpdateCrm) and action.merged_hash is not None:
                noted[outlook_id] = str(action.record_id)
                writes[str(action.record_id)] = action.merged_hash
    await _note(sync_state, mailbox_id, _merge_intents(table), writes)
    return noted


async def pending_merges(sync_state: SyncStateStore, mailbox_id: str, table: str) -> dict[str, str]:
    """CRM id -> the content hash a merge left in the record whose link write may have been lost
    (its intent still recorded). One storage read."""
    return await sync_state.pending_creates(mailbox_id, _merge_intents(table))


async def clear_merges(
    sync_state: SyncStateStore, mailbox_id: str, table: str, crm_ids: Sequence[str]
) -> None:
    await _clear(sync_state, mailbox_id, _merge_intents(table), crm_ids)


def to_stored_link(mailbox_id: str, kind: ItemKind, link: Link) -> StoredLink:
    """The link row for a planner link."""
    return StoredLink(
        mailbox_id=mailbox_id,
        kind=kind,
        outlook_id=link.outlook_id,
        crm_table=field_map(kind).table,
        crm_id=str(link.crm_id),
        outlook_change_key=link.outlook_change_key,
        crm_etag=link.crm_etag,
        outlook_hash=link.outlook_hash,
        crm_hash=link.crm_hash,
        owned_by_user=link.owned_by_user,
        field_bases=dict(link.field_bases),
        crm_deleted=link.crm_deleted,
    )


def from_stored_link(row: StoredLink) -> Link:
    """The planner's view of a link row."""
    return Link(
        outlook_id=row.outlook_id,
        crm_id=uuid.UUID(row.crm_id),
        outlook_change_key=row.outlook_change_key,
        crm_etag=row.crm_etag,
        outlook_hash=row.outlook_hash or "",
        crm_hash=row.crm_hash or "",
        field_bases=dict(row.field_bases),
        owned_by_user=row.owned_by_user,
        crm_deleted=row.crm_deleted,
    )


class LinkView:
    """The run's reads of the link map. A full read loads the kind's links once (one partition scan
    instead of a point read per item); rows the run rewrites are read from the store again."""

    def __init__(self, links: LinkStore, mailbox_id: str, kind: ItemKind) -> None:
        self._links = links
        self._mailbox = mailbox_id
        self._kind = kind
        self._by_outlook: dict[str, StoredLink] | None = None
        self._by_crm: dict[str, StoredLink] = {}
        self._stale: set[str] = set()

    @property
    def preloaded(self) -> bool:
        return self._by_outlook is not None

    def loaded(self) -> list[StoredLink]:
        """The links the preload read (the kind's link map when the run started)."""
        return list(self._by_outlook.values()) if self._by_outlook is not None else []

    async def preload(self) -> None:
        self._by_outlook = {}
        async for link in self._links.list_links(self._mailbox, self._kind):
            self._by_outlook[link.outlook_id] = link
            self._by_crm[link.crm_id.lower()] = link

    async def by_outlook(self, outlook_id: str) -> StoredLink | None:
        if self._by_outlook is None or outlook_id in self._stale:
            return await self._links.get_by_outlook(self._mailbox, self._kind, outlook_id)
        return self._by_outlook.get(outlook_id)

    async def by_crm(self, table: str, crm_id: str) -> StoredLink | None:
        key = crm_id.lower()
        cached = self._by_crm.get(key)
        if self._by_outlook is None or key in self._stale or (cached and cached.outlook_id in self._stale):
            return await self._links.get_by_crm(self._mailbox, table, crm_id)
        return cached

    def forget(self, actions: Sequence[Action], outlook_id: str) -> None:
        """The rows a plan wrote (or dropped) are read from the store from now on."""
        if self._by_outlook is None:
            return
        self._stale.add(outlook_id)
        for action in actions:
            if isinstance(action, WriteLink):
                self._stale.add(str(action.link.crm_id).lower())
            elif isinstance(action, UnlinkOnly | DropLink):
                self._stale.add(str(action.crm_id).lower())


class LinkWriter:
    """Writes one run's link rows: careful replacing writes and unlinks (new links go in batches
    through :meth:`shared.store.ports.LinkStore.create_many`)."""

    def __init__(self, links: LinkStore, mailbox_id: str, kind: ItemKind) -> None:
        self._links = links
        self._mailbox = mailbox_id
        self._kind = kind

    async def write(self, link: Link) -> None:
        """Create or overwrite the link; a stale link holding either side (a crashed run's, or an
        item re-created in Outlook) is replaced."""
        row = to_stored_link(self._mailbox, self._kind, link)
        current = await self._links.get_by_outlook(self._mailbox, self._kind, link.outlook_id)
        if current is not None and current.crm_id == row.crm_id:
            await self._links.update(dataclasses.replace(row, etag=current.etag))
            return
        if current is not None:
            await self._links.delete(current)
        holder = await self._links.get_by_crm(self._mailbox, row.crm_table, row.crm_id)
        if holder is not None:
            await self._links.delete(holder)
        await self._links.create(row)

    async def drop(self, outlook_id: str) -> str | None:
        """Remove the item's link; the CRM id it held (``None``: there was none)."""
        current = await self._links.get_by_outlook(self._mailbox, self._kind, outlook_id)
        if current is None:
            return None
        await self._links.delete(current)
        return current.crm_id


def _outlook_creates(table: str) -> str:
    """Outlook -> CRM create intents share the create intents' rows (``create|<table>:outlook|<crm
    id>``, the Outlook item's id in the title), outside the table's own create range."""
    return f"{table}:outlook"


async def note_crm_creates(
    sync_state: SyncStateStore, mailbox_id: str, table: str, plans: Sequence[tuple[str, Sequence[Action]]]
) -> list[str]:
    """Before an Outlook -> CRM run creates records for new Outlook items: per record, the item's
    id. A run dying between the CRM write and the link write leaves the intent, so the item's delete
    (all its next delta may say of it) still finds the record (:func:`crm_lost_links`), and a CRM ->
    Outlook run does not take the unlinked record for one made in Dynamics and copy it
    (:func:`created_from_outlook`). The CRM ids noted, to clear once their links are written."""
    creates = {
        str(action.record_id): outlook_id
        for outlook_id, actions in plans
        for action in actions
        if isinstance(action, CreateInCrm) and action.table == table
    }
    return await _note(sync_state, mailbox_id, _outlook_creates(table), creates)


async def clear_crm_creates(
    sync_state: SyncStateStore, mailbox_id: str, table: str, crm_ids: Sequence[str]
) -> None:
    await _clear(sync_state, mailbox_id, _outlook_creates(table), crm_ids)


async def crm_lost_links(sync_state: SyncStateStore, mailbox_id: str, table: str) -> dict[str, uuid.UUID]:
    """Outlook item id -> the record an Outlook -> CRM create made for it whose link write may
    have been lost (its intent still recorded). One storage read."""
    pending = await sync_state.pending_creates(mailbox_id, _outlook_creates(table))
    return {outlook_id: uuid.UUID(crm_id) for crm_id, outlook_id in pending.items() if outlook_id}


async def created_from_outlook(
    sync_state: SyncStateStore, mailbox_id: str, table: str, crm_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these unlinked records an Outlook -> CRM create made whose link write is still
    missing: their item is in Outlook (or its delete is on its way), never to be copied again."""
    if not crm_ids:
        return set()
    pending = await sync_state.pending_creates(mailbox_id, _outlook_creates(table))
    return {record_id for record_id in crm_ids if str(record_id) in pending}


def crm_lost_link(outlook_id: str, crm_id: uuid.UUID) -> Link:
    """The link an Outlook -> CRM create would have written for a since deleted item: no content
    to compare, so the record counts as changed since, unless crmsync wrote it last for this
    mailbox (``CrmState.synced_last``: then the delete rules apply, as to any deleted item)."""
    return Link(
        outlook_id=outlook_id,
        crm_id=crm_id,
        outlook_change_key=None,
        crm_etag=None,
        outlook_hash="",
        crm_hash="",
        owned_by_user=True,
    )
