"""A Dynamics series' instances matched to the Outlook series' occurrences, and each occurrence's plan.

Dynamics expands a ``recurringappointmentmaster`` into ``appointment`` instances itself; an
Outlook occurrence is matched to its instance by ``originalstartdate`` = Graph ``originalStart``
and only linked to it, an exception (moved or edited) updates its instance, which makes it
Dynamics' exception ("Update a recurring appointment").

Kept apart from :mod:`shared.sync.series`, which writes the master these instances come from:
this side only reads (the instances, the master's ``deletedexceptionslist``) and plans the
occurrences, whose plans are applied with the page's other plans.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass

from shared.crm.port import CrmPort
from shared.domain.model import Appointment, EventKind, OutlookItem, content_hash
from shared.store.records import Mailbox
from shared.sync.crm_reads import _crm_state, _read_columns
from shared.sync.fieldmaps import APPOINTMENT_MAP, crm_content_hash
from shared.sync.fieldmaps.base import CrmValue, canonical_crm_value, parse_utc, utc_text
from shared.sync.fieldmaps.series import RECURRING_EXCEPTION, SERIES_TABLE
from shared.sync.links import LinkView, from_stored_link
from shared.sync.merge import unit_fingerprints
from shared.sync.plan import Action, CrmState, DeleteInCrm, DeleteInOutlook, Link, UpdateCrm, WriteLink

logger = logging.getLogger(__name__)

# What an exception may change on its own instance (the rest is the series').
_EXCEPTION_COLUMNS = ("subject", "scheduledstart", "scheduledend", "isalldayevent", "location", "description")


@dataclass(frozen=True, slots=True)
class InstancePlan:
    """One occurrence's plan, applied with the page's other plans."""

    item: OutlookItem
    actions: list[Action]
    projection: dict[str, CrmValue]
    new_link: bool


class SeriesInstances:
    """Plans a series' occurrences as links to (and exceptions of) its Dynamics instances."""

    def __init__(self, crm: CrmPort) -> None:
        self._crm = crm

    async def plan(
        self,
        mailbox: Mailbox,
        links: LinkView,
        record_id: uuid.UUID,
        members: list[OutlookItem],
        *,
        from_crm: bool = False,
    ) -> list[InstancePlan]:
        """The plans of a series' occurrences (``members``) against the instances of ``record_id``;
        an occurrence without an instance (outside Dynamics' expansion window) stays unlinked."""
        columns = _read_columns(APPOINTMENT_MAP.table, APPOINTMENT_MAP.columns)
        rows = await self._crm.series_instances(
            record_id,
            select=[*columns, "originalstartdate", "instancetypecode"],
            caller=mailbox.crm_caller_object_id,
        )
        by_original = {_moment(row.get("originalstartdate")): row for row in rows}
        plans: list[InstancePlan] = []
        unmatched = 0
        for member in members:
            content = member.item
            if not isinstance(content, Appointment):
                continue
            row = by_original.get(utc_text(content.original_start or content.start))
            if row is None:
                unmatched += 1  # no instance (yet): outside Dynamics' expansion window
                continue
            if (
                from_crm
                and row.get("instancetypecode") == RECURRING_EXCEPTION
                and content.event_kind is not EventKind.EXCEPTION
                and await links.by_outlook(member.item_id) is None
            ):
                # Changed in Dynamics before its occurrence was linked: the CRM -> Outlook run
                # carries the exception over first (linked now, the link would take the CRM's state
                # as agreed and that run would see nothing to do); the next run links it.
                continue
            state = _crm_state(mailbox, uuid.UUID(str(row["activityid"])), row, columns[:-1])
            plan = await self._instance_plan(links, member, content, state)
            if plan is not None:
                plans.append(plan)
        plans = await self._replacing_one_offs(mailbox, links, plans)
        if from_crm and unmatched:
            plans += await self._deleted_in_crm(mailbox, record_id, members, by_original)
        if unmatched:
            logger.info("%d occurrence(s) of a series have no Dynamics instance: left unlinked", unmatched)
        return plans

    async def _deleted_in_crm(
        self,
        mailbox: Mailbox,
        record_id: uuid.UUID,
        members: list[OutlookItem],
        by_original: dict[str | None, dict[str, object]],
    ) -> list[InstancePlan]:
        """Occurrences of a Dynamics-made series whose instance was deleted in Dynamics before the
        occurrence was linked (listed in the master's ``deletedexceptionslist``) are cancelled in
        Outlook, as a linked one would be."""
        row = await self._crm.get(
            SERIES_TABLE, record_id, select=["deletedexceptionslist"], caller=mailbox.crm_caller_object_id
        )
        listed = str((row or {}).get("deletedexceptionslist") or "").split(",")
        deleted = {_moment(part) for part in listed if part}
        plans: list[InstancePlan] = []
        for member in members:
            content = member.item
            if not isinstance(content, Appointment):
                continue
            original = utc_text(content.original_start or content.start)
            if original not in by_original and original in deleted:
                cancel = DeleteInOutlook(item_id=member.item_id, reason="instance deleted in the CRM")
                plans.append(InstancePlan(member, [cancel], {}, new_link=False))
        return plans

    async def _replacing_one_offs(
        self, mailbox: Mailbox, links: LinkView, plans: list[InstancePlan]
    ) -> list[InstancePlan]:
        """Upgrade: an occurrence crmsync synchronised before series were (one appointment per
        occurrence) moves its link to its instance, and that one-off appointment - the user's, not a
        series instance - is deleted in the same plan, so the series is not shown twice."""
        moving: dict[uuid.UUID, uuid.UUID] = {}
        for plan in plans:
            stored = await links.by_outlook(plan.item.item_id)
            new = next((a.link.crm_id for a in plan.actions if isinstance(a, WriteLink)), None)
            if stored is not None and new is not None and uuid.UUID(stored.crm_id) != new:
                moving[new] = uuid.UUID(stored.crm_id)
        if not moving:
            return plans
        rows = await self._crm.get_many(
            APPOINTMENT_MAP.table,
            list(moving.values()),
            select=["instancetypecode", "_ownerid_value"],
            caller=mailbox.crm_caller_object_id,
        )
        result: list[InstancePlan] = []
        for plan in plans:
            new = next((a.link.crm_id for a in plan.actions if isinstance(a, WriteLink)), None)
            old = moving.get(new) if new is not None else None
            row = rows.get(old) if old is not None else None
            owner = str((row or {}).get("_ownerid_value") or "").lower()
            if old is None or row is None or row.get("instancetypecode") not in {None, 0}:
                result.append(plan)  # no old record, or an instance of a regenerated series: Dynamics' own
                continue
            if owner != mailbox.crm_user_id.lower():
                result.append(plan)  # another user's record is never deleted (it only loses this link)
                continue
            delete = DeleteInCrm(
                table=APPOINTMENT_MAP.table,
                record_id=old,
                if_match=None,
                reason="one appointment per occurrence, from before series: replaced by its series instance",
                replaced_by=new,
            )
            result.append(dataclasses.replace(plan, actions=[delete, *plan.actions]))
        return result

    @staticmethod
    async def _instance_plan(
        links: LinkView, member: OutlookItem, content: Appointment, crm: CrmState
    ) -> InstancePlan | None:
        stored = await links.by_outlook(member.item_id)
        link = from_stored_link(stored) if stored is not None else None
        projection = APPOINTMENT_MAP.project(content).values
        crm_values = {c: canonical_crm_value(v) for c, v in (crm.values or {}).items()}
        actions: list[Action] = []
        changes: dict[str, CrmValue] = {}
        if content.event_kind is EventKind.EXCEPTION:
            changes = {
                column: projection.get(column)
                for column in _EXCEPTION_COLUMNS
                if not same_in_crm(column, projection.get(column), crm_values.get(column))
            }
            if changes:
                actions.append(
                    UpdateCrm(
                        table=APPOINTMENT_MAP.table,
                        record_id=crm.record_id,
                        values=changes,
                        if_match=crm.etag,
                        reason="occurrence changed in Outlook: the instance becomes an exception",
                    )
                )
        if (
            not actions
            and link is not None
            and link.crm_id == crm.record_id
            and link.outlook_hash == content_hash(content)
        ):
            # Unchanged in Outlook. A change of the instance in the CRM is the CRM -> Outlook run's to
            # apply: taking the CRM's hash into the link here would make that run see no change.
            return None
        new = instance_link(member, content, crm, changes)
        actions.append(WriteLink(link=new, crm_from_write=bool(actions), reason="series instance"))
        return InstancePlan(member, actions, dict(projection), new_link=stored is None)


