"""Outlook series -> Dynamics series: one ``recurringappointmentmaster``, its instances linked.

calendarView delta lists a series as its occurrences and exceptions, each carrying
``seriesMasterId`` and ``originalStart`` ("event: delta", "event resource type",
learn.microsoft.com/graph/api/...); the master and its recurrence are read once per series and
page (one JSON batch of GETs for the page's series: the Graph cost is per series, not per
occurrence). Then, per series:

1. the master becomes one ``recurringappointmentmaster`` under a deterministic id
   (:func:`~shared.sync.fieldmaps.ids.series_record_id`), its pattern mapped field by field
   (:mod:`shared.sync.fieldmaps.series`); it is written only when its columns differ from the
   CRM's. Dynamics expands the instances itself ("Create a recurring appointment series,
   instance, or exception": ``appointment`` rows with ``seriesid`` and ``instancetypecode`` 2);
   crmsync never writes an occurrence as a one-off appointment;
2. the series' instances are read in one query and matched to the occurrences by
   ``originalstartdate`` = Graph ``originalStart`` (:mod:`shared.sync.series_instances`); an
   occurrence is only linked to its instance;
   an exception (moved or edited) updates its instance, which makes it Dynamics' exception
   ("Update a recurring appointment": updating an instance marks it an exception);
3. a cancelled occurrence leaves calendarView and comes back ``@removed``: its link names the
   instance, so the planner's delete rules remove that instance like any appointment (Dynamics
   lists it in the master's ``deletedexceptionslist``).

A pattern Dynamics cannot express (see :mod:`shared.sync.fieldmaps.series`) is not bent into
another one: the series' occurrences go the ordinary way, one appointment each, and an audit
record says why. An occurrence without an instance (outside Dynamics' expansion window) is left
unlinked until it has one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence

from shared.crm.errors import CrmError, RecordNotFound
from shared.crm.port import CrmPort
from shared.domain.model import Appointment, EventKind, ItemKind, OutlookItem
from shared.domain.zones import windows_name
from shared.store.ports import SyncStateStore
from shared.store.records import AuditAction, AuditOutcome, AuditRecord, Mailbox
from shared.store.records import Link as StoredLink
from shared.sync.applier import ACTOR, Applier, ItemPlan
from shared.sync.fieldmaps import APPOINTMENT_MAP, natural_key
from shared.sync.fieldmaps.base import CrmValue, PartySpec
from shared.sync.fieldmaps.ids import series_record_id
from shared.sync.fieldmaps.series import (
    PATTERN_COLUMNS,
    SERIES_PARTIES,
    SERIES_READ_COLUMNS,
    SERIES_TABLE,
    pattern_fingerprint,
    same_pattern,
    series_columns,
    series_zone,
)
from shared.sync.links import LinkView
from shared.sync.notes import SERIES_NOT_EXPRESSIBLE, leave_note
from shared.sync.plan import Action, CreateInCrm, DeleteInCrm, DeleteInOutlook, DropLink
from shared.sync.ports import OutlookReader
from shared.sync.series_instances import InstancePlan, SeriesInstances, same_in_crm

logger = logging.getLogger(__name__)

_INSTANCE_KINDS = frozenset({EventKind.OCCURRENCE, EventKind.EXCEPTION})


Park = Callable[[OutlookItem, CrmError], Awaitable[None]]


def _master_of(item: OutlookItem) -> str | None:
    """The series master id of a present occurrence or exception, else None."""
    content = item.item
    if item.removed or not isinstance(content, Appointment) or content.event_kind not in _INSTANCE_KINDS:
        return None
    return content.series_master_id


def _party_addresses(values: dict[str, CrmValue]) -> frozenset[tuple[int, str]]:
    """The parties the master's party columns name, as the CRM port reads them back."""
    return frozenset(
        (int(spec.participation), spec.address)
        for column in SERIES_PARTIES
        for spec in _specs(values.get(column))
    )


def _specs(value: CrmValue | None) -> tuple[PartySpec, ...]:
    return tuple(spec for spec in value if isinstance(spec, PartySpec)) if isinstance(value, tuple) else ()


