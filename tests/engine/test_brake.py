"""The mass-delete brake over the real components: it holds until an administrator releases it with
the number of deletes it refused, survives a multi-page full read, and counts deletes across runs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import ItemKind
from shared.outlook.delta import DeltaReader
from shared.outlook.writers import OutlookWriter
from shared.store.jobs import JobQueue, JobReason, SyncJob, open_job_queue
from shared.store.records import MailboxState
from shared.sync.brake import BrakeConfirmationMismatch
from shared.sync.dispatch import run_queued_job
from shared.sync.job import MailboxSyncJob, RunOutcome
from tests.engine.conftest import Engine, EngineServices

TASKS_ONLY = MailboxSettings(item_kinds=frozenset({ItemKind.TASK}))


@pytest.fixture
async def jobs(storage_connection_string: str, table_prefix: str) -> AsyncIterator[JobQueue]:
    queue = await open_job_queue(
        queue_name=f"jobs-{table_prefix}", connection_string=storage_connection_string
    )
    yield queue
    await queue.client.delete_queue()
    await queue.close()


async def _linked_tasks(
    service: EngineServices, engine: Engine, count: int
) -> tuple[str, str, list[str], str]:
    """An onboarded mailbox (To Do only) with ``count`` linked tasks."""
    user = engine.make_crm_user()
    box = engine.graph_sim.add_user(user.object_id)
    seeded = engine.graph_sim.seed(box, todo={"defaultList": [{"title": f"Task {n}"} for n in range(count)]})
    onboarded = await service.onboard(box, user.systemuserid, settings=TASKS_ONLY)
    [tasks] = onboarded.subscriptions
    assert await engine.store.links.count(box, ItemKind.TASK) == count
    return box, tasks.resource, seeded["todo"]["defaultList"], engine.task_list(box)


async def test_a_tripped_brake_keeps_the_mailbox_degraded_until_released_with_the_refused_number(
    engine: Engine, service: EngineServices, jobs: JobQueue
) -> None:
    box, tasks, items, list_id = await _linked_tasks(service, engine, 6)
    crm_ids = [await engine.crm_id(box, ItemKind.TASK, item) for item in items]
    for item in items:
        engine.outlook.delete_task(box, list_id, item)
    job = SyncJob(mailbox_id=box, resource=tasks, reason=JobReason.NOTIFICATION).serialize().encode()

    outcome = await run_queued_job(
        job, dequeue_count=1, store=engine.store, jobs=jobs, job_runner=service.job
    )
    assert outcome.report is not None
    assert outcome.report.outcome is RunOutcome.MASS_DELETE_REFUSED
    assert (await engine.store.registry.get_mailbox(box)).state is MailboxState.DEGRADED
    # The next job of the mailbox leaves it degraded and deletes nothing.
    await run_queued_job(job, dequeue_count=1, store=engine.store, jobs=jobs, job_runner=service.job)
    assert (await engine.store.registry.get_mailbox(box)).state is MailboxState.DEGRADED
    assert all(engine.dataverse.record("task", crm_id) is not None for crm_id in crm_ids)

    [status] = await service.status(box)
    assert (status.brake_holds, status.refused_deletes) == ({ItemKind.TASK: 6}, 6)
    with pytest.raises(BrakeConfirmationMismatch, match="refused 6 deletes"):
        await service.maintenance.release_brake(box, confirm_deletes=5)
    [released] = await service.maintenance.release_brake(box, confirm_deletes=6)

    assert released.outcome is RunOutcome.COMPLETED
    assert all(engine.dataverse.record("task", crm_id) is None for crm_id in crm_ids)
    assert (await engine.store.registry.get_mailbox(box)).state is MailboxState.ACTIVE
    assert await engine.store.links.count(box, ItemKind.TASK) == 0
    assert (await service.status(box))[0].refused_deletes == 0


async def test_a_brake_on_the_last_page_of_a_full_read_is_not_lost_by_the_next_run(
    engine: Engine, service: EngineServices
) -> None:
    paged = MailboxSyncJob(
        store=engine.store,
        crm=engine.crm,
        reader=DeltaReader(engine.graph, page_size=2),
        writer=OutlookWriter(engine.graph),
    )
    box, tasks, items, list_id = await _linked_tasks(service, engine, 10)
    gone = items[:6]
    for item in gone:
        engine.outlook.delete_task(box, list_id, item)

    refused = await paged.run(box, tasks, full_resync=True)  # four tasks left: two pages, then the sweep
    assert refused.outcome is RunOutcome.MASS_DELETE_REFUSED
    assert refused.pages >= 1  # earlier pages of the full read were applied and their links stored

    # The next run must not resume the full read incrementally (its unseen-link sweep would be lost).
    again = await paged.run(box, tasks)
    assert again.outcome is RunOutcome.MASS_DELETE_REFUSED
    assert await engine.store.links.count(box, ItemKind.TASK) == 10
    [released] = await service.maintenance.release_brake(box, confirm_deletes=6)
    assert released.outcome is RunOutcome.COMPLETED
    assert await engine.store.links.count(box, ItemKind.TASK) == 4


async def test_a_slow_drain_across_runs_trips_the_brake(engine: Engine, service: EngineServices) -> None:
    """Two deletes a run pass one by one (fewer than five), but six of ten within a day trip it."""
    job = service.job
    box, tasks, items, list_id = await _linked_tasks(service, engine, 10)
    outcomes = []
    for pair in (items[0:2], items[2:4], items[4:6]):
        for item in pair:
            engine.outlook.delete_task(box, list_id, item)
        outcomes.append((await job.run(box, tasks)).outcome)

    assert outcomes == [RunOutcome.COMPLETED, RunOutcome.COMPLETED, RunOutcome.MASS_DELETE_REFUSED]
    assert await engine.store.links.count(box, ItemKind.TASK) == 6
    assert (await engine.store.registry.get_mailbox(box)).state is MailboxState.DEGRADED
