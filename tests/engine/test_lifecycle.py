"""Offboarding, subscription renewal, the mailbox lease and the dirty flag, over the real components."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import ItemKind
from shared.outlook.subscriptions import ResourceKind, resource_path
from shared.store.errors import LeaseHeld, MailboxNotFound
from shared.store.records import AuditAction, MailboxState, SubscriptionRecord
from shared.sync.job import RunOutcome
from shared.sync.maintenance import BrakeReleaseRefused
from tests.engine.conftest import SYNCED_TABLES, Engine, EngineServices, grant_role

CONTACTS_AND_TASKS = MailboxSettings(item_kinds=frozenset({ItemKind.CONTACT, ItemKind.TASK}))
TASKS_ONLY = MailboxSettings(item_kinds=frozenset({ItemKind.TASK}))


async def test_offboarding_deletes_subscriptions_and_registration_but_keeps_crm_data(
    service: EngineServices, engine: Engine
) -> None:
    user = engine.make_crm_user()
    box = engine.graph_sim.add_user(user.object_id)
    seeded = engine.graph_sim.seed(box, contacts=[{"surname": "Stays"}])
    await service.onboard(box, user.systemuserid, settings=CONTACTS_AND_TASKS)
    crm_id = await engine.crm_id(box, ItemKind.CONTACT, seeded["contacts"][0])

    report = await service.offboard(box)

    assert report.subscriptions_deleted == 2
    assert engine.graph_sim.subscriptions(box) == []
    assert [record async for record in engine.store.subscriptions.list_for_mailbox(box)] == []
    with pytest.raises(MailboxNotFound):
        await engine.store.registry.get_mailbox(box)
    assert engine.dataverse.record("contact", crm_id) is not None
    actions = [record.action for record in await engine.store.audit.list_recent(box)]
    assert AuditAction.CREATED_IN_CRM in actions
    assert AuditAction.UNREGISTERED in actions


async def test_renewal_extends_live_subscriptions_and_recreates_lost_ones_with_a_delta(
    service: EngineServices, engine: Engine
) -> None:
    user = engine.make_crm_user()
    box = engine.graph_sim.add_user(user.object_id)
    onboarded = await service.onboard(box, user.systemuserid, settings=CONTACTS_AND_TASKS)
    lost, live = onboarded.subscriptions
    engine.graph_sim.expire_subscription(lost.subscription_id)
    missed = engine.graph_sim.seed(box, contacts=[{"surname": "Missed"}])  # its notification went nowhere
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)

    report = await service.renew_subscriptions(before=soon)

    assert report.renewed == (live.subscription_id,)
    [new_id] = report.recreated
    in_graph = {sub["id"]: sub["resource"] for sub in engine.graph_sim.subscriptions(box)}
    assert in_graph == {new_id: lost.resource, live.subscription_id: live.resource}
    stored = {record.subscription_id async for record in engine.store.subscriptions.list_for_mailbox(box)}
    assert stored == {new_id, live.subscription_id}
    assert [run.resource for run in report.resynced] == [lost.resource]
    assert await engine.crm_id(box, ItemKind.CONTACT, missed["contacts"][0])


async def test_one_failing_renewal_does_not_stop_the_others(service: EngineServices, engine: Engine) -> None:
    """Graph refuses one renewal (403): it is reported, and every other subscription is renewed."""
    user = engine.make_crm_user()
    box = engine.graph_sim.add_user(user.object_id)
    onboarded = await service.onboard(box, user.systemuserid, settings=CONTACTS_AND_TASKS)
    refused, live = onboarded.subscriptions
    # Subscriptions are not addressed under a user path: the fault matches the subscription id.
    engine.graph_sim.fault("status", status=403, method="PATCH", path_contains=refused.subscription_id)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)

    report = await service.renew_subscriptions(before=soon)

    assert report.failed == (refused.subscription_id,)
    assert report.renewed == (live.subscription_id,)


async def test_a_second_worker_cannot_sync_a_mailbox_whose_lease_is_held(engine: Engine) -> None:
    box = (await engine.register()).mailbox_id
    await engine.store.sync_state.try_acquire(box, "another-worker", 60)

    with pytest.raises(LeaseHeld):
        await engine.job().run(box, resource_path(ResourceKind.CONTACTS, box))


async def test_a_run_clears_the_dirty_flag_and_releases_the_lease(engine: Engine) -> None:
    box = (await engine.register()).mailbox_id
    contacts = resource_path(ResourceKind.CONTACTS, box)
    assert await engine.store.sync_state.mark_dirty(box, contacts)

    report = await engine.job().run(box, contacts)

    assert report.outcome is RunOutcome.COMPLETED
    state = await engine.store.sync_state.get_state(box, contacts)
    assert not state.dirty
    assert state.delta_link is not None
    assert await engine.store.sync_state.try_acquire(box, "next-worker", 60)  # released


async def test_resync_recovers_from_the_brake_only_when_the_admin_confirms_the_deletes(
    service: EngineServices, engine: Engine
) -> None:
    user = engine.make_crm_user()
    box = engine.graph_sim.add_user(user.object_id)
    seeded = engine.graph_sim.seed(box, todo={"defaultList": [{"title": f"Task {n}"} for n in range(5)]})
    onboarded = await service.onboard(box, user.systemuserid, settings=TASKS_ONLY)
    [tasks] = onboarded.subscriptions
    crm_ids = [await engine.crm_id(box, ItemKind.TASK, item) for item in seeded["todo"]["defaultList"]]
    for item in seeded["todo"]["defaultList"]:
        engine.outlook.delete_task(box, engine.task_list(box), item)
    refused = await service.job.run(box, tasks.resource)
    assert refused.outcome is RunOutcome.MASS_DELETE_REFUSED

    [again] = await service.resync(box)
    assert again.outcome is RunOutcome.MASS_DELETE_REFUSED
    [confirmed] = await service.resync(box, allow_mass_delete=True)

    assert (confirmed.outcome, confirmed.full_resync, confirmed.crm_writes) == (RunOutcome.COMPLETED, True, 5)
    assert all(engine.dataverse.record("task", crm_id) is None for crm_id in crm_ids)
    [status] = await service.status(box)
    assert status.state is MailboxState.ACTIVE
    assert status.links[ItemKind.TASK] == 0


async def test_parked_items_are_retried_and_unparked_once_the_cause_is_fixed(
    service: EngineServices, engine: Engine
) -> None:
    user = engine.make_crm_user(tables=("email", "appointment", "task"))  # may not create contacts
    box = (await engine.register(user)).mailbox_id
    contacts = resource_path(ResourceKind.CONTACTS, box)
    await engine.store.subscriptions.put(
        SubscriptionRecord(
            subscription_id=f"sub-{uuid.uuid4().hex}",
            mailbox_id=box,
            resource=contacts,
            client_state_hash="0" * 64,
            expiration=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
        )
    )
    seeded = engine.graph_sim.seed(box, contacts=[{"surname": "Waiting"}])
    assert (await service.job.run(box, contacts)).parked == 1

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # past the first retry's backoff
    [still_denied] = await service.maintenance.retry_parked(box, now=later)
    [parked] = [item async for item in engine.store.parked.list_parked(box)]
    assert (still_denied.parked, parked.attempts) == (1, 2)

    grant_role(engine.dataverse, user.role, SYNCED_TABLES)  # the admin grants the missing privilege
    [fixed] = await service.maintenance.retry_parked(box, now=later + dt.timedelta(hours=2))

    assert (fixed.parked, fixed.crm_writes) == (0, 1)
    assert [item async for item in engine.store.parked.list_parked(box)] == []
    assert engine.dataverse.record(
        "contact", await engine.crm_id(box, ItemKind.CONTACT, seeded["contacts"][0])
    )


async def test_releasing_the_brake_needs_the_number_of_refused_deletes(
    service: EngineServices, engine: Engine
) -> None:
    """The brake holds until an administrator confirms how many deletes it refused; a wrong number
    changes nothing, the right one lets exactly those deletes through."""
    box = (await engine.register()).mailbox_id
    seeded = engine.graph_sim.seed(box, todo={"defaultList": [{"title": f"Task {n}"} for n in range(6)]})
    list_id = engine.task_list(box)
    tasks = resource_path(ResourceKind.TASKS, box, task_list_id=list_id)
    await engine.store.subscriptions.put(
        SubscriptionRecord(
            subscription_id=str(uuid.uuid4()),
            mailbox_id=box,
            resource=tasks,
            client_state_hash="0" * 64,
            expiration=dt.datetime.now(dt.UTC) + dt.timedelta(days=2),
        )
    )
    await service.job.run(box, tasks)
    for item in seeded["todo"]["defaultList"]:
        engine.outlook.delete_task(box, list_id, item)
    assert (await service.job.run(box, tasks)).outcome is RunOutcome.MASS_DELETE_REFUSED

    assert await service.maintenance.refused_deletes(box) == 6
    with pytest.raises(BrakeReleaseRefused, match="refused 6 deletes"):
        await service.maintenance.release_brake(box, confirm_deletes=5)
    assert await engine.store.links.count(box, ItemKind.TASK) == 6

    await service.maintenance.release_brake(box, confirm_deletes=6)

    assert await engine.store.links.count(box, ItemKind.TASK) == 0
    assert (await engine.store.registry.get_mailbox(box)).state is MailboxState.ACTIVE
    assert await service.maintenance.refused_deletes(box) == 0


async def test_renewals_run_side_by_side_so_a_run_of_thousands_ends_within_the_function_timeout(
    service: EngineServices, engine: Engine
) -> None:
    """Mailboxes onboarded together fall due together (bench.scale: 10,000 in one run). One at a time,
    at Graph's latency, such a run outlasts the host's 10-minute function timeout."""
    user = engine.make_crm_user()
    box = engine.graph_sim.add_user(user.object_id)
    onboarded = await service.onboard(box, user.systemuserid)
    assert len(onboarded.subscriptions) >= 4
    engine.graph_sim.fault(
        "latency",
        seconds=1.0,
        method="PATCH",
        path_contains="subscriptions/",
        count=len(onboarded.subscriptions),
    )
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)

    started = time.perf_counter()
    report = await service.renew_subscriptions(before=soon)
    elapsed = time.perf_counter() - started

    assert len(report.renewed) == len(onboarded.subscriptions)
    assert elapsed < 2.5  # one after another: at least 4 s
