"""The mass-delete brake: a plan that would delete most of a mailbox's linked items is refused.

The brake vdirsyncer applies when a side suddenly looks empty: a lost delta token, a moved folder
or a wrong filter must not wipe a user's CRM records.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.sync.plan import Action, DeleteInCrm, DeleteInOutlook


class MassDeleteRefusedError(RuntimeError):
    """A plan would delete more of a mailbox's linked items than the configured ratio allows."""

    def __init__(self, linked_count: int, deletes: int, ratio: float) -> None:
        super().__init__(
            f"refusing to delete {deletes} of {linked_count} linked items (limit {ratio:.0%}); "
            "resync the mailbox or raise CRMSYNC_MASS_DELETE_RATIO if this is intended"
        )
        self.linked_count = linked_count
        self.deletes = deletes
        self.ratio = ratio


def count_deletes(actions: Iterable[Action]) -> int:
    """Deletes of actual items (unlinking keeps both copies and does not count)."""
    return sum(1 for action in actions if isinstance(action, DeleteInCrm | DeleteInOutlook))


def check_mass_delete(linked_count: int, deletes: int, ratio: float, *, minimum: int = 5) -> None:
    """Refuse (raise :class:`MassDeleteRefusedError`) a plan that deletes more than ``ratio`` of the
    linked items. Fewer than ``minimum`` deletes always pass, so a small mailbox can empty a folder.

    The brake vdirsyncer applies when a side suddenly looks empty: a lost delta token, a moved
    folder or a wrong filter must not wipe a user's CRM records.
    """
    if deletes >= minimum and deletes > ratio * linked_count:
        raise MassDeleteRefusedError(linked_count, deletes, ratio)
