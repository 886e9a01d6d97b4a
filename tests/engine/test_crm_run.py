"""The CRM -> Outlook run over real HTTP (the Graph and Dataverse simulators, Azurite): records deleted
in Dynamics while the run makes their Outlook copies."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from shared.crm.port import RecordRef
from shared.domain.model import ItemKind
from shared.store.crm_jobs import CrmWork, CrmWorkSource
from shared.store.ports import LinkStore
from shared.store.records import Link
from shared.sync.crm_run import CrmRunOutcome, CrmToOutlookRun
from tests.engine.conftest import SYNCED_TABLES, Engine, grant_role


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


async def test_a_record_deleted_before_its_copy_is_linked_is_removed_from_outlook(engine: Engine) -> None:
    """The delete's routing ran while no link held the record, so it reached no mailbox: the run that
    made the copy checks, after its link write, that the records it copied still exist."""
    role = f"role-{uuid.uuid4().hex[:8]}"
    grant_role(engine.dataverse, role, SYNCED_TABLES)
    row = engine.dataverse.add_user(
        internalemailaddress=f"u-{uuid.uuid4().hex[:8]}@contoso.example", roles=[role, "Salesperson"]
    )
    mailbox = await engine.store.registry.register(
        mailbox_id=engine.graph_sim.add_user(row["azureactivedirectoryobjectid"]),
        upn=f"user-{uuid.uuid4().hex[:8]}@sim.crmsync.test",
        crm_user_id=row["systemuserid"],
        crm_caller_object_id=row["azureactivedirectoryobjectid"],
    )
    owner = RecordRef("systemuser", uuid.UUID(row["systemuserid"]))
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
