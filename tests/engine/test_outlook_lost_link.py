"""An Outlook -> CRM create whose link write was lost (the worker killed, storage frozen) over real
HTTP (the Graph and Dataverse simulators, Azurite): the item's record must never be taken for one
made in Dynamics."""

from __future__ import annotations

import dataclasses
import uuid
from urllib.parse import quote

import pytest

from shared.domain.model import ItemKind
from shared.outlook.subscriptions import ResourceKind, resource_path
from shared.store.crm_jobs import CrmWork, CrmWorkSource
from shared.sync.crm_run import CrmToOutlookRun
from tests.engine.conftest import Engine, synced_user
from tests.engine.test_crm_run import CrashBeforeLinks


async def test_an_item_deleted_after_its_create_lost_the_link_write_takes_its_record_along(
    engine: Engine,
) -> None:
    """The Outlook -> CRM run created the record of a new To Do task and died before the link write;
    the record's own change reached a CRM -> Outlook run first, then the user deleted the task, and
    the rerun's delta only said the task was deleted. The record was left behind, unlinked, and the
    CRM -> Outlook run copied it back to Outlook (chaos seed 4: a task made and deleted in Outlook
    was back on both sides). The create intent tells both runs whose record it is."""
    mailbox, _owner = await synced_user(engine)
    list_id = engine.task_list(mailbox.mailbox_id)
    tasks = f"todo/lists/{quote(list_id, safe='')}/tasks"
    resource = resource_path(ResourceKind.TASKS, mailbox.mailbox_id, task_list_id=list_id)
    await engine.job().run(mailbox.mailbox_id, resource)  # the baseline
    made = engine.outlook.post(mailbox.mailbox_id, tasks, {"title": "Call K3"})
    crashing = dataclasses.replace(engine.store, links=CrashBeforeLinks(engine.store.links))
    with pytest.raises(ConnectionError):
        await engine.job(crashing).run(mailbox.mailbox_id, resource)
    [row] = engine.query("tasks?$filter=subject eq 'Call K3'")  # the create reached the CRM
    record = uuid.UUID(row["activityid"])
    work = CrmWork(
        table="task", changed=(record,), mailbox_id=mailbox.mailbox_id, source=CrmWorkSource.ROUTED
    )

    await CrmToOutlookRun(store=engine.store, crm=engine.crm, graph=engine.graph).run(work)
    assert [t["title"] for t in engine.outlook.list(mailbox.mailbox_id, tasks)] == ["Call K3"]  # no copy
    engine.outlook.delete_task(mailbox.mailbox_id, list_id, made["id"])
    await engine.job().run(mailbox.mailbox_id, resource)

    assert engine.query(f"tasks?$filter=activityid eq {record}") == []
    assert engine.outlook.list(mailbox.mailbox_id, tasks) == []
    assert await engine.store.links.count(mailbox.mailbox_id, ItemKind.TASK) == 0
    assert await engine.store.sync_state.pending_creates(mailbox.mailbox_id, "task:outlook") == {}
