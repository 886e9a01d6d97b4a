"""The admin surface shared by the ``crmsync`` CLI and the admin HTTP API: requests, callers, operations.

Both render the same typed reports (shared.sync.onboarding / status); this module turns them into
JSON, validates what an administrator sends (errors name the field), says who the caller is, and
carries out the operations both offer: resync, enable, disable, change settings, read the audit.
Every operation writes an audit record with the caller as its actor, never an address.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import enum
import json
import re
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.domain.mailbox_settings import MailboxSettings
from shared.store.errors import MailboxNotFound
from shared.store.fingerprint import fingerprint
from shared.store.jobs import JobQueue, JobReason, SyncJob
from shared.store.ports import Store
from shared.store.records import AuditAction, AuditRecord, Mailbox
from shared.sync.field_rules import FixedFieldDirection, check_field_directions
from shared.sync.notes import clear_notes

#: The Entra app role an administrator needs (bicep/ declares it; README "Admin API sign-in").
ADMIN_ROLE = "crmsync.Admin"
_ROLE_CLAIMS = frozenset({"roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"})
_OID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
_ACTOR_UNSAFE = re.compile(r"[^a-z0-9_.\-]+")
#: Settings whose change needs other subscriptions or Outlook folders/categories: remove and add.
SUBSCRIPTION_SETTINGS = ("item_kinds", "track_sent_items", "tracked_folders", "tracked_category")


class OnboardRequest(BaseModel):
    """``POST /api/admin/mailboxes``: which mailbox, which CRM user, optional settings."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    mailbox: Annotated[str, StringConstraints(min_length=1, max_length=320, strip_whitespace=True)]
    crm_user: uuid.UUID = Field(alias="crmUser")
    settings: MailboxSettings | None = None
    take_over: bool = Field(default=False, alias="takeOver")  # from another deployment (README)


class AdminForbidden(PermissionError):
    """The caller is signed in but may not administer crmsync (no ``crmsync.Admin`` role)."""


class SettingsChangeRefused(ValueError):
    """A settings change the running subscriptions cannot follow; the message says what to do."""


class ReleaseBrakeRequest(BaseModel):
    """``POST /api/admin/mailboxes/{mailbox}/release-brake``: the deletes the administrator confirms."""

    model_config = ConfigDict(extra="forbid")

    confirm_deletes: int = Field(ge=0, strict=True)


