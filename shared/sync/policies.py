"""Per-mailbox policies the Outlook -> CRM job asks before planning an item.

Small, replaceable functions on purpose: the full tracking rules (Dynamics' automatic tracking
options, tracked folders) come in a later issue and only :func:`is_tracked` changes then.

- Is this item kind synchronised for the mailbox at all (``MailboxSettings.item_kinds``)?
- Is this email tracked? For now: it carries the mailbox's tracked category, as Dynamics'
  category-based tracking does (the "Tracked to Dynamics 365" Outlook category, organization setting
  ``TrackCategorizedItems``, honoured by server-side synchronization). The decision uses only the
  envelope (never the body, which is fetched afterwards and only for tracked mail).
- Which :class:`~shared.sync.planner.SyncPolicy` (directions, tie-break, delete policy) applies.

Delete policy (documented for administrators; "Deleting records that have been tracked with
Dynamics 365 for Outlook", MicrosoftDocs/dynamics-365-customer-engagement ce/outlook-addin/
user-guide/delete-records-that-have-been-tracked.md, which also holds for server-side
synchronization): with ``outlook_delete_policy = delete_if_owner`` (the default) the planner's
``dynamics`` policy applies - deleting a tracked email or contact in
Outlook keeps the CRM record; deleting an appointment or task deletes the CRM record only if the
mailbox's CRM user owns it; untracking deletes only what the user owns (appointments only if not
over). ``unlink`` never deletes CRM data, it only forgets the link.
"""

from __future__ import annotations

from shared.domain.mailbox_settings import MailboxSettings, OutlookDeletePolicy
from shared.domain.model import ItemKind, OutlookItem
from shared.sync.merge import Side
from shared.sync.plan import DeletePolicy, SyncPolicy


def kind_enabled(settings: MailboxSettings, kind: ItemKind) -> bool:
    """Whether the mailbox synchronises this item kind."""
    return kind in settings.item_kinds


def is_tracked(settings: MailboxSettings, item: OutlookItem) -> bool:
    """Whether an Outlook item takes part in Outlook -> CRM sync, by the mailbox settings alone.

    Contacts, appointments and tasks of an enabled kind always do; an email only when it carries
    the tracked category (compared case-insensitively, as Outlook compares category names). The full
    email tracking rules (tracked folders, automatic rules, correlation, untracking) need I/O and
    live in :class:`shared.sync.tracking.Tracker`, which the job asks first when it has one; this
    function is its fallback for a job without tracking.
    """
    if not kind_enabled(settings, item.kind):
        return False
    if item.kind is not ItemKind.EMAIL:
        return True
    wanted = settings.tracked_category.casefold()
    return any(category.casefold() == wanted for category in item.categories)


def sync_policy(settings: MailboxSettings, kind: ItemKind) -> SyncPolicy:
    """The planner's policy for one kind in this mailbox."""
    delete_policy = (
        DeletePolicy.UNLINK
        if settings.outlook_delete_policy is OutlookDeletePolicy.UNLINK
        else DeletePolicy.DYNAMICS
    )
    return SyncPolicy(
        directions=dict(settings.field_directions.get(kind, {})),
        tie_break=Side(settings.conflict_tie_break.value),
        delete_policy=delete_policy,
        tracked_category=settings.tracked_category if kind is ItemKind.EMAIL else None,
    )
