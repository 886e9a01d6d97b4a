"""The sweep's safety read over the Graph simulator and Azurite: a mailbox at rest costs one Graph
``$batch`` per check and queues no job; a change whose notification was lost is found behind the
stored delta link and only its resource gets a job; a mailbox checked recently is not read again."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from shared.outlook.batch import GraphBatch
from shared.outlook.probe import DeltaProbe
from shared.store.jobs import JobQueue, SyncJob, open_job_queue
from shared.sync.dispatch import SAFETY_READ_EVERY, safety_tick, sweep
from tests.engine.conftest import Engine, EngineServices


@pytest.fixture
async def jobs(storage_connection_string: str, table_prefix: str) -> AsyncIterator[JobQueue]:
    queue = await open_job_queue(
        queue_name=f"safety-{table_prefix}", connection_string=storage_connection_string
    )
    yield queue
    await queue.client.delete_queue()
    await queue.close()


async def _drain(jobs: JobQueue, connection_string: str) -> list[SyncJob]:
    async with QueueClient.from_connection_string(
        connection_string, jobs.client.queue_name, message_decode_policy=TextBase64DecodePolicy()
    ) as queue:
        found = [SyncJob.parse(m.content) async for m in queue.receive_messages(max_messages=32)]
        await queue.clear_messages()
    return found


async def test_a_mailbox_at_rest_costs_one_batch_and_a_missed_change_gets_its_job(
    engine: Engine, service: EngineServices, jobs: JobQueue, storage_connection_string: str
) -> None:
    user = engine.make_crm_user()
    box = engine.graph_sim.add_user(user.object_id)
    report = await service.onboard(box, user.systemuserid)
    resources = {s.resource for s in report.subscriptions}
    probe = DeltaProbe(GraphBatch(engine.graph))
    engine.graph_sim.clear_requests(box)
    # Just after the mailbox's own safety tick (its phase hashes from its id): the next falls due a
    # whole period later, so the sweeps 15 minutes on do not read it.
    start = safety_tick(box, dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=1)

    assert await sweep(engine.store, jobs, probe=probe, now=start) == 0  # at rest: no job
    sent = engine.graph_sim.requests(box)
    # One $batch: a delta read of each resource (each counts against the mailbox's budget).
    assert len({r["batch"] for r in sent}) == 1
    assert sent[0]["batch"] is not None
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in sent) == ["delta"] * len(resources)

    # A contact created while its notification was lost: only the contacts resource gets a job.
    engine.graph_sim.seed(box, contacts=[{"givenName": "Missed", "surname": "Notification"}])
    engine.graph_sim.clear_requests(box)
    assert await sweep(engine.store, jobs, probe=probe, now=start + dt.timedelta(minutes=15)) == 0
    assert engine.graph_sim.requests(box) == []  # checked 15 minutes ago: not read again
    later = start + SAFETY_READ_EVERY
    assert await sweep(engine.store, jobs, probe=probe, now=later) == 1
    (job,) = await _drain(jobs, storage_connection_string)
    assert job.resource.endswith("/contacts")
    assert job.reason.value == "sweep"

    await engine.job().run_job(job)
    assert engine.query("contacts?$filter=lastname eq 'Notification'&$select=contactid")
    assert await sweep(engine.store, jobs, probe=probe, now=later + SAFETY_READ_EVERY) == 0


async def test_an_expired_delta_token_or_a_failing_batch_gives_the_resources_a_run(
    engine: Engine, service: EngineServices, jobs: JobQueue, storage_connection_string: str
) -> None:
    user = engine.make_crm_user()
    box = engine.graph_sim.add_user(user.object_id)
    report = await service.onboard(box, user.systemuserid)
    probe = DeltaProbe(GraphBatch(engine.graph, max_attempts=1))
    engine.graph_sim.expire_delta_tokens(box)  # the links answer 410: a run must resync them

    assert await sweep(engine.store, jobs, probe=probe) == len(report.subscriptions)
    assert len(await _drain(jobs, storage_connection_string)) == len(report.subscriptions)


async def test_a_calendar_whose_window_is_due_to_move_gets_a_run_without_any_change(
    engine: Engine, service: EngineServices, jobs: JobQueue, storage_connection_string: str
) -> None:
    """A quiet calendar still needs its window moved (next year's events enter it with time): the
    safety read gives it a run once the window is a week old, changes or not."""
    user = engine.make_crm_user()
    box = engine.graph_sim.add_user(user.object_id)
    await service.onboard(box, user.systemuserid)
    probe = DeltaProbe(GraphBatch(engine.graph))
    week_on = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)

    assert await sweep(engine.store, jobs, probe=probe, now=week_on) == 1
    (job,) = await _drain(jobs, storage_connection_string)
    assert job.resource.endswith("/events")
