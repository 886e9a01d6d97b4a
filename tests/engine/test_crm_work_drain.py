"""The CRM -> Outlook work drains faster than it comes (real HTTP: the simulators, Azurite's queue):
routing queues one run per change and mailbox, though the Dataverse webhook and change tracking both
report every change, reads the records of the routing work waiting in a worker once, and a run
waits for the mailbox lease as the Outlook -> CRM job does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest

from shared.crm.port import Upsert
from shared.domain.model import ItemKind
from shared.store.crm_jobs import CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.jobs import JobQueue, open_job_queue
from shared.sync.crm_changes import ChangeFeed
from shared.sync.crm_dispatch import SharedRoutes, run_crm_work
from shared.sync.crm_run import CrmRunReport, CrmToOutlookRun
from shared.sync.lease import LeaseWaiters
from shared.sync.resources import parse_resource
from shared.sync.routing import Router
from tests.engine.conftest import Engine, EngineServices, synced_user


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
    mailbox, owner = await synced_user(engine)
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
    mailbox, owner = await synced_user(engine)
    task = await engine.crm.create("task", {"subject": "Send quote", "ownerid": owner}, caller=None)
    queue = CrmWorkQueue(jobs)
    router = Router(store=engine.store, crm=engine.crm, queue=queue)
    report = CrmWork(table="task", changed=(task.id,), source=CrmWorkSource.CHANGE_TRACKING)
    assert await router.route(report) == 1
    run = CrmWork(
        table="task", changed=(task.id,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
    )

    with pytest.raises(RuntimeError):
        await run_crm_work(
            run.serialize(),
            router=router,
            runner=FailingRun(),  # type: ignore[arg-type]
            queue=queue,
            feed=_feed(engine, queue),
        )

    assert await router.route(report) == 1


async def test_routing_work_a_worker_is_handed_at_once_for_one_table_reads_the_records_once(
    engine: Engine, jobs: JobQueue
) -> None:
    """Each change reaches routing alone (a webhook call per record), and each routing read its
    records' owners and parties: a Dataverse request per change (chaos seed 4 at 3,000 operations:
    2,805 of crmsync's 7,550). Routing work of one table that waits in the worker is routed as one."""
    mailbox, owner = await synced_user(engine)
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
        *(
            run_crm_work(
                report,
                router=routes,
                runner=runner,
                queue=queue,
                feed=_feed(engine, queue),
            )
            for report in reports
        )
    )

    assert [outcome.status for outcome in outcomes] == ["routed"] * 3
    reads = [r for r in engine.dataverse.requests(engine.token) if r["path"] == "tasks"]
    assert len(reads) == 1  # handed in together: routed as one
    queued = [CrmWork.parse(m.content) for m in await jobs.client.peek_messages(max_messages=32)]
    assert {w.mailbox_id for w in queued} == {mailbox.mailbox_id}
    assert sorted(r for w in queued for r in w.changed) == sorted(task.id for task in tasks)


async def test_a_run_waits_for_the_lease_an_outlook_run_holds_instead_of_going_back_on_the_queue(
    engine: Engine, jobs: JobQueue
) -> None:
    """The Outlook -> CRM job waits for a held mailbox lease; a CRM -> Outlook run went back on the
    queue at once and came round 2 s later, by when a waiting Outlook -> CRM job had the lease again:
    with Outlook busy the runs starved (chaos seed 4 at 10,000 operations: no run completed for
    minutes while 3,000 messages queued)."""
    mailbox, owner = await synced_user(engine)
    task = await engine.crm.create("task", {"subject": "Prepare demo", "ownerid": owner}, caller=None)
    queue = CrmWorkQueue(jobs)
    runner = CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph)
    router = Router(store=engine.store, crm=engine.crm, queue=queue)
    held = await engine.store.sync_state.try_acquire(mailbox.mailbox_id, "worker:outlook-run", 15)

    async def outlook_run_ends() -> None:
        await asyncio.sleep(1.0)
        await engine.store.sync_state.release(held)

    run = CrmWork(
        table="task", changed=(task.id,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
    )
    outcome, _ = await asyncio.gather(
        run_crm_work(run.serialize(), router=router, runner=runner, queue=queue, feed=_feed(engine, queue)),
        outlook_run_ends(),
    )

    assert outcome.status == "synced"
    assert (await jobs.client.get_queue_properties()).approximate_message_count == 0
    list_id = quote(engine.task_list(mailbox.mailbox_id), safe="")
    titles = [t["title"] for t in engine.outlook.list(mailbox.mailbox_id, f"todo/lists/{list_id}/tasks")]
    assert titles == ["Prepare demo"]


async def test_an_outlook_run_leaves_the_mailboxs_other_dirty_resources_to_their_jobs_while_a_crm_run_waits(
    service: EngineServices, engine: Engine
) -> None:
    """An Outlook -> CRM job takes the changes notified meanwhile and the mailbox's other dirty
    resources under its lease; with Outlook busy it held the lease for good (chaos at 10,000
    operations: 92 % of the time). While a CRM -> Outlook run waits for the lease, the job does its
    own resource only and gives the lease up; the others' jobs are queued."""
    user = engine.make_crm_user()
    mailbox = engine.graph_sim.add_user(user.object_id)
    report = await service.onboard(mailbox, user.systemuserid)
    resources = {parse_resource(mailbox, s.resource).kind: s.resource for s in report.subscriptions}
    engine.graph_sim.seed(mailbox, contacts=[{"surname": "Now"}], todo={"defaultList": [{"title": "Later"}]})
    for kind in (ItemKind.CONTACT, ItemKind.TASK):  # both notified, as the webhook marks them
        await engine.store.sync_state.mark_dirty(mailbox, resources[kind])
    waiters = LeaseWaiters()
    job = engine.job(waiters=waiters)

    with waiters.wait(mailbox):  # a CRM -> Outlook run of this worker waits for the lease
        await job.run(mailbox, resources[ItemKind.CONTACT])

    assert await engine.store.links.count(mailbox, ItemKind.CONTACT) == 1
    assert await engine.store.links.count(mailbox, ItemKind.TASK) == 0  # left to its own job
    assert (await engine.store.sync_state.get_state(mailbox, resources[ItemKind.TASK])).dirty


def _feed(engine: Engine, queue: CrmWorkQueue) -> ChangeFeed:
    return ChangeFeed(store=engine.store, crm=engine.crm, queue=queue)
