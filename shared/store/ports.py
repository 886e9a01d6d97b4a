"""The storage ports the sync engine, the webhooks and the CLI code against.

Two implementations keep the same contract (tests/store runs one contract suite against both):
Azure Table Storage (:mod:`shared.store.azure`, Azurite locally) and an in-memory fake
(:mod:`shared.store.memory`) for fast unit tests of the engine.

Conventions (Azure SDK design guidelines): ``get_*`` of a registry record raises when missing,
link and sync-state lookups return ``None`` / an empty state because "not linked yet" is the
normal case; ``delete``/``remove``/``release`` succeed if already gone; ``list_*`` are async
iterators. Conditional writes raise the typed errors of :mod:`shared.store.errors`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import ItemKind
from shared.store.errors import LinkAlreadyExists
from shared.store.records import (
    AuditRecord,
    DeleteLog,
    DirtyMark,
    ItemRef,
    LatencySlot,
    Lease,
    Link,
    Mailbox,
    MailboxState,
    ParkedItem,
    SubscriptionRecord,
    SyncState,
)


class Registry(Protocol):
    """Mailbox <-> CRM user, one to one, enforced atomically; plus per-mailbox settings."""

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
        """Register both sides at once; MailboxAlreadyRegistered / CrmUserAlreadyRegistered otherwise."""
        ...

    async def get_mailbox(self, mailbox_id: str) -> Mailbox:
        """The mailbox; MailboxNotFound if it is not registered."""
        ...

    async def get_by_crm_user(self, crm_user_id: str) -> Mailbox:
        """The mailbox of a CRM user; MailboxNotFound if the user has none."""
        ...

    def list_mailboxes(self, *, enabled_only: bool = False) -> AsyncIterator[Mailbox]:
        """Every registered mailbox (only enabled ones if asked)."""
        ...

    async def set_enabled(self, mailbox_id: str, enabled: bool) -> None:
        """The admin's on/off switch; MailboxNotFound if not registered."""
        ...

    async def set_state(self, mailbox_id: str, state: MailboxState) -> None:
        """Record the mailbox's health; MailboxNotFound if not registered."""
        ...

    async def update_settings(self, mailbox: Mailbox, settings: MailboxSettings) -> Mailbox:
        """Replace the settings if the mailbox is unchanged since read; SettingsConflict otherwise."""
        ...

    async def unregister(self, mailbox_id: str) -> None:
        """Remove both rows at once (no-op if not registered)."""
        ...


class LinkStore(Protocol):
    """The link map: each Outlook item <-> CRM record pair, findable from either side."""

    async def get_by_outlook(self, mailbox_id: str, kind: ItemKind, outlook_id: str) -> Link | None: ...

    async def get_by_crm(self, mailbox_id: str, crm_table: str, crm_id: str) -> Link | None: ...

    async def create(self, link: Link) -> Link:
        """Write both rows at once; LinkAlreadyExists (naming the side) if either exists."""
        ...

    async def update(self, link: Link) -> Link:
        """Rewrite a link read earlier (``link.etag``); LinkConflict if it changed or is gone."""
        ...

    async def delete(self, link: Link) -> None:
        """Remove both rows (no-op if gone); LinkConflict if it changed since read."""
        ...

    async def move_outlook_id(self, link: Link, new_outlook_id: str) -> Link:
        """Re-key the Outlook side (an item moved without immutable ids) in one transaction;
        LinkAlreadyExists if the new id is linked, LinkConflict if ``link`` is stale."""
        ...

    async def create_many(self, links: Sequence[Link]) -> list[Link]:
        """Create links of ONE mailbox as :meth:`create` would, up to :data:`LINKS_PER_TRANSACTION` per
        storage transaction; returns the created links. A transaction refused because a row exists is
        redone link by link; then the first LinkAlreadyExists is raised after every other link was
        created (the caller takes its careful path for the batch)."""
        ...

    async def update_many(self, links: Sequence[Link]) -> None:
        """Rewrite links of ONE mailbox read earlier, as :meth:`update` would, up to
        :data:`LINKS_PER_TRANSACTION` per storage transaction. LinkConflict if one changed or is gone:
        its transaction wrote nothing and later ones are not tried; earlier ones stay written."""
        ...

    def list_links(self, mailbox_id: str, kind: ItemKind | None = None) -> AsyncIterator[Link]: ...

    async def mailboxes_linking(self, crm_table: str, crm_id: str) -> set[str]:
        """The mailboxes holding a link to the record, in one read whatever their number (routing a
        CRM change). Complete for every mailbox :meth:`indexed` says; may still name a mailbox whose
        link is gone (the run there finds none)."""
        ...

    async def indexed(self, mailbox_id: str) -> bool:
        """Whether :meth:`mailboxes_linking` covers every link of the mailbox."""
        ...

    async def reindex(self, mailbox_id: str) -> int:
        """Index every link of the mailbox for :meth:`mailboxes_linking` and mark it :meth:`indexed`
        (onboarding; the sweep, once, for links written before the index); the links indexed."""
        ...

    async def count(self, mailbox_id: str, kind: ItemKind | None = None) -> int: ...