def to_jsonable(value: Any) -> Any:
    """Reports (dataclasses, enums, datetimes, UUIDs) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


# -- who is calling -------------------------------------------------------------------------------


def actor_name(prefix: str, name: str | None) -> str:
    """An audit actor (``^[a-z][a-z0-9_.:-]{0,63}$``): ``prefix:name`` cleaned, or ``prefix`` alone."""
    cleaned = _ACTOR_UNSAFE.sub("-", (name or "").lower()).strip("-")[: 63 - len(prefix) - 1]
    return f"{prefix}:{cleaned}" if cleaned else prefix


def http_actor(principal: str | None, principal_name: str | None, principal_id: str | None = None) -> str:
    """The audit actor of an admin HTTP request, from App Service authentication's headers.

    With App Service authentication (bicep/ ``authsettingsV2``, sign-in required) the front end
    signs the caller in with Entra ID and adds ``X-MS-CLIENT-PRINCIPAL`` (Base64 JSON: ``auth_typ``,
    ``claims`` [{typ, val}], ``name_typ``, ``role_typ``), ``X-MS-CLIENT-PRINCIPAL-NAME`` and
    ``X-MS-CLIENT-PRINCIPAL-ID`` (learn.microsoft.com, "Work with user identities in Azure App
    Service authentication"); the front end strips these headers from what a client sends. When the
    principal is present it must carry the ``crmsync.Admin`` app role (:class:`AdminForbidden`
    otherwise, also for an unreadable header). The actor is ``entra:<object id>``; a name (a UPN,
    an address) is only ever stored hashed. Without the header (function key only, e.g. the local
    runner) the actor is ``function-key``.
    """
    if principal is None:
        return "function-key"
    try:
        decoded = json.loads(base64.b64decode(principal, validate=False))
        claims = [(str(c["typ"]), str(c["val"])) for c in decoded.get("claims") or []]
        role_type = str(decoded.get("role_typ") or "roles")
    except (binascii.Error, ValueError, TypeError, KeyError, AttributeError):
        raise AdminForbidden("the client principal header is unreadable") from None
    roles = {value for kind, value in claims if kind in _ROLE_CLAIMS or kind == role_type}
    if ADMIN_ROLE not in roles:
        raise AdminForbidden(f"the signed-in caller lacks the {ADMIN_ROLE} app role")
    object_id = next((value for kind, value in claims if kind in _OID_CLAIMS), principal_id)
    try:
        return f"entra:{uuid.UUID(object_id or '')}"
    except ValueError:
        name = principal_name or object_id or "unknown"
        return f"entra:{fingerprint(name)[:16]}"


# -- mailboxes ------------------------------------------------------------------------------------


async def resolve_mailbox(store: Store, mailbox: str) -> Mailbox:
    """A registered mailbox by its id or (case-insensitively) its UPN; ``MailboxNotFound`` otherwise."""
    try:
        return await store.registry.get_mailbox(mailbox)
    except (MailboxNotFound, ValueError):
        pass
    wanted = mailbox.strip().lower()
    async for registered in store.registry.list_mailboxes():
        if registered.upn.lower() == wanted:
            return registered
    raise MailboxNotFound(mailbox)


async def audited_mailbox_id(store: Store, mailbox: str) -> str:
    """The mailbox id whose audit trail to read: a registered mailbox's (id or UPN), or, since the
    trail outlives the registration, an id given as such (who removed a mailbox stays answerable)."""
    try:
        return (await resolve_mailbox(store, mailbox)).mailbox_id
    except MailboxNotFound:
        if "@" in mailbox or not mailbox.strip():
            raise
        return mailbox.strip()


def mailbox_summary(mailbox: Mailbox) -> dict[str, Any]:
    return {
        "mailbox_id": mailbox.mailbox_id,
        "upn": mailbox.upn,
        "crm_user_id": mailbox.crm_user_id,
        "enabled": mailbox.enabled,
        "state": mailbox.state.value,
    }


async def _audit(store: Store, mailbox_id: str, action: AuditAction, actor: str) -> None:
    await store.audit.append(AuditRecord(mailbox_id=mailbox_id, actor=actor, action=action))


async def _enqueue_all(store: Store, jobs: JobQueue, mailbox_id: str, reason: JobReason) -> int:
    """Mark every subscribed resource dirty and enqueue a job for each, whether or not it was dirty
    already: a dirty flag whose job was lost must not make a resync a no-op."""
    resources = sorted({r.resource async for r in store.subscriptions.list_for_mailbox(mailbox_id)})
    for resource in resources:
        await store.sync_state.mark_dirty(mailbox_id, resource)
        await jobs.enqueue(SyncJob(mailbox_id=mailbox_id, resource=resource, reason=reason))
    return len(resources)


async def enqueue_mailbox_resync(
    store: Store, jobs: JobQueue, mailbox_id: str, *, actor: str = "crmsync"
) -> int:
    """Recovery: forget every delta link of the mailbox and enqueue a full resync of each resource.

    The full resync compares against the link map, so unchanged linked items are not rewritten
    and nothing is duplicated; it repairs whatever a lost notification or a bad run left behind.
    The worker runs the jobs; this only enqueues them (returns how many).
    """
    await store.registry.get_mailbox(mailbox_id)  # MailboxNotFound for an unknown mailbox
    async for record in store.subscriptions.list_for_mailbox(mailbox_id):
        await store.sync_state.reset(mailbox_id, record.resource)
    await clear_notes(store.sync_state, mailbox_id)
    enqueued = await _enqueue_all(store, jobs, mailbox_id, JobReason.RESYNC)
    await _audit(store, mailbox_id, AuditAction.RESYNC, actor)
    return enqueued


async def set_mailbox_enabled(
    store: Store, jobs: JobQueue, mailbox_id: str, enabled: bool, *, actor: str
) -> Mailbox:
    """The administrator's switch. Disabled: notifications still mark resources dirty and the
    subscriptions are renewed, but runs stop before reading. Enabled again: a delta run of every
    resource catches up from the stored delta links (nothing is lost while disabled)."""
    mailbox = await store.registry.get_mailbox(mailbox_id)
    if mailbox.enabled != enabled:
        await store.registry.set_enabled(mailbox_id, enabled)
        await _audit(store, mailbox_id, AuditAction.ENABLED if enabled else AuditAction.DISABLED, actor)
    if enabled:
        await _enqueue_all(store, jobs, mailbox_id, JobReason.MANUAL)
    return await store.registry.get_mailbox(mailbox_id)


async def change_mailbox_settings(
    store: Store, jobs: JobQueue, mailbox_id: str, settings: MailboxSettings, *, actor: str
) -> Mailbox:
    """Replace the mailbox's settings (field directions, filters, tracking rule, tie-break...).

    A change of what is subscribed (item kinds, Sent Items, tracked folders, the tracked category)
    is refused with :class:`SettingsChangeRefused`: it needs new subscriptions and Outlook folders,
    which ``mailbox remove`` + ``mailbox add`` set up (links are kept, nothing is duplicated).
    The next run of each resource applies the new settings; one is enqueued now.
    """
    try:
        check_field_directions(settings)
    except FixedFieldDirection as refused:
        raise SettingsChangeRefused(str(refused)) from None
    mailbox = await store.registry.get_mailbox(mailbox_id)
    changed = [
        name for name in SUBSCRIPTION_SETTINGS if getattr(mailbox.settings, name) != getattr(settings, name)
    ]
    if changed:
        raise SettingsChangeRefused(
            f"changing {', '.join(changed)} needs other subscriptions: remove the mailbox and add it "
            "again with the new settings (CRM records and links are kept, nothing is duplicated)"
        )
    if settings == mailbox.settings:
        return mailbox
    updated = await store.registry.update_settings(mailbox, settings)
    await _audit(store, mailbox_id, AuditAction.SETTINGS_CHANGED, actor)
    await _enqueue_all(store, jobs, mailbox_id, JobReason.MANUAL)
    return updated


# -- the audit trail ------------------------------------------------------------------------------

#: The most records one read returns (newest first); ``--since`` narrows further.
AUDIT_READ_LIMIT = 5000


async def read_audit(
    store: Store,
    mailbox_id: str,
    *,
    since: dt.datetime | None = None,
    item: str | None = None,
    limit: int = AUDIT_READ_LIMIT,
) -> list[AuditRecord]:
    """The mailbox's audit records, newest first: at or after ``since``, about ``item`` (an Outlook
    or CRM id, compared by its SHA-256 the way :meth:`AuditRecord.for_item` stores it)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    wanted = fingerprint(item) if item else None
    records = await store.audit.list_recent(mailbox_id, limit=limit)
    return [
        record
        for record in records
        if (since is None or record.at >= since)
        and (wanted is None or wanted in (record.outlook_id_hash, record.crm_id_hash))
    ]


def parse_since(text: str) -> dt.datetime:
    """An ISO 8601 date or date-time (UTC when it names no offset); ``ValueError`` otherwise."""
    value = dt.datetime.fromisoformat(text.strip())
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
