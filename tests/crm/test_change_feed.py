"""The change-tracking timer's work on the Dataverse simulator (real client over HTTP), with the
token and the routing queue on Azurite: the first read only takes the baseline; later reads queue
the changed and deleted ids; an expired token (0x80044352) reconciles against the link map."""

from __future__ import annotations

import uuid

from shared.crm.dataverse import DataverseClient
from shared.crm.port import RecordRef, Upsert
from shared.domain.model import ItemKind
from shared.store import Store
from shared.store.crm_jobs import CrmWorkQueue, CrmWorkSource
from shared.store.records import Link
from shared.sync.crm_changes import ChangeFeed
from simulators.dataverse.launcher import DataverseSimulator
from tests.crm.conftest import queued


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
    mailbox = await store.registry.register(
        mailbox_id=str(uuid.uuid4()),
        upn="r@contoso.example",
        crm_user_id=str(owner),
        crm_caller_object_id=str(uuid.uuid4()),
    )
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
    mailbox = await store.registry.register(
        mailbox_id=str(uuid.uuid4()),
        upn="s@contoso.example",
        crm_user_id=str(owner),
        crm_caller_object_id=str(uuid.uuid4()),
    )
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
