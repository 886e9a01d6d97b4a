"""Field maps: how each Outlook item kind becomes Dataverse columns and back.

One declarative :class:`FieldMap` per :class:`~shared.domain.model.ItemKind`; the kind modules
document their choices (recurring series, task status, email parties). Use :func:`field_map`.
"""

from __future__ import annotations

from typing import Any

from shared.domain.model import ItemKind
from shared.sync.fieldmaps.appointment import APPOINTMENT_MAP, appointment_map
from shared.sync.fieldmaps.base import (
    ABSENT,
    Absent,
    CrmValue,
    FieldMap,
    FieldMapping,
    PartySpec,
    Projection,
    canonical_crm_value,
    crm_content_hash,
    fingerprint,
    to_jsonable,
)
from shared.sync.fieldmaps.contact import CONTACT_MAP
from shared.sync.fieldmaps.email import EMAIL_MAP
from shared.sync.fieldmaps.ids import CRMSYNC_NAMESPACE, crm_record_id, natural_key, normalize_message_id
from shared.sync.fieldmaps.task import TASK_MAP

FIELD_MAPS: dict[ItemKind, FieldMap[Any]] = {
    ItemKind.CONTACT: CONTACT_MAP,
    ItemKind.APPOINTMENT: APPOINTMENT_MAP,
    ItemKind.TASK: TASK_MAP,
    ItemKind.EMAIL: EMAIL_MAP,
}


def field_map(kind: ItemKind, crm_time_zone: str | None = None) -> FieldMap[Any]:
    """The field map of one item kind; appointments' all-day dates are the CRM user's local
    midnights in ``crm_time_zone`` (``usersettings.timezonecode``'s Windows name), if known."""
    if kind is ItemKind.APPOINTMENT and crm_time_zone is not None:
        return appointment_map(crm_time_zone)
    return FIELD_MAPS[kind]


__all__ = [
    "ABSENT",
    "APPOINTMENT_MAP",
    "CONTACT_MAP",
    "CRMSYNC_NAMESPACE",
    "EMAIL_MAP",
    "FIELD_MAPS",
    "TASK_MAP",
    "Absent",
    "CrmValue",
    "FieldMap",
    "FieldMapping",
    "PartySpec",
    "Projection",
    "canonical_crm_value",
    "crm_content_hash",
    "crm_record_id",
    "field_map",
    "fingerprint",
    "natural_key",
    "normalize_message_id",
    "to_jsonable",
]
