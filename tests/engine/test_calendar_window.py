"""The calendar window moves: once the window fixed in a calendar's delta link is ``calendar_slide``
old, the next run (the sweep timer runs every resource every 15 minutes) reads a new baseline from
today, so events that entered the window arrive and events that left it are neither rewritten nor
deleted in the CRM."""

from __future__ import annotations

import datetime as dt
import uuid

from shared.outlook.subscriptions import ResourceKind, resource_path
from shared.sync.job import MailboxSyncJob, RunOutcome
from shared.sync.run import JobOptions
from tests.engine.conftest import Engine

OPTIONS = JobOptions(
    calendar_past=dt.timedelta(days=1),
    calendar_future=dt.timedelta(days=10),
    calendar_slide=dt.timedelta(days=7),
)


def _at(day: dt.date, hour: int) -> dict[str, str]:
    return {"dateTime": f"{day.isoformat()}T{hour:02d}:00:00", "timeZone": "UTC"}


def _job(engine: Engine, now: dt.datetime) -> MailboxSyncJob:
    return engine.job(options=OPTIONS, clock=lambda: now)


async def test_the_window_moves_after_a_week_new_events_arrive_and_old_ones_stay(engine: Engine) -> None:
    mailbox = await engine.register()
    resource = resource_path(ResourceKind.EVENTS, mailbox.mailbox_id)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    today = now.date()
    soon, later = f"soon-{uuid.uuid4().hex[:8]}", f"later-{uuid.uuid4().hex[:8]}"
    engine.graph_sim.seed(
        mailbox.mailbox_id,
        events=[
            {
                "subject": soon,
                "start": _at(today + dt.timedelta(days=3), 9),
                "end": _at(today + dt.timedelta(days=3), 10),
            },
            {
                "subject": later,
                "start": _at(today + dt.timedelta(days=15), 9),
                "end": _at(today + dt.timedelta(days=15), 10),
            },
        ],
    )

    def rows(subject: str) -> list[dict[str, object]]:
        return engine.query(f"appointments?$select=activityid,versionnumber&$filter=subject eq '{subject}'")

    report = await _job(engine, now).run(mailbox.mailbox_id, resource)
    assert report.outcome is RunOutcome.COMPLETED
    (first,) = rows(soon)
    assert rows(later) == []  # 15 days ahead: outside the first window (10 days)

    # Six days on, the window is not a week old yet: an incremental round, nothing new.
    early = await _job(engine, now + dt.timedelta(days=6)).run(mailbox.mailbox_id, resource)
    assert not early.full_resync
    assert rows(later) == []

    # Eight days on, it moves: the event 15 days out (7 from then) arrives; the one 3 days out has
    # left the window and is neither deleted nor rewritten in the CRM.
    moved = await _job(engine, now + dt.timedelta(days=8)).run(mailbox.mailbox_id, resource)
    assert moved.outcome is RunOutcome.COMPLETED
    assert moved.full_resync
    assert len(rows(later)) == 1
    assert rows(soon) == [first]
    state = await engine.store.sync_state.get_state(mailbox.mailbox_id, resource)
    assert state.window_start == now + dt.timedelta(days=7)
