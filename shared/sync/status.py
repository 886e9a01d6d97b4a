"""``crmsync status``: per mailbox, what an administrator needs to see at a glance.

State and the admin switch, each subscription and its expiry, per resource the last sync, the
dirty backlog and the last error (e.g. ``mass_delete_refused``), parked items with the reason
and what to do, and how many items are linked per kind. Typed, so the CLI and the admin API
render the same data; nothing in it is a body or an address.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from shared.domain.model import ItemKind
from shared.store.ports import Store
from shared.store.records import Mailbox, MailboxState, SubscriptionRecord, utc_now


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


@dataclass(frozen=True, slots=True)
class ParkedStatus:
    kind: ItemKind
    reason_code: str
    message: str  # what to do about it
    attempts: int
    last_failed_at: dt.datetime


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


async def mailbox_status(store: Store, mailbox: Mailbox, *, now: dt.datetime) -> MailboxStatus:
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
        [
            ParkedStatus(item.ref.kind, item.reason_code, item.message, item.attempts, item.last_failed_at)
            async for item in store.parked.list_parked(mailbox_id)
        ]
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
    )


async def mailbox_statuses(
    store: Store, mailbox_id: str | None = None, *, now: dt.datetime | None = None
) -> list[MailboxStatus]:
    """One mailbox's status (``MailboxNotFound`` if not registered), or every mailbox's."""
    now = now or utc_now()
    if mailbox_id is not None:
        return [await mailbox_status(store, await store.registry.get_mailbox(mailbox_id), now=now)]
    return [
        await mailbox_status(store, mailbox, now=now) async for mailbox in store.registry.list_mailboxes()
    ]
