"""What the planner reads and what it decides: its inputs and its actions (no logic, no I/O).

The planner (:mod:`shared.sync.planner`) takes one item's :class:`OutlookState`, :class:`CrmState`,
:class:`Link` and the :class:`PlanFacts` the job prefetched for it, and returns a list of actions;
the applier (:mod:`shared.sync.applier`) executes them in the commit order docs/ARCHITECTURE.md
explains and audits every write. Everything the connector writes to either side is one of these
actions, so the property tests see every decision.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from shared.crm.limits import Fitted
from shared.domain.bases import FieldBase
from shared.domain.mailbox_settings import CrmRecordRef
from shared.domain.model import Appointment, Contact, Email, FieldDirection, ItemKind, OutlookItem, Task
from shared.sync.fieldmaps.base import ABSENT, Absent, CrmValue
from shared.sync.merge import Side

#: The audit trail's actor for what the sync engine itself writes or decides.
ACTOR = "sync.engine"

NeutralContent = Contact | Appointment | Task | Email


class GoneReason(enum.StrEnum):
    """Why an Outlook item no longer takes part: deleted, or still there but no longer tracked."""

    DELETED = "deleted"
    UNTRACKED = "untracked"


class DeletePolicy(enum.StrEnum):
    """What a delete on one side does to the other (see the module docstring)."""

    DYNAMICS = "dynamics"
    UNLINK = "unlink"


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutlookState:
    """The Outlook side of one item: present with its neutral content, or gone (and why)."""

    item_id: str
    change_key: str | None = None
    item: NeutralContent | None = None
    gone: GoneReason | None = None
    crm_id: uuid.UUID | None = None  # the CRM id stamped on the item, if any
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.gone is None and self.item is None:
            raise ValueError("a present Outlook item needs its content")

    @classmethod
    def from_outlook_item(cls, outlook_item: OutlookItem, *, tracked: bool = True) -> OutlookState:
        """From a delta entry; ``tracked`` is the tracking policy's verdict on a present item."""
        gone = GoneReason.DELETED if outlook_item.removed or outlook_item.item is None else None
        if gone is None and not tracked:
            gone = GoneReason.UNTRACKED
        try:
            stamp = uuid.UUID(outlook_item.crm_id) if outlook_item.crm_id else None
        except ValueError:
            stamp = None  # someone else's or a damaged stamp: ignored, the link map decides
        return cls(
            outlook_item.item_id,
            outlook_item.change_key,
            outlook_item.item,
            gone,
            stamp,
            outlook_item.categories,
        )


@dataclass(frozen=True, slots=True)
class PresentItem:
    """An Outlook item that is there and tracked: the planner's working view of an OutlookState."""

    item_id: str
    change_key: str | None
    item: NeutralContent
    crm_id: uuid.UUID | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CrmState:
    """The CRM side: the record's mapped column values, or ``values=None`` when it does not exist.

    A null column is present with ``None``; a column left out was not read (the adapter does not
    read party lists back) and is taken as unchanged since the last sync.

    ``owned_by_user``: the mailbox's CRM user owns the record (decides deletes; recorded in the link).
    ``regarding``: a tracked email's regarding as the CRM holds it now (a Dynamics user may have set
    it), so the planner never clears or replaces it unless the tie-break says so.
    ``synced_last``: crmsync wrote the record last, for this mailbox: ``modifiedby`` is the user it
    impersonates and ``modifiedonbehalfby`` crmsync's own application user ("Impersonate another
    user using the Web API", learn.microsoft.com/power-apps/developer/data-platform/webapi/
    impersonate-another-user-web-api), not a person's edit in Dynamics or another integration's.
    """

    record_id: uuid.UUID
    values: Mapping[str, object] | None
    etag: str | None = None
    owned_by_user: bool = False
    regarding: uuid.UUID | Absent | None = ABSENT  # an email's regarding as read; ABSENT: not read
    synced_last: bool = False


