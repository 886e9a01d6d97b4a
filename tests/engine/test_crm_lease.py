"""A CRM -> Outlook run and the mailbox lease, over real HTTP (both simulators, Azurite)."""

from __future__ import annotations

import asyncio

import pytest

from shared.store.crm_jobs import CrmWork, CrmWorkSource
from shared.store.errors import LeaseHeld
from shared.sync.crm_run import CrmRunOutcome, CrmToOutlookRun
from shared.sync.run import JobOptions
from tests.engine.conftest import Engine, synced_user


async def _work(engine: Engine) -> CrmWork:
    """A contact made in Dynamics by a user who may sync to Outlook, routed to the user's mailbox."""
    mailbox, owner = await synced_user(engine)
    contact = await engine.crm.create("contact", {"lastname": "Lovelace", "ownerid": owner}, caller=None)
    routed = CrmWorkSource.ROUTED
    return CrmWork(table="contact", changed=(contact.id,), mailbox_id=mailbox.mailbox_id, source=routed)


async def test_a_run_takes_a_lease_its_holder_releases_within_a_second_instead_of_requeuing(
    engine: Engine,
) -> None:
    """The holder is most often the Outlook -> CRM job reading the echo of the last CRM -> Outlook
    write: requeuing at once cost every Dynamics edit that met it the queue's 2 s delay (make demo)."""
    work = await _work(engine)
    assert work.mailbox_id is not None
    echo_job = await engine.store.sync_state.try_acquire(work.mailbox_id, "worker:echo", 60)

    async def finish_soon() -> None:
        await asyncio.sleep(0.5)
        await engine.store.sync_state.release(echo_job)

    releasing = asyncio.create_task(finish_soon())
    report = await CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph).run(work)
    await releasing

    assert (report.outcome, report.records) == (CrmRunOutcome.COMPLETED, 1)
    assert [c["surname"] for c in engine.outlook.list(work.mailbox_id, "contacts")] == ["Lovelace"]


async def test_a_run_meeting_a_lease_held_longer_goes_back_to_the_queue(engine: Engine) -> None:
    work = await _work(engine)
    assert work.mailbox_id is not None
    await engine.store.sync_state.try_acquire(work.mailbox_id, "worker:long", 60)
    run = CrmToOutlookRun(
        store=engine.store,
        crm=engine.crm,
        graph=engine.graph,
        options=JobOptions(queued_lease_wait_seconds=0.5),
    )

    with pytest.raises(LeaseHeld):
        await run.run(work)
    assert engine.outlook.list(work.mailbox_id, "contacts") == []
