"""Dataverse table metadata the adapter needs to build URLs and ``@odata.bind`` annotations.

Transcribed from the contract ``dataverse-tables.json`` (powerapps-docs entity reference pages:
contact.md, email.md, appointment.md, task.md, activityparty.md) and, for the tables it does not
cover (account, lead, systemuser, activitymimeattachment, recurringappointmentmaster), from the same reference
pages on learn.microsoft.com/power-apps/developer/data-platform/reference/entities/. It lives in code
because the contract file is not deployed with the function app; ``tests/crm/test_tables.py`` keeps
the two in agreement.

Binding rules (powerapps-docs: "Associate table rows on create", webapi/create-entity-web-api):
a single-valued lookup is set with ``<navigation property>@odata.bind: "/<entity set>(<id>)"``; for a
polymorphic lookup (regarding, customer) the navigation property is per target table, e.g.
``regardingobjectid_contact_email``; a simple lookup's navigation property is usually the column's
logical name, which is the fallback here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class TableInfo:
    logical_name: str
    entity_set: str
    primary_id: str
    email_columns: tuple[str, ...] = ()
    bindings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    party_collection: str | None = None  # e.g. email_activity_parties


def _regarding(activity: str, targets: tuple[str, ...]) -> dict[str, str]:
    return {target: f"regardingobjectid_{target}_{activity}" for target in targets}


# The regarding targets crmsync uses. lead is not in the contract's (older) transcription of the
# email/appointment/task pages but is a documented regarding target (lead.md one-to-many: Lead_Emails).
_REGARDING_TARGETS = ("account", "contact", "lead")

_PARTY_TARGETS: Mapping[str, str] = {
    target: f"partyid_{target}" for target in ("account", "contact", "lead", "systemuser", "queue")
}

_TABLES: Mapping[str, TableInfo] = MappingProxyType(
    {
        "contact": TableInfo(
            "contact",
            "contacts",
            "contactid",
            email_columns=("emailaddress1", "emailaddress2", "emailaddress3"),
            bindings={
                "parentcustomerid": {
                    "account": "parentcustomerid_account",
                    "contact": "parentcustomerid_contact",
                },
            },
        ),
        "email": TableInfo(
            "email",
            "emails",
            "activityid",
            bindings={"regardingobjectid": _regarding("email", _REGARDING_TARGETS)},
            party_collection="email_activity_parties",
        ),
        "appointment": TableInfo(
            "appointment",
            "appointments",
            "activityid",
            bindings={"regardingobjectid": _regarding("appointment", _REGARDING_TARGETS)},
            party_collection="appointment_activity_parties",
        ),
        "recurringappointmentmaster": TableInfo(
            "recurringappointmentmaster",
            "recurringappointmentmasters",
            "activityid",
            bindings={"regardingobjectid": _regarding("recurringappointmentmaster", _REGARDING_TARGETS)},
            party_collection="recurringappointmentmaster_activity_parties",
        ),
        "task": TableInfo(
            "task",
            "tasks",
            "activityid",
            bindings={"regardingobjectid": _regarding("task", _REGARDING_TARGETS)},
            party_collection="task_activity_parties",
        ),
        # Dataverse's time zone codes and their Windows names ("Time zone tables"): a series'
        # zone is its master's utcconversiontimezonecode.
        "timezonedefinition": TableInfo("timezonedefinition", "timezonedefinitions", "timezonedefinitionid"),
        "activityparty": TableInfo(
            "activityparty", "activityparties", "activitypartyid", bindings={"partyid": _PARTY_TARGETS}
        ),
        "account": TableInfo(
            "account",
            "accounts",
            "accountid",
            email_columns=("emailaddress1", "emailaddress2", "emailaddress3"),
        ),
        "lead": TableInfo(
            "lead", "leads", "leadid", email_columns=("emailaddress1", "emailaddress2", "emailaddress3")
        ),
        "systemuser": TableInfo(
            "systemuser", "systemusers", "systemuserid", email_columns=("internalemailaddress",)
        ),
        "activitypointer": TableInfo("activitypointer", "activitypointers", "activityid"),
        "activitymimeattachment": TableInfo(
            "activitymimeattachment",
            "activitymimeattachments",
            "activitymimeattachmentid",
            bindings={
                "objectid": {
                    target: f"objectid_{target}" for target in ("activitypointer", "email", "appointment")
                }
            },
        ),
        "team": TableInfo("team", "teams", "teamid"),
        # A user's saved views; querytype 256 are the Outlook synchronization filters (sync/crm_filter.py).
        "userquery": TableInfo("userquery", "userqueries", "userqueryid"),
        "queue": TableInfo("queue", "queues", "queueid"),
    }
)


def table_info(table: str) -> TableInfo:
    """Metadata of a table by logical name; a clear error for tables crmsync does not know."""
    try:
        return _TABLES[table]
    except KeyError:
        raise ValueError(f"crmsync has no Dataverse metadata for table {table!r}") from None


def known_tables() -> frozenset[str]:
    return frozenset(_TABLES)


def bind_path(table: str, record_id: uuid.UUID) -> str:
    """``/<entity set>(<id>)``: the value of an ``@odata.bind`` annotation."""
    return f"/{table_info(table).entity_set}({record_id})"


def bind_annotation(table: str, column: str, target_table: str, record_id: uuid.UUID) -> tuple[str, str]:
    """(``<nav>@odata.bind``, ``/<set>(<id>)``) that sets ``table.column`` to a ``target_table`` row."""
    per_target = table_info(table).bindings.get(column)
    if per_target is None:
        navigation = column
    elif target_table in per_target:
        navigation = per_target[target_table]
    else:
        raise ValueError(f"{table}.{column} cannot refer to a {target_table} record")
    return f"{navigation}@odata.bind", bind_path(target_table, record_id)
