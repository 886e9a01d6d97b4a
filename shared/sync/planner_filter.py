"""The pure planner's rule for a record that left the user's synchronization filter (or that the user
may no longer read): unlink, and remove the Outlook copy only where Dynamics' users expect it gone.

Server-Side Synchronization deletes the Exchange item - and cancels a meeting - when its record
merely leaves a filter (KB 4345686). crmsync is more careful:

- contacts and tasks that crmsync created in Outlook from the CRM (the origin marker the creating
  POST set) and that nobody changed in Outlook since the last sync are removed;
- anything else - an item the user made in Outlook, or one changed there since - stays, unlinked;
- a meeting is never deleted or cancelled for leaving a filter: it stays, unlinked.

No I/O: the caller reads the linked Outlook item (and its origin) first.
"""

from __future__ import annotations

from shared.domain.model import ItemKind, content_hash
from shared.sync.merge import Side
from shared.sync.plan import (
    Action,
    DeleteInOutlook,
    DeletePolicy,
    DropLink,
    Link,
    OutlookState,
    SyncPolicy,
    UnlinkOnly,
)

_REMOVABLE = frozenset({ItemKind.CONTACT, ItemKind.TASK})


def plan_left_filter(
    kind: ItemKind, *, link: Link, outlook: OutlookState, created_from_crm: bool, policy: SyncPolicy
) -> list[Action]:
    """What leaving the filter does to one linked item (see the module docstring)."""
    if outlook.gone is not None or outlook.item is None:
        return [
            DropLink(
                outlook_id=link.outlook_id, crm_id=link.crm_id, reason="left the filter; gone from Outlook"
            )
        ]
    unchanged = (
        outlook.change_key is not None and outlook.change_key == link.outlook_change_key
    ) or content_hash(outlook.item) == link.outlook_hash
    if (
        kind in _REMOVABLE
        and created_from_crm
        and unchanged
        and policy.delete_policy is DeletePolicy.DYNAMICS
    ):
        reason = "left the synchronization filter; created by crmsync and unchanged in Outlook since"
        return [
            DeleteInOutlook(item_id=link.outlook_id, reason=reason),
            DropLink(outlook_id=link.outlook_id, crm_id=link.crm_id, reason=reason),
        ]
    if kind is ItemKind.APPOINTMENT:
        reason = "left the synchronization filter; a meeting is never deleted for that: kept, unlinked"
    elif not created_from_crm:
        reason = "left the synchronization filter; made in Outlook: kept, unlinked"
    else:
        reason = "left the synchronization filter; changed in Outlook since: kept, unlinked"
    return [UnlinkOnly(outlook_id=link.outlook_id, crm_id=link.crm_id, kept=Side.OUTLOOK, reason=reason)]
