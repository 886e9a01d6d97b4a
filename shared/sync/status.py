"""``crmsync status``: per mailbox, what an administrator needs to see at a glance.

State and the admin switch, each subscription and its expiry, per resource the last sync, the
dirty backlog and the last error (e.g. ``mass_delete_refused``), parked items with the reason
and what to do, how many items are linked per kind, and the last hour's change-to-CRM and
change-to-Outlook latency, and standing notes (shared/sync/notes.py). Typed, so the CLI and the admin API
render the same data; nothing in it is a body or an address.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from shared.domain.model import ItemKind
from shared.store.ports import Store
from shared.store.records import Mailbox, MailboxState, ParkedItem, SubscriptionRecord, utc_now
from shared.sync.brake import held as held_brakes
from shared.sync.latency import LatencySummary, last_hour
from shared.sync.notes import read_notes


@dataclass(frozen=True, slots=True)
class SubscriptionStatus:
    subscription_id: str
    resource: str
    expiration: dt.datetime
    expired: bool


@dataclass(frozen=True, slots=True)
class ResourceStatus:
    """The sync state of one subscribed resource."""

    resource: str
    last_sync_at: dt.datetime | None
    dirty: bool
    dirty_since: dt.datetime | None
    last_error: str | None
    baselined: bool  # a delta link is stored (the initial full read got at least one page through)


#: Attempts (the first failure included) after which a parked item is no longer retried.
PARKED_MAX_ATTEMPTS = 10
_FIRST_RETRY = dt.timedelta(minutes=30)
_LONGEST_WAIT = dt.timedelta(hours=24)
DEGRADED_REMEDY = (
    "a sync job failed on every attempt (the host's log has the cause; Graph or Dataverse down, a "
    "missing permission); nothing was lost: its delta link was not advanced. Once the cause is fixed "
    "the delta sweep syncs it again and the mailbox is active, or at once: `crmsync mailbox resync <mailbox>`"
)
GAVE_UP_REMEDY = (
    "no longer retried: fix the cause above, then `crmsync mailbox resync <mailbox>` (or "
    "POST admin/mailboxes/{mailbox}/resync) syncs it again"
)


def parked_retry_delay(attempts: int) -> dt.timedelta:
    """How long after its last failure a parked item with ``attempts`` is retried (doubling)."""
    wait: dt.timedelta = _FIRST_RETRY * (2 ** max(attempts - 1, 0))
    return min(wait, _LONGEST_WAIT)


def parked_due(item: ParkedItem, now: dt.datetime, max_attempts: int = PARKED_MAX_ATTEMPTS) -> bool:
    """Whether the parked-items timer retries ``item`` now."""
    return item.attempts < max_attempts and now >= item.last_failed_at + parked_retry_delay(item.attempts)


@dataclass(frozen=True, slots=True)
class ParkedStatus:
    kind: ItemKind
    reason_code: str
    message: str  # what to do about it
    attempts: int
    last_failed_at: dt.datetime
    state: str = "retrying"  # or "gave up" (after the maximum attempts: ``remedy`` says what to do)
    next_attempt_at: dt.datetime | None = None
    remedy: str | None = None


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    mailbox_id: str
    upn: str
    crm_user_id: str
    enabled: bool
    state: MailboxState
    subscriptions: tuple[SubscriptionStatus, ...]
    resources: tuple[ResourceStatus, ...]
    parked: tuple[ParkedStatus, ...]
    links: dict[ItemKind, int]
    # Why CRM -> Outlook writes nothing to this mailbox (e.g. crm_no_sync_to_outlook_privilege), per table.
    crm_to_outlook_stopped: dict[str, str] = field(default_factory=dict)
    brake_holds: dict[ItemKind, int] = field(default_factory=dict)  # deletes a tripped brake refused
    # The last hour's change-to-CRM (``to_crm``) and change-to-Outlook (``to_outlook``) latency.
    latency: dict[str, LatencySummary] = field(default_factory=dict)
    # Standing notes (reason code -> what it means), e.g. a series synced as occurrences.
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def refused_deletes(self) -> int:
        """What ``crmsync mailbox release-brake --confirm-deletes`` must name (0: no brake holds)."""
        return sum(self.brake_holds.values())

    @property
    def remedy(self) -> str | None:
        """What an administrator does about a degraded mailbox (the brake names its own release)."""
        if self.state is not MailboxState.DEGRADED or self.refused_deletes:
            return None
        return DEGRADED_REMEDY

    @property
    def backlog(self) -> int:
        """Resources marked dirty and waiting for a run."""
        return sum(1 for resource in self.resources if resource.dirty)

    @property
    def last_sync_at(self) -> dt.datetime | None:
        times = [resource.last_sync_at for resource in self.resources if resource.last_sync_at]
        return max(times) if times else None


def subscription_status(record: SubscriptionRecord, now: dt.datetime) -> SubscriptionStatus:
    return SubscriptionStatus(
        record.subscription_id, record.resource, record.expiration, record.expiration <= now
    )


# Where the CRM -> Outlook run records why it wrote nothing (shared/sync/crm_run.py resource_of).
CRM_RESOURCES = ("crm:contact", "crm:appointment", "crm:task")


def _parked_status(item: ParkedItem, max_attempts: int) -> ParkedStatus:
    gave_up = item.attempts >= max_attempts
    return ParkedStatus(
        item.ref.kind,
        item.reason_code,
        item.message,
        item.attempts,
        item.last_failed_at,
        state="gave up" if gave_up else "retrying",
        next_attempt_at=None if gave_up else item.last_failed_at + parked_retry_delay(item.attempts),
        remedy=GAVE_UP_REMEDY if gave_up else None,
    )


async def mailbox_status(
    store: Store, mailbox: Mailbox, *, now: dt.datetime, max_attempts: int = PARKED_MAX_ATTEMPTS
) -> MailboxStatus:
    """The status of one registered mailbox."""
    mailbox_id = mailbox.mailbox_id
    records = [record async for record in store.subscriptions.list_for_mailbox(mailbox_id)]
    resources = []
    for resource in sorted({record.resource for record in records}):
        state = await store.sync_state.get_state(mailbox_id, resource)
        resources.append(
            ResourceStatus(
                resource,
                state.last_sync_at,
                state.dirty,
                state.dirty_since,
                state.last_error,
                state.delta_link is not None,
            )
        )
    parked = tuple(
        [_parked_status(item, max_attempts) async for item in store.parked.list_parked(mailbox_id)]
    )
    links = {kind: await store.links.count(mailbox_id, kind) for kind in ItemKind}
    stopped = {}
    for resource in CRM_RESOURCES:
        reason = (await store.sync_state.get_state(mailbox_id, resource)).last_error
        if reason is not None:
            stopped[resource.removeprefix("crm:")] = reason
    return MailboxStatus(
        mailbox_id=mailbox_id,
        upn=mailbox.upn,
        crm_user_id=mailbox.crm_user_id,
        enabled=mailbox.enabled,
        state=mailbox.state,
        subscriptions=tuple(subscription_status(record, now) for record in records),
        resources=tuple(resources),
        parked=parked,
        links=links,
        crm_to_outlook_stopped=stopped,
        brake_holds=await held_brakes(store.sync_state, mailbox_id),
        latency=last_hour(await store.sync_state.latency_slots(mailbox_id), now),
        notes=await read_notes(store.sync_state, mailbox_id),
    )


async def mailbox_statuses(
    store: Store,
    mailbox_id: str | None = None,
    *,
    now: dt.datetime | None = None,
    max_attempts: int = PARKED_MAX_ATTEMPTS,
) -> list[MailboxStatus]:
    """One mailbox's status (``MailboxNotFound`` if not registered), or every mailbox's."""
    now = now or utc_now()
    if mailbox_id is not None:
        mailbox = await store.registry.get_mailbox(mailbox_id)
        return [await mailbox_status(store, mailbox, now=now, max_attempts=max_attempts)]
    return [
        await mailbox_status(store, mailbox, now=now, max_attempts=max_attempts)
        async for mailbox in store.registry.list_mailboxes()
    ]
