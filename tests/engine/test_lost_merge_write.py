"""A merge whose CRM write committed but whose Outlook write and link write were lost (the worker
killed, Dataverse holding its answer), over real HTTP (the Graph and Dataverse simulators, Azurite).

The record is then last written by crmsync for the mailbox, but it holds a merge, not the Outlook
item: a Dynamics edit the lost Outlook write was carrying is still the record's own change."""

from __future__ import annotations

import uuid
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
    dying = engine.job(writer=DiesBeforeOutlookUpdate(engine.graph))
    with pytest.raises(ConnectionError):
        await dying.run(mailbox.mailbox_id, resource)
    [row] = _appointment(engine, record)
    assert (row["subject"], row["location"]) == ("Plan v2", "Room 1")  # the merge's CRM write committed

    if next_run == "outlook_run":
        await engine.job().run(mailbox.mailbox_id, resource)
    else:
        await CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph).run(work)

    [row] = _appointment(engine, record)
    assert (row["subject"], row["location"]) == ("Plan v2", "Room 1")
    [event] = engine.outlook.list(mailbox.mailbox_id, "events")
    assert (event["subject"], event["location"]["displayName"]) == ("Plan v2", "Room 1")


def _appointment(engine: Engine, record: uuid.UUID) -> list[dict[str, Any]]:
    return engine.query(f"appointments?$filter=activityid eq {record}&$select=subject,location")


@pytest.mark.parametrize("replayed", [False, True])
async def test_an_outlook_delete_after_a_lost_merge_write_keeps_the_dynamics_edit(
    engine: Engine, replayed: bool
) -> None:
    """As above, but the user then deletes the meeting in Outlook. The record holds a Dynamics edit
    Outlook never received, so Dynamics' rule for an item changed in the CRM since the last sync
    applies: the record is kept and unlinked, not deleted with the item. Once a run took that edit
    to Outlook (``replayed``), the delete policy deletes the user's own meeting as before."""
    mailbox, owner = await synced_user(engine)
    record = await _meeting(engine, owner, "Plan v1")
    work = CrmWork(
        table="appointment", changed=(record,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
    )
    await CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph).run(work)
    resource = resource_path(ResourceKind.EVENTS, mailbox.mailbox_id)
    await engine.job().run(mailbox.mailbox_id, resource)
    [event] = engine.outlook.list(mailbox.mailbox_id, "events")
    engine.outlook.patch(mailbox.mailbox_id, "events", event["id"], {"location": {"displayName": "Room 1"}})
    await engine.crm.upsert(
        Upsert("appointment", {"subject": "Plan v2"}, id=record, if_match="*"), caller=None
    )
    with pytest.raises(ConnectionError):
        await engine.job(writer=DiesBeforeOutlookUpdate(engine.graph)).run(mailbox.mailbox_id, resource)
    if replayed:
        await engine.job().run(mailbox.mailbox_id, resource)
        [event] = engine.outlook.list(mailbox.mailbox_id, "events")
        assert event["subject"] == "Plan v2"

    engine.outlook.delete(mailbox.mailbox_id, "events", event["id"])
    await engine.job().run(mailbox.mailbox_id, resource)

    assert (
        await engine.store.links.get_by_outlook(mailbox.mailbox_id, ItemKind.APPOINTMENT, event["id"]) is None
    )
    if replayed:
        assert _appointment(engine, record) == []
    else:
        [row] = _appointment(engine, record)
        assert (row["subject"], row["location"]) == ("Plan v2", "Room 1")
    assert await pending_merges(engine.store.sync_state, mailbox.mailbox_id, "appointment") == {}
