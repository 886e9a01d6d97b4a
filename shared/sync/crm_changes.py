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

An expired token (0x80044352, :class:`~shared.crm.errors.ChangeTokenExpired`) starts a
reconciliation against the link map instead of a duplicate fill: the table is read afresh; every
row some link has not synced at its version (``@odata.etag``), or no link holds, is routed as
changed (runs compare with the link map, so nothing is created twice), and every linked record the
fresh read no longer lists is routed as deleted. Rows every link holds at their version are not
routed: their runs would read every linked Outlook item and write nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from shared.crm.errors import ChangeTokenExpired
from shared.crm.port import CrmQueryPort
from shared.domain.model import ItemKind
from shared.store.crm_jobs import MAX_IDS, CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.ports import Store
from shared.store.records import AuditAction, AuditRecord

logger = logging.getLogger(__name__)

CHANGES_PARTITION = "crm-changes"
TABLES: dict[str, ItemKind] = {
    "contact": ItemKind.CONTACT,
    "appointment": ItemKind.APPOINTMENT,
    "task": ItemKind.TASK,
}
_PRIMARY = {"contact": "contactid", "appointment": "activityid", "task": "activityid"}


@dataclass(frozen=True, slots=True)
class TableChanges:
    table: str
    changed: int = 0
    deleted: int = 0
    baseline: bool = False
    reconciled: bool = False


def _resource(table: str) -> str:
    return f"crm:{table}"


class ChangeFeed:
    """Reads each table's change stream from its stored token and queues routing work."""

    def __init__(self, *, store: Store, crm: CrmQueryPort, queue: CrmWorkQueue) -> None:
        self._store = store
        self._crm = crm
        self._queue = queue

    async def poll(self, tables: Sequence[str] = tuple(TABLES)) -> list[TableChanges]:
        return [await self.poll_table(table) for table in tables]

    async def poll_table(self, table: str) -> TableChanges:
        state = await self._store.sync_state.get_state(CHANGES_PARTITION, _resource(table))
        if state.delta_link is None:
            await self._read(table, None, route=False)
            return TableChanges(table, baseline=True)
        try:
            changed, deleted = await self._read(table, state.delta_link, route=True)
            return TableChanges(table, changed, deleted)
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

    async def _read(self, table: str, link: str | None, *, route: bool) -> tuple[int, int]:
        changed = deleted = 0
        source = CrmWorkSource.CHANGE_TRACKING
        while True:
            page = await self._crm.read_changes(table, select=["_ownerid_value"], link=link, caller=None)
            ids = [uuid.UUID(str(row[_PRIMARY[table]])) for row in page.changed if row.get(_PRIMARY[table])]
            if route:
                await self._enqueue(table, ids, list(page.deleted), source)
                changed, deleted = changed + len(ids), deleted + len(page.deleted)
            link = page.next_link or page.delta_link
            if link is not None:
                await self._store.sync_state.save_delta_link(CHANGES_PARTITION, _resource(table), link)
            if page.next_link is None:
                return changed, deleted

    async def _reconcile(self, table: str) -> TableChanges:
        """Route what the lost stream would have said: every row whose version some link of it has
        not synced (or no link holds: it may be new to someone's filter), and every linked record
        the table no longer lists. A row every link holds at its version (``@odata.etag``, which
        the links keep) changed nowhere since: its run would read each copy and write nothing."""
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
        synced: dict[uuid.UUID, set[str | None]] = {}
        async for mailbox in self._store.registry.list_mailboxes():
            async for held in self._store.links.list_links(mailbox.mailbox_id, TABLES[table]):
                if held.crm_table == table:
                    synced.setdefault(uuid.UUID(held.crm_id), set()).add(held.crm_etag)
        gone = sorted(set(synced) - set(present))
        behind = [
            record_id
            for record_id, version in present.items()
            if version is None or synced.get(record_id, {None}) != {version}
        ]
        await self._enqueue(table, behind, gone, CrmWorkSource.RECONCILIATION)
        if delta is not None:
            await self._store.sync_state.save_delta_link(CHANGES_PARTITION, _resource(table), delta)
        return TableChanges(table, len(behind), len(gone), reconciled=True)

    async def _enqueue(
        self, table: str, changed: list[uuid.UUID], deleted: list[uuid.UUID], source: CrmWorkSource
    ) -> None:
        for start in range(0, max(len(changed), len(deleted)), MAX_IDS):
            await self._queue.enqueue(
                CrmWork.model_validate(
                    {
                        "table": table,
                        "changed": changed[start : start + MAX_IDS],
                        "deleted": deleted[start : start + MAX_IDS],
                        "source": source,
                    }
                )
            )
