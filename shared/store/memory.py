"""In-memory fakes of the store ports, for fast unit tests of the engine and the webhooks.

They keep the Azure implementation's contract (tests/store runs the same contract suite on
both): the same typed errors, ETags that change on every write, all-or-nothing multi-row
writes, and synced fields normalised exactly as the table encoding would. Each method checks
and writes without awaiting in between, so under asyncio every operation is atomic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import ItemKind
from shared.store.errors import (
    CrmUserAlreadyRegistered,
    LeaseHeld,
    LeaseLost,
    LinkAlreadyExists,
    LinkConflict,
    MailboxAlreadyRegistered,
    MailboxNotFound,
    SettingsConflict,
    SubscriptionNotFound,
)
from shared.store.keys import encode_key
from shared.store.ports import Store, check_link_batch, create_each, transaction_chunks
from shared.store.records import (
    AuditRecord,
    DirtyMark,
    ItemRef,
    Lease,
    Link,
    Mailbox,
    MailboxState,
    ParkedItem,
    SubscriptionRecord,
    SyncState,
    check_reason_code,
    lease_expiry,
    utc_now,
)
from shared.store.synced_fields import normalise_synced_fields

Clock = Callable[[], dt.datetime]
_etags = itertools.count(1)


def _new_etag() -> str:
    return f'W/"memory-{next(_etags)}"'


class MemoryRegistry:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._mailboxes: dict[str, Mailbox] = {}
        self._crm_users: dict[str, str] = {}

    async def register(
        self,
        *,
        mailbox_id: str,
        upn: str,
        crm_user_id: str,
        crm_caller_object_id: str,
        settings: MailboxSettings | None = None,
        enabled: bool = True,
    ) -> Mailbox:
        encode_key(mailbox_id)  # the same identifiers are refused as by the table store
        crm_user = crm_user_id.lower()
        if mailbox_id in self._mailboxes:
            raise MailboxAlreadyRegistered(mailbox_id)
        if crm_user in self._crm_users:
            raise CrmUserAlreadyRegistered(crm_user)
        now = self._clock()
        mailbox = Mailbox(
            mailbox_id=mailbox_id,
            upn=upn,
            crm_user_id=crm_user,
            crm_caller_object_id=crm_caller_object_id,
            enabled=enabled,
            settings=settings or MailboxSettings(),
            created_at=now,
            updated_at=now,
            etag=_new_etag(),
        )
        self._mailboxes[mailbox_id] = mailbox
        self._crm_users[crm_user] = mailbox_id
        return mailbox

    async def get_mailbox(self, mailbox_id: str) -> Mailbox:
        try:
            return self._mailboxes[mailbox_id]
        except KeyError as exc:
            raise MailboxNotFound(mailbox_id) from exc

    async def get_by_crm_user(self, crm_user_id: str) -> Mailbox:
        try:
            return self._mailboxes[self._crm_users[crm_user_id.lower()]]
        except KeyError as exc:
            raise MailboxNotFound(crm_user_id) from exc

    async def list_mailboxes(self, *, enabled_only: bool = False) -> AsyncIterator[Mailbox]:
        for mailbox_id in sorted(self._mailboxes, key=encode_key):
            mailbox = self._mailboxes[mailbox_id]
            if mailbox.enabled or not enabled_only:
                yield mailbox

    def _change(self, mailbox_id: str, **changes: Any) -> Mailbox:
        mailbox = self._mailboxes.get(mailbox_id)
        if mailbox is None:
            raise MailboxNotFound(mailbox_id)
        changed = dataclasses.replace(mailbox, updated_at=self._clock(), etag=_new_etag(), **changes)
        self._mailboxes[mailbox_id] = changed
        return changed

    async def set_enabled(self, mailbox_id: str, enabled: bool) -> None:
        self._change(mailbox_id, enabled=enabled)

    async def set_state(self, mailbox_id: str, state: MailboxState) -> None:
        self._change(mailbox_id, state=state)

    async def update_settings(self, mailbox: Mailbox, settings: MailboxSettings) -> Mailbox:
        if mailbox.etag is None:
            raise ValueError("update_settings needs a mailbox read from the registry (it carries the etag)")
        current = self._mailboxes.get(mailbox.mailbox_id)
        if current is None:
            raise MailboxNotFound(mailbox.mailbox_id)
        if current.etag != mailbox.etag:
            raise SettingsConflict
        return self._change(mailbox.mailbox_id, settings=settings)

    async def unregister(self, mailbox_id: str) -> None:
        mailbox = self._mailboxes.pop(mailbox_id, None)
        if mailbox is not None:
            del self._crm_users[mailbox.crm_user_id]


_OutlookKey = tuple[str, ItemKind, str]
_CrmKey = tuple[str, str, str]


def _outlook_key(link: Link) -> _OutlookKey:
    return (link.mailbox_id, link.kind, link.outlook_id)


def _crm_key(link: Link) -> _CrmKey:
    return (link.mailbox_id, link.crm_table, link.crm_id)


class MemoryLinkStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._by_outlook: dict[_OutlookKey, Link] = {}
        self._by_crm: dict[_CrmKey, _OutlookKey] = {}

    async def get_by_outlook(self, mailbox_id: str, kind: ItemKind, outlook_id: str) -> Link | None:
        return self._by_outlook.get((mailbox_id, kind, outlook_id))

    async def get_by_crm(self, mailbox_id: str, crm_table: str, crm_id: str) -> Link | None:
        pointer = self._by_crm.get((mailbox_id, crm_table, crm_id))
        return self._by_outlook.get(pointer) if pointer else None

    @staticmethod
    def _check_keys(link: Link) -> None:
        """Refuse the identifiers the table store cannot key (InvalidKey)."""
        for identifier in (link.mailbox_id, link.outlook_id, link.crm_table, link.crm_id):
            encode_key(identifier)

    def _stored(self, link: Link) -> Link:
        self._check_keys(link)
        return dataclasses.replace(
            link,
            synced_fields=normalise_synced_fields(link.synced_fields),
            updated_at=self._clock(),
            etag=_new_etag(),
        )

    def _current(self, link: Link) -> Link:
        """The stored link ``link`` was read from; LinkConflict if it changed or is gone."""
        if link.etag is None:
            raise ValueError("this operation needs a link read from the store (it carries the etag)")
        current = self._by_outlook.get(_outlook_key(link))
        if current is None or current.etag != link.etag or _crm_key(current) != _crm_key(link):
            raise LinkConflict
        return current

    async def create(self, link: Link) -> Link:
        if _outlook_key(link) in self._by_outlook:
            raise LinkAlreadyExists("outlook")
        if _crm_key(link) in self._by_crm:
            raise LinkAlreadyExists("crm")
        stored = self._stored(link)
        self._by_outlook[_outlook_key(stored)] = stored
        self._by_crm[_crm_key(stored)] = _outlook_key(stored)
        return stored

    async def update(self, link: Link) -> Link:
        self._current(link)
        stored = self._stored(link)
        self._by_outlook[_outlook_key(stored)] = stored
        return stored

    async def create_many(self, links: Sequence[Link]) -> list[Link]:
        """One by one: the end state a transaction, or its link-by-link redo after a conflict, leaves."""
        check_link_batch(links, read_earlier=False)
        for link in links:  # as the table store prepares every row before its first transaction
            self._check_keys(link)
        created, refused = await create_each(self.create, links)
        if refused is not None:
            raise refused
        return created

    async def update_many(self, links: Sequence[Link]) -> None:
        """Per transaction-sized chunk, every link is checked before any is written (all or nothing)."""
        check_link_batch(links, read_earlier=True)
        for chunk in transaction_chunks(links):
            for link in chunk:
                self._current(link)
            for link in chunk:
                await self.update(link)

    async def delete(self, link: Link) -> None:
        if link.etag is None:
            raise ValueError("this operation needs a link read from the store (it carries the etag)")
        if _outlook_key(link) in self._by_outlook:
            self._current(link)
            del self._by_outlook[_outlook_key(link)]
        if self._by_crm.get(_crm_key(link)) == _outlook_key(link):
            del self._by_crm[_crm_key(link)]

    async def move_outlook_id(self, link: Link, new_outlook_id: str) -> Link:
        if new_outlook_id == link.outlook_id:
            return link
        self._current(link)
        moved = self._stored(dataclasses.replace(link, outlook_id=new_outlook_id))
        if _outlook_key(moved) in self._by_outlook:
            raise LinkAlreadyExists("outlook")
        del self._by_outlook[_outlook_key(link)]
        self._by_outlook[_outlook_key(moved)] = moved
        self._by_crm[_crm_key(moved)] = _outlook_key(moved)
        return moved

    async def list_links(self, mailbox_id: str, kind: ItemKind | None = None) -> AsyncIterator[Link]:
        chosen = [
            link
            for (mailbox, link_kind, _), link in self._by_outlook.items()
            if mailbox == mailbox_id and kind in (None, link_kind)
        ]
        for link in sorted(chosen, key=lambda link: (link.kind.value, encode_key(link.outlook_id))):
            yield link

    async def count(self, mailbox_id: str, kind: ItemKind | None = None) -> int:
        return sum([1 async for _ in self.list_links(mailbox_id, kind)])


class MemorySyncStateStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._states: dict[tuple[str, str], SyncState] = {}
        self._dirty: dict[tuple[str, str], tuple[dt.datetime, str]] = {}
        self._leases: dict[str, Lease] = {}

    async def get_state(self, mailbox_id: str, resource: str) -> SyncState:
        state = self._states.get((mailbox_id, resource), SyncState(mailbox_id=mailbox_id, resource=resource))
        dirty = self._dirty.get((mailbox_id, resource))
        if dirty is None:
            return state
        return dataclasses.replace(state, dirty=True, dirty_since=dirty[0], dirty_etag=dirty[1])

    async def dirty_resources(self, mailbox_id: str) -> list[str]:
        return sorted(resource for mailbox, resource in self._dirty if mailbox == mailbox_id)

    async def mark_dirty(self, mailbox_id: str, resource: str) -> bool:
        encode_key(mailbox_id)
        existing = self._dirty.get((mailbox_id, resource))
        since = existing[0] if existing else self._clock()
        self._dirty[(mailbox_id, resource)] = (since, _new_etag())
        return existing is None

    async def clear_dirty(self, state: SyncState) -> bool:
        current = self._dirty.get((state.mailbox_id, state.resource))
        if state.dirty_etag is None or current is None:
            return True
        if current[1] != state.dirty_etag:
            return False
        del self._dirty[(state.mailbox_id, state.resource)]
        return True

    async def list_dirty(self) -> AsyncIterator[DirtyMark]:
        for (mailbox_id, resource), (since, _) in list(self._dirty.items()):
            yield DirtyMark(mailbox_id=mailbox_id, resource=resource, dirty_since=since)

    async def save_delta_link(self, mailbox_id: str, resource: str, delta_link: str) -> None:
        self._states[(mailbox_id, resource)] = SyncState(
            mailbox_id=mailbox_id, resource=resource, delta_link=delta_link, last_sync_at=self._clock()
        )

    async def record_error(self, mailbox_id: str, resource: str, reason_code: str) -> None:
        key = (mailbox_id, resource)
        state = self._states.get(key, SyncState(mailbox_id=mailbox_id, resource=resource))
        self._states[key] = dataclasses.replace(state, last_error=check_reason_code(reason_code))

    async def reset(self, mailbox_id: str, resource: str) -> None:
        self._states[(mailbox_id, resource)] = SyncState(mailbox_id=mailbox_id, resource=resource)

    async def try_acquire(self, mailbox_id: str, owner: str, seconds: int) -> Lease:
        now = self._clock()
        expires_at = lease_expiry(now, seconds)
        current = self._leases.get(mailbox_id)
        if current is not None and current.expires_at > now:
            raise LeaseHeld(current.owner, current.expires_at)
        lease = Lease(mailbox_id=mailbox_id, owner=owner, expires_at=expires_at, etag=_new_etag())
        self._leases[mailbox_id] = lease
        return lease

    async def renew(self, lease: Lease, seconds: int) -> Lease:
        current = self._leases.get(lease.mailbox_id)
        if current is None or current.etag != lease.etag:
            raise LeaseLost
        renewed = dataclasses.replace(
            lease, expires_at=lease_expiry(self._clock(), seconds), etag=_new_etag()
        )
        self._leases[lease.mailbox_id] = renewed
        return renewed

    async def release(self, lease: Lease) -> None:
        current = self._leases.get(lease.mailbox_id)
        if current is not None and current.etag == lease.etag:
            del self._leases[lease.mailbox_id]


class MemorySubscriptionStore:
    def __init__(self) -> None:
        self._records: dict[str, SubscriptionRecord] = {}

    async def put(self, record: SubscriptionRecord) -> None:
        encode_key(record.subscription_id)
        self._records[record.subscription_id] = record

    async def get(self, subscription_id: str) -> SubscriptionRecord:
        try:
            return self._records[subscription_id]
        except KeyError as exc:
            raise SubscriptionNotFound(subscription_id) from exc

    async def delete(self, subscription_id: str) -> None:
        self._records.pop(subscription_id, None)

    async def list_for_mailbox(self, mailbox_id: str) -> AsyncIterator[SubscriptionRecord]:
        for record in list(self._records.values()):
            if record.mailbox_id == mailbox_id:
                yield record

    async def list_expiring(self, before: dt.datetime) -> AsyncIterator[SubscriptionRecord]:
        for record in list(self._records.values()):
            if record.expiration < before:
                yield record


class MemoryParkedStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._items: dict[tuple[str, ItemRef], ParkedItem] = {}

    async def park(self, mailbox_id: str, ref: ItemRef, *, reason_code: str, message: str) -> ParkedItem:
        now = self._clock()
        current = self._items.get((mailbox_id, ref))
        item = ParkedItem(
            mailbox_id=mailbox_id,
            ref=ref,
            reason_code=reason_code,
            message=message,
            attempts=current.attempts + 1 if current else 1,
            first_failed_at=current.first_failed_at if current else now,
            last_failed_at=now,
        )
        self._items[(mailbox_id, ref)] = item
        return item

    async def list_parked(self, mailbox_id: str | None = None) -> AsyncIterator[ParkedItem]:
        for (mailbox, _), item in list(self._items.items()):
            if mailbox_id in (None, mailbox):
                yield item

    async def remove(self, mailbox_id: str, ref: ItemRef) -> None:
        self._items.pop((mailbox_id, ref), None)

    async def count(self, mailbox_id: str) -> int:
        return sum(1 for mailbox, _ in self._items if mailbox == mailbox_id)


class MemoryAuditTrail:
    def __init__(self) -> None:
        self._records: dict[str, list[AuditRecord]] = {}

    async def append(self, record: AuditRecord) -> None:
        self._records.setdefault(record.mailbox_id, []).append(record)

    async def append_many(self, records: Sequence[AuditRecord]) -> None:
        if len({record.mailbox_id for record in records}) > 1:
            raise ValueError("append_many takes the records of one mailbox")
        for record in records:
            await self.append(record)

    async def list_recent(self, mailbox_id: str, limit: int = 100) -> list[AuditRecord]:
        newest_first = sorted(self._records.get(mailbox_id, []), key=lambda record: record.at, reverse=True)
        return newest_first[: max(limit, 0)]


async def _nothing_to_close() -> None:
    return None


def open_memory_store(*, clock: Clock = utc_now) -> Store:
    """A fresh, empty in-memory store (``close()`` is a no-op)."""
    return Store(
        registry=MemoryRegistry(clock),
        links=MemoryLinkStore(clock),
        sync_state=MemorySyncStateStore(clock),
        subscriptions=MemorySubscriptionStore(),
        parked=MemoryParkedStore(clock),
        audit=MemoryAuditTrail(),
        closer=_nothing_to_close,
    )