def instance_link(
    member: OutlookItem, content: Appointment, crm: CrmState, changes: dict[str, CrmValue] | None = None
) -> Link:
    """The link of an occurrence and its instance, both sides as they are once ``changes`` (written
    to the instance) land: the one place an occurrence's link is made, from either direction."""
    projection = APPOINTMENT_MAP.project(content).values
    crm_values = {c: canonical_crm_value(v) for c, v in (crm.values or {}).items()} | (changes or {})
    return Link(
        outlook_id=member.item_id,
        crm_id=crm.record_id,
        outlook_change_key=member.change_key,
        crm_etag=None if changes else crm.etag,
        outlook_hash=content_hash(content),
        crm_hash=crm_content_hash(APPOINTMENT_MAP, crm_values),
        field_bases=unit_fingerprints(projection, crm_values, APPOINTMENT_MAP.units()),
        owned_by_user=crm.owned_by_user,
    )


def _moment(value: object) -> str | None:
    parsed = parse_utc(value) if isinstance(value, str) else None
    return utc_text(parsed)


def same_in_crm(column: str, ours: CrmValue, theirs: object) -> bool:
    """Equal as the CRM stores them: date-times compared as moments, "" as null."""
    if column in {
        "scheduledstart",
        "scheduledend",
        "starttime",
        "endtime",
        "patternstartdate",
        "patternenddate",
    }:
        return _moment(ours) == _moment(theirs)
    return canonical_crm_value(ours) == canonical_crm_value(theirs)


__all__ = ["InstancePlan", "SeriesInstances", "instance_link", "same_in_crm"]