@dataclass(frozen=True, slots=True)
class Link:
    """What the link rows remember of the last sync of one item (both sides' versions and content)."""

    outlook_id: str
    crm_id: uuid.UUID
    outlook_change_key: str | None
    crm_etag: str | None
    outlook_hash: str
    crm_hash: str
    field_bases: Mapping[str, FieldBase] = field(default_factory=dict)
    owned_by_user: bool = False
    crm_deleted: bool = False  # a tombstone (see shared.store.records.Link)


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    """A mailbox's settings for one item kind: direction overrides, tie-break, delete policy; the
    organization's field directions; and column security: the secured columns the mailbox's CRM
    user may not read (``unreadable``), update (``unwritable``) or set on create (``uncreatable``)."""

    directions: Mapping[str, FieldDirection] = field(default_factory=dict)
    tie_break: Side = Side.CRM
    delete_policy: DeletePolicy = DeletePolicy.DYNAMICS
    tracked_category: str | None = None  # email: the category that tracks a message by hand
    organization: Mapping[str, FieldDirection] = field(default_factory=dict)
    unreadable: frozenset[str] = frozenset()
    unwritable: frozenset[str] = frozenset()
    uncreatable: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TrackingFacts:
    """What email tracking knows about one tracked message before planning (read by the tracker).

    ``regarding``: the regarding the tracking decision wants. ``earlier_*``: what this mailbox
    recorded when it last tracked the message: the CRM email, the regarding it set there, whether
    the attachments were copied. ``unknown_sender``: (address, name) of an inbound sender no CRM
    record matches, when the mailbox creates contacts for unknown senders."""

    regarding: CrmRecordRef | None = None
    earlier_crm_id: uuid.UUID | None = None
    earlier_regarding: CrmRecordRef | None = None
    attachments_copied: bool = False
    unknown_sender: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class PlanFacts:
    """Facts about one item that only I/O can establish, read before planning (vdirsyncer's prepare
    step), so that every decision is the planner's.

    ``moved_away``: a message reported removed from this folder still lives in another one (not
    Deleted Items): the destination folder's run owns it. ``other_mailbox_holds``: another
    registered mailbox still links this CRM email, so untracking here must not delete it.
    ``outside_window``: a removed appointment whose record lies outside the calendar window left
    the window; it was not deleted. ``tracking``: email tracking's facts (``None`` for other kinds).
    ``crm_time_zone``: the CRM user's time zone (Windows name of ``usersettings.timezonecode``), whose
    midnights bound all-day appointments in the CRM; ``None``: unknown (the event's zone is used).
    ``attendee_copy``: an invitee's copy of a meeting whose CRM record is not this copy's own
    (deterministic) record - a meeting made in Dynamics, or adopted: the organizer owns it.
    ``merge_intent``: the record's content hash an Outlook -> CRM merge that also updates Outlook
    was to leave (``UpdateCrm.merged_hash``), its intent still recorded (read for linked items
    deleted in Outlook whose record crmsync wrote last): the record may hold CRM changes the item
    never received."""

    moved_away: bool = False
    other_mailbox_holds: bool = False
    outside_window: bool = False
    tracking: TrackingFacts | None = None
    crm_time_zone: str | None = None
    attendee_copy: bool = False
    merge_intent: str | None = None


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateInCrm:
    """Create the record with this id (replaying it must upsert). ``then_update``: columns the
    contract forbids on create, to write by an update right after."""

    table: str
    record_id: uuid.UUID
    values: dict[str, CrmValue]
    then_update: dict[str, CrmValue]
    fitted: tuple[Fitted, ...] = ()
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateCrm:
    """``merged_hash``: when the same plan updates Outlook too, the record's content hash over the
    columns read for the plan once this write commits (what a later read finds, the intent a lost
    Outlook half leaves: :func:`shared.sync.links.note_merges`)."""

    table: str
    record_id: uuid.UUID
    values: dict[str, CrmValue]
    if_match: str | None
    fitted: tuple[Fitted, ...] = ()
    merged_hash: str | None = None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteInCrm:
    """Delete the record. ``replaced_by``: the record that takes its place in the same plan (a
    one-off appointment of an occurrence giving way to its series instance): nothing is lost, so the
    mass-delete brake does not count it."""

    table: str
    record_id: uuid.UUID
    if_match: str | None
    reason: str
    replaced_by: uuid.UUID | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateInOutlook:
    """Create ``item`` in the mailbox carrying ``crm_id`` in the creating request (an extended
    property, a To Do linked resource), so the pair is found again without the link map."""

    kind: ItemKind
    item: NeutralContent
    crm_id: uuid.UUID
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateOutlook:
    """Write ``item`` over the Outlook item; ``columns`` are the CRM columns that caused it."""

    item_id: str
    item: NeutralContent
    columns: tuple[str, ...]
    if_match: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteInOutlook:
    item_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateSenderContact:
    """Create a contact for an unknown sender (deterministic id per address, create-only: a contact
    made earlier and edited since is left alone), before the email's parties are resolved."""

    record_id: uuid.UUID
    address: str
    name: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetRegarding:
    """Set (``regarding``) or clear (``None``; ``previous`` names the binding to clear) a CRM email's
    regarding, after the email's own write."""

    record_id: uuid.UUID
    regarding: CrmRecordRef | None
    previous: CrmRecordRef | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyAttachments:
    """Copy the message's attachments to the CRM email (activitymimeattachment), once."""

    message_id: str
    record_id: uuid.UUID
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveTrackedCategory:
    """A tracked email whose CRM copy was deleted stays in Outlook, untracked: its tracked category
    goes, so its next change does not create the CRM email again."""

    message_id: str
    categories: tuple[str, ...]  # the categories to keep
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteLink:
    """Store ``link`` once the writes before it succeeded. Where ``outlook_from_write`` /
    ``crm_from_write`` is set, take the Outlook id and change key / the CRM ETag from the response
    of this plan's write to that side (the planner cannot know them)."""

    link: Link
    outlook_from_write: bool = False
    crm_from_write: bool = False
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnlinkOnly:
    """Remove the link but keep the item on side ``kept`` (nothing is deleted). ``tombstone``: the
    link row written in its place (the CRM's delete stands; see :class:`Link` ``crm_deleted``)."""

    outlook_id: str
    crm_id: uuid.UUID
    kept: Side
    reason: str
    tombstone: Link | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DropLink:
    """Remove the link of an item that is gone on both sides (or deleted by this plan)."""

    outlook_id: str
    crm_id: uuid.UUID
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    """Audit note: a field changed on both sides; ``winner`` was kept by ``rule`` (no values)."""

    column: str
    winner: Side
    rule: Literal["tie_break", "direction"]
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Skip:
    reason: str


SECURED_SKIPPED: Literal["secured-field-skipped"] = "secured-field-skipped"
SECURED_UNREADABLE: Literal["secured-field-unreadable"] = "secured-field-unreadable"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecuredField:
    """Audit note: a secured column was not written (``secured-field-skipped``: the user may not
    update or create it) or not taken from the CRM (``secured-field-unreadable``: the user may not
    read it, so the CRM's null is not a value and the Outlook value is kept). Never values."""

    record_id: uuid.UUID
    column: str
    reason: Literal["secured-field-skipped", "secured-field-unreadable"]


Action = (
    CreateSenderContact
    | CreateInCrm
    | UpdateCrm
    | DeleteInCrm
    | CreateInOutlook
    | UpdateOutlook
    | DeleteInOutlook
    | SetRegarding
    | CopyAttachments
    | RemoveTrackedCategory
    | WriteLink
    | UnlinkOnly
    | DropLink
    | Conflict
    | Skip
    | SecuredField
)
