"""The initial fill from the CRM: every record in the user's filter that the mailbox does not hold
reaches Outlook, at onboarding (and again whenever it is run: it is resumable).

1. the work list: every record id in the user's synchronization filter of the table, read by
   Dataverse as the user (:func:`~shared.sync.crm_filter.all_members`), minus the ids the mailbox
   already links (one read of the link map);
2. items crmsync created earlier but whose link write was lost (a fill killed between the Graph
   create and the link write): one listing of the mailbox's items carrying crmsync's origin marker
   (:meth:`~shared.outlook.from_crm.CrmOriginWriter.created_items`); such a record is linked to
   its item, not created twice;
3. the rest, in chunks, through the one CRM -> Outlook run (lease, privilege, filter as the user,
   planner, applier): a killed fill run again finds what it wrote linked and goes on.

Graph's per-mailbox budget is kept by the Graph client's pacer (:mod:`shared.outlook.pacing`), so a
big fill runs at its share of the budget instead of in bursts answered by 429s.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from msgraph.graph_service_client import GraphServiceClient

from shared.domain.model import ItemKind, OutlookItem
from shared.outlook.from_crm import CrmOriginWriter
from shared.store.crm_jobs import MAX_IDS, CrmTable, CrmWork, CrmWorkSource
from shared.store.errors import LeaseHeld
from shared.store.ports import Store
from shared.sync.crm_changes import TABLES
from shared.sync.crm_filter import all_members
from shared.sync.crm_privilege import may_sync_to_outlook
from shared.sync.crm_run import CrmRunOutcome, CrmRunReport, CrmToOutlookRun
from shared.sync.policies import kind_enabled

logger = logging.getLogger(__name__)
_LEASE_ATTEMPTS, _LEASE_WAIT_SECONDS = 120, 1.0
FillProgress = Callable[[str, int, int], None]  # table, records done, records to do


@dataclass(frozen=True, slots=True)
class FillReport:
    table: str
    in_filter: int = 0  # records in the user's filter
    already_linked: int = 0
    relinked: int = 0  # found in Outlook by their stamp (a lost link write), linked not created
    outlook_writes: int = 0
    outcome: CrmRunOutcome = CrmRunOutcome.COMPLETED


class CrmFill:
    """Fills one mailbox's Outlook from the CRM, table by table (see the module docstring)."""

    def __init__(self, *, store: Store, graph: GraphServiceClient, runner: CrmToOutlookRun) -> None:
        self._store = store
        self._graph = graph
        self._runner = runner

    async def fill(self, mailbox_id: str, *, progress: FillProgress | None = None) -> list[FillReport]:
        """Fill every CRM -> Outlook table the mailbox synchronizes."""
        mailbox = await self._store.registry.get_mailbox(mailbox_id)
        tables = [t for t, kind in TABLES.items() if kind_enabled(mailbox.settings, kind)]
        return [await self.fill_table(mailbox_id, table, progress=progress) for table in tables]

    async def fill_table(
        self, mailbox_id: str, table: str, *, progress: FillProgress | None = None
    ) -> FillReport:
        mailbox = await self._store.registry.get_mailbox(mailbox_id)
        kind = TABLES[table]
        if not mailbox.enabled:
            return FillReport(table, outcome=CrmRunOutcome.MAILBOX_DISABLED)
        if not kind_enabled(mailbox.settings, kind):
            return FillReport(table, outcome=CrmRunOutcome.KIND_DISABLED)
        if not await may_sync_to_outlook(self._runner.crm, mailbox):
            return FillReport(table, outcome=CrmRunOutcome.NO_PRIVILEGE)
        members = await all_members(
            self._runner.crm,
            table,
            user_id=uuid.UUID(mailbox.crm_user_id),
            caller=mailbox.crm_caller_object_id,
            replacement=mailbox.settings.filter_for(kind),
        )
        linked = {link.crm_id.lower() async for link in self._store.links.list_links(mailbox_id, kind)}
        todo = [record_id for record_id in members if str(record_id) not in linked]
        existing: dict[uuid.UUID, OutlookItem] = {}
        if todo and kind is not ItemKind.TASK:
            origin = CrmOriginWriter(self._graph, mailbox_id, task_list_id=None)
            wanted = set(todo)
            existing = {k: v for k, v in (await origin.created_items(kind)).items() if k in wanted}
        writes = 0
        for start in range(0, len(todo), MAX_IDS):
            chunk = tuple(todo[start : start + MAX_IDS])
            work = CrmWork(
                table=cast(CrmTable, table), changed=chunk, mailbox_id=mailbox_id, source=CrmWorkSource.FILL
            )
            report = await self._run(work, existing)
            if report.outcome is not CrmRunOutcome.COMPLETED:
                return FillReport(table, len(members), len(members) - len(todo), outcome=report.outcome)
            writes += report.outlook_writes
            if progress is not None:
                progress(table, start + len(chunk), len(todo))
        logger.info("CRM fill of %s: %d in the filter, %d new", table, len(members), len(todo))
        return FillReport(table, len(members), len(members) - len(todo), len(existing), writes)

    async def _run(self, work: CrmWork, existing: dict[uuid.UUID, OutlookItem]) -> CrmRunReport:
        """One chunk, waiting while another run (an Outlook -> CRM job) holds the mailbox lease."""
        for _ in range(_LEASE_ATTEMPTS - 1):
            try:
                return await self._runner.run(work, existing=existing)
            except LeaseHeld:
                await asyncio.sleep(_LEASE_WAIT_SECONDS)
        return await self._runner.run(work, existing=existing)
