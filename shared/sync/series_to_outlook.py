"""Dynamics series -> Outlook series: one event with its recurrence, the instances' exceptions on it.

A ``recurringappointmentmaster`` reaches the CRM -> Outlook run through its instances (Dynamics
creates them as ``appointment`` rows with ``seriesid``: "Create a recurring appointment series,
instance, or exception"; they are what change tracking, the webhook and the user's filter see).
An instance is never written to Outlook as a one-off event. Instead, per series:

1. its master is read and, when the mailbox has no Outlook series for it yet, created in Outlook as
   one event whose ``recurrence`` is the master's pattern mapped field by field
   (:func:`~shared.sync.fieldmaps.series.series_recurrence`), stamped with the master's id (the
   Outlook -> CRM run then links the occurrences to the instances under that master, and never
   writes a second master); a link row (``crm_table`` ``recurringappointmentmaster``) records it,
   and each occurrence that shows its instance is linked to it at once (a delete of the series in
   Dynamics, which deletes its instances, reaches the mailbox through those links even before the
   Outlook -> CRM run has seen the new series);
2. Dynamics' exceptions (``instancetypecode`` 3: an instance changed on its own) change their
   occurrence alone (Graph: updating an occurrence makes it an exception), and a deleted instance
   (listed in the master's ``deletedexceptionslist``) cancels its occurrence;
3. a master whose pattern Graph cannot express is not bent: its instances are left to the one-off
   path, one event each, and an audit record says why (``series_pattern_not_expressible``);
4. a series crmsync wrote from Outlook (``globalobjectid`` is the Outlook series' iCalUId) is
   Outlook's: the Outlook -> CRM run links its instances, nothing is created here.

Graph: "event: instances", "patternedRecurrence", "Update event" (learn.microsoft.com/graph/api/...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.users.item.events.item.instances.instances_request_builder import (
    InstancesRequestBuilder,
)
from msgraph.graph_service_client import GraphServiceClient

from shared.crm.port import CrmQueryPort
from shared.domain.model import Appointment, EventKind, ItemKind, OutlookItem
from shared.domain.zones import known_zone
from shared.outlook.convert.events import appointment_item
from shared.outlook.from_crm import CrmOriginWriter
from shared.outlook.paging import all_pages
from shared.outlook.writers import OutlookWriter
from shared.store.errors import LinkAlreadyExists
from shared.store.ports import Store
from shared.store.records import AuditAction, AuditOutcome, AuditRecord, Link, Mailbox
from shared.sync.applier import ACTOR
from shared.sync.crm_reads import _crm_state, _read_columns
from shared.sync.fieldmaps import APPOINTMENT_MAP
from shared.sync.fieldmaps.base import FieldMap, parse_utc, utc_text
from shared.sync.fieldmaps.ids import natural_key, series_record_id
from shared.sync.fieldmaps.series import (
    RECURRING_EXCEPTION,
    SERIES_READ_COLUMNS,
    SERIES_TABLE,
    pattern_fingerprint,
    same_pattern,
    series_columns,
    series_recurrence,
    series_zone,
)
from shared.sync.links import to_stored_link
from shared.sync.notes import SERIES_NOT_EXPRESSIBLE, leave_note
from shared.sync.plan import Action, DeleteInOutlook
from shared.sync.series_instances import instance_link

logger = logging.getLogger(__name__)

# The series' own fields, its pattern and zone (the pattern columns' one list: fieldmaps/series.py).
MASTER_COLUMNS = (
    "activityid",
    "subject",
    "location",
    "description",
    "prioritycode",
    "globalobjectid",
    "deletedexceptionslist",
    *SERIES_READ_COLUMNS,
)
# What an occurrence shows of its instance (an exception's own fields).
_SHOWN = ("subject", "location", "description", "scheduledstart", "scheduledend", "isalldayevent")
# An instance's CRM state as the link records it (the owner, read last, is not content).
_STATE_COLUMNS = _read_columns(APPOINTMENT_MAP.table, APPOINTMENT_MAP.columns)[:-1]
_INSTANCE_READ = list(
    dict.fromkeys(
        [
            "activityid",
            "instancetypecode",
            "originalstartdate",
            *_SHOWN,
            *_read_columns(APPOINTMENT_MAP.table, APPOINTMENT_MAP.columns),
        ]
    )
)

Audit = Callable[[AuditRecord], Awaitable[None]]


class SeriesToOutlook:
    """Takes a CRM -> Outlook run's series instances and syncs their series (see the module docstring)."""

    def __init__(
        self,
        *,
        crm: CrmQueryPort,
        graph: GraphServiceClient,
        store: Store,
        mailbox: Mailbox,
        fmap: FieldMap[Any],
        time_zone: str | None,
    ) -> None:
        self._crm = crm
        self._graph = graph
        self._writer = OutlookWriter(graph)
        self._origin = CrmOriginWriter(graph, mailbox.mailbox_id, task_list_id=None)
        self._store = store
        self._mailbox = mailbox
        self._fmap = fmap
        self._zone = time_zone or "UTC"

    async def instances_of(self, record_ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """Which of ``record_ids`` are series instances: record id -> its series id."""
        if not record_ids:
            return {}
        rows = await self._crm.get_many(
            "appointment", record_ids, select=["seriesid"], caller=self._mailbox.crm_caller_object_id
        )
        return {
            record_id: uuid.UUID(str(row["seriesid"]))
            for record_id, row in rows.items()
            if row is not None and row.get("seriesid")
        }

    async def sync(self, series_ids: set[uuid.UUID]) -> tuple[int, set[uuid.UUID]]:
        """(Outlook writes, the series left to the one-off path: their pattern has no Graph form)."""
        writes = 0
        one_off: set[uuid.UUID] = set()
        for series_id in sorted(series_ids, key=str):
            done = await self._series(series_id)
            if done is None:
                one_off.add(series_id)
            else:
                writes += done
        return writes, one_off

    async def _series(self, series_id: uuid.UUID) -> int | None:
        mailbox = self._mailbox
        caller = mailbox.crm_caller_object_id
        master = await self._crm.get(SERIES_TABLE, series_id, select=list(MASTER_COLUMNS), caller=caller)
        if master is None:
            return 0  # deleted meanwhile: its instances' deletes follow
        links = self._store.links
        link = await links.get_by_crm(mailbox.mailbox_id, SERIES_TABLE, str(series_id))
        if link is None and master.get("globalobjectid"):
            return 0  # written from an Outlook series: the Outlook -> CRM run links its instances
        zone = await self._master_zone(master)
        recurrence = series_recurrence(master, zone)
        if recurrence.not_expressible is not None:
            await self._audit_not_expressible(series_id, recurrence.not_expressible)
            return None
        writes = 0
        if link is None:
            item = self._master_item(master, recurrence.recurrence, zone)
            created = await self._origin.create(item, series_id)
            await links.create(
                Link(
                    mailbox_id=mailbox.mailbox_id,
                    kind=ItemKind.APPOINTMENT,
                    outlook_id=created.item_id,
                    crm_table=SERIES_TABLE,
                    crm_id=str(series_id),
                    outlook_change_key=created.change_key,
                    outlook_hash=_fingerprint(created.item),
                    owned_by_user=True,
                )
            )
            await self._audit(series_id, created.item_id, AuditAction.CREATED_IN_OUTLOOK)
            outlook_id, writes = created.item_id, 1
        else:
            outlook_id = link.outlook_id
            writes = await self._repattern(master, outlook_id, recurrence.recurrence, zone)
        instances = await self._crm.series_instances(series_id, select=_INSTANCE_READ, caller=caller)
        writes += await self._exceptions(master, outlook_id, instances)
        if link is None or writes:
            await self._link_occurrences(outlook_id, instances)
        if (
            link is None
            and await self._crm.get(SERIES_TABLE, series_id, select=["activityid"], caller=caller) is None
        ):
            # Deleted in Dynamics while this run made it: its instances' deletes may have been routed
            # before the links above existed. Deleted later, they reach the mailbox by those links.
            writes += await self.ended({outlook_id})
        return writes

    async def _link_occurrences(self, outlook_id: str, rows: list[dict[str, Any]]) -> None:
        """Link each occurrence that shows its instance as Dynamics has it: a later change or delete
        of an instance (deleting the series deletes them all) reaches this mailbox through its link,
        without waiting for the Outlook -> CRM run to link the new series."""
        starts = [m for m in (_moment(r.get("originalstartdate")) for r in rows) if m]
        if not starts:
            return
        occurrences = await self._occurrences(outlook_id, min(starts), max(starts))
        mailbox = self._mailbox
        new: list[Link] = []
        for row in rows:
            occurrence = occurrences.get(_moment(row.get("originalstartdate")) or "")
            content = occurrence.item if occurrence is not None else None
            if occurrence is None or not isinstance(content, Appointment):
                continue
            if not _same_occurrence(content, self._fmap.item_from_crm({c: row.get(c) for c in _SHOWN})):
                continue  # not (yet) as Dynamics has it: the runs that carry the change link it
            state = _crm_state(mailbox, uuid.UUID(str(row["activityid"])), row, _STATE_COLUMNS)
            link = instance_link(occurrence, content, state)
            new.append(to_stored_link(mailbox.mailbox_id, ItemKind.APPOINTMENT, link))
        # An occurrence or instance linked already (by the Outlook -> CRM run, or before a new
        # pattern) keeps its link: create_many writes the others, then names the first refusal.
        with contextlib.suppress(LinkAlreadyExists):
            await self._store.links.create_many(new)

    async def _repattern(
        self, master: dict[str, Any], outlook_id: str, recurrence: dict[str, Any], zone: str
    ) -> int:
        """A pattern changed in Dynamics (its instances regenerated) changes the Outlook series'
        recurrence, so the Outlook -> CRM run does not take the old one for a change to write back."""
        read, _ = await self._origin.read(ItemKind.APPOINTMENT, outlook_id)
        content = read.item if read is not None else None
        if not isinstance(content, Appointment):
            return 0
        theirs = series_columns(content)
        if theirs.not_expressible is None and same_pattern(master, theirs.values, series_zone(content)):
            return 0
        item = self._master_item(master, recurrence, zone)
        updated = await self._writer.update_event(self._mailbox.mailbox_id, outlook_id, item)
        links = self._store.links
        link = await links.get_by_outlook(self._mailbox.mailbox_id, ItemKind.APPOINTMENT, outlook_id)
        if link is not None:
            await links.update(dataclasses.replace(link, outlook_hash=_fingerprint(updated.item)))
        await self._audit(uuid.UUID(str(master["activityid"])), outlook_id, AuditAction.UPDATED_IN_OUTLOOK)
        return 1

    async def ended(self, outlook_series: set[str]) -> int:
        """Delete the Outlook series whose Dynamics series is gone, once the delete rules removed
        their occurrences: no empty series is left in Outlook. A series crmsync wrote from Outlook
        is found under its deterministic master id, one made in Dynamics by its link."""
        writes = 0
        caller = self._mailbox.crm_caller_object_id
        mailbox_id = self._mailbox.mailbox_id
        for outlook_id in sorted(outlook_series):
            link = await self._store.links.get_by_outlook(mailbox_id, ItemKind.APPOINTMENT, outlook_id)
            if link is not None and link.crm_table == SERIES_TABLE:
                series_id = uuid.UUID(link.crm_id)
            else:
                master, _ = await self._origin.read(ItemKind.APPOINTMENT, outlook_id)
                content = master.item if master is not None else None
                if master is None or not isinstance(content, Appointment):
                    continue
                series_id = (
                    uuid.UUID(master.crm_id)
                    if master.crm_id
                    else series_record_id(natural_key(mailbox_id, outlook_id, content))
                )
            if await self._crm.get(SERIES_TABLE, series_id, select=["activityid"], caller=caller) is not None:
                continue  # only some instances were deleted: the series stays
            await self._writer.delete_event(mailbox_id, outlook_id)
            if link is not None and link.crm_table == SERIES_TABLE:
                await self._store.links.delete(link)
            await self._audit(series_id, outlook_id, AuditAction.DELETED_IN_OUTLOOK)
            writes += 1
        return writes

    async def _master_zone(self, master: dict[str, Any]) -> str:
        """The series' zone: its master's ``utcconversiontimezonecode`` (Windows name from its
        ``timezonedefinition`` row), else the CRM user's."""
        code = master.get("utcconversiontimezonecode")
        if not isinstance(code, int) or isinstance(code, bool):
            return self._zone
        rows = await self._crm.query(
            "timezonedefinition", where=f"timezonecode eq {code}", select=["standardname"], caller=None
        )
        name = rows[0].get("standardname") if rows else None
        return name if isinstance(name, str) and known_zone(name) is not None else self._zone

    def _master_item(self, master: dict[str, Any], recurrence: dict[str, Any], zone: str) -> Appointment:
        values = {
            column: master.get(column)
            for column in ("subject", "location", "description", "isalldayevent", "prioritycode")
        }
        values |= {"scheduledstart": master.get("starttime"), "scheduledend": master.get("endtime")}
        item: Appointment = self._fmap.item_from_crm(values)
        return item.model_copy(
            update={
                "recurrence": json.dumps(recurrence, sort_keys=True, separators=(",", ":")),
                "event_kind": EventKind.SERIES_MASTER,
                "time_zone": zone,
            }
        )

    async def _exceptions(self, master: dict[str, Any], outlook_id: str, rows: list[dict[str, Any]]) -> int:
        """Dynamics' exceptions (among the series' instance ``rows``) and deleted instances onto
        their Outlook occurrences."""
        changed = [r for r in rows if r.get("instancetypecode") == RECURRING_EXCEPTION]
        deleted = {_moment(d) for d in str(master.get("deletedexceptionslist") or "").split(",") if d}
        deleted.discard(None)
        if not changed and not deleted:
            return 0
        starts = [m for m in [*(_moment(r.get("originalstartdate")) for r in changed), *deleted] if m]
        if not starts:
            return 0
        occurrences = await self._occurrences(outlook_id, min(starts), max(starts))
        writes = 0
        for row in changed:
            occurrence = occurrences.get(_moment(row.get("originalstartdate")) or "")
            if occurrence is None:
                continue
            wanted = self._fmap.item_from_crm({c: row.get(c) for c in _SHOWN})
            have = occurrence.item
            if isinstance(have, Appointment) and _same_occurrence(have, wanted):
                continue
            wanted = wanted.model_copy(update={"time_zone": self._zone})
            await self._writer.update_event(self._mailbox.mailbox_id, occurrence.item_id, wanted)
            writes += 1
        for start in deleted:
            occurrence = occurrences.get(start or "")
            if occurrence is not None:
                await self._writer.delete_event(self._mailbox.mailbox_id, occurrence.item_id)
                writes += 1
        return writes

    async def _occurrences(self, outlook_id: str, first: str, last: str) -> dict[str, OutlookItem]:
        """The Outlook series' occurrences between two original starts (every page), by original
        start (UTC)."""
        begin = parse_utc(first) or dt.datetime.now(dt.UTC)
        end = (parse_utc(last) or begin) + dt.timedelta(days=1)
        query = InstancesRequestBuilder.InstancesRequestBuilderGetQueryParameters(
            start_date_time=utc_text(begin - dt.timedelta(days=1)), end_date_time=utc_text(end)
        )
        events = (
            self._graph.users.by_user_id(self._mailbox.mailbox_id).events.by_event_id(outlook_id).instances
        )
        found: dict[str, OutlookItem] = {}
        for event in await all_pages(events, RequestConfiguration(query_parameters=query)):
            item = appointment_item(self._mailbox.mailbox_id, event)
            content = item.item
            if isinstance(content, Appointment):
                original = utc_text(content.original_start or content.start)
                if original:
                    found[original] = item
        return found

    async def _audit(self, series_id: uuid.UUID, outlook_id: str, action: AuditAction) -> None:
        await self._store.audit.append(
            AuditRecord.for_item(
                mailbox_id=self._mailbox.mailbox_id,
                actor=ACTOR,
                action=action,
                kind=ItemKind.APPOINTMENT,
                outlook_id=outlook_id,
                crm_id=str(series_id),
                outcome=AuditOutcome.OK,
            )
        )

    async def _audit_not_expressible(self, series_id: uuid.UUID, why: str) -> None:
        logger.info("Dynamics series synchronised as occurrences: %s", why)
        await self._store.audit.append(
            AuditRecord.for_item(
                mailbox_id=self._mailbox.mailbox_id,
                actor=ACTOR,
                action=AuditAction.STATE_CHANGED,
                kind=ItemKind.APPOINTMENT,
                crm_id=str(series_id),
                outcome=AuditOutcome.SKIPPED,
                reason_code=SERIES_NOT_EXPRESSIBLE,
            )
        )
        await leave_note(self._store.sync_state, self._mailbox.mailbox_id, SERIES_NOT_EXPRESSIBLE)


def series_deleting(item: object, actions: Sequence[Action]) -> str | None:
    """The Outlook series of an occurrence these actions delete (an instance deleted in the CRM)."""
    instance = {EventKind.OCCURRENCE, EventKind.EXCEPTION}
    if not isinstance(item, Appointment) or item.event_kind not in instance:
        return None
    return item.series_master_id if any(isinstance(a, DeleteInOutlook) for a in actions) else None


def _fingerprint(item: object) -> str | None:
    """The Outlook series' pattern as crmsync wrote it (the base SeriesSync compares with)."""
    if not isinstance(item, Appointment):
        return None
    columns = series_columns(item)
    return pattern_fingerprint(columns.values) if columns.not_expressible is None else None


def _moment(value: object) -> str | None:
    return utc_text(parse_utc(value)) if isinstance(value, str) and value else None


def _same_occurrence(have: Appointment, wanted: Appointment) -> bool:
    return (have.subject, have.start, have.end, have.location, have.is_all_day) == (
        wanted.subject,
        wanted.start,
        wanted.end,
        wanted.location,
        wanted.is_all_day,
    )


__all__ = ["SeriesToOutlook", "series_deleting"]
