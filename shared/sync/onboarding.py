"""Onboarding and offboarding, behind ``crmsync mailbox add/remove`` and the admin API.

Onboarding checks before it changes anything, so a bad request gets one clear error and leaves no
trace: the Graph user exists; the CRM user exists, is enabled and is who impersonation resolves to
(``WhoAmI`` with ``CallerObjectId``: "Impersonate another user using the Web API",
learn.microsoft.com/power-apps/developer/data-platform/webapi/impersonate-another-user-web-api);
and the CRM user may create each synchronised table. The privilege check creates a probe record and
then the same record again inside one change set: the duplicate fails, so Dataverse rolls the
change set back ("Execute batch operations using the Web API": a change set is all or nothing) and
nothing is left behind; a missing privilege fails the first create and names the privilege.

Then it registers the mailbox (the store makes mailbox <-> CRM user one to one atomically), adds the
tracked category to the mailbox's master list, creates one subscription per synchronised resource
(immutable ids - the Graph client sends ``Prefer: IdType="ImmutableId"`` on every request - a
lifecycle URL and a fresh clientState, of which only the SHA-256 is stored), and runs the initial
delta baseline with progress reports. A failure after registration undoes what was done. A user
holding "Sync to Outlook" then gets the initial fill from the CRM (:mod:`shared.sync.crm_fill`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from msgraph.graph_service_client import GraphServiceClient

from shared.crm.errors import CrmError, DuplicateRecord
from shared.crm.port import CrmPort, CrmQueryPort, FieldValue, Upsert
from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import ItemKind
from shared.outlook.claim import ClaimGuard
from shared.outlook.errors import GraphError, GraphThrottled, ItemNotFound
from shared.outlook.errors import MailboxNotFound as GraphMailboxNotFound
from shared.outlook.mailbox import OutlookMailbox
from shared.outlook.subscriptions import SubscriptionManager, resource_path
from shared.outlook.writers import OutlookWriter
from shared.store.errors import CrmUserAlreadyRegistered, MailboxAlreadyRegistered
from shared.store.ports import Store
from shared.store.records import (
    AuditAction,
    AuditRecord,
    Mailbox,
    SubscriptionRecord,
    utc_now,
)
from shared.sync.applier import ACTOR
from shared.sync.crm_fill import CrmFill, FillReport
from shared.sync.crm_privilege import NO_PRIVILEGE_REASON, SYNC_TO_OUTLOOK
from shared.sync.crm_run import CrmToOutlookRun
from shared.sync.field_rules import FixedFieldDirection, check_field_directions
from shared.sync.fieldmaps import field_map
from shared.sync.job import (
    MailboxSyncJob,
    ProgressCallback,
    ResourceRef,
    SyncProgress,
    SyncRunReport,
)
from shared.sync.lifecycle import RESOURCE_OF_KIND, subscribe
from shared.sync.status import CRM_RESOURCES, SubscriptionStatus, subscription_status
from shared.sync.tracking.folders import folders_to_watch

logger = logging.getLogger(__name__)

# Minimal valid rows for the privilege probe (never committed: see the module docstring).
_PROBE_FIELDS: dict[str, dict[str, FieldValue]] = {
    "contact": {"lastname": "crmsync privilege check"},
    "appointment": {"subject": "crmsync privilege check"},
    "task": {"subject": "crmsync privilege check"},
    "email": {"subject": "crmsync privilege check"},
}


class OnboardingRefused(ValueError):
    """Onboarding was refused before anything changed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class OnboardingProgress:
    """A step of onboarding; during the baseline, the items seen and synced so far."""

    step: str
    resource: str | None = None
    items_seen: int = 0
    items_synced: int = 0


OnboardingCallback = Callable[[OnboardingProgress], None]
#: How long an initial sync waits for Graph's throttling in all (two of Outlook's 10-minute windows).
MAX_THROTTLED_WAIT_SECONDS = 1200.0


def _retry_after(value: str | None) -> float:
    """Retry-After in seconds (Graph sends seconds); a minute when it is missing or not a number."""
    try:
        return min(max(float(value or ""), 1.0), 600.0)
    except ValueError:
        return 60.0


@dataclass(frozen=True, slots=True)
class OnboardingReport:
    mailbox_id: str
    upn: str
    crm_user_id: str
    subscriptions: tuple[SubscriptionStatus, ...]
    baseline: tuple[SyncRunReport, ...]
    sync_to_outlook: bool | None = None  # prvSyncToOutlook held (None: the CRM port cannot tell)
    fill: tuple[FillReport, ...] = ()  # the initial fill from the CRM, per table

    @property
    def items_seen(self) -> int:
        return sum(run.items_seen for run in self.baseline)

    @property
    def items_synced(self) -> int:
        return sum(run.items_synced for run in self.baseline)

    @property
    def parked(self) -> int:
        return sum(run.parked for run in self.baseline)


