"""The records the store ports exchange. Plain frozen dataclasses, except where validation guards
privacy (audit records, parked-item messages), which are strict pydantic models.

``etag`` fields hold the storage ETag of the row as read; the conditional operations
(``update``, ``renew``, ``clear_dirty``...) send it back so a concurrent writer is detected.
All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
import enum
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.domain.bases import FieldBase
from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import ItemKind, UtcDatetime
from shared.store.fingerprint import fingerprint


def utc_now() -> dt.datetime:
    """The store's default clock."""
    return dt.datetime.now(dt.UTC)


class MailboxState(enum.StrEnum):
    """Health of a registered mailbox (``enabled`` is the admin's switch; this is what sync observed)."""

    ACTIVE = "active"
    DEGRADED = "degraded"  # poison jobs or repeated failures; shown in status, retried
    DISABLED = "disabled"  # sync stopped by the system (e.g. mailbox or CRM user gone)


@dataclass(frozen=True, slots=True, kw_only=True)
class Mailbox:
    """A registered mailbox and its one CRM user."""

    mailbox_id: str  # Entra user object id of the mailbox owner
    upn: str
    crm_user_id: str  # systemuserid (lower-case GUID)
    crm_caller_object_id: str  # the CRM user's Entra object id, for impersonation
    enabled: bool = True
    state: MailboxState = MailboxState.ACTIVE
    settings: MailboxSettings = field(default_factory=MailboxSettings)
    created_at: dt.datetime
    updated_at: dt.datetime
    etag: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """One Outlook item linked to one CRM record in one mailbox, with what was last synced.

    ``owned_by_user`` and ``field_bases`` are what the planner needs from the last sync: who owns
    the record, and per unit of columns the fingerprints both sides agreed on (three-way merge).
    ``mailbox_id``, ``kind``, ``outlook_id``, ``crm_table`` and ``crm_id`` identify the link:
    ``update`` keeps them (re-key the Outlook side with ``move_outlook_id``; re-point the
    CRM side by ``delete`` + ``create``).
    """

    mailbox_id: str
    kind: ItemKind
    outlook_id: str
    crm_table: str
    crm_id: str
    outlook_change_key: str | None = None
    crm_etag: str | None = None
    outlook_hash: str | None = None
    crm_hash: str | None = None
    owned_by_user: bool = False  # the mailbox's CRM user owns the record (decides deletes)
    field_bases: Mapping[str, FieldBase] = field(default_factory=dict)  # per unit: last synced fingerprints
    # A tombstone: the CRM record was deleted and the delete policy kept the Outlook item, which is no
    # longer synced (a later read of it re-creates nothing); dropped when the item goes too.
    crm_deleted: bool = False
    updated_at: dt.datetime | None = None
    etag: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncState:
    """Where the sync of one (mailbox, resource) stands; the default (nothing stored) is all empty."""

    mailbox_id: str
    resource: str
    delta_link: str | None = None
    window_start: dt.datetime | None = None  # a calendar's calendarView window start, fixed in the link
    last_sync_at: dt.datetime | None = None
    last_error: str | None = None
    dirty: bool = False
    dirty_since: dt.datetime | None = None
    dirty_etag: str | None = None  # pass the state to ``clear_dirty``


@dataclass(frozen=True, slots=True, kw_only=True)
class DirtyMark:
    """A dirty (mailbox, resource), as the sweep timer lists them to enqueue jobs."""

    mailbox_id: str
    resource: str
    dirty_since: dt.datetime
    swept_at: dt.datetime | None = None  # when the sweep last enqueued a job for it (None: never)
    etag: str | None = None  # pass the mark to ``note_swept``


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteLog:
    """Deletes the sync applied lately in one (mailbox, kind) (the mass-delete brake's sliding
    window), and the deletes a tripped brake refused, held until an administrator confirms them."""

    mailbox_id: str
    kind: ItemKind
    recent: tuple[tuple[dt.datetime, int], ...] = ()  # (start of the hour, deletes applied in it)
    refused: int = 0  # > 0: the brake holds this many refused deletes
    etag: str | None = None  # pass the log back to ``put_delete_log``


#: Upper bounds (seconds) of the latency histogram's buckets; one more bucket holds the rest.
LATENCY_BOUNDS_S: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
#: Latencies are kept in slots of ten minutes; a mailbox keeps the last ``LATENCY_SLOTS`` per direction
#: (rows reused in a ring, so the rows of a mailbox never grow), which covers the last hour.
LATENCY_SLOT = dt.timedelta(minutes=10)
LATENCY_SLOTS = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencySlot:
    """How many changes of one mailbox reached the other side within each latency bucket, for the
    changes written in the ten minutes from ``start``; ``direction`` is ``to_crm`` or ``to_outlook``."""

    mailbox_id: str
    direction: str
    start: dt.datetime
    counts: tuple[int, ...]  # one per LATENCY_BOUNDS_S bucket, plus the one beyond the last bound