class SeriesSync:
    """Plans a page's occurrences and exceptions as Dynamics series (see the module docstring)."""

    def __init__(self, crm: CrmPort, reader: OutlookReader, state: SyncStateStore) -> None:
        self._crm = crm
        self._reader = reader
        self._state = state
        self._zone_codes: dict[str, int | None] = {}
        self._instances = SeriesInstances(crm)

    async def plan(
        self,
        *,
        mailbox: Mailbox,
        links: LinkView,
        applier: Applier,
        items: list[OutlookItem],
        park: Park,
        audit: Callable[[AuditRecord], Awaitable[None]],
    ) -> tuple[list[InstancePlan], list[OutlookItem]]:
        """(the plans of the page's series instances, the items that go the ordinary way)."""
        by_series: dict[str, list[OutlookItem]] = {}
        rest: list[OutlookItem] = []
        for item in items:
            master_id = _master_of(item)
            if master_id is not None:
                by_series.setdefault(master_id, []).append(item)
            else:
                rest.append(item)
        if not by_series:
            return [], items
        masters = {
            read.item_id: read
            for read in await self._reader.read_items(
                mailbox.mailbox_id, ItemKind.APPOINTMENT, list(by_series)
            )
        }
        plans: list[InstancePlan] = []
        for master_id, members in by_series.items():
            master = masters.get(master_id)
            content = master.item if master is not None else None
            if not isinstance(content, Appointment):
                continue  # the series is gone: its occurrences come back removed
            columns = series_columns(content)
            if columns.not_expressible is not None:
                # No exact Dynamics form: the occurrences are synchronised one by one, said in the audit.
                logger.info("series synchronised as occurrences: %s", columns.not_expressible)
                await audit(
                    AuditRecord.for_item(
                        mailbox_id=mailbox.mailbox_id,
                        actor=ACTOR,
                        action=AuditAction.STATE_CHANGED,
                        kind=ItemKind.APPOINTMENT,
                        outlook_id=master_id,
                        outcome=AuditOutcome.SKIPPED,
                        reason_code=SERIES_NOT_EXPRESSIBLE,
                    )
                )
                await leave_note(self._state, mailbox.mailbox_id, SERIES_NOT_EXPRESSIBLE)
                rest.extend(members)
                continue
            # A series made in Dynamics is linked to its master (crmsync created the Outlook series).
            stored = await links.by_outlook(master_id)
            from_crm = stored is not None and stored.crm_table == SERIES_TABLE
            record_id = (
                uuid.UUID(stored.crm_id)
                if stored is not None and from_crm
                else series_record_id(natural_key(mailbox.mailbox_id, master_id, content))
            )
            try:
                if from_crm and stored is not None and await self._gone(mailbox, applier, stored, record_id):
                    continue  # deleted in Dynamics: its Outlook series went with it, nothing re-created
                # A Dynamics-made series whose Outlook pattern is as crmsync wrote it: Dynamics' stands.
                unchanged = stored is not None and stored.outlook_hash == pattern_fingerprint(columns.values)
                zone = series_zone(content) if from_crm else None
                values = columns.values | await self._zone_code(series_zone(content))
                if from_crm and unchanged:
                    values = {c: v for c, v in values.items() if c not in PATTERN_COLUMNS}
                await self._write_master(mailbox, applier, record_id, values, zone=zone)
                plans += await self._instances.plan(mailbox, links, record_id, members, from_crm=from_crm)
            except CrmError as error:
                for member in members:
                    await park(member, error)
        return plans, rest

    async def _zone_code(self, time_zone: str) -> dict[str, CrmValue]:
        """The master's ``utcconversiontimezonecode`` for the series' zone (its
        ``timezonedefinition`` row, by Windows name), so Dynamics expands the series on that wall
        clock across daylight-saving changes; nothing when Dataverse has no such zone."""
        name = windows_name(time_zone)
        if name is None:
            return {}
        if name not in self._zone_codes:
            rows = await self._crm.find_where(
                "timezonedefinition", ["standardname"], [name], select=["timezonecode"], caller=None
            )
            code = rows[0].get("timezonecode") if rows else None
            self._zone_codes[name] = code if isinstance(code, int) else None
        code = self._zone_codes[name]
        return {} if code is None else {"utcconversiontimezonecode": code}

    async def series_of_deletes(self, mailbox: Mailbox, actions: Sequence[Action]) -> set[uuid.UUID]:
        """The series of the instances these actions delete (read before the deletes)."""
        table = APPOINTMENT_MAP.table
        ids = [a.record_id for a in actions if isinstance(a, DeleteInCrm) and a.table == table]
        if not ids:
            return set()
        rows = await self._crm.get_many(
            APPOINTMENT_MAP.table, ids, select=["seriesid"], caller=mailbox.crm_caller_object_id
        )
        return {uuid.UUID(str(row["seriesid"])) for row in rows.values() if row and row.get("seriesid")}

    async def remove_emptied(self, mailbox: Mailbox, applier: Applier, series: set[uuid.UUID]) -> None:
        """A series whose every instance was deleted from Outlook (the Outlook series deleted) is
        deleted too, when it is the user's (the delete rules): no empty master is left behind."""
        caller = mailbox.crm_caller_object_id
        for series_id in sorted(series, key=str):
            if await self._crm.series_instances(series_id, select=["activityid"], caller=caller):
                continue  # some occurrences remain: only those were cancelled
            row = await self._crm.get(SERIES_TABLE, series_id, select=["_ownerid_value"], caller=caller)
            if row is None or str(row.get("_ownerid_value") or "").lower() != mailbox.crm_user_id.lower():
                continue
            delete = DeleteInCrm(
                table=SERIES_TABLE,
                record_id=series_id,
                if_match=None,
                reason="series deleted in Outlook: no instance left",
            )
            (result,) = await applier.apply([ItemPlan([delete])])
            if isinstance(result, CrmError) and not isinstance(result, RecordNotFound):
                raise result

    async def _gone(
        self, mailbox: Mailbox, applier: Applier, stored: StoredLink, record_id: uuid.UUID
    ) -> bool:
        """Whether a series made in Dynamics was deleted there; then its Outlook series is deleted
        too (the delete rules: the user's own series; another's only loses its link), never the
        master re-created from Outlook."""
        caller = mailbox.crm_caller_object_id
        if await self._crm.get(SERIES_TABLE, record_id, select=["activityid"], caller=caller) is not None:
            return False
        reason = "series deleted in the CRM"
        drop = DropLink(outlook_id=stored.outlook_id, crm_id=record_id, reason=reason)
        delete = [DeleteInOutlook(item_id=stored.outlook_id, reason=reason)] if stored.owned_by_user else []
        (result,) = await applier.apply([ItemPlan([*delete, drop])])
        if isinstance(result, CrmError):
            raise result
        return True

    async def _write_master(
        self,
        mailbox: Mailbox,
        applier: Applier,
        record_id: uuid.UUID,
        values: dict[str, CrmValue],
        *,
        zone: str | None = None,
    ) -> None:
        """Upsert the master when the CRM's columns differ (a failed write raises its error). A
        series made in Dynamics (``zone``: its Outlook series' zone) keeps its own pattern columns
        while Outlook's is the same series (mapped, it may be another exact form, e.g. "every
        weekday" as weekly Monday-Friday):
        rewriting them would make Dynamics regenerate the instances and drop their exceptions."""
        caller = mailbox.crm_caller_object_id
        columns = [c for c in values if c not in SERIES_PARTIES]  # party lists are not columns to read
        select = list(dict.fromkeys([*columns, *SERIES_READ_COLUMNS])) if zone else columns
        row = await self._crm.get(SERIES_TABLE, record_id, select=select, caller=caller)
        if row is not None and zone is not None and same_pattern(row, values, zone):
            values = {c: v for c, v in values.items() if c not in PATTERN_COLUMNS}
        columns = [c for c in values if c not in SERIES_PARTIES]
        if (
            row is not None
            and all(same_in_crm(column, values[column], row.get(column)) for column in columns)
            and _party_addresses(values)
            == (await self._crm.party_addresses([record_id], caller=caller))[record_id]
        ):
            return
        write = CreateInCrm(
            table=SERIES_TABLE,
            record_id=record_id,
            values=values,
            then_update={},
            reason="series in Outlook" if row is None else "series changed in Outlook",
        )
        (result,) = await applier.apply([ItemPlan([write])])
        if isinstance(result, CrmError):
            raise result


__all__ = ["SeriesSync"]