T = TypeVar("T")

LINKS_PER_TRANSACTION = 50
"""Two rows per link, and an entity-group transaction holds at most 100 entities
(learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions)."""


def check_link_batch(links: Sequence[Link], *, read_earlier: bool) -> None:
    """Refuse, before anything is written, a batch no set of link transactions can hold: links of
    several mailboxes (partitions) or, when rewriting links ``read_earlier``, one without its etag
    or one listed twice (an entity may appear once per transaction)."""
    if len({link.mailbox_id for link in links}) > 1:
        raise ValueError("a link batch holds the links of one mailbox")
    if not read_earlier:
        return
    if any(link.etag is None for link in links):
        raise ValueError("this operation needs links read from the store (they carry the etag)")
    if len({(link.kind, link.outlook_id) for link in links}) < len(links):
        raise ValueError("a link batch lists one Outlook item twice")


def transaction_chunks(
    items: Sequence[T], *, weight: Callable[[T], int] | None = None, max_weight: int = 0
) -> Iterator[list[T]]:
    """Consecutive groups of at most :data:`LINKS_PER_TRANSACTION` items, one transaction each; with a
    ``weight`` (payload bytes), also at most ``max_weight`` per group (a heavier item goes alone)."""
    chunk: list[T] = []
    total = 0
    for item in items:
        item_weight = weight(item) if weight else 0
        if chunk and (len(chunk) == LINKS_PER_TRANSACTION or total + item_weight > max_weight > 0):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += item_weight
    if chunk:
        yield chunk


async def create_each(
    create: Callable[[Link], Awaitable[Link]], links: Sequence[Link]
) -> tuple[list[Link], LinkAlreadyExists | None]:
    """Create ``links`` one at a time, going on past conflicts: the created ones and the first refusal."""
    created: list[Link] = []
    refused: LinkAlreadyExists | None = None
    for link in links:
        try:
            created.append(await create(link))
        except LinkAlreadyExists as exc:
            refused = refused or exc
    return created, refused


