"""The mass-delete brake: a plan that would delete most of a mailbox's linked items is refused.

The brake vdirsyncer applies when a side suddenly looks empty: a lost delta token, a moved folder
or a wrong filter must not wipe a user's CRM records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

from shared.domain.model import ItemKind
from shared.store.errors import StaleWrite
from shared.store.ports import SyncStateStore
from shared.store.records import DeleteLog
from shared.sync.plan import Action, DeleteInCrm, DeleteInOutlook

#: The sync state's last error on a resource whose run the brake refused.
BRAKE_REASON = "mass_delete_refused"

#: Deletes count against the brake for this long, so a slow drain across runs trips it too.
DELETE_WINDOW = dt.timedelta(hours=24)
_WRITE_ATTEMPTS = 3


class MassDeleteRefusedError(RuntimeError):
    """A plan would delete more of a mailbox's linked items than the configured ratio allows.
    ``refused``: the deletes held back now (the administrator confirms exactly that number)."""

    def __init__(self, linked_count: int, deletes: int, ratio: float, *, refused: int | None = None) -> None:
        self.refused = deletes if refused is None else refused
        super().__init__(
            f"refusing to delete {deletes} of {linked_count} linked items within 24 h (limit {ratio:.0%}); "
            f"if intended: crmsync mailbox release-brake <mailbox> --confirm-deletes {self.refused}"
        )
        self.linked_count = linked_count
        self.deletes = deletes
        self.ratio = ratio


class BrakeReleaseRefused(ValueError):
    """Releasing the brake was refused; the message says why and what to confirm."""


class BrakeNotHeld(BrakeReleaseRefused):
    """A release of the brake for a mailbox where no brake holds refused deletes."""


class BrakeConfirmationMismatch(BrakeReleaseRefused):
    """The administrator confirmed another number than the deletes the brake refused."""

    def __init__(self, refused: int) -> None:
        super().__init__(
            f"the mass-delete brake refused {refused} deletes: confirm exactly {refused} to release it"
        )
        self.refused = refused


def deletes_within(log: DeleteLog, now: dt.datetime) -> int:
    """Deletes applied in the sliding window ending ``now``."""
    return sum(count for at, count in log.recent if at > now - DELETE_WINDOW)


async def _update(states: SyncStateStore, mailbox_id: str, kind: ItemKind, change: _Change) -> None:
    """Read, change and write the kind's delete log, again if another writer came between."""
    for attempt in range(_WRITE_ATTEMPTS):
        log = await states.get_delete_log(mailbox_id, kind)
        try:
            await states.put_delete_log(change(log))
            return
        except StaleWrite:
            if attempt == _WRITE_ATTEMPTS - 1:
                raise


class _Change:
    def __init__(self, *, add: int = 0, now: dt.datetime | None = None, refused: int | None = None) -> None:
        self._add, self._now, self._refused = add, now, refused

    def __call__(self, log: DeleteLog) -> DeleteLog:
        recent = log.recent
        if self._add and self._now is not None:
            hour = self._now.replace(minute=0, second=0, microsecond=0)
            kept = {at: n for at, n in log.recent if at > self._now - DELETE_WINDOW}
            kept[hour] = kept.get(hour, 0) + self._add
            recent = tuple(sorted(kept.items()))
        if self._refused == 0:
            recent = ()  # released: the confirmed deletes do not count against later runs
        refused = log.refused if self._refused is None else self._refused
        return dataclasses.replace(log, recent=recent, refused=refused)


async def record_deletes(
    states: SyncStateStore, mailbox_id: str, kind: ItemKind, count: int, now: dt.datetime
) -> None:
    """Add deletes a run applied to the window (hourly buckets; older ones fall out)."""
    if count:
        await _update(states, mailbox_id, kind, _Change(add=count, now=now))


async def hold(states: SyncStateStore, mailbox_id: str, kind: ItemKind, refused: int) -> None:
    """The brake tripped: hold ``refused`` deletes until an administrator confirms them."""
    await _update(states, mailbox_id, kind, _Change(refused=refused))


async def release(states: SyncStateStore, mailbox_id: str, kind: ItemKind) -> None:
    """The confirmed deletes were applied: the brake holds nothing and the window starts over."""
    await _update(states, mailbox_id, kind, _Change(refused=0))


async def held(states: SyncStateStore, mailbox_id: str) -> dict[ItemKind, int]:
    """The kinds of the mailbox whose brake holds refused deletes, and how many."""
    logs = [await states.get_delete_log(mailbox_id, kind) for kind in ItemKind]
    return {log.kind: log.refused for log in logs if log.refused}


def count_deletes(actions: Iterable[Action]) -> int:
    """Deletes of actual items (unlinking keeps both copies, and a record replaced by another in the
    same plan loses nothing: neither counts)."""
    return sum(
        1
        for action in actions
        if isinstance(action, DeleteInOutlook)
        or (isinstance(action, DeleteInCrm) and action.replaced_by is None)
    )


def check_mass_delete(
    linked_count: int, deletes: int, ratio: float, *, minimum: int = 5, refused: int | None = None
) -> None:
    """Refuse (raise :class:`MassDeleteRefusedError`) a plan that deletes more than ``ratio`` of the
    linked items. Fewer than ``minimum`` deletes always pass, so a small mailbox can empty a folder.

    The brake vdirsyncer applies when a side suddenly looks empty: a lost delta token, a moved
    folder or a wrong filter must not wipe a user's CRM records.
    """
    if deletes >= minimum and deletes > ratio * linked_count:
        raise MassDeleteRefusedError(linked_count, deletes, ratio, refused=refused)


def check_run(linked: int, deletes: int, page_deletes: int, ratio: float, allowed: int | None) -> None:
    """The brake for one page of a run: ``deletes`` counted so far (the window's and the run's),
    ``linked`` the links they were taken from. ``allowed``: an administrator confirmed that many
    deletes (a release), and the run may make exactly up to them."""
    if allowed is None:
        check_mass_delete(linked, deletes + page_deletes, ratio, refused=page_deletes)
    elif deletes + page_deletes > allowed:
        raise MassDeleteRefusedError(linked, deletes + page_deletes, ratio, refused=deletes + page_deletes)