def latency_ring_position(start: dt.datetime) -> int:
    """Which of a direction's ``LATENCY_SLOTS`` rows holds the slot starting at ``start``."""
    return int((start - _EPOCH) // LATENCY_SLOT) % LATENCY_SLOTS


def latency_slot_start(at: dt.datetime) -> dt.datetime:
    """The start of the ten-minute slot ``at`` falls in."""
    return _EPOCH + ((at - _EPOCH) // LATENCY_SLOT) * LATENCY_SLOT


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """The one synchronizing instance's claim on a mailbox, until ``expires_at``."""

    mailbox_id: str
    owner: str
    expires_at: dt.datetime
    etag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionRecord:
    """A Graph subscription crmsync created; ``client_state_hash`` is SHA-256 hex, never the secret."""

    subscription_id: str
    mailbox_id: str
    resource: str
    client_state_hash: str
    expiration: dt.datetime
    lifecycle: bool = True  # created with a lifecycleNotificationUrl


def lease_expiry(now: dt.datetime, seconds: int) -> dt.datetime:
    """When a lease taken or renewed ``now`` for ``seconds`` ends (refusing non-positive terms)."""
    if seconds <= 0:
        raise ValueError("a lease lasts a positive number of seconds")
    return now + dt.timedelta(seconds=seconds)


def hash_client_state(client_state: str) -> str:
    """SHA-256 hex of a subscription's clientState: what the store keeps instead of the secret."""
    return fingerprint(client_state)


def verify_client_state(record: SubscriptionRecord, presented: str | None) -> bool:
    """Whether a notification's clientState matches the subscription's (constant-time on the hashes)."""
    if presented is None:
        return False
    return hmac.compare_digest(hash_client_state(presented), record.client_state_hash)


# --- privacy-guarded records ---------------------------------------------------------------

_REASON_CODE = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"
ReasonCode = Annotated[str, StringConstraints(pattern=_REASON_CODE)]


def check_reason_code(code: str) -> str:
    """A short machine code (``crm_privilege_denied``): the only kind of "why" the store keeps."""
    if not re.fullmatch(_REASON_CODE, code):
        raise ValueError("a reason code is 1-64 lower-case letters, digits, '_', '.' or '-'")
    return code


_Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
_Identifier = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ItemRef(_Strict):
    """Which item a parked failure is about: an Outlook item, or (CRM -> Outlook) a CRM record."""

    kind: ItemKind
    outlook_id: _Identifier | None = None
    crm_table: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,99}$")] | None = None
    crm_id: _Identifier | None = None

    @model_validator(mode="after")
    def _one_side(self) -> ItemRef:
        has_outlook = self.outlook_id is not None
        has_crm = self.crm_table is not None and self.crm_id is not None
        if has_outlook == has_crm or (not has_crm and (self.crm_table or self.crm_id)):
            raise ValueError("an item reference names either outlook_id, or crm_table and crm_id")
        return self


class ParkedItem(_Strict):
    """An item that failed in a way retrying cannot fix; what to do is in ``message``.

    ``message`` is operator guidance ("grant the user Write on contact"), capped and refused
    if it looks like it carries an address, so bodies and addresses cannot leak into it.
    """

    mailbox_id: _Identifier
    ref: ItemRef
    reason_code: ReasonCode
    message: str = Field(max_length=500, pattern=r"^[^@\x00-\x1f\x7f-\x9f]*$")
    attempts: int = Field(ge=1)
    first_failed_at: UtcDatetime
    last_failed_at: UtcDatetime


class AuditAction(enum.StrEnum):
    REGISTERED = "registered"
    UNREGISTERED = "unregistered"
    ENABLED = "enabled"
    DISABLED = "disabled"
    SETTINGS_CHANGED = "settings_changed"
    STATE_CHANGED = "state_changed"
    CREATED_IN_CRM = "created_in_crm"
    UPDATED_IN_CRM = "updated_in_crm"
    DELETED_IN_CRM = "deleted_in_crm"
    CREATED_IN_OUTLOOK = "created_in_outlook"
    UPDATED_IN_OUTLOOK = "updated_in_outlook"
    DELETED_IN_OUTLOOK = "deleted_in_outlook"
    STAMPED_IN_OUTLOOK = "stamped_in_outlook"
    CATEGORY_REMOVED = "category_removed"
    REGARDING_SET = "regarding_set"
    ATTACHMENTS_COPIED = "attachments_copied"
    CONTACT_CREATED = "contact_created"
    TRACKED = "tracked"  # a message became tracked; the reason code is the rule that tracked it
    UNTRACKED = "untracked"  # a tracked message stopped being tracked; the reason code says why
    CONFLICT = "conflict"
    FIELD_SKIPPED = "field_skipped"
    LINKED = "linked"
    UNLINKED = "unlinked"
    PARKED = "parked"
    UNPARKED = "unparked"
    RESYNC = "resync"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"


class AuditOutcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class AuditRecord(_Strict):
    """Who did what to which item, when, and how it ended; nothing else fits in it.

    Every field is an enum, a timestamp, a SHA-256 or a short code: there is no free-form
    text, so a body or an address cannot be stored. Build item references with
    :meth:`for_item`, which hashes the ids.
    """

    mailbox_id: Annotated[str, StringConstraints(pattern=r"^[^@\s]{1,128}$")]
    actor: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.:\-]{0,63}$")]
    action: AuditAction
    outcome: AuditOutcome = AuditOutcome.OK
    item_kind: ItemKind | None = None
    outlook_id_hash: _Sha256Hex | None = None
    crm_id_hash: _Sha256Hex | None = None
    reason_code: ReasonCode | None = None
    at: UtcDatetime = Field(default_factory=utc_now)

    @classmethod
    def for_item(
        cls,
        *,
        mailbox_id: str,
        actor: str,
        action: AuditAction,
        kind: ItemKind,
        outlook_id: str | None = None,
        crm_id: str | None = None,
        outcome: AuditOutcome = AuditOutcome.OK,
        reason_code: str | None = None,
        at: dt.datetime | None = None,
    ) -> AuditRecord:
        """An audit record about one item; the ids are hashed here, never stored."""
        return cls(
            mailbox_id=mailbox_id,
            actor=actor,
            action=action,
            outcome=outcome,
            item_kind=kind,
            outlook_id_hash=fingerprint(outlook_id) if outlook_id else None,
            crm_id_hash=fingerprint(crm_id) if crm_id else None,
            reason_code=reason_code,
            at=at or utc_now(),
        )
