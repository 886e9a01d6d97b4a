"""The change-tracking timer's work: read Dataverse change tracking per table, queue routing work.

"Use change tracking to synchronize data with external systems" (learn.microsoft.com/power-apps/
developer/data-platform/use-change-tracking-synchronize-data-external-systems): a GET with
``Prefer: odata.track-changes`` returns every row and a delta link; the delta link returns the rows
created or updated since, and ``$deletedEntity`` rows for deletes. It reads as the application (the
organization's stream; ``$filter`` is not allowed with change tracking), so it sees every change:
the safety net for a lost webhook call, and the one source of deletes that never misses.

The delta link is kept in the sync state store (partition :data:`CHANGES_PARTITION`, one row per
table) and stored only after the page's routing work is queued, so a crash re-reads a page.
The very first read of a table only takes the baseline (the records that exist are not changes).

The Dataverse webhook does not route a change itself: it marks the table's change read due (a
dirty flag, as Graph's notifications mark a mailbox resource) and only the call that set the flag
queues a ``changes_due`` message; the worker's :meth:`ChangeFeed.read_due` clears the flag, reads
the stream from the stored token and routes what it lists in the worker. A burst of changes is one
read and a few routings instead of a queued routing per change (chaos at 10,000 operations: the
CRM -> Outlook queue grew to 6,400 messages, nearly all routing one record each). The timer clears
the flag too, so a flag whose message was lost never holds the webhook's changes back for long.

An expired token (0x80044352, :class:`~shared.crm.errors.ChangeTokenExpired`) starts a
reconciliation against the link map instead of a duplicate fill: the table is read afresh; every
row some link has not synced at its version (``@odata.etag``), or no link holds, is routed as
changed (runs compare with the link map, so nothing is created twice), and every linked record the
fresh read no longer lists is routed as deleted. Rows every link holds at their version are not
routed: their runs would read every linked Outlook item and write nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.crm.errors import ChangeTokenExpired
from shared.crm.port import CrmQueryPort
from shared.domain.model import ItemKind
from shared.store.crm_jobs import MAX_IDS, CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.ports import Store
from shared.store.records import AuditAction, AuditRecord, utc_now
from shared.sync.intake import take_mark

logger = logging.getLogger(__name__)

CHANGES_PARTITION = "crm-changes"
TABLES: dict[str, ItemKind] = {
    "contact": ItemKind.CONTACT,
    "appointment": ItemKind.APPOINTMENT,
    "task": ItemKind.TASK,
}
_PRIMARY = {"contact": "contactid", "appointment": "activityid", "task": "activityid"}
#: A table's first read, asked for by the webhook, takes the baseline and routes the rows modified
#: this recently (the change the webhook reported among them; clocks may differ a little).
RECENT = dt.timedelta(minutes=15)
Route = Callable[[CrmWork], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class TableChanges:
    table: str
    changed: int = 0
    deleted: int = 0
    baseline: bool = False
    reconciled: bool = False
    runs: int = 0  # runs queued by routing in the worker (read_due)


def changes_resource(table: str) -> str:
    """The sync-state resource of a table's change stream (its token, and the webhook's flag)."""
    return f"crm:{table}"


class ChangeFeed:
    """Reads each table's change stream from its stored token and routes what it lists: queued as
    routing work (the timer), or routed in the worker (``route``: the webhook's ``changes_due``)."""

    def __init__(
        self,
        *,
        store: Store,
        crm: CrmQueryPort,
        queue: CrmWorkQueue,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._store = store
        self._crm = crm
        self._queue = queue
        self._clock = clock
        self._reads: dict[str, asyncio.Lock] = {}  # one read of a table at a time in this worker

    async def poll(self, tables: Sequence[str] = tuple(TABLES)) -> list[TableChanges]:
        """The timer: every table, whether the webhook flagged it or not."""
        results = []
        for table in tables:
            async with self._reads.setdefault(table, asyncio.Lock()):
                await take_mark(self._store, CHANGES_PARTITION, changes_resource(table))
                results.append(await self.poll_table(table))
        return results

    async def read_due(self, table: str, route: Route) -> TableChanges | None:
        """The webhook flagged ``table``: read its changes and ``route`` them here. A read that waited
        for another of this worker and finds the flag clear ends (``None``): that read listed them."""
        lock = self._reads.setdefault(table, asyncio.Lock())
        waited = lock.locked()
        async with lock:
            state = await take_mark(self._store, CHANGES_PARTITION, changes_resource(table))
            if waited and not state.dirty:
                return None
            return await self.poll_table(table, route=route)

    async def poll_table(self, table: str, *, route: Route | None = None) -> TableChanges:
        state = await self._store.sync_state.get_state(CHANGES_PARTITION, changes_resource(table))
        if state.delta_link is None:
            since = self._clock() - RECENT if route is not None else None
            runs = (await self._read(table, None, route=route, since=since))[2]
            return TableChanges(table, baseline=True, runs=runs)
        try:
            changed, deleted, runs = await self._read(table, state.delta_link, route=route)
            return TableChanges(table, changed, deleted, runs=runs)
        except ChangeTokenExpired:
            logger.warning("change-tracking token expired for %s: reconciling against the link map", table)
            await self._store.audit.append(
                AuditRecord(
                    mailbox_id=CHANGES_PARTITION,
                    actor="sync.crm_changes",
                    action=AuditAction.RESYNC,
                    item_kind=TABLES[table],
                    reason_code="change_token_expired",
                )
            )
            return await self._reconcile(table)

    async def _read(
        self, table: str, link: str | None, *, route: Route | None, since: dt.datetime | None = None
    ) -> tuple[int, int, int]:
        """Read the stream from ``link`` (``None``: the baseline, routing only the rows modified
        after ``since``, or none) and route it page by page; the token is stored after each page's
        routing, so a crash reads that page again."""
        changed = deleted = runs = 0
        source = CrmWorkSource.CHANGE_TRACKING
        select = ["_ownerid_value", *(["modifiedon"] if since is not None else [])]
        while True:
            page = await self._crm.read_changes(table, select=select, link=link, caller=None)
            rows = page.changed
            if link is None:
                rows = tuple(row for row in rows if since is not None and _modified_after(row, since))
            ids = [uuid.UUID(str(row[_PRIMARY[table]])) for row in rows if row.get(_PRIMARY[table])]
            gone = list(page.deleted) if link is not None else []
            runs += await self._enqueue(table, ids, gone, source, route)
            changed, deleted = changed + len(ids), deleted + len(gone)
            link = page.next_link or page.delta_link
            if link is not None:
                await self._store.sync_state.save_delta_link(CHANGES_PARTITION, changes_resource(table), link)
            if page.next_link is None:
                return changed, deleted, runs

    async def _reconcile(self, table: str) -> TableChanges:
        """Route what the lost stream would have said: every row whose version some link of it has
        not synced (or no link holds: it may be new to someone's filter), and every linked record
        the table no longer lists. A row every link holds at its version (``@odata.etag``, which
        the links keep) changed nowhere since: its run would read each copy and write nothing. The link
        map is read before the table: a record is routed as deleted only if a link held it before
        the read that no longer lists it."""
        synced: dict[uuid.UUID, set[str | None]] = {}
        async for mailbox in self._store.registry.list_mailboxes():
            async for held in self._store.links.list_links(mailbox.mailbox_id, TABLES[table]):
                if held.crm_table == table:
                    synced.setdefault(uuid.UUID(held.crm_id), set()).add(held.crm_etag)
        present: dict[uuid.UUID, str | None] = {}
        link: str | None = None
        while True:
            page = await self._crm.read_changes(table, select=["_ownerid_value"], link=link, caller=None)
            for row in page.changed:
                if row.get(_PRIMARY[table]):
                    etag = row.get("@odata.etag")
                    present[uuid.UUID(str(row[_PRIMARY[table]]))] = str(etag) if etag else None
            if page.next_link is None:
                delta = page.delta_link
                break
            link = page.next_link
        gone = sorted(set(synced) - set(present))
        behind = [
            record_id
            for record_id, version in present.items()
            if version is None or synced.get(record_id, {None}) != {version}
        ]
        await self._enqueue(table, behind, gone, CrmWorkSource.RECONCILIATION)
        if delta is not None:
            await self._store.sync_state.save_delta_link(CHANGES_PARTITION, changes_resource(table), delta)
        return TableChanges(table, len(behind), len(gone), reconciled=True)

    async def _enqueue(
        self,
        table: str,
        changed: list[uuid.UUID],
        deleted: list[uuid.UUID],
        source: CrmWorkSource,
        route: Route | None = None,
    ) -> int:
        """Routing work of up to ``MAX_IDS`` ids each: routed by ``route`` (the runs it queued are
        returned) or queued for the worker (0)."""
        runs = 0
        for start in range(0, max(len(changed), len(deleted)), MAX_IDS):
            work = CrmWork.model_validate(
                {
                    "table": table,
                    "changed": changed[start : start + MAX_IDS],
                    "deleted": deleted[start : start + MAX_IDS],
                    "source": source,
                }
            )
            if route is not None:
                runs += await route(work)
            else:
                await self._queue.enqueue(work)
        return runs


def _modified_after(row: Mapping[str, Any], since: dt.datetime) -> bool:
    value = row.get("modifiedon")
    if not isinstance(value, str):
        return True  # not told: route it (a run writes nothing it need not)
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) >= since
    except ValueError:
        return True
