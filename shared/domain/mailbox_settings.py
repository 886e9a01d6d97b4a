"""Per-mailbox synchronization settings: what Dynamics' personal options and Outlook sync settings held.

The registry stores one :class:`MailboxSettings` per mailbox (as JSON). The model is
frozen and strict (``extra="forbid"``): an admin typo or an out-of-range value is a
clear validation error when the settings are written, never a silent default that
syncs the wrong things.

Concepts follow the product documentation crmsync replaces (learn.microsoft.com,
"Outlook synchronization filters" / "Choose the fields to synchronize between Dynamics 365
and Outlook" / "Set personal options: Email tab" (automatic tracking)): CRM -> Outlook is
governed by synchronization filters, Outlook -> CRM by tracking, and each field has a
sync direction.
"""

from __future__ import annotations

import enum
import re
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.domain.fetchxml import InvalidFetchXml, parse_fetch
from shared.domain.model import FieldDirection, ItemKind, TrackingRule

#: A Dataverse logical name (table or column): lowercase, starts with a letter.
LogicalName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,99}$")]

#: The registry stores settings as one JSON string property (64 KiB = 32 K UTF-16 characters).
MAX_JSON_CHARS = 30_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TOKEN_PREFIX = re.compile(r"[A-Za-z0-9:#\-]+")


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CrmRecordRef(_Settings):
    """A CRM record: table logical name + GUID (e.g. the account a tracked folder sets "regarding")."""

    table: LogicalName
    id: uuid.UUID


class TieBreak(enum.StrEnum):
    """Which side wins when both changed the same two-way field since the last sync."""

    CRM = "crm"
    OUTLOOK = "outlook"


class OutlookDeletePolicy(enum.StrEnum):
    """What deleting (or untracking) an item in Outlook does to its CRM copy.

    ``delete_if_owner`` is Dynamics' rule: the CRM record is deleted only if the user
    owns it, otherwise just unlinked. ``unlink`` never deletes CRM data.
    """

    DELETE_IF_OWNER = "delete_if_owner"
    UNLINK = "unlink"


_FILTERABLE_KINDS = frozenset({ItemKind.CONTACT, ItemKind.APPOINTMENT, ItemKind.TASK})
#: A FetchXML query ("Query data using FetchXml"); userquery.fetchxml is as long.
FetchXml = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


class MailboxSettings(_Settings):
    """Everything a mailbox's sync can be tuned with; the defaults are Dynamics' defaults."""

    item_kinds: frozenset[ItemKind] = Field(default=frozenset(ItemKind), min_length=1)
    tracking: TrackingRule = TrackingRule.NONE
    track_sent_items: bool = False
    tracked_category: str = Field(default="Tracked to Dynamics 365", min_length=1, max_length=255)
    tracked_folders: dict[Annotated[str, StringConstraints(min_length=1, max_length=512)], CrmRecordRef] = (
        Field(default_factory=dict, max_length=100)
    )
    #: FetchXML that replaces the user's Outlook filters (userquery) for a kind (shared/sync/crm_filter.py).
    sync_filters: dict[ItemKind, FetchXml] = Field(default_factory=dict)
    field_directions: dict[ItemKind, dict[LogicalName, FieldDirection]] = Field(default_factory=dict)
    conflict_tie_break: TieBreak = TieBreak.CRM
    outlook_delete_policy: OutlookDeletePolicy = OutlookDeletePolicy.DELETE_IF_OWNER
    # --- email tracking (shared/sync/tracking/README.md) --------------------------------------
    #: Replies and forwards of tracked mail (same conversation, or the tracking token) are tracked.
    track_correlated: bool = True
    #: Dynamics' tracking-token prefix (e.g. "CRM:"): "CRM:0001234" in a subject correlates mail.
    tracking_token_prefix: str | None = Field(default=None, min_length=1, max_length=20)
    #: Attachments larger than this are recorded as skipped on the CRM email (Dynamics' 5 MB default).
    max_attachment_bytes: int = Field(default=5 * 1024 * 1024, ge=0, le=128 * 1024 * 1024)
    #: Create a CRM contact for a tracked email's sender that resolves to no CRM record.
    create_contact_for_unknown_sender: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> MailboxSettings:
        problems: list[str] = []
        if _CONTROL.search(self.tracked_category):
            problems.append("tracked_category: control characters are not allowed")
        if self.tracking_token_prefix is not None and not _TOKEN_PREFIX.fullmatch(self.tracking_token_prefix):
            problems.append("tracking_token_prefix: letters, digits and ':' '-' '#' only")
        email_off = ItemKind.EMAIL not in self.item_kinds
        if email_off and (
            self.tracking is not TrackingRule.NONE or self.track_sent_items or self.tracked_folders
        ):
            problems.append(
                "tracking, track_sent_items and tracked_folders need the 'email' item kind enabled"
            )
        unfilterable = set(self.sync_filters) - _FILTERABLE_KINDS
        if unfilterable:
            problems.append(
                "sync_filters: only contact, appointment and task have synchronization filters "
                f"(got {sorted(kind.value for kind in unfilterable)})"
            )
        for kind, fetch_xml in self.sync_filters.items():
            if kind in _FILTERABLE_KINDS:
                try:
                    parse_fetch(fetch_xml, kind.value)
                except InvalidFetchXml as error:
                    problems.append(f"sync_filters[{kind.value}]: {error}")
        if not problems and len(self.model_dump_json()) > MAX_JSON_CHARS:
            problems.append(
                f"settings are larger than {MAX_JSON_CHARS} characters of JSON; track fewer folders"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def filter_for(self, kind: ItemKind) -> str | None:
        """The FetchXML replacing the user's synchronization filters for ``kind``, if the mailbox sets one."""
        return self.sync_filters.get(kind)

    def direction_override(self, kind: ItemKind, column: str) -> FieldDirection | None:
        """The user's direction for ``column`` of ``kind``, or ``None`` to use the field map's default."""
        return self.field_directions.get(kind, {}).get(column)
