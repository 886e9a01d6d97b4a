"""Email tracking in the sync job: decide, read the facts the planner needs, record the outcome.

The job (:class:`shared.sync.job.MailboxSyncJob`) asks, for each message of a page:

1. :meth:`Tracker.decide` - the :class:`~shared.sync.tracking.policy.TrackingPolicy` verdict from the
   envelope. Only a tracked message has its body read (by the job) and, later, its attachments.
2. :meth:`Tracker.facts` - what the planner needs to know and only I/O can tell
   (:class:`~shared.sync.plan.PlanFacts`):

   - whether a message reported ``@removed`` from this folder still exists elsewhere in the mailbox
     (moved, not deleted: the destination folder's run decides; one envelope GET per removed linked
     message; a move to Deleted Items counts as a delete);
   - whether another registered mailbox still links the CRM email an untracked or deleted message
     maps to (one email per internetMessageId across mailboxes): O(mailboxes) point reads, paid only
     for a linked message this user owns that leaves tracking, which is rare;
   - the regarding the decision wants, what this mailbox set before, whether the attachments were
     copied, and an inbound sender no CRM record matches (for ``create_contact_for_unknown_sender``).

   The planner turns them into actions (regarding, attachment copy, sender contact) that the applier
   executes and audits.
3. :meth:`Tracker.after_apply` - records the verdict in the tracking index (why tracked, regarding,
   thread rows for correlation); forgets it when the message was untracked.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.crm.port import CrmPort
from shared.domain.model import Email, ItemKind, OutlookItem
from shared.outlook.errors import ItemNotFound
from shared.outlook.mailbox import AttachmentReader, MailFolder
from shared.store.ports import Store
from shared.store.records import AuditAction, AuditRecord, Mailbox
from shared.sync.plan import (
    ACTOR,
    Action,
    DeleteInCrm,
    DropLink,
    Link,
    PlanFacts,
    SetRegarding,
    Skip,
    TrackingFacts,
    UnlinkOnly,
    WriteLink,
)
from shared.sync.planner_email import regarding_bindable
from shared.sync.tracking.envelope import Envelope
from shared.sync.tracking.folders import FolderTree
from shared.sync.tracking.index import TrackedMessage, TrackedThread, TrackingIndex
from shared.sync.tracking.policy import SenderLookup, TrackingDecision, TrackingPolicy

logger = logging.getLogger(__name__)

EMAIL_TABLE = "email"
_DELETED_ITEMS = "deleteditems"


class TrackingMailbox(AttachmentReader, Protocol):
    """The Graph reads tracking needs (``shared.outlook.mailbox.OutlookMailbox`` implements them)."""

    async def folder(self, mailbox: str, folder: str) -> MailFolder: ...

    async def message(
        self, mailbox: str, message_id: str, *, mailbox_address: str | None = None
    ) -> OutlookItem: ...


class TrackingService:
    """Long-lived collaborators; :meth:`start` gives the per-run :class:`Tracker`."""

    def __init__(self, *, crm: CrmPort, store: Store, index: TrackingIndex, outlook: TrackingMailbox) -> None:
        self._crm = crm
        self._store = store
        self._index = index
        self._outlook = outlook

    @property
    def outlook(self) -> TrackingMailbox:
        """The mailbox reads tracking uses (also the source of a tracked message's attachments)."""
        return self._outlook

    def start(self, mailbox: Mailbox) -> Tracker:
        """A tracker for one run of one mailbox (its caches live as long as the run)."""
        self._index.discard(mailbox.mailbox_id)
        return Tracker(
            mailbox=mailbox, crm=self._crm, store=self._store, index=self._index, outlook=self._outlook
        )


@dataclass(frozen=True, slots=True)
class _Seen:
    decision: TrackingDecision
    earlier: TrackedMessage | None


class Tracker:
    """Tracking for one run of one mailbox (see the module docstring)."""

    def __init__(
        self, *, mailbox: Mailbox, crm: CrmPort, store: Store, index: TrackingIndex, outlook: TrackingMailbox
    ) -> None:
        self._mailbox = mailbox
        self._crm = crm
        self._store = store
        self._index = index
        self._outlook = outlook
        self._caller = mailbox.crm_caller_object_id
        self._lookup = SenderLookup(crm, self._caller)
        self.policy = TrackingPolicy(
            mailbox_id=mailbox.mailbox_id,
            settings=mailbox.settings,
            index=index,
            folders=FolderTree(outlook, mailbox.mailbox_id),
            lookup=self._lookup,
        )
        self._seen: dict[str, _Seen] = {}
        self._decisions: list[AuditRecord] = []  # tracked / untracked, audited per page
        self._deleted_items: str | None = None
        self._known: dict[str, TrackedMessage] | None = None  # the index's message rows, if preloaded

    async def preload(self) -> None:
        """Read the mailbox's tracked messages once (a folder's full read); this run is the only writer
        of them (it holds the mailbox lease) and keeps the copy current."""
        if self._known is None:
            self._known = await self._index.list_messages(self.mailbox_id)

    async def _earlier(self, item_id: str) -> TrackedMessage | None:
        if self._known is not None:
            return self._known.get(item_id)
        return await self._index.get_message(self.mailbox_id, item_id)

    @property
    def mailbox_id(self) -> str:
        return self._mailbox.mailbox_id

    # -- 1. decide ---------------------------------------------------------------------------------

    async def decide(self, item: OutlookItem) -> TrackingDecision | None:
        """The verdict on a present message; ``None`` for a removal or another kind of item."""
        envelope = Envelope.of(item)
        if envelope is None:
            return None
        earlier = await self._earlier(item.item_id)
        decision = await self.policy.decide(envelope, earlier=earlier)
        self._seen[item.item_id] = _Seen(decision, earlier)
        logger.debug("tracking decision: %s (%s)", decision.tracked, decision.reason.value)
        return decision

    # -- 2. facts -----------------------------------------------------------------------------------

    async def facts(
        self, item: OutlookItem, link: Link | None, *, own_link: bool, tracked: bool
    ) -> PlanFacts:
        """What the planner needs to know about this message (see the module docstring)."""
        if item.kind is not ItemKind.EMAIL:
            return PlanFacts()
        moved = own_link and item.removed and await self._moved_away(item.item_id)
        leaving = own_link and link is not None and link.owned_by_user and (item.removed or not tracked)
        holds = leaving and link is not None and await self._other_holder(link.crm_id) is not None
        return PlanFacts(
            moved_away=moved, other_mailbox_holds=holds, tracking=await self._tracking(item, tracked)
        )

    async def _tracking(self, item: OutlookItem, tracked: bool) -> TrackingFacts | None:
        seen = self._seen.get(item.item_id)
        if not tracked or seen is None or not seen.decision.tracked or not isinstance(item.item, Email):
            return None
        earlier = seen.earlier
        wanted = seen.decision.regarding
        if wanted is not None and not regarding_bindable(wanted.table):
            logger.warning("regarding not set: crmsync has no email regarding binding for that table")
        return TrackingFacts(
            regarding=seen.decision.regarding,
            earlier_crm_id=earlier.crm_id if earlier else None,
            earlier_regarding=earlier.regarding if earlier else None,
            attachments_copied=earlier.attachments_copied if earlier else False,
            unknown_sender=await self._unknown_sender(item.item),
        )

    async def _moved_away(self, item_id: str) -> bool:
        """Whether a message removed from one folder still lives in another (not Deleted Items)."""
        try:
            found = await self._outlook.message(self.mailbox_id, item_id)
        except ItemNotFound:
            return False
        if self._deleted_items is None:
            self._deleted_items = (await self._outlook.folder(self.mailbox_id, _DELETED_ITEMS)).id
        return found.folder_id != self._deleted_items

    async def _other_holder(self, crm_id: uuid.UUID) -> str | None:
        """Another registered mailbox whose link map holds this CRM email, if any."""
        async for mailbox in self._store.registry.list_mailboxes():
            if mailbox.mailbox_id == self.mailbox_id:
                continue
            if await self._store.links.get_by_crm(mailbox.mailbox_id, EMAIL_TABLE, str(crm_id)) is not None:
                return mailbox.mailbox_id
        return None

    async def _unknown_sender(self, email: Email) -> tuple[str, str] | None:
        """(address, name) of an inbound sender no CRM record matches, if the mailbox wants a contact."""
        if not self._mailbox.settings.create_contact_for_unknown_sender:
            return None
        if email.sender is None or email.is_outgoing:
            return None
        address = email.sender.address.lower()
        if await self._lookup.records(address):
            return None
        return address, email.sender.name or address.partition("@")[0]

    # -- 3. after apply ----------------------------------------------------------------------------

    async def after_apply(self, item: OutlookItem, actions: Sequence[Action]) -> None:
        """Record the outcome in the tracking index, once the applier wrote the plan."""
        seen = self._seen.pop(item.item_id, None)
        if _gives_up(actions):
            earlier = seen.earlier if seen else await self._earlier(item.item_id)
            if earlier is not None:
                await self._index.forget_message(self.mailbox_id, earlier)
                if self._known is not None:
                    self._known.pop(item.item_id, None)
                why = seen.decision.reason.value if seen is not None else "removed"
                self._audit(AuditAction.UNTRACKED, item.item_id, earlier.crm_id, why)
            return
        via = seen.decision.via if seen is not None and seen.decision.tracked else None
        if seen is None or via is None or not isinstance(item.item, Email):
            return
        if any(isinstance(action, Skip) for action in actions):
            return  # another copy of the message holds the CRM email
        earlier = seen.earlier
        crm_id = await self._crm_id(item.item_id, actions, earlier)
        if crm_id is None:
            return  # not synchronised (a draft, a message without a message id)
        same = earlier is not None and earlier.crm_id == crm_id
        regarding = next(
            (a.regarding for a in actions if isinstance(a, SetRegarding)),
            earlier.regarding if earlier is not None and same else None,
        )
        tracked = TrackedMessage(
            item_id=item.item_id,
            crm_id=crm_id,
            via=via,
            regarding=regarding,
            attachments_copied=True,
            conversation_id=item.item.conversation_id,
            token=seen.decision.token,
        )
        if earlier is None or earlier.crm_id != crm_id:
            self._audit(AuditAction.TRACKED, item.item_id, crm_id, seen.decision.reason.value)
        if tracked != earlier:
            await self._index.put_message(self.mailbox_id, tracked)
            if self._known is not None:
                self._known[item.item_id] = tracked
            await self._remember_thread(tracked)

    def _audit(self, action: AuditAction, item_id: str, crm_id: uuid.UUID, rule: str) -> None:
        self._decisions.append(
            AuditRecord.for_item(
                mailbox_id=self.mailbox_id,
                actor=ACTOR,
                action=action,
                kind=ItemKind.EMAIL,
                outlook_id=item_id,
                crm_id=str(crm_id),
                reason_code=rule,
            )
        )

    async def flush_audit(self) -> None:
        """Write the tracking rows and decisions recorded since the last flush (one transaction per 100).

        Only changes are audited (a message became tracked, by which rule; stopped being tracked,
        and why): a verdict of "not tracked" on ordinary mail would cost a row per message of every
        inbox. ``crmsync audit --item`` explains a message with no entry from the settings."""
        await self._index.flush(self.mailbox_id)  # the page's tracking rows, likewise
        decisions, self._decisions = self._decisions, []
        if decisions:
            await self._store.audit.append_many(decisions)

    async def _crm_id(
        self, item_id: str, actions: Sequence[Action], earlier: TrackedMessage | None
    ) -> uuid.UUID | None:
        for action in actions:
            if isinstance(action, WriteLink):
                return action.link.crm_id
        if earlier is not None:
            return earlier.crm_id
        link = await self._store.links.get_by_outlook(self.mailbox_id, ItemKind.EMAIL, item_id)
        return uuid.UUID(link.crm_id) if link is not None else None

    async def _remember_thread(self, tracked: TrackedMessage) -> None:
        thread = TrackedThread(tracked.crm_id, tracked.regarding)
        for key, value in tracked.thread_keys():
            await self._index.put_thread(self.mailbox_id, key, value, thread)


def _gives_up(actions: Sequence[Action]) -> bool:
    """Whether a plan ends this mailbox's link to the CRM email (untrack, delete)."""
    return any(isinstance(action, UnlinkOnly | DropLink | DeleteInCrm) for action in actions)
