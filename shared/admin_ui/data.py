"""What the status page shows, read from the store: the typed status plus settings and audit."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from shared.domain.model import ItemKind
from shared.store.ports import Store
from shared.store.records import AuditRecord, MailboxState, utc_now
from shared.sync.brake import BRAKE_REASON
from shared.sync.status import MailboxStatus, mailbox_status

#: Audit entries shown per mailbox (newest first); ``crmsync audit`` reads the whole trail.
AUDIT_ENTRIES = 10


@dataclass(frozen=True, slots=True)
class MailboxView:
    status: MailboxStatus
    display_state: str  # active | degraded | disabled | tracking only
    audit: tuple[AuditRecord, ...]

    @property
    def braked(self) -> bool:
        """The mass-delete brake refused a run of one of its resources."""
        return any(resource.last_error == BRAKE_REASON for resource in self.status.resources)


@dataclass(frozen=True, slots=True)
class StatusPageData:
    generated_at: dt.datetime
    mailboxes: tuple[MailboxView, ...]

    def count(self, state: str) -> int:
        return sum(1 for view in self.mailboxes if view.display_state == state)


def display_state(status: MailboxStatus, item_kinds: frozenset[ItemKind]) -> str:
    """One word for the state an administrator acts on, the most urgent first."""
    if not status.enabled or status.state is MailboxState.DISABLED:
        return "disabled"
    if status.state is MailboxState.DEGRADED:
        return "degraded"
    if item_kinds == frozenset({ItemKind.EMAIL}):
        return "tracking only"  # only email tracking: no contact, calendar or task sync
    return "active"


async def status_page_data(store: Store, *, now: dt.datetime | None = None) -> StatusPageData:
    """Every registered mailbox's status, display state and last audit entries."""
    now = now or utc_now()
    views = []
    async for mailbox in store.registry.list_mailboxes():
        status = await mailbox_status(store, mailbox, now=now)
        audit = await store.audit.list_recent(mailbox.mailbox_id, limit=AUDIT_ENTRIES)
        views.append(MailboxView(status, display_state(status, mailbox.settings.item_kinds), tuple(audit)))
    order = {"degraded": 0, "disabled": 1, "active": 2, "tracking only": 3}
    views.sort(key=lambda view: (order[view.display_state], view.status.upn.lower()))
    return StatusPageData(now, tuple(views))