@dataclass(frozen=True, slots=True)
class OffboardingReport:
    mailbox_id: str
    subscriptions_deleted: int
    links_kept: int  # the CRM data stays; the link rows stay for a later re-onboarding or repair


class Onboarding:
    """Adds a mailbox (check, register, subscribe, baseline) and removes one (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        crm: CrmPort,
        graph: GraphServiceClient,
        mailboxes: OutlookMailbox,
        writer: OutlookWriter,
        subscriptions: SubscriptionManager,
        job: MailboxSyncJob,
        clock: Callable[[], dt.datetime] = utc_now,
        claims: ClaimGuard | None = None,
    ) -> None:
        self._store = store
        self._claims = claims
        self._crm = crm
        self._graph = graph  # mail folder reads for the folders tracking watches
        self._mailboxes = mailboxes
        self._writer = writer
        self._subscriptions = subscriptions
        self._job = job
        self._clock = clock

    # -- onboarding -----------------------------------------------------------------------------

    async def onboard(
        self,
        upn_or_id: str,
        crm_user_id: str,
        *,
        settings: MailboxSettings | None = None,
        progress: OnboardingCallback | None = None,
        actor: str = ACTOR,
        take_over: bool = False,
    ) -> OnboardingReport:
        """Check, register, subscribe and baseline one mailbox (see the module docstring).

        ``actor`` is who asked (the audit's actor: an administrator's Entra id, ``cli:<user>``).
        ``take_over``: claim a mailbox another deployment synchronizes; that one stops writing to it
        at its next run (shared/outlook/claim.py)."""
        settings = settings or MailboxSettings()
        try:
            check_field_directions(settings)
        except FixedFieldDirection as refused:
            raise OnboardingRefused(str(refused)) from None
        notify = progress or (lambda _: None)
        notify(OnboardingProgress("checking the mailbox"))
        try:
            user = await self._mailboxes.user(upn_or_id)
        except (GraphMailboxNotFound, ItemNotFound):
            raise OnboardingRefused("no Exchange Online mailbox with this UPN or id") from None
        notify(OnboardingProgress("checking the CRM user"))
        caller = await self._check_crm_user(crm_user_id)
        if caller.lower() != user.id.lower():
            # Dynamics pairs a mailbox with the user who owns it; acting as anybody else would let
            # one user's mail be written under another user's identity.
            raise OnboardingRefused(
                "the CRM user's Entra object id (azureactivedirectoryobjectid) is not the mailbox "
                "owner's: a mailbox syncs only as its own user; pick the CRM user of that person"
            )
        await self._check_privileges(caller, settings)
        await self._check_claim(user.id, take_over=take_over)
        try:
            mailbox = await self._store.registry.register(
                mailbox_id=user.id,
                upn=user.user_principal_name or upn_or_id,
                crm_user_id=crm_user_id.lower(),
                crm_caller_object_id=caller,
                settings=settings,
            )
        except MailboxAlreadyRegistered:
            raise OnboardingRefused("this mailbox is already registered (one CRM user per mailbox)") from None
        except CrmUserAlreadyRegistered:
            raise OnboardingRefused(
                "this CRM user already has a mailbox (one mailbox per CRM user)"
            ) from None
        await self._audit(mailbox.mailbox_id, AuditAction.REGISTERED, actor)
        try:
            await self._store.links.reindex(mailbox.mailbox_id)  # links of an earlier registration, if any
            if self._claims is not None:
                await self._claims.claims.write(mailbox.mailbox_id, self._claims.ours(self._clock()))
                self._claims.forget(mailbox.mailbox_id)
            subscriptions = await self._subscribe(mailbox, notify, actor)
        except BaseException:
            await self.offboard(mailbox.mailbox_id, actor=actor)
            raise
        try:
            baseline = await self._baseline(mailbox.mailbox_id, subscriptions, notify)
        except BaseException:
            # All or nothing: a mailbox whose initial sync failed is not left registered half-synced.
            # The CRM records written so far and their link rows stay, so adding the mailbox again
            # links them instead of writing them twice.
            logger.warning("initial sync failed: the mailbox's registration was rolled back")
            await self.offboard(mailbox.mailbox_id, actor=actor)
            raise
        sync_to_outlook = await self._sync_to_outlook(mailbox)
        fill: list[FillReport] = []
        if sync_to_outlook and isinstance(self._crm, CrmQueryPort):
            notify(OnboardingProgress("filling Outlook from the CRM"))
            runner = CrmToOutlookRun(store=self._store, crm=self._crm, graph=self._graph)
            fill = await CrmFill(store=self._store, graph=self._graph, runner=runner).fill(mailbox.mailbox_id)
        now = self._clock()
        return OnboardingReport(
            mailbox.mailbox_id,
            mailbox.upn,
            mailbox.crm_user_id,
            tuple(subscription_status(record, now) for record in subscriptions),
            tuple(baseline),
            sync_to_outlook,
            tuple(fill),
        )

    async def _check_claim(self, mailbox_id: str, *, take_over: bool) -> None:
        """One synchronizing deployment per mailbox, like Server-Side Synchronization's one
        organization per mailbox: refuse, naming the holder, unless the administrator takes it over."""
        if self._claims is None:
            return
        self._claims.forget(mailbox_id)
        holder = await self._claims.held_elsewhere(mailbox_id)
        if holder is None:
            return
        if not take_over:
            raise OnboardingRefused(
                f"this mailbox is synchronized by another {holder.describe()}; one deployment per "
                "mailbox: remove it there (`crmsync mailbox remove`), or take it over here with "
                "`crmsync mailbox add ... --take-over` (the other deployment then stops writing to it)"
            )
        logger.warning("taking the mailbox over from another crmsync deployment")

    async def _release_claim(self, mailbox_id: str) -> None:
        """Release the claim if this deployment holds it (a take-over elsewhere keeps theirs)."""
        if self._claims is None:
            return
        self._claims.forget(mailbox_id)
        # Best effort: a claim left behind names this deployment, and `--take-over` gets past it.
        with contextlib.suppress(GraphError):
            holder = await self._claims.claims.read(mailbox_id)
            if holder is not None and holder.deployment == self._claims.deployment:
                await self._claims.claims.write(mailbox_id, None)

    async def _sync_to_outlook(self, mailbox: Mailbox) -> bool | None:
        """Whether the CRM user holds "Sync to Outlook" (RetrieveUserPrivileges). Without it the
        mailbox only tracks mail: CRM -> Outlook writes nothing and status says why."""
        if not isinstance(self._crm, CrmQueryPort):
            return None
        held = SYNC_TO_OUTLOOK in await self._crm.user_privileges(uuid.UUID(mailbox.crm_user_id), caller=None)
        if not held:
            for resource in CRM_RESOURCES:
                await self._store.sync_state.record_error(mailbox.mailbox_id, resource, NO_PRIVILEGE_REASON)
        return held

    async def _baseline(
        self, mailbox_id: str, subscriptions: list[SubscriptionRecord], notify: OnboardingCallback
    ) -> list[SyncRunReport]:
        baseline = []
        for record in subscriptions:
            notify(OnboardingProgress("initial sync", record.resource))

            def report(step: SyncProgress) -> None:
                notify(OnboardingProgress("initial sync", step.resource, step.items_seen, step.items_synced))

            baseline.append(await self._paced(mailbox_id, record.resource, report, notify))
        return baseline

    async def _check_crm_user(self, crm_user_id: str) -> str:
        """The CRM user's Entra object id, once the user is found, enabled and impersonable."""
        try:
            user_id = uuid.UUID(crm_user_id)
        except ValueError:
            raise OnboardingRefused("the CRM user id must be a systemuserid (a GUID)") from None
        row = await self._crm.get(
            "systemuser", user_id, select=["azureactivedirectoryobjectid", "isdisabled"], caller=None
        )
        if row is None:
            raise OnboardingRefused("no CRM user (systemuser) with this id")
        if row.get("isdisabled") is True:
            raise OnboardingRefused("the CRM user is disabled; enable the user in Dataverse first")
        caller = row.get("azureactivedirectoryobjectid")
        if not isinstance(caller, str) or not caller:
            raise OnboardingRefused("the CRM user has no Entra object id, so crmsync cannot act as the user")
        try:
            whoami = await self._crm.whoami(caller=caller)
        except CrmError as error:
            if error.retryable:
                raise
            raise OnboardingRefused(f"crmsync cannot act as the CRM user: {error.remedy}") from None
        if whoami.user_id != user_id:
            raise OnboardingRefused("impersonating the user's Entra object id resolves to another CRM user")
        return caller

    async def _check_privileges(self, caller: str, settings: MailboxSettings) -> None:
        """Refuse, naming the privilege, if the user cannot create a synchronised table's records."""
        for kind in sorted(settings.item_kinds):
            table = field_map(kind).table
            probe = Upsert(table, _PROBE_FIELDS[table], id=uuid.uuid4(), if_none_match=True)
            results = await self._crm.apply_batch([probe, probe], atomic=True, caller=caller)
            error = next((result.error for result in results if result.error is not None), None)
            if error is None:
                raise RuntimeError("the privilege probe's change set was not rolled back")
            if isinstance(error, DuplicateRecord):
                continue  # the first create went through, so the user may create: rolled back
            if error.retryable:
                raise error
            raise OnboardingRefused(
                f"the CRM user cannot create {table} records: {error.message}. {error.remedy}"
            )

    async def _subscribe(
        self, mailbox: Mailbox, notify: OnboardingCallback, actor: str
    ) -> list[SubscriptionRecord]:
        mailbox_id = mailbox.mailbox_id
        kinds = mailbox.settings.item_kinds
        if ItemKind.EMAIL in kinds:
            notify(OnboardingProgress("adding the tracked category"))
            await self._writer.ensure_master_category(mailbox_id, mailbox.settings.tracked_category)
        task_list = await self._writer.default_task_list(mailbox_id) if ItemKind.TASK in kinds else None
        refs: list[ResourceRef] = []
        for kind in sorted(kinds):
            if kind is ItemKind.EMAIL:
                # Graph's message delta is per folder: the inbox, plus the folders tracking watches
                # (tracked folders and their subfolders; Sent Items when sent mail may be tracked).
                folders = ["inbox", *await folders_to_watch(self._graph, mailbox_id, mailbox.settings)]
                refs += [ResourceRef(kind, mail_folder=folder) for folder in dict.fromkeys(folders)]
            else:
                refs.append(ResourceRef(kind, task_list_id=task_list if kind is ItemKind.TASK else None))
        records = []
        for ref in refs:
            resource = resource_path(
                RESOURCE_OF_KIND[ref.kind],
                mailbox_id,
                task_list_id=ref.task_list_id,
                mail_folder=ref.mail_folder or "inbox",
            )
            notify(OnboardingProgress("subscribing", resource))
            records.append(await subscribe(self._store, self._subscriptions, mailbox_id, ref))
            await self._audit(mailbox_id, AuditAction.SUBSCRIBED, actor)
        return records

    # -- offboarding ----------------------------------------------------------------------------

    async def offboard(self, mailbox_id: str, *, actor: str = ACTOR) -> OffboardingReport:
        """Delete the subscriptions (already gone is fine), forget sync state, unregister. CRM data stays."""
        records = [record async for record in self._store.subscriptions.list_for_mailbox(mailbox_id)]
        for record in records:
            await self._subscriptions.delete(record.subscription_id)
            await self._store.subscriptions.delete(record.subscription_id)
            await self._store.sync_state.reset(mailbox_id, record.resource)
            await self._audit(mailbox_id, AuditAction.UNSUBSCRIBED, actor)
        await self._release_claim(mailbox_id)
        await self._store.registry.unregister(mailbox_id)
        await self._audit(mailbox_id, AuditAction.UNREGISTERED, actor)
        return OffboardingReport(mailbox_id, len(records), await self._store.links.count(mailbox_id))

    async def _paced(
        self, mailbox_id: str, resource: str, progress: ProgressCallback, notify: OnboardingCallback
    ) -> SyncRunReport:
        """A baseline run that waits out Graph's throttling and resumes from its last stored page.

        Outlook allows an app 10,000 requests per mailbox in 10 minutes, each request of a JSON
        batch counted ("Microsoft Graph service-specific throttling limits", Outlook service limits,
        learn.microsoft.com/graph/throttling-limits): a big mailbox's baseline can use that up. The
        CLI paces itself instead of failing; a queue job fails and the queue retries it instead."""
        waited = 0.0
        while True:
            try:
                return await self._job.run(mailbox_id, resource, progress=progress, wait_for_lease=True)
            except GraphThrottled as throttled:
                delay = _retry_after(throttled.retry_after)
                if waited + delay > MAX_THROTTLED_WAIT_SECONDS:
                    raise
                waited += delay
                logger.warning("Graph throttles this mailbox; the initial sync resumes in %.0f s", delay)
                notify(OnboardingProgress("waiting for Graph's throttling", resource))
                await asyncio.sleep(delay)

    async def _audit(self, mailbox_id: str, action: AuditAction, actor: str) -> None:
        with contextlib.suppress(ValueError):  # a mailbox id the audit cannot hold is no reason to fail
            await self._store.audit.append(AuditRecord(mailbox_id=mailbox_id, actor=actor, action=action))
