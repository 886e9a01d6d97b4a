"""The CRM -> Outlook run over real HTTP (the Graph and Dataverse simulators, Azurite): records deleted
in Dynamics while the run makes their Outlook copies."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import pytest

from shared.crm.port import Party, RecordRef, Upsert
from shared.domain.model import ItemKind, Participation
from shared.outlook.subscriptions import ResourceKind, resource_path
from shared.store.crm_jobs import CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.jobs import open_job_queue
from shared.store.ports import LinkStore
from shared.store.records import Link, Mailbox
from shared.sync.crm_changes import ChangeFeed
from shared.sync.crm_dispatch import SharedRuns, run_crm_work
from shared.sync.crm_run import CrmRunOutcome, CrmToOutlookRun
from shared.sync.routing import Router
from tests.engine.conftest import Engine, synced_user


class DeleteBeforeLinks:
    """A link store that runs ``before`` ahead of the first batch of new links: what happens in
    Dynamics between the run's Outlook create and its link write."""

    def __init__(self, inner: LinkStore, before: Callable[[], None]) -> None:
        self.inner = inner
        self.before: Callable[[], None] | None = before

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create_many(self, links: Sequence[Link]) -> list[Link]:
        if self.before is not None:
            self.before, before = None, self.before
            before()
        return await self.inner.create_many(links)


