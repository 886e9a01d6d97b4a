"""A sync run's options and its report (what one run of one mailbox resource did)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass

from shared.config import Settings


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Tuning of a run; :meth:`from_settings` takes the app's values."""

    lease_seconds: int = 120
    mass_delete_ratio: float = 0.5
    calendar_past: dt.timedelta = dt.timedelta(days=30)
    calendar_future: dt.timedelta = dt.timedelta(days=365)
    calendar_slide: dt.timedelta = dt.timedelta(days=7)  # how old a calendar window gets before it moves

    @classmethod
    def from_settings(cls, settings: Settings) -> JobOptions:
        return cls(settings.lease_seconds, settings.mass_delete_ratio)

    def window_moves(self, start: dt.datetime | None, now: dt.datetime) -> bool:
        """A calendar window starting at ``start`` is renewed once it is ``calendar_slide`` old (or
        of unknown age)."""
        return start is None or now - self.calendar_past - start >= self.calendar_slide


class RunOutcome(enum.StrEnum):
    COMPLETED = "completed"
    MAILBOX_DISABLED = "mailbox_disabled"
    KIND_DISABLED = "kind_disabled"
    MASS_DELETE_REFUSED = "mass_delete_refused"
    ALREADY_DONE = "already_done"  # a queue job whose change a run it waited for took


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Reported after every page (for the onboarding progress bar)."""

    resource: str
    pages: int
    items_seen: int
    items_synced: int


ProgressCallback = Callable[[SyncProgress], None]


@dataclass(frozen=True, slots=True)
class SyncRunReport:
    """What one run did. ``message`` explains a refused run (no addresses, no content).

    ``full_resync``: the run started without a delta link (first baseline, 410, or an admin resync),
    so linked items it did not see were treated as gone. A run resuming a crashed full read from its
    stored next link is incremental and leaves that sweep out."""

    mailbox_id: str
    resource: str
    outcome: RunOutcome
    full_resync: bool = False
    pages: int = 0
    items_seen: int = 0
    items_synced: int = 0
    crm_writes: int = 0
    parked: int = 0
    fitted: int = 0
    message: str | None = None


def combined(first: SyncRunReport, then: SyncRunReport) -> SyncRunReport:
    """Two rounds of one run as one report (counts added, the later outcome and message)."""
    return dataclasses.replace(
        then,
        full_resync=first.full_resync or then.full_resync,
        pages=first.pages + then.pages,
        items_seen=first.items_seen + then.items_seen,
        items_synced=first.items_synced + then.items_synced,
        crm_writes=first.crm_writes + then.crm_writes,
        parked=first.parked + then.parked,
        fitted=first.fitted + then.fitted,
    )
