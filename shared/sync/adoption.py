"""Adopting records that exist in the CRM before crmsync: migration without a single duplicate.

An organization switching to crmsync already has emails tracked by Server-Side Synchronization or
the App for Outlook, appointments synchronised by them, and contacts. Their ids are not crmsync's
deterministic ids, so an Outlook item with no link whose deterministic record does not exist is
looked up by its natural key first:

- an email by ``messageid`` (the internetMessageId Dynamics stores on tracked mail), adopted only
  when the record's ``sender`` is the message's sender;
- an appointment by ``globalobjectid`` (the iCalUId), adopted only when the record's organizer
  party is the meeting's organizer;
- a contact by its email addresses, adopted only when exactly one contact matches and the
  mailbox's user owns it.

A key is chosen by whoever sent the message or the invitation, so the origin check is what keeps
an outsider reusing a known id from being linked to (and writing into) somebody else's record.
Lookups run a page at a time, as the mailbox's CRM user: what the user may not read is not adopted.

A meeting made in Dynamics reaches its attendees the same way: crmsync creates it in the organizer's
calendar, writes the event's iCalUId to the record's ``globalobjectid`` before the invitations go
out, and an invited synced user's copy (same iCalUId, same organizer) is adopted in every run, not
only in full reads, so it links to that one record. Such a copy is an *attendee copy*
(:func:`attendee_copy`): the organizer owns the meeting, and the planner only follows it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from shared.crm.port import CrmPort
from shared.domain.model import Appointment, Contact, Email, ItemKind, OutlookItem
from shared.store.records import Mailbox
from shared.sync.fieldmaps import crm_record_id, natural_key
from shared.sync.plan import NeutralContent

_ORGANIZER = 7  # activityparty.participationtypemask: Organizer
_KEY_COLUMN = {ItemKind.EMAIL: "messageid", ItemKind.APPOINTMENT: "globalobjectid"}
_TABLE = {ItemKind.EMAIL: "email", ItemKind.APPOINTMENT: "appointment", ItemKind.CONTACT: "contact"}
_CONTACT_EMAILS = ("emailaddress1", "emailaddress2", "emailaddress3")
ADOPTABLE_KINDS = frozenset(_TABLE)


def invitation(item: NeutralContent | None) -> bool:
    """An invitee's copy of somebody else's meeting (Graph ``isOrganizer`` false)."""
    return isinstance(item, Appointment) and not item.is_organizer


def attendee_copy(mailbox_id: str, item: OutlookItem, record_id: uuid.UUID | None) -> bool:
    """An invitation linked (or to be linked) to a record that is not its own deterministic one: a
    meeting made in Dynamics or adopted, whose organizer's copy is the one that writes."""
    content = item.item
    if record_id is None or not isinstance(content, Appointment) or not invitation(content):
        return False
    return record_id != crm_record_id(ItemKind.APPOINTMENT, natural_key(mailbox_id, item.item_id, content))


def _address(value: object) -> str:
    return str(value or "").strip().lower()


def _key_of(item: NeutralContent) -> str | None:
    if isinstance(item, Email):
        return item.internet_message_id
    if isinstance(item, Appointment):
        return item.ical_uid
    return None


def _origin_of(item: NeutralContent) -> str:
    if isinstance(item, Email):
        return _address(item.sender.address if item.sender else None)
    if isinstance(item, Appointment):
        return _address(item.organizer.address if item.organizer else None)
    return ""


async def find_adoptable(
    crm: CrmPort, mailbox: Mailbox, kind: ItemKind, items: Mapping[str, NeutralContent]
) -> dict[str, uuid.UUID]:
    """Outlook item id -> the existing CRM record to link it to, for the items that have one."""
    if kind not in ADOPTABLE_KINDS or not items:
        return {}
    caller = mailbox.crm_caller_object_id
    if kind is ItemKind.CONTACT:
        return await _contacts(crm, mailbox, items)
    keyed = {item_id: key for item_id, item in items.items() if (key := _key_of(item))}
    if not keyed:
        return {}
    table, column = _TABLE[kind], _KEY_COLUMN[kind]
    primary = "activityid"  # emails and appointments are activities
    select = [primary, column] + (["sender"] if kind is ItemKind.EMAIL else [])
    rows = await crm.find_where(table, [column], sorted(set(keyed.values())), select=select, caller=caller)
    by_key: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_key.setdefault(str(row.get(column)), []).append(row)
    origins = (
        await _organizers(crm, caller, [str(r[primary]) for r in rows])
        if kind is ItemKind.APPOINTMENT
        else {str(r[primary]): _address(r.get("sender")) for r in rows}
    )
    adopted: dict[str, uuid.UUID] = {}
    for item_id, key in keyed.items():
        origin = _origin_of(items[item_id])
        matches = [r for r in by_key.get(key, []) if origin and origins.get(str(r[primary])) == origin]
        if len(matches) == 1:
            adopted[item_id] = uuid.UUID(str(matches[0][primary]))
    return adopted


async def _organizers(crm: CrmPort, caller: str, activity_ids: Sequence[str]) -> dict[str, str]:
    """Appointment id -> its organizer party's address (``addressused``)."""
    if not activity_ids:
        return {}
    parties = await crm.find_where(
        "activityparty",
        ["_activityid_value"],
        list(activity_ids),
        select=["_activityid_value", "participationtypemask", "addressused"],
        caller=caller,
    )
    return {
        str(party.get("_activityid_value")): _address(party.get("addressused"))
        for party in parties
        if party.get("participationtypemask") == _ORGANIZER
    }


async def _contacts(
    crm: CrmPort, mailbox: Mailbox, items: Mapping[str, NeutralContent]
) -> dict[str, uuid.UUID]:
    """A contact whose address matches exactly one CRM contact the user owns is that contact."""
    wanted = {
        item_id: _address(item.email_addresses[0].address)
        for item_id, item in items.items()
        if isinstance(item, Contact) and item.email_addresses
    }
    if not wanted:
        return {}
    addresses = sorted(set(wanted.values()))
    rows = await crm.find_where(
        "contact",
        _CONTACT_EMAILS,
        addresses,
        select=["contactid", "_ownerid_value", *_CONTACT_EMAILS],
        caller=mailbox.crm_caller_object_id,
    )
    owned: dict[str, set[str]] = {}
    for row in rows:
        if _address(row.get("_ownerid_value")) != mailbox.crm_user_id.lower():
            continue
        for column in _CONTACT_EMAILS:
            owned.setdefault(_address(row.get(column)), set()).add(str(row["contactid"]))
    adopted: dict[str, uuid.UUID] = {}
    for item_id, address in wanted.items():
        matches = owned.get(address, set())
        if len(matches) == 1:
            adopted[item_id] = uuid.UUID(next(iter(matches)))
    return adopted
