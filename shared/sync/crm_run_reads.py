"""What one CRM -> Outlook run (:class:`~shared.sync.crm_run.CrmToOutlookRun`) reads before it plans.

The user's filter on the changed ids, the members' records, field rules and time zone, a meeting's
party rows, the link rows and the linked Outlook items: read once, up front, so the planning that
follows (:mod:`shared.sync.crm_run_plan`) is decisions on prefetched inputs.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.crm.port import CrmQueryPort
from shared.domain.model import ItemKind, OutlookItem
from shared.outlook.from_crm import CrmOriginWriter
from shared.store.crm_jobs import CrmWork
from shared.store.ports import Store
from shared.store.records import Mailbox
from shared.sync.concurrency import bounded_gather
from shared.sync.crm_deleted_meanwhile import deleted_since
from shared.sync.crm_filter import FilterVerdict, evaluate
from shared.sync.crm_invites import party_values_of
from shared.sync.crm_reads import crm_time_zone, read_crm_states
from shared.sync.field_rules import field_rules
from shared.sync.fieldmaps import field_map
from shared.sync.fieldmaps.base import CrmValue, FieldMap
from shared.sync.links import from_stored_link
from shared.sync.plan import CrmState, Link, PlanFacts, SyncPolicy
from shared.sync.user_reads import user_reads


@dataclass(slots=True)
class RunReads:
    """Everything a run reads before it plans. ``changed`` and ``deleted`` are the work's records,
    each once; a linked record found deleted since its routing has moved to ``deleted``.
    ``states`` is the run's one map of CRM records: planning adds to it what it reads later."""

    mailbox: Mailbox
    kind: ItemKind
    table: str
    changed: list[uuid.UUID]
    deleted: list[uuid.UUID]
    verdict: FilterVerdict
    states: dict[uuid.UUID, CrmState]
    policy: SyncPolicy
    facts: PlanFacts
    fmap: FieldMap[Any]
    now: dt.datetime
    party_values: dict[uuid.UUID, dict[str, CrmValue]]  # the organizer's meetings' attendees
    held: dict[uuid.UUID, Link | None]  # each record's link in this mailbox
    copies: dict[uuid.UUID, tuple[OutlookItem | None, bool]]  # linked item (None: gone), from the CRM

    @property
    def records(self) -> int:
        """How many records the run took (its report's count)."""
        return len(self.changed) + len(self.deleted)


async def read_run(
    crm: CrmQueryPort,
    store: Store,
    origin: CrmOriginWriter,
    *,
    mailbox: Mailbox,
    kind: ItemKind,
    work: CrmWork,
    clock: Callable[[], dt.datetime],
) -> RunReads:
    """The CRM's side first (filter, records, rules, parties), then the mailbox's (links, items)."""
    table = work.table
    deleted = list(dict.fromkeys(work.deleted))
    changed = [record_id for record_id in dict.fromkeys(work.changed) if record_id not in deleted]
    verdict = await _filter_verdict(crm, mailbox, kind, table, changed)
    states = await read_crm_states(crm, mailbox, kind, sorted(verdict.members, key=str))
    policy = await field_rules(crm).policy(mailbox, kind)
    facts = PlanFacts(crm_time_zone=await crm_time_zone(crm, mailbox, kind))
    now = clock()
    organized = [r for r in changed if r in verdict.organized and states[r].values is not None]
    party_values = await party_values_of(crm, mailbox.crm_caller_object_id, organized)
    held = await _read_links(store, mailbox.mailbox_id, table, [*changed, *deleted])
    for record_id in await deleted_since(
        crm, table, changed, held=held, members=verdict.members, states=states
    ):
        changed.remove(record_id)
        deleted.append(record_id)
    return RunReads(
        mailbox=mailbox,
        kind=kind,
        table=table,
        changed=changed,
        deleted=deleted,
        verdict=verdict,
        states=states,
        policy=policy,
        facts=facts,
        fmap=field_map(kind, facts.crm_time_zone),
        now=now,
        party_values=party_values,
        held=held,
        copies=await _read_copies(origin, kind, held, deleted=deleted, members=verdict.members),
    )


async def _filter_verdict(
    crm: CrmQueryPort, mailbox: Mailbox, kind: ItemKind, table: str, changed: list[uuid.UUID]
) -> FilterVerdict:
    """Which changed records the user's filter holds, asked of Dataverse as the user."""
    caller = mailbox.crm_caller_object_id
    user_id = uuid.UUID(mailbox.crm_user_id)
    return await evaluate(
        crm,
        table,
        user_id=user_id,
        caller=caller,
        ids=changed,
        replacement=mailbox.settings.filter_for(kind),
        read_filters=lambda: user_reads(crm).outlook_filters(table, user_id=user_id, caller=caller),
    )


async def _read_links(
    store: Store, mailbox_id: str, table: str, record_ids: list[uuid.UUID]
) -> dict[uuid.UUID, Link | None]:
    """Each record's link row, read concurrently: one by one, a run of 200 records outlasted its
    lease (bench.chaos at 10,000 operations)."""
    rows = await bounded_gather(
        store.links.get_by_crm(mailbox_id, table, str(record_id)) for record_id in record_ids
    )
    return {
        record_id: from_stored_link(row) if row is not None else None
        for record_id, row in zip(record_ids, rows, strict=True)
    }


async def _read_copies(
    origin: CrmOriginWriter,
    kind: ItemKind,
    held: dict[uuid.UUID, Link | None],
    *,
    deleted: list[uuid.UUID],
    members: frozenset[uuid.UUID],
) -> dict[uuid.UUID, tuple[OutlookItem | None, bool]]:
    """The linked Outlook items, read concurrently; a tombstone (the CRM's delete applied, the kept
    item untracked) is not read. Whether crmsync made an item is asked only of a record that left
    the filter: it decides whether leaving removes the copy."""
    reading = [
        (record_id, link)
        for record_id, link in held.items()
        if link is not None and not (link.crm_deleted and record_id not in members)
    ]
    read = await bounded_gather(
        origin.read(kind, link.outlook_id, origin=record_id not in deleted and record_id not in members)
        for record_id, link in reading
    )
    return {record_id: found for (record_id, _), found in zip(reading, read, strict=True)}
