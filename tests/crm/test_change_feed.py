"""The change-tracking timer's work on the Dataverse simulator (real client over HTTP), with the
token and the routing queue on Azurite: the first read only takes the baseline; later reads queue
the changed and deleted ids; an expired token (0x80044352) reconciles against the link map."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from shared.crm.dataverse import DataverseClient
from shared.crm.port import ChangePage, RecordRef, Upsert
from shared.domain.model import ItemKind
from shared.store import Store
from shared.store.crm_jobs import CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.records import Link, Mailbox
from shared.sync.crm_changes import CHANGES_PARTITION, RECENT, ChangeFeed, changes_resource
from simulators.dataverse.launcher import DataverseSimulator
from tests.crm.conftest import queued


async def _mailbox(store: Store, owner: uuid.UUID, upn: str) -> Mailbox:
    return await store.registry.register(
        mailbox_id=str(uuid.uuid4()), upn=upn, crm_user_id=str(owner), crm_caller_object_id=str(uuid.uuid4())
    )


async def test_baseline_then_changes_and_deletes_then_reconciliation(
    crm: DataverseClient, store: Store, queue: CrmWorkQueue, dataverse_sim: DataverseSimulator
) -> None:
    feed = ChangeFeed(store=store, crm=crm, queue=queue)
    owner = uuid.UUID(dataverse_sim.add_user()["systemuserid"])
    existing = (
        await crm.create(
            "task", {"subject": "before", "ownerid": RecordRef("systemuser", owner)}, caller=None
        )
    ).id

    baseline = await feed.poll_table("task")
    assert baseline.baseline
    assert await queued(queue) == []  # what exists is not a change

    changed = (
        await crm.create("task", {"subject": "after", "ownerid": RecordRef("systemuser", owner)}, caller=None)
    ).id
    await crm.delete("task", existing, caller=None)
    result = await feed.poll_table("task")
    work = await queued(queue)
    assert changed in {i for w in work for i in w.changed}
    assert existing in {i for w in work for i in w.deleted}
    assert all(w.mailbox_id is None and w.source is CrmWorkSource.CHANGE_TRACKING for w in work)
    assert result.changed >= 1
    assert result.deleted >= 1

    # A mailbox links a task that was deleted while the token was expiring: reconciliation routes it
    # as deleted, and routes the rows that exist (the link map makes that idempotent).
    mailbox = await _mailbox(store, owner, "r@contoso.example")
    gone = uuid.uuid4()
    await store.links.create(
        Link(
            mailbox_id=mailbox.mailbox_id,
            kind=ItemKind.TASK,
            outlook_id="AAMk-gone",
            crm_table="task",
            crm_id=str(gone),
        )
    )
    dataverse_sim.expire_change_tokens("task")
    reconciled = await feed.poll_table("task")
    assert reconciled.reconciled
    work = await queued(queue)
    assert {w.source for w in work} == {CrmWorkSource.RECONCILIATION}
    assert gone in {i for w in work for i in w.deleted}
    assert changed in {i for w in work for i in w.changed}
    # ... and the next poll reads from the fresh token again.
    again = await feed.poll_table("task")
    assert not again.reconciled
    assert not again.baseline


async def test_reconciliation_routes_only_rows_the_links_have_not_synced(
    crm: DataverseClient, store: Store, queue: CrmWorkQueue, dataverse_sim: DataverseSimulator
) -> None:
    """After an expired token, a row every link holds at its version (``@odata.etag``) changed
    nowhere: routing it would only make each mailbox read its copy. A row changed since its link,
    and a row no link holds, are routed."""
    feed = ChangeFeed(store=store, crm=crm, queue=queue)
    owner = uuid.UUID(dataverse_sim.add_user()["systemuserid"])
    mailbox = await _mailbox(store, owner, "s@contoso.example")
    fields = {"ownerid": RecordRef("systemuser", owner)}
    synced, edited, unlinked = [
        await crm.create("task", {"subject": name, **fields}, caller=None) for name in ("s", "e", "u")
    ]
    await feed.poll_table("task")  # the baseline
    for record in (synced, edited):
        row = await crm.get("task", record.id, select=["activityid"], caller=None)
        assert row is not None
        await store.links.create(
            Link(
                mailbox_id=mailbox.mailbox_id,
                kind=ItemKind.TASK,
                outlook_id=f"AAMk-{record.id}",
                crm_table="task",
                crm_id=str(record.id),
                crm_etag=row["@odata.etag"],
            )
        )
    await crm.upsert(Upsert("task", {"subject": "e2"}, id=edited.id), caller=None)
    await queued(queue)  # what the edit's own read would take
    dataverse_sim.expire_change_tokens("task")

    reconciled = await feed.poll_table("task")

    routed = {i for w in await queued(queue) for i in w.changed}
    assert reconciled.reconciled
    assert edited.id in routed
    assert unlinked.id in routed
    assert synced.id not in routed


class Routed:
    """Routing in the worker, recorded (what ``run_crm_work`` hands ``read_due``)."""

    def __init__(self) -> None:
        self.work: list[CrmWork] = []

    async def __call__(self, work: CrmWork) -> int:
        self.work.append(work)
        return 1


async def _flag(store: Store, table: str) -> None:
    """What the Dataverse webhook does for a call (shared.sync.crm_intake)."""
    await store.sync_state.mark_dirty(CHANGES_PARTITION, changes_resource(table))


async def test_a_change_read_the_webhook_asked_for_routes_the_burst_in_the_worker_once(
    crm: DataverseClient, store: Store, queue: CrmWorkQueue, dataverse_sim: DataverseSimulator
) -> None:
    """The webhook flags the table; the first read it asks for, with no token yet, takes the
    baseline and routes the rows just modified (the change it was told of), not every row; later
    reads route what the token lists. Reads of one table wait for each other, and one that finds
    the flag taken by the read before it ends without a Dataverse request."""
    owner = RecordRef("systemuser", uuid.UUID(dataverse_sim.add_user()["systemuserid"]))
    old = (await crm.create("task", {"subject": "old", "ownerid": owner}, caller=None)).id
    await asyncio.sleep(1.1)  # modifiedon has whole seconds
    fresh = (await crm.create("task", {"subject": "fresh", "ownerid": owner}, caller=None)).id
    record = dataverse_sim.record("task", str(fresh))
    assert record is not None
    modified = dt.datetime.fromisoformat(str(record["modifiedon"]).replace("Z", "+00:00"))
    feed = ChangeFeed(store=store, crm=crm, queue=queue, clock=lambda: modified + RECENT)  # "old": older
    await _flag(store, "task")
    routed = Routed()

    first = await feed.read_due("task", routed)

    assert first is not None
    assert first.baseline
    assert [w.changed for w in routed.work] == [(fresh,)]
    assert await queued(queue) == []  # routed in the worker, nothing queued
    assert not (await store.sync_state.get_state(CHANGES_PARTITION, changes_resource("task"))).dirty

    burst = [
        (await crm.create("task", {"subject": f"n{n}", "ownerid": owner}, caller=None)).id for n in range(3)
    ]
    await crm.delete("task", old, caller=None)
    for _ in burst:
        await _flag(store, "task")
    routed.work.clear()
    dataverse_sim.clear_requests()
    reads = await asyncio.gather(feed.read_due("task", routed), feed.read_due("task", routed))

    assert reads[1] is None  # waited for the first read, which took the flag and the burst
    assert sorted(i for w in routed.work for i in w.changed) == sorted(burst)
    assert [i for w in routed.work for i in w.deleted] == [old]
    assert len([r for r in dataverse_sim.requests() if r["path"] == "tasks"]) == 1


class CreatesAfterTheRead:
    """The client, but an Outlook -> CRM run creates a record and writes its link right after the
    reconciliation's fresh read of the table has been answered (the two run side by side)."""

    def __init__(self, crm: DataverseClient, create: Callable[[], Awaitable[None]]) -> None:
        self.crm = crm
        self.create = create

    def __getattr__(self, name: str) -> Any:
        return getattr(self.crm, name)

    async def read_changes(self, table: str, **kwargs: Any) -> ChangePage:
        page = await self.crm.read_changes(table, **kwargs)
        if kwargs.get("link") is None:
            await self.create()
        return page