class SyncStateStore(Protocol):
    """Delta links, dirty flags and the one-instance-per-mailbox lease."""

    async def get_state(self, mailbox_id: str, resource: str) -> SyncState: ...

    async def mark_dirty(self, mailbox_id: str, resource: str) -> bool:
        """Mark (mailbox, resource) dirty; True only for the call that made it dirty (enqueue then)."""
        ...

    async def dirty_resources(self, mailbox_id: str) -> list[str]:
        """The mailbox's resources marked dirty now (one read)."""
        ...

    async def clear_dirty(self, state: SyncState) -> bool:
        """Clear the flag read in ``state``; False (still dirty) if a notification came since."""
        ...

    def list_dirty(self) -> AsyncIterator[DirtyMark]: ...

    async def note_swept(self, mark: DirtyMark, at: dt.datetime) -> bool:
        """Record on a listed mark that the sweep enqueued a job for it ``at``; False (nothing
        written) if the mark changed since it was listed (cleared, or notified again)."""
        ...

    async def save_delta_link(self, mailbox_id: str, resource: str, delta_link: str) -> None:
        """Store a link no mailbox lease guards (the CRM change-tracking stream, one timer); a
        mailbox's run stores its links with :meth:`save_delta_link_fenced`."""
        ...

    async def save_delta_link_fenced(
        self,
        mailbox_id: str,
        resource: str,
        delta_link: str,
        *,
        lease: Lease,
        seconds: int,
        window_start: dt.datetime | None = None,
    ) -> Lease:
        """Store the link only while ``lease`` (the mailbox's, as last renewed) is still held, in one
        atomic write with its renewal for ``seconds``: the renewed lease. LeaseLost, and nothing
        stored, if it was taken over or released (a run that lost its lease never moves the link).
        ``window_start``: a calendar link's window start, stored with it."""
        ...

    async def record_error(self, mailbox_id: str, resource: str, reason_code: str) -> None: ...

    async def get_delete_log(self, mailbox_id: str, kind: ItemKind) -> DeleteLog:
        """The kind's delete log (an empty one if none is stored)."""
        ...

    async def put_delete_log(self, log: DeleteLog) -> DeleteLog:
        """Write a log read earlier (``log.etag``; None: none was stored); StaleWrite if it changed."""
        ...

    async def last_safety_read(self, mailbox_id: str) -> dt.datetime | None:
        """When the sweep last checked the mailbox's resources for missed changes (None: never)."""
        ...

    async def note_safety_read(self, mailbox_id: str, at: dt.datetime) -> None:
        """Record that the sweep checked the mailbox ``at``."""
        ...

    async def add_latencies(self, slot: LatencySlot) -> None:
        """Add the slot's counts to the stored slot of the same start (a slot stored for an older
        start in the same ring position is replaced); concurrent adders are retried, never lost."""
        ...

    async def latency_slots(self, mailbox_id: str) -> list[LatencySlot]:
        """The mailbox's stored latency slots, both directions (at most ``LATENCY_SLOTS`` each)."""
        ...

    async def reset(self, mailbox_id: str, resource: str) -> None:
        """Forget the delta link, so the next run is a full resync."""
        ...

    async def note_creates(self, mailbox_id: str, table: str, creates: Mapping[str, str]) -> None:
        """Record that Outlook items are about to be created for these CRM records (CRM id -> the
        title a To Do task is posted with, else empty): the intent written before the Graph create,
        cleared once their links are written."""
        ...

    async def pending_creates(self, mailbox_id: str, table: str) -> dict[str, str]:
        """The table's create intents still recorded, as noted (one read)."""
        ...

    async def clear_creates(self, mailbox_id: str, table: str, crm_ids: Sequence[str]) -> None:
        """Forget these intents (no-op for those not recorded)."""
        ...

    async def try_acquire(self, mailbox_id: str, owner: str, seconds: int) -> Lease:
        """Take the mailbox lease; LeaseHeld while any unexpired lease exists, even one taken
        with the same ``owner`` (two runs of one worker must not overlap either; extend a held
        lease with :meth:`renew`). ``owner`` names the holder in LeaseHeld and in status."""
        ...

    async def renew(self, lease: Lease, seconds: int) -> Lease:
        """Extend a held lease; LeaseLost if it was taken over or released."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give the lease up (no-op if it is no longer ours)."""
        ...


class SubscriptionStore(Protocol):
    """Graph subscriptions by id, for the webhooks and the renewal timer."""

    async def put(self, record: SubscriptionRecord) -> None: ...

    async def get(self, subscription_id: str) -> SubscriptionRecord:
        """The subscription; SubscriptionNotFound if unknown."""
        ...

    async def delete(self, subscription_id: str) -> None: ...

    def list_for_mailbox(self, mailbox_id: str) -> AsyncIterator[SubscriptionRecord]: ...

    def list_expiring(self, before: dt.datetime) -> AsyncIterator[SubscriptionRecord]: ...

    def list_all(self) -> AsyncIterator[SubscriptionRecord]:
        """Every subscription, in one listing (the sweep: one scan, not one per mailbox)."""
        ...


class ParkedStore(Protocol):
    """Items that failed in a way retrying cannot fix, with why and how often."""

    async def park(self, mailbox_id: str, ref: ItemRef, *, reason_code: str, message: str) -> ParkedItem:
        """Record a failure (attempts + 1 if already parked)."""
        ...

    def list_parked(self, mailbox_id: str | None = None) -> AsyncIterator[ParkedItem]: ...

    async def remove(self, mailbox_id: str, ref: ItemRef) -> None: ...

    async def count(self, mailbox_id: str) -> int: ...


class AuditTrail(Protocol):
    """Append-only who/what/when; never bodies or addresses (see AuditRecord)."""

    async def append(self, record: AuditRecord) -> None: ...

    async def append_many(self, records: Sequence[AuditRecord]) -> None:
        """Several records of one mailbox, in as few round trips as the store allows."""
        ...

    async def list_recent(self, mailbox_id: str, limit: int = 100) -> list[AuditRecord]:
        """The mailbox's newest ``limit`` records, newest first."""
        ...


@dataclass(frozen=True, slots=True)
class Store:
    """Every repository, opened together; ``await store.close()`` when done."""

    registry: Registry
    links: LinkStore
    sync_state: SyncStateStore
    subscriptions: SubscriptionStore
    parked: ParkedStore
    audit: AuditTrail
    closer: Callable[[], Awaitable[None]]

    async def close(self) -> None:
        await self.closer()