class CrashBeforeLinks:
    """A link store that dies on the first batch of new links, as a worker killed after its Outlook
    create would."""

    def __init__(self, inner: LinkStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create_many(self, links: Sequence[Link]) -> list[Link]:
        raise ConnectionError("worker died before the link write")


async def _meeting(
    engine: Engine, owner: RecordRef, subject: str, *, days: int = 3, parties: tuple[Party, ...] = ()
) -> uuid.UUID:
    """A one-hour appointment made in Dynamics, ``owner`` its organizer (plus ``parties``)."""
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).replace(microsecond=0)
    fields: dict[str, Any] = {
        "subject": subject,
        "ownerid": owner,
        "scheduledstart": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "scheduledend": (start + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    record = uuid.uuid4()
    organizer = Party(Participation.ORGANIZER, owner)
    await engine.crm.upsert(
        Upsert("appointment", fields, id=record, parties=(organizer, *parties)), caller=None
    )
    return record


async def _crashed_before_links(engine: Engine, mailbox: Mailbox, table: str, record: uuid.UUID) -> CrmWork:
    """A run of ``record`` that made its Outlook copy and died before its link write; its work."""
    work = CrmWork(table=table, changed=(record,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED)
    crashing = CrmToOutlookRun(
        store=dataclasses.replace(engine.store, links=CrashBeforeLinks(engine.store.links)),
        crm=engine.crm,
        graph=engine.graph,
    )
    with pytest.raises(ConnectionError):
        await crashing.run(work)
    return work


async def test_a_record_deleted_before_its_copy_is_linked_is_removed_from_outlook(engine: Engine) -> None:
    """The delete's routing ran while no link held the record, so it reached no mailbox: the run that
    made the copy checks, after its link write, that the records it copied still exist."""
    mailbox, owner = await synced_user(engine)
    kept = await engine.crm.create("task", {"subject": "Call back", "ownerid": owner}, caller=None)
    doomed = await engine.crm.create("task", {"subject": "Send offer", "ownerid": owner}, caller=None)
    links = DeleteBeforeLinks(engine.store.links, lambda: engine.delete_record("tasks", str(doomed.id)))
    store = dataclasses.replace(engine.store, links=links)
    run = CrmToOutlookRun(store=store, crm=engine.crm, graph=engine.graph)
    work = CrmWork(
        table="task",
        changed=(kept.id, doomed.id),
        mailbox_id=mailbox.mailbox_id,
        source=CrmWorkSource.ROUTED,
    )

    report = await run.run(work)

    assert report.outcome is CrmRunOutcome.COMPLETED
    list_id = quote(engine.task_list(mailbox.mailbox_id), safe="")
    tasks = engine.outlook.list(mailbox.mailbox_id, f"todo/lists/{list_id}/tasks")
    assert [task["title"] for task in tasks] == ["Call back"]
    linked = [link.crm_id async for link in engine.store.links.list_links(mailbox.mailbox_id, ItemKind.TASK)]
    assert linked == [str(kept.id)]


async def test_a_copy_whose_link_write_was_lost_is_removed_when_its_record_is_deleted(engine: Engine) -> None:
    """The run made the event and died before the link write; the appointment was deleted before the
    run was delivered again (its delete, routed by links, reached no mailbox). The rerun finds the
    event by the CRM id it carries and applies the delete rules to it."""
    mailbox, owner = await synced_user(engine)
    record = await _meeting(engine, owner, "Review")
    work = await _crashed_before_links(engine, mailbox, "appointment", record)
    assert [event["subject"] for event in engine.outlook.list(mailbox.mailbox_id, "events")] == ["Review"]
    engine.delete_record("appointments", str(record))

    report = await CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph).run(work)

    assert report.outcome is CrmRunOutcome.COMPLETED
    assert engine.outlook.list(mailbox.mailbox_id, "events") == []
    assert await engine.store.links.count(mailbox.mailbox_id, ItemKind.APPOINTMENT) == 0


async def test_a_change_delivered_after_its_record_was_deleted_takes_the_delete_rules(engine: Engine) -> None:
    """A change to a linked meeting whose record is deleted before the run reads it: the filter no
    longer returns the record, which is a delete on its way, not the meeting leaving the filter (that
    would keep the event unlinked, and its next Outlook sync would make it again in the CRM)."""
    mailbox, owner = await synced_user(engine)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(microsecond=0)
    record = uuid.uuid4()
    fields: dict[str, Any] = {
        "subject": "Review",
        "ownerid": owner,
        "scheduledstart": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "scheduledend": (start + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    organizer = Party(Participation.ORGANIZER, owner)
    await engine.crm.upsert(Upsert("appointment", fields, id=record, parties=(organizer,)), caller=None)
    work = CrmWork(
        table="appointment", changed=(record,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
    )
    run = CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph)
    assert (await run.run(work)).outcome is CrmRunOutcome.COMPLETED
    assert [event["subject"] for event in engine.outlook.list(mailbox.mailbox_id, "events")] == ["Review"]
    engine.delete_record("appointments", str(record))

    report = await run.run(work)  # the change, delivered after the delete (which is still queued)

    assert report.outcome is CrmRunOutcome.COMPLETED
    assert engine.outlook.list(mailbox.mailbox_id, "events") == []
    assert await engine.store.links.count(mailbox.mailbox_id, ItemKind.APPOINTMENT) == 0


async def test_a_linked_record_the_user_may_no_longer_read_left_the_filter(engine: Engine) -> None:
    """The same check, for a record that exists: handed to another user (outside "My Contacts"), the
    contact left the filter; the copy crmsync made and nobody changed is removed, not treated as a
    delete (which keeps an owned contact's Outlook copy)."""
    mailbox, owner = await synced_user(engine)
    other, _ = await synced_user(engine)
    contact = await engine.crm.create("contact", {"lastname": "Moved", "ownerid": owner}, caller=None)
    work = CrmWork(
        table="contact", changed=(contact.id,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
    )
    run = CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph)
    assert (await run.run(work)).outcome is CrmRunOutcome.COMPLETED
    assert len(engine.outlook.list(mailbox.mailbox_id, "contacts")) == 1
    new_owner = RecordRef("systemuser", uuid.UUID(other.crm_user_id))
    await engine.crm.upsert(Upsert("contact", {"ownerid": new_owner}, id=contact.id), caller=None)

    report = await run.run(work)

    assert report.outcome is CrmRunOutcome.COMPLETED
    assert engine.outlook.list(mailbox.mailbox_id, "contacts") == []
    assert await engine.store.links.count(mailbox.mailbox_id, ItemKind.CONTACT) == 0


async def test_the_outlook_run_links_a_copy_whose_link_write_was_lost_instead_of_creating_a_record(
    engine: Engine,
) -> None:
    """The run made the To Do task and died before the link write; the Outlook -> CRM run the
    task's notification starts comes first. The task is the record's copy (its create intent is
    recorded): it is linked to that record, not created in the CRM as a second one (seed 3 of
    bench.chaos)."""
    mailbox, owner = await synced_user(engine)
    task = await engine.crm.create("task", {"subject": "Quote K1", "ownerid": owner}, caller=None)
    await _crashed_before_links(engine, mailbox, "task", task.id)
    list_id = engine.task_list(mailbox.mailbox_id)

    await engine.job().run(
        mailbox.mailbox_id, resource_path(ResourceKind.TASKS, mailbox.mailbox_id, task_list_id=list_id)
    )

    assert [row["activityid"] for row in engine.query("tasks?$filter=subject eq 'Quote K1'")] == [
        str(task.id)
    ]
    [copy] = engine.outlook.list(mailbox.mailbox_id, f"todo/lists/{quote(list_id, safe='')}/tasks")
    assert await engine.crm_id(mailbox.mailbox_id, ItemKind.TASK, copy["id"]) == str(task.id)
    assert await engine.store.sync_state.pending_creates(mailbox.mailbox_id, "task") == {}


async def test_the_outlook_run_removes_a_lost_link_copy_whose_record_was_deleted_instead_of_recreating_it(
    engine: Engine,
) -> None:
    """The run made the event and died before the link write; the appointment was deleted (its
    delete, routed by links, reached no mailbox) before an Outlook -> CRM run met the event. The
    event is the deleted record's copy: it takes the delete rules, and nothing comes back in the
    CRM (seed 3 of bench.chaos: an appointment made and deleted in Dynamics was back on both sides)."""
    mailbox, owner = await synced_user(engine)
    record = await _meeting(engine, owner, "Review K2")
    await _crashed_before_links(engine, mailbox, "appointment", record)
    engine.delete_record("appointments", str(record))

    await engine.job().run(mailbox.mailbox_id, resource_path(ResourceKind.EVENTS, mailbox.mailbox_id))

    assert engine.query("appointments?$filter=subject eq 'Review K2'") == []
    assert engine.outlook.list(mailbox.mailbox_id, "events") == []
    assert await engine.store.links.count(mailbox.mailbox_id, ItemKind.APPOINTMENT) == 0
    assert await engine.store.sync_state.pending_creates(mailbox.mailbox_id, "appointment") == {}


class CrashBeforeLinkUpdate:
    """A link store that dies when a link is rewritten, as a worker killed after its Outlook update."""

    def __init__(self, inner: LinkStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def update(self, link: Link) -> Link:
        raise ConnectionError("worker died before the link write")


@pytest.mark.parametrize("first", ["outlook_run", "crm_delete_run"])
async def test_an_update_whose_link_write_was_lost_is_no_outlook_edit_when_the_record_is_deleted(
    engine: Engine, first: str
) -> None:
    """The run wrote a task's new title to Outlook and died before the link write; then the task was
    deleted in Dynamics. The copy differs from its link only by crmsync's own write (its update
    intent records what it wrote): whichever run meets it first - the Outlook -> CRM run or the
    CRM -> Outlook run of the delete - it takes the delete rules, instead of counting as changed in
    Outlook since and creating the record again (chaos seed 3: an appointment made, changed and
    deleted in Dynamics was back on both sides)."""
    mailbox, owner = await synced_user(engine)
    task = await engine.crm.create("task", {"subject": "Plan v1", "ownerid": owner}, caller=None)
    work = CrmWork(
        table="task", changed=(task.id,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
    )
    await CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph).run(work)
    await engine.crm.upsert(Upsert("task", {"subject": "Plan v2"}, id=task.id, if_match="*"), caller=None)
    crashing = CrmToOutlookRun(
        store=dataclasses.replace(engine.store, links=CrashBeforeLinkUpdate(engine.store.links)),
        crm=engine.crm,
        graph=engine.graph,
    )
    with pytest.raises(ConnectionError):
        await crashing.run(work)
    list_id = engine.task_list(mailbox.mailbox_id)
    tasks = f"todo/lists/{quote(list_id, safe='')}/tasks"
    assert [t["title"] for t in engine.outlook.list(mailbox.mailbox_id, tasks)] == ["Plan v2"]
    engine.delete_record("tasks", str(task.id))

    if first == "outlook_run":
        await engine.job().run(
            mailbox.mailbox_id, resource_path(ResourceKind.TASKS, mailbox.mailbox_id, task_list_id=list_id)
        )
    else:
        deleted = work.model_copy(update={"changed": (), "deleted": (task.id,)})
        await CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph).run(deleted)

    assert engine.query(f"tasks?$filter=activityid eq {task.id}") == []
    assert engine.outlook.list(mailbox.mailbox_id, tasks) == []
    assert await engine.store.links.count(mailbox.mailbox_id, ItemKind.TASK) == 0


@pytest.mark.parametrize("table", ["task", "appointment"])
async def test_an_update_whose_link_write_was_lost_is_no_outlook_edit_when_dynamics_changes_it_again(
    engine: Engine, table: str
) -> None:
    """The run wrote a new title to Outlook and died before the link write; then the record was
    changed again in Dynamics. The echo of crmsync's write reaches the Outlook -> CRM run first: the
    copy differs from its link only by that write (its update intent), so it is no Outlook edit to
    merge against Dynamics' newer one (chaos at 10,000 operations: a meeting's fifth version made in
    Dynamics was overwritten by its fourth from Outlook, on both sides)."""
    mailbox, owner = await synced_user(engine)
    if table == "task":
        record = (await engine.crm.create("task", {"subject": "Plan v1", "ownerid": owner}, caller=None)).id
        list_id = engine.task_list(mailbox.mailbox_id)
        resource = resource_path(ResourceKind.TASKS, mailbox.mailbox_id, task_list_id=list_id)
        path, title = f"todo/lists/{quote(list_id, safe='')}/tasks", "title"
    else:
        record = await _meeting(engine, owner, "Plan v1")
        resource = resource_path(ResourceKind.EVENTS, mailbox.mailbox_id)
        path, title = "events", "subject"
    work = CrmWork(table=table, changed=(record,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED)
    await CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph).run(work)
    await engine.job().run(mailbox.mailbox_id, resource)  # the copy's echo: nothing to do
    await engine.crm.upsert(Upsert(table, {"subject": "Plan v2"}, id=record, if_match="*"), caller=None)
    crashing = CrmToOutlookRun(
        store=dataclasses.replace(engine.store, links=CrashBeforeLinkUpdate(engine.store.links)),
        crm=engine.crm,
        graph=engine.graph,
    )
    with pytest.raises(ConnectionError):
        await crashing.run(work)
    await engine.crm.upsert(Upsert(table, {"subject": "Plan v3"}, id=record, if_match="*"), caller=None)

    await engine.job().run(mailbox.mailbox_id, resource)  # the echo of "Plan v2"
    await CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph).run(work)

    [row] = engine.query(f"{table}s?$filter=activityid eq {record}&$select=subject")
    assert row["subject"] == "Plan v3"
    assert [item[title] for item in engine.outlook.list(mailbox.mailbox_id, path)] == ["Plan v3"]


async def test_runs_a_worker_is_handed_at_once_for_one_mailbox_share_the_lease_instead_of_requeuing(
    engine: Engine, storage_connection_string: str, table_prefix: str
) -> None:
    """The host hands a worker several messages at once; runs of one mailbox need its lease. Each
    used to meet the lease its neighbour held and go back on the queue (chaos seed 3: 3,701 requeues
    for 366 runs). Now they wait for each other in the worker, and those of one table handed in
    together are run together, once."""
    mailbox, owner = await synced_user(engine)
    tasks = [
        await engine.crm.create("task", {"subject": f"Step {n}", "ownerid": owner}, caller=None)
        for n in range(3)
    ]
    jobs = await open_job_queue(
        queue_name=f"shared-{table_prefix}".lower(), connection_string=storage_connection_string
    )
    queue = CrmWorkQueue(jobs)
    runs = SharedRuns(CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph))
    router = Router(store=engine.store, crm=engine.crm, queue=queue)
    contact = await engine.crm.create("contact", {"lastname": "Lovelace", "ownerid": owner}, caller=None)
    works = [
        CrmWork(table="task", changed=(task.id,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED)
        for task in tasks
    ]
    works.insert(
        1,
        CrmWork(
            table="contact", changed=(contact.id,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
        ),
    )
    try:
        outcomes = await asyncio.gather(
            *(
                run_crm_work(
                    work.serialize(), router=router, runner=runs, queue=queue, feed=_feed(engine, queue)
                )
                for work in works
            )
        )

        assert [outcome.status for outcome in outcomes] == ["synced"] * 4  # none met the lease held
        assert (await jobs.client.get_queue_properties()).approximate_message_count == 0
        records = [outcome.report.records if outcome.report else None for outcome in outcomes]
        assert records == [3, 1, 3, 3]
        assert outcomes[0].report is outcomes[2].report is outcomes[3].report  # the three tasks: one run
        assert [c["surname"] for c in engine.outlook.list(mailbox.mailbox_id, "contacts")] == ["Lovelace"]
        list_id = quote(engine.task_list(mailbox.mailbox_id), safe="")
        titles = [t["title"] for t in engine.outlook.list(mailbox.mailbox_id, f"todo/lists/{list_id}/tasks")]
        assert sorted(titles) == ["Step 0", "Step 1", "Step 2"]
    finally:
        await jobs.client.delete_queue()
        await jobs.close()


async def test_crm_work_throttled_by_dataverse_is_requeued_after_its_wait_not_poisoned(
    engine: Engine, storage_connection_string: str, table_prefix: str
) -> None:
    """Service protection limits (429) are not the message's fault: the work goes back on the queue
    after the Retry-After Dataverse names, instead of failing towards the poison queue (a poisoned
    delete would never come back: change tracking reported it once)."""
    mailbox, owner = await synced_user(engine)
    task = await engine.crm.create("task", {"subject": "Plan", "ownerid": owner}, caller=None)
    jobs = await open_job_queue(
        queue_name=f"crm-{table_prefix}".lower(), connection_string=storage_connection_string
    )
    queue = CrmWorkQueue(jobs)
    work = CrmWork(
        table="task", changed=(task.id,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
    )
    runner = CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph)
    router = Router(store=engine.store, crm=engine.crm, queue=queue)
    engine.dataverse.fault("throttle", retry_after=120, count=1)  # longer than the client waits
    try:
        outcome = await run_crm_work(
            work.serialize(), router=router, runner=runner, queue=queue, feed=_feed(engine, queue)
        )
        assert outcome.status == "requeued"
        assert await jobs.client.peek_messages() == []  # hidden for Dataverse's wait
        properties = await jobs.client.get_queue_properties()
        assert properties.approximate_message_count == 1
        outcome = await run_crm_work(
            work.serialize(), router=router, runner=runner, queue=queue, feed=_feed(engine, queue)
        )
        assert outcome.status == "synced"  # the limit lifted: the same work completes
    finally:
        await jobs.client.delete_queue()
        await jobs.close()


async def test_a_run_reads_the_parties_of_all_its_meetings_in_one_request(engine: Engine) -> None:
    """The organizer's meetings carry their CRM attendees to Outlook; their party rows are read in one
    Dataverse request per run, not one per meeting, and the filter tells which the user organizes in
    the same query (every request counts against the service protection limit that crmsync's
    application user shares across all mailboxes)."""
    mailbox, owner = await synced_user(engine)
    address = f"a-{uuid.uuid4().hex[:8]}@contoso.example"
    attendee = engine.dataverse.add_user(internalemailaddress=address)
    guest = RecordRef("systemuser", uuid.UUID(attendee["systemuserid"]))
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(microsecond=0)
    meetings: list[uuid.UUID] = []
    for n in range(4):
        fields: dict[str, Any] = {
            "subject": f"Meeting {n}",
            "ownerid": owner,
            "scheduledstart": (start + dt.timedelta(hours=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "scheduledend": (start + dt.timedelta(hours=n + 1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        parties = (Party(Participation.ORGANIZER, owner), Party(Participation.REQUIRED, guest, address))
        meetings.append(uuid.uuid4())
        await engine.crm.upsert(Upsert("appointment", fields, id=meetings[-1], parties=parties), caller=None)
    run = CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph)
    work = CrmWork(
        table="appointment",
        changed=tuple(meetings),
        mailbox_id=mailbox.mailbox_id,
        source=CrmWorkSource.ROUTED,
    )

    for _ in range(2):  # the creates, then a run over the linked meetings
        engine.dataverse.clear_requests()
        report = await run.run(work)
        assert report.outcome is CrmRunOutcome.COMPLETED
        sent = engine.dataverse.requests(engine.token)
        assert len([r for r in sent if r["path"] == "activityparties"]) == 1
        # Dynamics' default filter and the meetings the user organizes: one FetchXML, not two.
        assert len([r for r in sent if r["path"] == "appointments" and "fetchXml" in r["query"]]) == 1

    events = engine.outlook.list(mailbox.mailbox_id, "events")
    assert sorted(e["subject"] for e in events) == [f"Meeting {n}" for n in range(4)]
    for event in events:
        addresses = [a["emailAddress"]["address"].lower() for a in event["attendees"]]
        assert addresses == [address]


async def test_a_worker_reads_a_users_privileges_filters_and_time_zone_once_not_per_run(
    engine: Engine,
) -> None:
    """The user's "Sync to Outlook" privilege, Outlook filters and time zone are settings: a worker
    keeps them for the field settings' TTL, so a run's requests are its records' (four requests less
    per run of appointments against the limits every mailbox shares)."""
    mailbox, owner = await synced_user(engine)
    runner = CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph)
    about_the_user = (
        "RetrieveUserPrivileges",
        "userqueries",
        "usersettingscollection",
        "timezonedefinitions",
    )
    for n in range(2):
        record = await _meeting(engine, owner, f"Visit {n}", days=2)
        engine.dataverse.clear_requests()
        work = CrmWork(
            table="appointment", changed=(record,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
        )
        assert (await runner.run(work)).outcome is CrmRunOutcome.COMPLETED
        asked = [r["path"] for r in engine.dataverse.requests(engine.token)]
        assert sum(1 for path in asked if any(name in path for name in about_the_user)) == (
            4 if n == 0 else 0
        )
    subjects = sorted(e["subject"] for e in engine.outlook.list(mailbox.mailbox_id, "events"))
    assert subjects == ["Visit 0", "Visit 1"]


async def test_routing_a_meeting_reads_its_owner_and_parties_in_one_request(
    engine: Engine, storage_connection_string: str, table_prefix: str
) -> None:
    """Routing reads who a changed meeting names - its owner and the users among its parties - in
    one Dataverse request (the parties expanded), not a record query and a party query."""
    _organizer, owner = await synced_user(engine)
    _attendee, guest = await synced_user(engine)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=5)).replace(microsecond=0)
    fields: dict[str, Any] = {
        "subject": "Kick-off",
        "ownerid": owner,
        "scheduledstart": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "scheduledend": (start + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    record = uuid.uuid4()
    parties = (Party(Participation.ORGANIZER, owner), Party(Participation.REQUIRED, guest))
    await engine.crm.upsert(Upsert("appointment", fields, id=record, parties=parties), caller=None)
    jobs = await open_job_queue(
        queue_name=f"crmr-{table_prefix}".lower(), connection_string=storage_connection_string
    )
    router = Router(store=engine.store, crm=engine.crm, queue=CrmWorkQueue(jobs))
    engine.dataverse.clear_requests()
    try:
        runs = await router.route(
            CrmWork(table="appointment", changed=(record,), source=CrmWorkSource.WEBHOOK)
        )
    finally:
        await jobs.client.delete_queue()
        await jobs.close()

    assert runs == 2  # the organizer's mailbox (the owner) and the attendee's (a party)
    reads = [r["path"] for r in engine.dataverse.requests(engine.token)]
    assert [p for p in reads if p in ("appointments", "activityparties")] == ["appointments"]


def _feed(engine: Engine, queue: CrmWorkQueue) -> ChangeFeed:
    return ChangeFeed(store=engine.store, crm=engine.crm, queue=queue)
