"""Outlook contact <-> Dataverse ``contact``.

Follows Dynamics' default Outlook contact mapping: names, up to three email addresses
(``emailaddress1..3``), business / home / mobile phone and business fax (``telephone1``,
``telephone2``, ``mobilephone``, ``fax``), job title, department, the business address as
``address1_*`` and the home address as ``address2_*``, notes as ``description`` and the birthday
as the date-only ``birthdate``. Every column is two-way by default; the name parts make up Outlook's
Full Name, which "What fields can be synchronized with Outlook?" lists as fixed, so their direction
never changes; every other column's may (organization setting, mailbox setting).

Not mapped, on purpose:

- the company name: Dataverse's ``contact.company`` is the *Company Phone* column (the contract
  gives it the ``Phone`` format); the company is the ``parentcustomerid`` lookup to an account,
  which needs a lookup by name and so belongs to the applier;
- ``fullname`` and ``yomifullname``: read-only, computed by Dataverse from the name parts.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from shared.domain.model import Contact, EmailAddress, ItemKind, PhysicalAddress
from shared.sync.fieldmaps.base import CrmValue, FieldMap, FieldMapping, as_text, text, text_column

_NAME_FIELDS: dict[str, Literal["given_name", "middle_name", "surname", "nickname"]] = {
    "firstname": "given_name",
    "middlename": "middle_name",
    "lastname": "surname",
    "nickname": "nickname",
}
_TEXT_FIELDS: dict[
    str,
    Literal[
        "business_phone", "home_phone", "mobile_phone", "business_fax", "job_title", "department", "notes"
    ],
] = {
    "telephone1": "business_phone",
    "telephone2": "home_phone",
    "mobilephone": "mobile_phone",
    "fax": "business_fax",
    "jobtitle": "job_title",
    "department": "department",
    "description": "notes",
}
_ADDRESS_PARTS: dict[str, Literal["street", "city", "state", "postal_code", "country"]] = {
    "line1": "street",
    "city": "city",
    "stateorprovince": "state",
    "postalcode": "postal_code",
    "country": "country",
}
_ADDRESSES: dict[str, Literal["business_address", "home_address"]] = {
    "address1": "business_address",
    "address2": "home_address",
}


def _email(slot: int) -> FieldMapping[Contact]:
    """``emailaddress<slot+1>`` is the Outlook contact's email address number ``slot+1``."""

    def to_crm(contact: Contact) -> CrmValue:
        addresses = contact.email_addresses
        return text(addresses[slot].address) if slot < len(addresses) else None

    def to_outlook(contact: Contact, value: CrmValue) -> Contact:
        slots: list[EmailAddress | None] = [*contact.email_addresses, None, None, None][:3]
        address = as_text(value)
        current = slots[slot]
        if address is None:
            slots[slot] = None
        elif current is None or current.address.lower() != address.lower():
            slots[slot] = EmailAddress(address=address)
        # Outlook keeps a list, not numbered slots: an emptied slot closes up.
        return contact.model_copy(update={"email_addresses": tuple(entry for entry in slots if entry)})

    return FieldMapping(f"emailaddress{slot + 1}", to_crm, to_outlook)


def _address_part(prefix: str, attribute: str, part: str, column_suffix: str) -> FieldMapping[Contact]:
    def to_crm(contact: Contact) -> CrmValue:
        address: PhysicalAddress | None = getattr(contact, attribute)
        return text(getattr(address, part)) if address else None

    def to_outlook(contact: Contact, value: CrmValue) -> Contact:
        address: PhysicalAddress = getattr(contact, attribute) or PhysicalAddress()
        updated = address.model_copy(update={part: as_text(value)})
        empty = updated == PhysicalAddress()
        return contact.model_copy(update={attribute: None if empty else updated})

    return FieldMapping(f"{prefix}_{column_suffix}", to_crm, to_outlook)


def _birthday_to_crm(contact: Contact) -> CrmValue:
    return contact.birthday.isoformat() if contact.birthday else None


def _birthday_to_outlook(contact: Contact, value: CrmValue) -> Contact:
    raw = as_text(value)
    return contact.model_copy(update={"birthday": dt.date.fromisoformat(raw[:10]) if raw else None})


def _mappings() -> tuple[FieldMapping[Contact], ...]:
    mappings = [
        text_column(Contact, column, attribute, fixed=column != "nickname")
        for column, attribute in _NAME_FIELDS.items()
    ]
    mappings += [_email(slot) for slot in range(3)]
    mappings += [text_column(Contact, column, attribute) for column, attribute in _TEXT_FIELDS.items()]
    mappings += [
        _address_part(prefix, attribute, part, suffix)
        for prefix, attribute in _ADDRESSES.items()
        for suffix, part in _ADDRESS_PARTS.items()
    ]
    mappings.append(FieldMapping("birthdate", _birthday_to_crm, _birthday_to_outlook))
    return tuple(mappings)


CONTACT_MAP: FieldMap[Contact] = FieldMap(ItemKind.CONTACT, "contact", _mappings(), blank=Contact)
