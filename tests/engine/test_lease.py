"""The mailbox lease over the real components: renewed while a run works, fencing its writes.

Two writers: a run stuck in a slow Graph call while another worker takes its mailbox over (the lease
looked expired to it) must stop before its next write and never store a delta link.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from shared.domain.model import ItemKind
from shared.outlook.subscriptions import ResourceKind, resource_path
from shared.store.azure.service import open_store
from shared.store.errors import LeaseHeld, LeaseLost
from shared.store.ports import Store
from shared.store.records import Lease
from shared.sync.job import MailboxSyncJob, RunOutcome
from shared.sync.run import JobOptions
from tests.engine.conftest import Engine

LATE = dt.timedelta(minutes=10)


@pytest.fixture
async def late_store(storage_connection_string: str, table_prefix: str) -> AsyncIterator[Store]:
    """The same tables as another worker sees them once the first run's lease has expired (its
    clock is ahead: the first run's process stalled past its lease, as far as anyone can tell)."""
    opened = await open_store(
        connection_string=storage_connection_string,
        prefix=table_prefix,
        clock=lambda: dt.datetime.now(dt.UTC) + LATE,
    )
    yield opened
    await opened.close()


def _job(engine: Engine, store: Store, lease_seconds: int) -> MailboxSyncJob:
    return engine.job(store, options=JobOptions(lease_seconds=lease_seconds))


async def _take_over(late_store: Store, box: str) -> Lease:
    """The takeover by a worker whose clock sees the lease expired; a conditional write that races
    the first worker's background renewal (LeaseHeld) is simply tried again."""
    for _ in range(40):
        try:
            return await late_store.sync_state.try_acquire(box, "worker:second", 60)
        except LeaseHeld:
            await asyncio.sleep(0.05)
    raise AssertionError("the second worker never took the mailbox over")


async def test_a_run_whose_mailbox_was_taken_over_stops_and_never_stores_its_delta_link(
    engine: Engine, late_store: Store
) -> None:
    box = (await engine.register()).mailbox_id
    resource = resource_path(ResourceKind.CONTACTS, box)
    seeded = engine.graph_sim.seed(box, contacts=[{"surname": "Contested"}])
    engine.graph_sim.fault("latency", user=box, seconds=2.5, path_contains="delta")
    try:
        first = asyncio.create_task(_job(engine, engine.store, lease_seconds=2).run(box, resource))
        await asyncio.sleep(0.5)  # the first run waits for its delta page
        taken = await _take_over(late_store, box)

        with pytest.raises(LeaseLost):
            await first
    finally:
        engine.graph_sim.clear_faults(box)

    # The first run's background renewal found the lease gone: it wrote nothing after the takeover.
    assert (await engine.store.sync_state.get_state(box, resource)).delta_link is None
    assert await engine.store.links.get_by_outlook(box, ItemKind.CONTACT, seeded["contacts"][0]) is None
    assert engine.query("contacts?$filter=lastname eq 'Contested'") == []
    # The second worker syncs the mailbox as usual once it holds it.
    await late_store.sync_state.release(taken)
    report = await _job(engine, engine.store, lease_seconds=30).run(box, resource)
    assert report.outcome is RunOutcome.COMPLETED
    assert (await engine.store.sync_state.get_state(box, resource)).delta_link is not None


async def test_the_lease_is_renewed_while_a_slow_call_runs(engine: Engine) -> None:
    """A Graph call slower than the whole lease: the background renewal keeps the mailbox, so no
    other worker can take it meanwhile."""
    box = (await engine.register()).mailbox_id
    resource = resource_path(ResourceKind.CONTACTS, box)
    engine.graph_sim.seed(box, contacts=[{"surname": "Slow"}])
    engine.graph_sim.fault("latency", user=box, seconds=3.5, path_contains="delta")
    try:
        run = asyncio.create_task(_job(engine, engine.store, lease_seconds=2).run(box, resource))
        await asyncio.sleep(2.5)  # past the lease the run took
        with pytest.raises(LeaseHeld):
            await engine.store.sync_state.try_acquire(box, "worker:other", 60)
        report = await run
    finally:
        engine.graph_sim.clear_faults(box)
    assert report.outcome is RunOutcome.COMPLETED
    assert report.items_synced == 1


async def test_a_lease_lost_while_taking_another_dirty_resource_stops_the_run(
    engine: Engine, late_store: Store
) -> None:
    """After its own resource, a run takes the mailbox's other dirty resources under the same lease;
    losing the lease there must stop the run (LeaseLost), not be logged and swallowed."""
    box = (await engine.register()).mailbox_id
    contacts = resource_path(ResourceKind.CONTACTS, box)
    tasks = resource_path(ResourceKind.TASKS, box, task_list_id=engine.task_list(box))
    engine.graph_sim.seed(box, todo={"defaultList": [{"title": "Contested task"}]})
    await engine.store.sync_state.mark_dirty(box, tasks)  # notified while the contacts run
    engine.graph_sim.fault("latency", user=box, seconds=2.5, path_contains="tasks/delta")
    try:
        first = asyncio.create_task(_job(engine, engine.store, lease_seconds=2).run(box, contacts))
        await asyncio.sleep(1.0)  # the contacts are done; the tasks' delta is slow
        await _take_over(late_store, box)

        with pytest.raises(LeaseLost):
            await first
    finally:
        engine.graph_sim.clear_faults(box)
    assert (await engine.store.sync_state.get_state(box, tasks)).delta_link is None