async def test_a_record_created_while_the_table_is_reconciled_is_not_routed_as_deleted(
    crm: DataverseClient, store: Store, queue: CrmWorkQueue, dataverse_sim: DataverseSimulator
) -> None:
    """The fresh read did not list a record an Outlook -> CRM run created just after it, and the
    link map read next held its link: reconciliation took it for deleted, and the CRM -> Outlook run
    deleted its Outlook item (chaos seed 5 at 10,000 operations: an event made in Outlook was lost
    there, its record alive in Dynamics)."""
    owner = uuid.UUID(dataverse_sim.add_user()["systemuserid"])
    mailbox = await _mailbox(store, owner, "t@contoso.example")
    made: list[uuid.UUID] = []

    async def outlook_run_creates() -> None:
        fields = {"subject": "made in Outlook", "ownerid": RecordRef("systemuser", owner)}
        record = (await crm.create("task", fields, caller=None)).id
        made.append(record)
        await store.links.create(
            Link(
                mailbox_id=mailbox.mailbox_id,
                kind=ItemKind.TASK,
                outlook_id=f"AAMk-{record}",
                crm_table="task",
                crm_id=str(record),
            )
        )

    await ChangeFeed(store=store, crm=crm, queue=queue).poll_table("task")  # the baseline
    dataverse_sim.expire_change_tokens("task")
    feed = ChangeFeed(store=store, crm=CreatesAfterTheRead(crm, outlook_run_creates), queue=queue)  # type: ignore[arg-type]

    reconciled = await feed.poll_table("task")

    assert reconciled.reconciled
    assert made
    assert made[0] not in {i for w in await queued(queue) for i in w.deleted}
