"""Keeping registered mailboxes in sync: the renewal timer, the parked-items timer and recovery.

- Subscriptions expire (Graph allows at most 10,080 minutes for Outlook resources): the renewal
  timer renews those expiring soon and recreates the ones Graph no longer has, running a delta for
  each recreated one since notifications may have been lost meanwhile.
- A full resync (recovery, and the release of the mass-delete brake) forgets each resource's delta
  link and re-reads it against the link map; linked, unchanged items are not rewritten.
- Parked items are retried one by one (read by id), with exponential backoff and an attempt cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from shared.domain.model import ItemKind
from shared.outlook.errors import ItemNotFound
from shared.outlook.subscriptions import SubscriptionManager
from shared.store.fingerprint import short_fingerprint
from shared.store.ports import Store
from shared.store.records import AuditAction, AuditRecord, MailboxState, SubscriptionRecord, utc_now
from shared.sync import brake
from shared.sync.applier import ACTOR
from shared.sync.brake import BrakeReleaseRefused
from shared.sync.job import MailboxSyncJob
from shared.sync.lifecycle import RESOURCE_OF_KIND, replace_subscription
from shared.sync.policies import kind_enabled
from shared.sync.resources import parse_resource
from shared.sync.run import ProgressCallback, RunOutcome, SyncRunReport
from shared.sync.status import PARKED_MAX_ATTEMPTS, parked_due

logger = logging.getLogger(__name__)

#: Subscriptions renewed at the same time by one renewal run.
RENEWAL_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class RenewalReport:
    renewed: tuple[str, ...]  # subscription ids
    recreated: tuple[str, ...]  # new subscription ids replacing ones Graph no longer had
    resynced: tuple[SyncRunReport, ...]  # a delta after each recreation catches what was missed
    failed: tuple[str, ...] = ()  # subscription ids whose renewal failed (logged; retried next run)


class Maintenance:
    """The timers' and the administrator's recovery work on registered mailboxes."""

    def __init__(
        self,
        *,
        store: Store,
        subscriptions: SubscriptionManager,
        job: MailboxSyncJob,
        parked_max_attempts: int = PARKED_MAX_ATTEMPTS,
    ) -> None:
        self._store = store
        self._subscriptions = subscriptions
        self._job = job
        self._max_attempts = parked_max_attempts

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
        # Mailboxes onboarded together fall due together: a few at a time keeps a run of 10,000
        # renewals (one Graph PATCH and one storage write each) within the function timeout.
        slots = asyncio.Semaphore(RENEWAL_CONCURRENCY)

        async def renew(record: SubscriptionRecord) -> tuple[str | None, SyncRunReport | None] | None:
            async with slots:
                try:
                    return await self._renew(record)
                except Exception as error:
                    logger.error(
                        "subscription renewal failed for mailbox %s: %s",
                        short_fingerprint(record.mailbox_id),
                        type(error).__name__,
                    )
                    return None

        outcomes = await asyncio.gather(*(renew(record) for record in expiring))
        for record, outcome in zip(expiring, outcomes, strict=True):
            if outcome is None:
                failed.append(record.subscription_id)
                continue
            new_id, report = outcome
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
        self,
        mailbox_id: str,
        *,
        allow_mass_delete: bool = False,
        allowed_deletes: Mapping[ItemKind, int] | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[SyncRunReport, ...]:
        """Recovery: forget every subscribed resource's delta link and re-read it against the link map
        (linked, unchanged items are not rewritten); the mailbox is active again when no brake holds.
        ``allowed_deletes``: per kind, the deletes an administrator confirmed (:meth:`release_brake`);
        ``allow_mass_delete``: any number (tests and scripted recovery). A held brake is released by a
        run that completes with its allowance; a resource still held is otherwise not read."""
        await self._store.registry.get_mailbox(mailbox_id)  # MailboxNotFound if not registered
        await self._audit(mailbox_id, AuditAction.RESYNC)
        records = [record async for record in self._store.subscriptions.list_for_mailbox(mailbox_id)]
        reports = []
        for record in records:
            kind = parse_resource(mailbox_id, record.resource).kind
            allow = sys.maxsize if allow_mass_delete else (allowed_deletes or {}).get(kind)
            report = await self._job.run(
                mailbox_id,
                record.resource,
                progress=progress,
                full_resync=True,
                wait_for_lease=True,
                allow_deletes=allow,
            )
            if allow is not None and report.outcome is RunOutcome.COMPLETED:
                await brake.release(self._store.sync_state, mailbox_id, kind)
            reports.append(report)
        if not await brake.held(self._store.sync_state, mailbox_id):
            await self._store.registry.set_state(mailbox_id, MailboxState.ACTIVE)
        return tuple(reports)

    async def release_brake(
        self, mailbox_id: str, *, confirm_deletes: int, progress: ProgressCallback | None = None
    ) -> tuple[SyncRunReport, ...]:
        """The administrator confirms the deletes the mass-delete brake refused: exactly their number
        (:class:`~shared.sync.brake.BrakeConfirmationMismatch` names it otherwise), then a full resync
        applies up to that many deletes per kind. More deletes than confirmed trip the brake again
        with the new number."""
        held = await self.check_brake_release(mailbox_id, confirm_deletes=confirm_deletes)
        logger.warning(
            "mass-delete brake released for mailbox %s: %d deletes confirmed",
            short_fingerprint(mailbox_id),
            confirm_deletes,
        )
        return await self.run_full_resync(mailbox_id, allowed_deletes=held, progress=progress)

    async def check_brake_release(self, mailbox_id: str, *, confirm_deletes: int) -> dict[ItemKind, int]:
        """The deletes held per kind, if ``confirm_deletes`` names their number (else the refusal that
        says what to confirm); lets the admin API answer 409 before it queues the release."""
        await self._store.registry.get_mailbox(mailbox_id)  # MailboxNotFound if not registered
        held = await brake.held(self._store.sync_state, mailbox_id)
        if not held:
            raise brake.BrakeNotHeld("no mass-delete brake holds deletes for this mailbox")
        if confirm_deletes != sum(held.values()):
            raise brake.BrakeConfirmationMismatch(sum(held.values()))
        return held

    async def refused_deletes(self, mailbox_id: str) -> int:
        """How many deletes the mass-delete brake holds back for this mailbox (0: not braked): the
        sum over its item kinds of the deletes each held brake refused (kept in the sync state)."""
        return sum((await brake.held(self._store.sync_state, mailbox_id)).values())

    async def retry_parked(
        self, mailbox_id: str | None = None, *, now: dt.datetime | None = None
    ) -> tuple[SyncRunReport, ...]:
        """The parked-items timer: retry only the parked items that are due, each read by id and taken
        through the page pipeline (:meth:`MailboxSyncJob.run_items`), never a full resync.

        An item parked for a cause fixed since (a privilege granted) is synced and unparked; one still
        failing is parked again with one more attempt. Attempt n+1 waits ``parked_retry_delay(n)``
        (exponential); after ``parked_max_attempts`` the item stays parked as 'gave up' (status says
        what to do) and costs Graph nothing more. An item that needed nothing this time is unparked."""
        now = now or utc_now()
        due: dict[tuple[str, ItemKind], dict[str, int]] = {}
        async for item in self._store.parked.list_parked(mailbox_id):
            if item.ref.outlook_id is not None and parked_due(item, now, self._max_attempts):
                due.setdefault((item.mailbox_id, item.ref.kind), {})[item.ref.outlook_id] = item.attempts
        reports = []
        for (box, kind), attempts in due.items():
            try:
                report = await self._retry(box, kind, list(attempts))
            except Exception as error:  # a transient failure is not the item's: retried next time
                logger.warning(
                    "parked %s items of mailbox %s not retried: %s",
                    kind.value,
                    short_fingerprint(box),
                    type(error).__name__,
                )
                continue
            if report is None:
                continue
            reports.append(report)
            async for item in self._store.parked.list_parked(box):
                ref = item.ref
                if ref.kind is kind and attempts.get(ref.outlook_id or "") == item.attempts:
                    await self._store.parked.remove(box, ref)  # went through with nothing to do
        return tuple(reports)

    async def _retry(self, mailbox_id: str, kind: ItemKind, item_ids: list[str]) -> SyncRunReport | None:
        mailbox = await self._store.registry.get_mailbox(mailbox_id)
        if not mailbox.enabled or not kind_enabled(mailbox.settings, kind):
            return None
        async for record in self._store.subscriptions.list_for_mailbox(mailbox_id):
            if parse_resource(mailbox_id, record.resource).kind is kind:  # by id: any folder of the kind
                return await self._job.run_items(mailbox_id, record.resource, item_ids)
        return None

    async def _audit(self, mailbox_id: str, action: AuditAction) -> None:
        with contextlib.suppress(ValueError):  # a mailbox id the audit cannot hold is no reason to fail
            await self._store.audit.append(AuditRecord(mailbox_id=mailbox_id, actor=ACTOR, action=action))


__all__ = ["BrakeReleaseRefused", "Maintenance", "RenewalReport"]
