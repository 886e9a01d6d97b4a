"""Records deleted in the CRM while a CRM -> Outlook run (:class:`~shared.sync.crm_run.CrmToOutlookRun`)
works on them, found by re-reading them as the application.

A delete is routed by links: one that happens before a run has written the link of a copy it made
reaches no mailbox, and one still on its way looks, to the run, like the record leaving the user's
filter. Both would leave a copy behind (or recreate its record from Outlook), so the run asks the
CRM which records are gone and takes those through the delete rules:

- :func:`deleted_since`: linked records routed as changed that the filter no longer returns;
- :func:`find_orphans` and :func:`plan_orphans`: copies an earlier, crashed run made for records
  deleted since;
- :func:`deleted_meanwhile`: the read itself (also for the records a run has just created).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

from shared.crm.port import CrmQueryPort
from shared.crm.tables import table_info
from shared.domain.model import ItemKind, OutlookItem
from shared.outlook.from_crm import CrmOriginWriter
from shared.store.ports import SyncStateStore
from shared.sync.applier import ItemPlan
from shared.sync.links import lost_link
from shared.sync.plan import CrmState, Link, OutlookState, PlanFacts, SyncPolicy
from shared.sync.planner import plan_item


async def deleted_meanwhile(crm: CrmQueryPort, table: str, created: list[uuid.UUID]) -> list[uuid.UUID]:
    """Which of these records no longer exist (read as the application: after the link write, a
    delete before it was routed when no link existed)."""
    if not created:
        return []
    found = await crm.get_many(table, created, select=[table_info(table).primary_id], caller=None)
    return [record_id for record_id in created if found.get(record_id) is None]


async def deleted_since(
    crm: CrmQueryPort,
    table: str,
    changed: list[uuid.UUID],
    *,
    held: Mapping[uuid.UUID, Link | None],
    members: frozenset[uuid.UUID],
    states: Mapping[uuid.UUID, CrmState],
) -> list[uuid.UUID]:
    """Linked records routed here as changed that the filter no longer returns because they were
    deleted since (their delete is still on its way): they take the CRM delete's rules, not those
    of leaving the filter, which keep a meeting unlinked and let its next Outlook sync create it
    in the CRM again. Read as the application, so a record the user may no longer read still
    counts as having left the filter."""
    outside = [r for r in changed if held[r] is not None and (r not in members or states[r].values is None)]
    return await deleted_meanwhile(crm, table, outside)


async def find_orphans(
    crm: CrmQueryPort,
    sync_state: SyncStateStore,
    origin: CrmOriginWriter,
    *,
    mailbox_id: str,
    kind: ItemKind,
    table: str,
    unheld: list[uuid.UUID],
) -> list[OutlookItem]:
    """Outlook items an earlier run made for records of ``unheld`` before it crashed (their
    create intent is still recorded) whose records no longer exist, found by the CRM id they
    carry; their intents are cleared. One storage read per run with such records; the CRM and
    Graph are asked only after a crash."""
    if not unheld:
        return []
    pending = await sync_state.pending_creates(mailbox_id, table)
    gone = await deleted_meanwhile(crm, table, [r for r in unheld if str(r) in pending])
    found: list[OutlookItem] = []
    for record_id in gone:
        if kind is ItemKind.TASK:  # looked up by the title it was posted with (find_task)
            item = await origin.find_task(pending[str(record_id)], record_id)
        else:
            item = await origin.find(kind, record_id)
        if item is not None:
            found.append(item)
    nothing = [str(r) for r in gone if all(item.crm_id != str(r) for item in found)]
    if nothing:  # the create never reached Outlook: nothing to remove
        await sync_state.clear_creates(mailbox_id, table, nothing)
    return found


def plan_orphans(
    kind: ItemKind,
    mailbox_id: str,
    orphans: list[OutlookItem],
    *,
    policy: SyncPolicy,
    now: dt.datetime,
    facts: PlanFacts,
) -> list[ItemPlan]:
    """Made in Outlook by an earlier attempt of this run whose link write was lost, and deleted in
    the CRM since: that delete was routed here by no link. Each takes the delete rules as if the
    link had been written."""
    plans: list[ItemPlan] = []
    for item in orphans:
        crm_id = uuid.UUID(str(item.crm_id))
        actions = plan_item(
            kind,
            mailbox_id=mailbox_id,
            outlook=OutlookState.from_outlook_item(item),
            link=lost_link(item, crm_id),
            crm=CrmState(crm_id, None),
            policy=policy,
            now=now,
            facts=facts,
        )
        plans.append(ItemPlan(actions))
    return plans
