"""A merge whose CRM write committed but whose Outlook write and link write were lost (the worker
killed, Dataverse holding its answer), over real HTTP (the Graph and Dataverse simulators, Azurite).

The record is then last written by crmsync for the mailbox, but it holds a merge, not the Outlook
item: a Dynamics edit the lost Outlook write was carrying is still the record's own change."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from shared.crm.port import Upsert
from shared.domain.model import Appointment, ItemKind, OutlookItem
from shared.outlook.subscriptions import ResourceKind, resource_path
from shared.outlook.writers import OutlookWriter
from shared.store.crm_jobs import CrmWork, CrmWorkSource
from shared.sync.crm_run import CrmToOutlookRun
from shared.sync.links import pending_merges
from tests.engine.conftest import Engine, synced_user
from tests.engine.test_crm_run import _meeting


class DiesBeforeOutlookUpdate(OutlookWriter):
    """Graph writes as usual, except that the worker dies as it is about to update an event."""

    async def update_event(
        self, mailbox: str, item_id: str, appointment: Appointment, **kw: Any
    ) -> OutlookItem:
        raise ConnectionError("worker died after the CRM write")


@pytest.mark.parametrize("next_run", ["outlook_run", "crm_run"])
async def test_a_dynamics_edit_survives_a_merge_whose_outlook_write_was_lost(
    engine: Engine, next_run: str
) -> None:
    """The location changed in Outlook and the subject in Dynamics. The Outlook -> CRM run wrote the
    location to the record and died before it wrote the subject to Outlook. The next run, of either
    direction, must still take the subject to Outlook, not put the old one back in Dynamics (chaos
    at 10,000 operations: eleven meetings made in Dynamics ended at their previous version on both
    sides, audited as ``written-by-crmsync-after-the-last-link``)."""
    world = await _both_edited(engine)
    with pytest.raises(ConnectionError):
        await engine.job(writer=DiesBeforeOutlookUpdate(engine.graph)).run(world.mailbox_id, world.resource)
    [row] = _appointment(engine, world.record)
    assert (row["subject"], row["location"]) == ("Plan v2", "Room 1")  # the merge's CRM write committed

    if next_run == "outlook_run":
        await engine.job().run(world.mailbox_id, world.resource)
    else:
        await CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph).run(world.work)

    [row] = _appointment(engine, world.record)
    assert (row["subject"], row["location"]) == ("Plan v2", "Room 1")
    [event] = engine.outlook.list(world.mailbox_id, "events")
    assert (event["subject"], event["location"]["displayName"]) == ("Plan v2", "Room 1")


@pytest.mark.parametrize("before_delete", ["lost", "replayed", "merged"])
async def test_an_outlook_delete_after_a_lost_merge_write_keeps_the_dynamics_edit(
    engine: Engine, before_delete: str
) -> None:
    """As above, but the user then deletes the meeting in Outlook. The record holds a Dynamics edit
    Outlook never received, so Dynamics' rule for an item changed in the CRM since the last sync
    applies: the record is kept and unlinked, not deleted with the item. Once a run took that edit
    to Outlook (``replayed``), or the merge never lost a write (``merged``: its intent is cleared
    with its link write), the delete policy deletes the user's own meeting as before."""
    world = await _both_edited(engine)
    if before_delete != "merged":
        with pytest.raises(ConnectionError):
            await engine.job(writer=DiesBeforeOutlookUpdate(engine.graph)).run(
                world.mailbox_id, world.resource
            )
    if before_delete != "lost":
        await engine.job().run(world.mailbox_id, world.resource)
        [event] = engine.outlook.list(world.mailbox_id, "events")
        assert event["subject"] == "Plan v2"
    if before_delete == "merged":
        assert await pending_merges(engine.store.sync_state, world.mailbox_id, "appointment") == {}

    engine.outlook.delete(world.mailbox_id, "events", world.event_id)
    await engine.job().run(world.mailbox_id, world.resource)

    links = engine.store.links
    assert await links.get_by_outlook(world.mailbox_id, ItemKind.APPOINTMENT, world.event_id) is None
    if before_delete == "lost":
        [row] = _appointment(engine, world.record)
        assert (row["subject"], row["location"]) == ("Plan v2", "Room 1")
    else:
        assert _appointment(engine, world.record) == []
    assert await pending_merges(engine.store.sync_state, world.mailbox_id, "appointment") == {}


@dataclass(frozen=True)
class _World:
    mailbox_id: str
    record: uuid.UUID
    work: CrmWork
    resource: str
    event_id: str


async def _both_edited(engine: Engine) -> _World:
    """A meeting made in Dynamics and synced to Outlook; then its location changed in Outlook and
    its subject in Dynamics."""
    mailbox, owner = await synced_user(engine)
    record = await _meeting(engine, owner, "Plan v1")
    work = CrmWork(
        table="appointment", changed=(record,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
    )
    await CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph).run(work)
    resource = resource_path(ResourceKind.EVENTS, mailbox.mailbox_id)
    await engine.job().run(mailbox.mailbox_id, resource)  # the copy's echo: nothing to do
    [event] = engine.outlook.list(mailbox.mailbox_id, "events")
    engine.outlook.patch(mailbox.mailbox_id, "events", event["id"], {"location": {"displayName": "Room 1"}})
    await engine.crm.upsert(
        Upsert("appointment", {"subject": "Plan v2"}, id=record, if_match="*"), caller=None
    )
    return _World(mailbox.mailbox_id, record, work, resource, event["id"])


def _appointment(engine: Engine, record: uuid.UUID) -> list[dict[str, Any]]:
    return engine.query(f"appointments?$filter=activityid eq {record}&$select=subject,location")
