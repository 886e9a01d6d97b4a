"""The planner's email-tracking part: a tracked message's writes around its plan.

A tracked message may need, beside its own CRM write: a contact for an unknown sender (created
before the email, so its parties resolve to it), the regarding the tracking decision wants, and a
one-time copy of its attachments; a message whose CRM copy was deleted loses its tracked category.
All of it is decided here from :class:`~shared.sync.plan.TrackingFacts`, never by the applier.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from shared.crm.tables import bind_annotation
from shared.domain.model import Email
from shared.sync.fieldmaps.base import ABSENT, Absent
from shared.sync.merge import Side
from shared.sync.plan import (
    Action,
    Conflict,
    CopyAttachments,
    CreateInCrm,
    CreateSenderContact,
    CrmState,
    DeleteInCrm,
    DropLink,
    Link,
    PlanFacts,
    PresentItem,
    RemoveTrackedCategory,
    SetRegarding,
    Skip,
    SyncPolicy,
    TrackingFacts,
    UnlinkOnly,
    UpdateCrm,
    WriteLink,
)

_EMAIL_TABLE = "email"
_CONTACT_NAMESPACE = uuid.UUID("0b6f5a52-3f43-4c55-9d0e-7c1f1d2b9e61")


def unknown_sender_contact_id(address: str) -> uuid.UUID:
    """The id of the contact created for an unknown sender: one per address, however often it writes."""
    return uuid.uuid5(_CONTACT_NAMESPACE, address.lower())


def untrack_message(
    message_id: str, categories: Sequence[str], policy: SyncPolicy, reason: str
) -> list[Action]:
    """The tracked category goes from a message whose CRM copy was deleted (the deletion stands)."""
    tracked = (policy.tracked_category or "").casefold()
    kept = tuple(c for c in categories if c.casefold() != tracked)
    if not tracked or len(kept) == len(categories):
        return []
    return [RemoveTrackedCategory(message_id=message_id, categories=kept, reason=reason)]


def with_tracking(
    present: PresentItem | None,
    link: Link | None,
    actions: list[Action],
    facts: PlanFacts,
    *,
    crm: CrmState | None = None,
    tie_break: Side = Side.CRM,
) -> list[Action]:
    """``actions`` with a tracked message's extra writes: the sender's contact first, the regarding
    and the attachments right after the email's own CRM write (before Outlook writes and links).
    ``crm``: the CRM email as read (its current regarding); ``tie_break`` settles a regarding that
    a Dynamics user changed while the tracking decision changed too."""
    tracking = facts.tracking
    if tracking is None or present is None or not isinstance(present.item, Email):
        return actions
    if any(isinstance(a, Skip | UnlinkOnly | DropLink | DeleteInCrm) for a in actions):
        return actions
    record_id = next((a.link.crm_id for a in actions if isinstance(a, WriteLink)), None)
    if record_id is None and link is not None and link.outlook_id == present.item_id:
        record_id = link.crm_id
    if record_id is None:
        return actions  # not synchronised (a draft, a message without a message id)
    before: list[Action] = []
    if tracking.unknown_sender is not None and any(isinstance(a, CreateInCrm | UpdateCrm) for a in actions):
        address, name = tracking.unknown_sender
        before.append(
            CreateSenderContact(
                record_id=unknown_sender_contact_id(address),
                address=address,
                name=name,
                reason="unknown sender",
            )
        )
    current = crm.regarding if crm is not None and crm.values is not None else ABSENT
    after = _regarding(record_id, tracking, current, tie_break)
    after += _attachments(present.item_id, present.item, record_id, tracking)
    at = max((i + 1 for i, a in enumerate(actions) if isinstance(a, CreateInCrm | UpdateCrm)), default=0)
    return [*before, *actions[:at], *after, *actions[at:]]


def _regarding(
    record_id: uuid.UUID, facts: TrackingFacts, current: uuid.UUID | Absent | None, tie_break: Side
) -> list[Action]:
    """Set the wanted regarding, or clear the one this mailbox set, when they differ - unless a
    Dynamics user changed the regarding since (``current`` is not what this mailbox set): then what
    they set stays, and only the tie-break ``outlook`` lets the tracking decision replace it."""
    previous = facts.earlier_regarding if facts.earlier_crm_id == record_id else None
    wanted = facts.regarding
    target = wanted if wanted is not None else previous
    if wanted == previous or target is None or not regarding_bindable(target.table):
        return []
    set_before = previous.id if previous is not None else None
    if not isinstance(current, Absent) and current != set_before:
        if current == (wanted.id if wanted is not None else None):
            return []  # a Dynamics user already set what tracking wants
        if tie_break is Side.CRM:
            reason = "regarding changed in Dynamics and by tracking: the Dynamics regarding is kept"
            return [Conflict(column="regardingobjectid", winner=Side.CRM, rule="tie_break", reason=reason)]
    reason = "tracked with a regarding" if wanted is not None else "regarding no longer wanted"
    return [SetRegarding(record_id=record_id, regarding=wanted, previous=previous, reason=reason)]


def _attachments(message_id: str, email: Email, record_id: uuid.UUID, facts: TrackingFacts) -> list[Action]:
    copied = facts.attachments_copied and facts.earlier_crm_id == record_id
    if copied or not email.has_attachments:
        return []
    return [CopyAttachments(message_id=message_id, record_id=record_id, reason="tracked with attachments")]


def regarding_bindable(table: str) -> bool:
    """Whether crmsync can bind an email's regarding to a record of ``table`` (the table metadata)."""
    try:
        bind_annotation(_EMAIL_TABLE, "regardingobjectid", table, uuid.UUID(int=0))
    except ValueError:
        return False
    return True
