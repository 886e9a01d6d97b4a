"""Keeping registered mailboxes in sync: the renewal timer, the parked-items timer and recovery.

- Subscriptions expire (Graph allows at most 10,080 minutes for Outlook resources): the renewal
  timer renews those expiring soon and recreates the ones Graph no longer has, running a delta for
  each recreated one since notifications may have been lost meanwhile.
- A full resync (recovery, and the release of the mass-delete brake) forgets each resource's delta
  link and re-reads it against the link map; linked, unchanged items are not rewritten.
- Parked items are retried by re-reading the resources that hold them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass

from shared.domain.model import ItemKind
from shared.outlook.errors import ItemNotFound
from shared.outlook.subscriptions import SubscriptionManager
from shared.store.fingerprint import short_fingerprint
from shared.store.ports import Store
from shared.store.records import AuditAction, AuditRecord, MailboxState, SubscriptionRecord
from shared.sync.applier import ACTOR
from shared.sync.job import MailboxSyncJob
from shared.sync.lifecycle import RESOURCE_OF_KIND, replace_subscription
from shared.sync.resources import parse_resource
from shared.sync.run import ProgressCallback, SyncRunReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RenewalReport:
    renewed: tuple[str, ...]  # subscription ids
    recreated: tuple[str, ...]  # new subscription ids replacing ones Graph no longer had
    resynced: tuple[SyncRunReport, ...]  # a delta after each recreation catches what was missed
    failed: tuple[str, ...] = ()  # subscription ids whose renewal failed (logged; retried next run)


#: The sync state's last error on a resource the mass-delete brake stopped.
BRAKE_REASON = "mass_delete_refused"


class BrakeReleaseRefused(ValueError):
    """Releasing the brake was refused; the message says why and what to confirm."""


class Maintenance:
    """The timers' and the administrator's recovery work on registered mailboxes."""

    def __init__(self, *, store: Store, subscriptions: SubscriptionManager, job: MailboxSyncJob) -> None:
        self._store = store
        self._subscriptions = subscriptions
        self._job = job

    # -- the renewal timer ----------------------------------------------------------------------

    async def renew_subscriptions(self, *, before: dt.datetime) -> RenewalReport:
        """Renew subscriptions expiring before ``before``; recreate those Graph no longer has (404)
        and run a delta for them, since notifications may have been lost meanwhile.

        Each subscription on its own: one that fails (403, throttling, a deleted mailbox, a failing
        delta after recreation) is reported in ``failed`` and logged, and the others are renewed -
        an error must never let every later subscription expire."""
        renewed: list[str] = []
        recreated: list[str] = []
        resynced: list[SyncRunReport] = []
        failed: list[str] = []
        expiring = [record async for record in self._store.subscriptions.list_expiring(before)]
        for record in expiring:
            try:
                new_id, report = await self._renew(record)
            except Exception as error:
                failed.append(record.subscription_id)
                logger.error(
                    "subscription renewal failed for mailbox %s: %s",
                    short_fingerprint(record.mailbox_id),
                    type(error).__name__,
                )
                continue
            if new_id is None:
                renewed.append(record.subscription_id)
            else:
                recreated.append(new_id)
            if report is not None:
                resynced.append(report)
        return RenewalReport(tuple(renewed), tuple(recreated), tuple(resynced), tuple(failed))

    async def _renew(self, record: SubscriptionRecord) -> tuple[str | None, SyncRunReport | None]:
        """Renew one subscription: (None, None), or (its replacement's id, the delta run after it)."""
        ref = parse_resource(record.mailbox_id, record.resource)
        try:
            expiration = await self._subscriptions.renew(record.subscription_id, RESOURCE_OF_KIND[ref.kind])
        except ItemNotFound:
            new = await replace_subscription(self._store, self._subscriptions, record)
            await self._audit(record.mailbox_id, AuditAction.SUBSCRIBED)
            # Dirty first: if the delta fails now, the resource keeps its mark and the sweep retries.
            await self._store.sync_state.mark_dirty(record.mailbox_id, record.resource)
            run = await self._job.run(record.mailbox_id, record.resource, wait_for_lease=True)
            return new.subscription_id, run
        await self._store.subscriptions.put(dataclasses.replace(record, expiration=expiration))
        return None, None

    # -- recovery -------------------------------------------------------------------------------

    async def run_full_resync(
        self, mailbox_id: str, *, allow_mass_delete: bool = False, progress: ProgressCallback | None = None
    ) -> tuple[SyncRunReport, ...]:
        """Recovery: forget every subscribed resource's delta link and re-read it against the link map
        (linked, unchanged items are not rewritten), and mark the mailbox active again.
        ``allow_mass_delete``: the administrator confirms that deletes the brake refused are intended."""
        await self._store.registry.get_mailbox(mailbox_id)  # MailboxNotFound if not registered
        job = self._job.with_options(mass_delete_ratio=1.0) if allow_mass_delete else self._job
        await self._store.registry.set_state(mailbox_id, MailboxState.ACTIVE)
        await self._audit(mailbox_id, AuditAction.RESYNC)
        records = [record async for record in self._store.subscriptions.list_for_mailbox(mailbox_id)]
        return tuple(
            [
                await job.run(
                    mailbox_id, r.resource, progress=progress, full_resync=True, wait_for_lease=True
                )
                for r in records
            ]
        )

    async def refused_deletes(self, mailbox_id: str) -> int:
        """How many deletes the mass-delete brake holds back for this mailbox (0: not braked): per
        item kind whose resources the brake stopped, the count of its latest refusal (audited)."""
        braked: set[ItemKind] = set()
        async for record in self._store.subscriptions.list_for_mailbox(mailbox_id):
            state = await self._store.sync_state.get_state(mailbox_id, record.resource)
            if state.last_error == BRAKE_REASON:
                braked.add(parse_resource(mailbox_id, record.resource).kind)
        counts: dict[ItemKind, int] = {}
        for entry in await self._store.audit.list_recent(mailbox_id, limit=500):  # newest first
            code = entry.reason_code or ""
            if (
                entry.item_kind in braked
                and entry.item_kind not in counts
                and code.startswith(BRAKE_REASON + ".")
            ):
                counts[entry.item_kind] = int(code.rpartition(".")[2])
        return sum(counts.values())

    async def release_brake(
        self, mailbox_id: str, *, confirm_deletes: int, progress: ProgressCallback | None = None
    ) -> tuple[SyncRunReport, ...]:
        """Let the deletes the brake refused through, once the administrator confirms their number
        (a full resync that allows them); a wrong number changes nothing."""
        refused = await self.refused_deletes(mailbox_id)
        if refused == 0:
            raise BrakeReleaseRefused("the mass-delete brake is not holding this mailbox")
        if confirm_deletes != refused:
            raise BrakeReleaseRefused(
                f"the brake refused {refused} deletes: confirm exactly that number to let them through"
            )
        return await self.run_full_resync(mailbox_id, allow_mass_delete=True, progress=progress)

    async def retry_parked(self, mailbox_id: str | None = None) -> tuple[SyncRunReport, ...]:
        """The parked-items timer: re-read each resource that holds parked items against the link map.

        An item parked for a cause fixed since (a privilege granted) is synced and unparked; items
        still failing stay parked with one more attempt; linked, unchanged items are not rewritten."""
        kinds: dict[str, set[ItemKind]] = {}
        async for item in self._store.parked.list_parked(mailbox_id):
            if item.ref.outlook_id is not None:
                kinds.setdefault(item.mailbox_id, set()).add(item.ref.kind)
        reports = []
        for box, parked_kinds in kinds.items():
            records = [record async for record in self._store.subscriptions.list_for_mailbox(box)]
            for record in records:
                if parse_resource(box, record.resource).kind in parked_kinds:
                    reports.append(
                        await self._job.run(box, record.resource, full_resync=True, wait_for_lease=True)
                    )
        return tuple(reports)

    async def _audit(self, mailbox_id: str, action: AuditAction) -> None:
        with contextlib.suppress(ValueError):  # a mailbox id the audit cannot hold is no reason to fail
            await self._store.audit.append(AuditRecord(mailbox_id=mailbox_id, actor=ACTOR, action=action))
