"""Email tracking in the Outlook -> CRM job: decide before planning, review the plan, finish after it.

The job (:class:`shared.sync.job.MailboxSyncJob`) asks, for each message of a page:

1. :meth:`Tracker.decide` - the :class:`~shared.sync.tracking.policy.TrackingPolicy` verdict from the
   envelope. Only a tracked message has its body read (by the job) and, later, its attachments.
2. :meth:`Tracker.review` - adjusts the planner's actions:

   - a message reported ``@removed`` from this folder that still exists elsewhere in the mailbox was
     *moved*, not deleted: nothing is done here; the destination folder's run decides (one envelope
     GET per removed linked message; a move to Deleted Items counts as a delete);
   - untracking deletes the CRM email only if the mailbox's user owns it (the planner's rule) *and*
     no other mailbox still links it (one email per internetMessageId across mailboxes). The check
     reads the registry and one link row per other registered mailbox: O(mailboxes) point reads,
     paid only when an owned email is about to be deleted, which is rare;
   - with ``create_contact_for_unknown_sender``, a contact is created (deterministic id) for a tracked
     message's sender that resolves to no CRM record, before the applier resolves the parties.
3. :meth:`Tracker.after_apply` - writes the regarding (``regardingobjectid_<table>_email@odata.bind``;
   a null bind clears it), copies attachments once, and records the verdict in the tracking index
   (why tracked, regarding, thread rows for correlation); forgets it when the message was untracked.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.crm.errors import DuplicateRecord
from shared.crm.port import CrmPort, FieldValue, RecordRef, Upsert
from shared.crm.tables import bind_annotation
from shared.domain.mailbox_settings import CrmRecordRef
from shared.domain.model import Email, ItemKind, OutlookItem
from shared.outlook.errors import ItemNotFound
from shared.outlook.mailbox import MailFolder
from shared.store.ports import Store
from shared.store.records import Mailbox
from shared.sync.merge import Side
from shared.sync.planner import Action, CreateInCrm, DeleteInCrm, DropLink, UnlinkOnly, UpdateCrm, WriteLink
from shared.sync.tracking.attachments import AttachmentSource, copy_attachments
from shared.sync.tracking.envelope import Envelope
from shared.sync.tracking.folders import FolderTree
from shared.sync.tracking.index import TrackedMessage, TrackedThread, TrackingIndex
from shared.sync.tracking.policy import SenderLookup, TrackingDecision, TrackingPolicy

logger = logging.getLogger(__name__)

EMAIL_TABLE = "email"
_CONTACT_NAMESPACE = uuid.UUID("0b6f5a52-3f43-4c55-9d0e-7c1f1d2b9e61")
_DELETED_ITEMS = "deleteditems"


class TrackingMailbox(AttachmentSource, Protocol):
    """The Graph reads tracking needs (``shared.outlook.mailbox.OutlookMailbox`` implements them)."""

    async def folder(self, mailbox: str, folder: str) -> MailFolder: ...

    async def message(
        self, mailbox: str, message_id: str, *, mailbox_address: str | None = None
    ) -> OutlookItem: ...


def unknown_sender_contact_id(address: str) -> uuid.UUID:
    """The id of the contact created for an unknown sender: one per address, however often it writes."""
    return uuid.uuid5(_CONTACT_NAMESPACE, address.lower())


class TrackingService:
    """Long-lived collaborators; :meth:`start` gives the per-run :class:`Tracker`."""

    def __init__(self, *, crm: CrmPort, store: Store, index: TrackingIndex, outlook: TrackingMailbox) -> None:
        self._crm = crm
        self._store = store
        self._index = index
        self._outlook = outlook

    def start(self, mailbox: Mailbox) -> Tracker:
        """A tracker for one run of one mailbox (its caches live as long as the run)."""
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

    # -- 2. review ---------------------------------------------------------------------------------

    async def review(self, item: OutlookItem, actions: Sequence[Action]) -> list[Action]:
        """The plan with moves left to the destination folder and shared CRM emails kept."""
        if item.kind is not ItemKind.EMAIL:
            return list(actions)
        if item.removed and _gives_up(actions) and await self._moved_away(item.item_id):
            return []
        reviewed: list[Action] = []
        for action in actions:
            if isinstance(action, DeleteInCrm) and action.table == EMAIL_TABLE:
                holder = await self._other_holder(action.record_id)
                if holder is not None:
                    reviewed.append(
                        UnlinkOnly(
                            outlook_id=item.item_id,
                            crm_id=action.record_id,
                            kept=Side.CRM,
                            reason="untracked; another mailbox still tracks this CRM email: kept",
                        )
                    )
                    continue
            if isinstance(action, DropLink) and reviewed and isinstance(reviewed[-1], UnlinkOnly):
                continue  # the UnlinkOnly above already drops the link
            reviewed.append(action)
        if self._writes_parties(item, reviewed):
            await self._contact_for_unknown_sender(item)
        return reviewed

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

    def _writes_parties(self, item: OutlookItem, actions: Sequence[Action]) -> bool:
        seen = self._seen.get(item.item_id)
        return (
            self._mailbox.settings.create_contact_for_unknown_sender
            and seen is not None
            and seen.decision.tracked
            and any(isinstance(action, CreateInCrm | UpdateCrm) for action in actions)
        )

    async def _contact_for_unknown_sender(self, item: OutlookItem) -> None:
        email = item.item
        if not isinstance(email, Email) or email.sender is None or email.is_outgoing:
            return
        address = email.sender.address.lower()
        if await self._lookup.records(address):
            return
        name = email.sender.name or address.partition("@")[0]
        fields: dict[str, FieldValue] = {"emailaddress1": address, "lastname": name[:50]}
        contact_id = unknown_sender_contact_id(address)
        create_only = Upsert("contact", fields, id=contact_id, if_none_match=True)
        with contextlib.suppress(DuplicateRecord):  # made earlier, maybe edited since: left as it is
            await self._crm.upsert(create_only, caller=self._caller)
        self._lookup.remember(address, RecordRef("contact", contact_id))
        logger.info("created a contact for an unknown sender")

    # -- 3. after apply ----------------------------------------------------------------------------

    async def after_apply(self, item: OutlookItem, actions: Sequence[Action]) -> None:
        """Regarding, attachments and the tracking index, once the applier wrote the plan."""
        seen = self._seen.pop(item.item_id, None)
        if _gives_up(actions):
            earlier = seen.earlier if seen else await self._earlier(item.item_id)
            if earlier is not None:
                await self._index.forget_message(self.mailbox_id, earlier)
                if self._known is not None:
                    self._known.pop(item.item_id, None)
            return
        via = seen.decision.via if seen is not None and seen.decision.tracked else None
        if seen is None or via is None or not isinstance(item.item, Email):
            return
        crm_id = await self._crm_id(item.item_id, actions, seen.earlier)
        if crm_id is None:
            return  # not synchronised (a draft, a message without a message id)
        decision, earlier = seen.decision, seen.earlier
        regarding = await self._write_regarding(crm_id, decision.regarding, earlier)
        copied = earlier.attachments_copied if earlier and earlier.crm_id == crm_id else False
        if not copied and item.item.has_attachments:
            await copy_attachments(
                crm=self._crm,
                caller=self._caller,
                source=self._outlook,
                mailbox_id=self.mailbox_id,
                message_id=item.item_id,
                email_id=crm_id,
                max_bytes=self._mailbox.settings.max_attachment_bytes,
            )
        tracked = TrackedMessage(
            item_id=item.item_id,
            crm_id=crm_id,
            via=via,
            regarding=regarding,
            attachments_copied=True,
            conversation_id=item.item.conversation_id,
            token=decision.token,
        )
        if tracked != earlier:
            await self._index.put_message(self.mailbox_id, tracked)
            if self._known is not None:
                self._known[item.item_id] = tracked
            await self._remember_thread(tracked)

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

    async def _write_regarding(
        self, crm_id: uuid.UUID, wanted: CrmRecordRef | None, earlier: TrackedMessage | None
    ) -> CrmRecordRef | None:
        """Set (or clear) the email's regarding when it differs from what this mailbox set before.

        Returns the regarding the CRM email now has from this mailbox. A table crmsync has no
        ``regardingobjectid`` binding for is refused by the adapter's table metadata: logged, skipped.
        """
        before = earlier.regarding if earlier is not None and earlier.crm_id == crm_id else None
        if wanted == before:
            return before
        target = wanted if wanted is not None else before
        if target is None:
            return None
        try:
            navigation, _ = bind_annotation(EMAIL_TABLE, "regardingobjectid", target.table, target.id)
        except ValueError:
            logger.warning("regarding not set: crmsync has no email regarding binding for that table")
            return before
        fields: dict[str, FieldValue] = (
            {"regardingobjectid": RecordRef(wanted.table, wanted.id)}
            if wanted is not None
            else {navigation: None}  # a null bind clears the lookup
        )
        await self._crm.upsert(Upsert(EMAIL_TABLE, fields, id=crm_id, if_match="*"), caller=self._caller)
        return wanted

    async def _remember_thread(self, tracked: TrackedMessage) -> None:
        thread = TrackedThread(tracked.crm_id, tracked.regarding)
        for key, value in tracked.thread_keys():
            await self._index.put_thread(self.mailbox_id, key, value, thread)


def _gives_up(actions: Sequence[Action]) -> bool:
    """Whether a plan ends this mailbox's link to the CRM email (untrack, delete)."""
    return any(isinstance(action, UnlinkOnly | DropLink | DeleteInCrm) for action in actions)
