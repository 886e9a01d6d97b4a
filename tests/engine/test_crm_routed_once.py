"""Routing queues one run per change and mailbox, though the Dataverse webhook and change tracking
both report every change (real HTTP: the Dataverse simulator, Azurite's queue)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.crm.port import Upsert
from shared.store.crm_jobs import CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.jobs import JobQueue, open_job_queue
from shared.sync.crm_dispatch import SharedRoutes, run_crm_work
from shared.sync.crm_run import CrmRunReport, CrmToOutlookRun
from shared.sync.routing import Router
from tests.engine.conftest import Engine
from tests.engine.test_crm_run import _synced_user


@pytest.fixture
async def jobs(storage_connection_string: str, table_prefix: str) -> AsyncIterator[JobQueue]:
    queue = await open_job_queue(
        queue_name=f"once-{table_prefix}".lower(), connection_string=storage_connection_string
    )
    try:
        yield queue
    finally:
        await queue.client.delete_queue()
        await queue.close()


class FailingRun:
    """A run that fails in a way the queue retries and may finally poison (not throttling)."""

    async def run(self, work: CrmWork) -> CrmRunReport:
        raise RuntimeError("Graph answered something unexpected")


async def test_a_change_the_webhook_routed_costs_no_second_run_when_change_tracking_reports_it(
    engine: Engine, jobs: JobQueue
) -> None:
    """Each report of one change queued a run for each mailbox it concerns; the second run read the
    record and the copy again and wrote nothing (chaos: the CRM -> Outlook work came in faster than
    it drained). A new version of the record is routed again."""
    mailbox, owner = await _synced_user(engine)
    task = await engine.crm.create("task", {"subject": "Call back", "ownerid": owner}, caller=None)
    router = Router(store=engine.store, crm=engine.crm, queue=CrmWorkQueue(jobs))
    webhook = CrmWork(table="task", changed=(task.id,), owner=owner.id, source=CrmWorkSource.WEBHOOK)
    tracked = CrmWork(table="task", changed=(task.id,), source=CrmWorkSource.CHANGE_TRACKING)

    assert await router.route(webhook) == 1
    assert await router.route(tracked) == 0  # the same version: its run is queued already
    await engine.crm.upsert(Upsert("task", {"subject": "Call back today"}, id=task.id), caller=None)
    assert await router.route(tracked) == 1
    queued = [CrmWork.parse(m.content) for m in await jobs.client.peek_messages(max_messages=32)]
    assert [(w.mailbox_id, w.changed) for w in queued] == [(mailbox.mailbox_id, (task.id,))] * 2


async def test_a_failed_run_is_routed_again_at_the_next_report_of_its_change(
    engine: Engine, jobs: JobQueue
) -> None:
    """A run that fails may end on the poison queue; change tracking's report of the same change is
    then the safety net, so the failed run's records are forgotten and routed again."""
    mailbox, owner = await _synced_user(engine)
    task = await engine.crm.create("task", {"subject": "Send quote", "ownerid": owner}, caller=None)
    queue = CrmWorkQueue(jobs)
    router = Router(store=engine.store, crm=engine.crm, queue=queue)
    report = CrmWork(table="task", changed=(task.id,), source=CrmWorkSource.CHANGE_TRACKING)
    assert await router.route(report) == 1
    run = CrmWork(
        table="task", changed=(task.id,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
    )

    with pytest.raises(RuntimeError):
        await run_crm_work(run.serialize(), router=router, runner=FailingRun(), queue=queue)  # type: ignore[arg-type]

    assert await router.route(report) == 1


async def test_routing_work_a_worker_is_handed_at_once_for_one_table_reads_the_records_once(
    engine: Engine, jobs: JobQueue
) -> None:
    """Each change reaches routing alone (a webhook call per record), and each routing read its
    records' owners and parties: a Dataverse request per change (chaos seed 4 at 3,000 operations:
    2,805 of crmsync's 7,550). Routing work of one table that waits in the worker is routed as one."""
    mailbox, owner = await _synced_user(engine)
    tasks = [
        await engine.crm.create("task", {"subject": f"Follow up {n}", "ownerid": owner}, caller=None)
        for n in range(3)
    ]
    queue = CrmWorkQueue(jobs)
    routes = SharedRoutes(Router(store=engine.store, crm=engine.crm, queue=queue))
    runner = CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph)
    reports = [
        CrmWork(table="task", changed=(task.id,), owner=owner.id, source=CrmWorkSource.WEBHOOK).serialize()
        for task in tasks
    ]
    engine.dataverse.clear_requests()

    outcomes = await asyncio.gather(
        *(run_crm_work(report, router=routes, runner=runner, queue=queue) for report in reports)
    )

    assert [outcome.status for outcome in outcomes] == ["routed"] * 3
    reads = [r for r in engine.dataverse.requests(engine.token) if r["path"] == "tasks"]
    assert len(reads) == 2  # the first alone, the two that waited for it together
    queued = [CrmWork.parse(m.content) for m in await jobs.client.peek_messages(max_messages=32)]
    assert {w.mailbox_id for w in queued} == {mailbox.mailbox_id}
    assert sorted(r for w in queued for r in w.changed) == sorted(task.id for task in tasks)
