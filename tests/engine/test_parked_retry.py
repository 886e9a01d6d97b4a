"""Retrying parked items over the real components: only the parked items are read (by id, never a
full resync), with exponential backoff and an attempt cap after which status says what to do."""

from __future__ import annotations

import datetime as dt
import uuid

from shared.outlook.subscriptions import ResourceKind, resource_path
from shared.store.records import SubscriptionRecord
from tests.engine.conftest import Engine, EngineServices

LATER = dt.timedelta(hours=1)  # past the first retry's backoff (30 minutes)


async def _parked_contacts(engine: Engine, service: EngineServices, count: int) -> tuple[str, list[str]]:
    """A mailbox whose CRM user may not create contacts: its ``count`` contacts are parked."""
    user = engine.make_crm_user(tables=("email", "appointment", "task"))
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
    seeded = engine.graph_sim.seed(box, contacts=[{"surname": f"Denied {n}"} for n in range(count)])
    assert (await service.job.run(box, contacts)).parked == count
    return box, seeded["contacts"]


async def test_a_retry_reads_only_the_parked_items_by_id_never_the_whole_resource(
    engine: Engine, service: EngineServices
) -> None:
    box, _ = await _parked_contacts(engine, service, 2)
    engine.graph_sim.seed(box, contacts=[{"surname": f"Unrelated {n}"} for n in range(5)])
    engine.graph_sim.clear_requests(box)

    [report] = await service.maintenance.retry_parked(box, now=dt.datetime.now(dt.UTC) + LATER)

    assert (report.items_seen, report.parked) == (2, 2)
    paths = [request["path"] for request in engine.graph_sim.requests(box)]
    assert paths  # the parked items were read ...
    assert not [path for path in paths if "delta" in path]  # ... and nothing else was
    attempts = sorted([item.attempts async for item in engine.store.parked.list_parked(box)])
    assert attempts == [2, 2]


async def test_parked_items_back_off_and_are_given_up_after_the_maximum_attempts(
    engine: Engine, service: EngineServices
) -> None:
    box, _ = await _parked_contacts(engine, service, 1)
    engine.graph_sim.clear_requests(box)

    assert await service.maintenance.retry_parked(box) == ()  # just parked: not due yet
    assert engine.graph_sim.requests(box) == []

    [item] = [item async for item in engine.store.parked.list_parked(box)]
    for _ in range(9):  # nine more failures: ten attempts in all
        item = await engine.store.parked.park(
            box, item.ref, reason_code=item.reason_code, message=item.message
        )
    assert item.attempts == 10
    far = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    assert await service.maintenance.retry_parked(box, now=far) == ()
    assert engine.graph_sim.requests(box) == []

    [status] = await service.status(box)
    [parked] = status.parked
    assert parked.state == "gave up"
    assert parked.remedy is not None
    assert "crmsync mailbox resync" in parked.remedy
