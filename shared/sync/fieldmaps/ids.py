"""Deterministic CRM record ids, so a rerun upserts the record it created instead of a duplicate.

``crm_record_id(kind, natural_key)`` is a UUID version 5 under a fixed crmsync namespace
(RFC 4122 name-based ids: the same name always gives the same id, on any machine). Dataverse
accepts a client-chosen primary key on create and ``PATCH /<entityset>(<id>)`` without
``If-Match`` creates or updates ("Use Upsert to Create or Update a record", learn.microsoft.com
power-apps/developer/data-platform/use-upsert-insert-update-record), so replaying a create is
harmless.

Natural keys: an email's normalised internetMessageId with its sender's address (one CRM email
per message across all mailboxes that hold a copy); an appointment's iCalUId with its organizer's
address (one CRM appointment per meeting across the attendees' mailboxes; Graph gives each
occurrence and exception its own iCalUId); otherwise - and always for contacts and tasks, which
are personal - the mailbox id and the immutable Outlook id.

The origin is part of the key because the other part is chosen by whoever sends the message or
the invitation: an outsider reusing a known internetMessageId or iCalUId must not land on - and
be written into - the record of somebody else's message or meeting.
"""

from __future__ import annotations

import json
import uuid

from shared.domain.model import Appointment, Contact, Email, EmailAddress, ItemKind, Task

CRMSYNC_NAMESPACE = uuid.UUID("6f0c6a52-3c1e-5b8e-9a57-1d2f63c0b7a4")


def crm_record_id(kind: ItemKind, natural_key: str) -> uuid.UUID:
    """The CRM primary key crmsync gives the record of ``kind`` with this natural key."""
    return uuid.uuid5(CRMSYNC_NAMESPACE, f"{kind.value}:{natural_key}")


def series_record_id(natural_key: str) -> uuid.UUID:
    """The ``recurringappointmentmaster`` id of an Outlook series (its master's natural key: the
    series' iCalUId with its organizer), distinct from any appointment's id."""
    return uuid.uuid5(CRMSYNC_NAMESPACE, f"series:{natural_key}")


def normalize_message_id(message_id: str) -> str:
    """``<Local@Domain>`` and ``local@domain`` name the same message: drop the angle brackets and
    surrounding space and lower-case the domain (RFC 5322 msg-id; the local part stays as is)."""
    core = message_id.strip().removeprefix("<").removesuffix(">").strip()
    local, at, domain = core.rpartition("@")
    return f"{local}@{domain.lower()}" if at else core


def natural_key(mailbox_id: str, outlook_id: str, item: Contact | Appointment | Task | Email) -> str:
    """The identity a CRM record is derived from (see the module docstring)."""
    if isinstance(item, Email) and item.internet_message_id:
        return "message:" + normalize_message_id(item.internet_message_id) + _origin(item.sender)
    if isinstance(item, Appointment) and item.ical_uid:
        return "ical:" + item.ical_uid + _origin(item.organizer)
    return "item:" + json.dumps([mailbox_id, outlook_id], separators=(",", ":"))


def _origin(address: EmailAddress | None) -> str:
    """``|<address>`` of a message's sender or a meeting's organizer (empty when unknown)."""
    return "|" + address.address.strip().lower() if address is not None and address.address else ""
