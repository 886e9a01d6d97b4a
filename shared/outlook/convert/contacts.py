"""Contacts: Graph ``contact`` <-> the neutral :class:`~shared.domain.model.Contact`."""

from __future__ import annotations

import datetime as dt

from msgraph.generated.models.contact import Contact as GraphContact
from msgraph.generated.models.physical_address import PhysicalAddress as GraphPhysicalAddress

from shared.domain.model import Contact, ItemKind, OutlookItem, PhysicalAddress
from shared.outlook.convert.common import (
    email_addresses_of,
    first,
    graph_address,
    is_removed,
    item_envelope,
    removed_item,
)


def _physical(address: GraphPhysicalAddress | None) -> PhysicalAddress | None:
    if address is None:
        return None
    fields = {
        "street": address.street or None,
        "city": address.city or None,
        "state": address.state or None,
        "postal_code": address.postal_code or None,
        "country": address.country_or_region or None,
    }
    return PhysicalAddress(**fields) if any(fields.values()) else None


def contact_from_graph(contact: GraphContact) -> Contact:
    return Contact(
        given_name=contact.given_name,
        middle_name=contact.middle_name,
        surname=contact.surname,
        display_name=contact.display_name,
        nickname=contact.nick_name,
        email_addresses=email_addresses_of(contact.email_addresses)[:3],
        business_phone=first(contact.business_phones),
        home_phone=first(contact.home_phones),
        mobile_phone=contact.mobile_phone or None,
        job_title=contact.job_title,
        department=contact.department,
        company_name=contact.company_name,
        business_address=_physical(contact.business_address),
        home_address=_physical(contact.home_address),
        birthday=contact.birthday.astimezone(dt.UTC).date() if contact.birthday else None,
        notes=contact.personal_notes or None,
    )


def contact_item(mailbox_id: str, contact: GraphContact) -> OutlookItem:
    if is_removed(contact):
        return removed_item(mailbox_id, contact, ItemKind.CONTACT)
    return OutlookItem(
        **item_envelope(mailbox_id, contact, ItemKind.CONTACT), item=contact_from_graph(contact)
    )


def _graph_physical(address: PhysicalAddress | None) -> GraphPhysicalAddress | None:
    if address is None:
        return None
    return GraphPhysicalAddress(
        street=address.street,
        city=address.city,
        state=address.state,
        postal_code=address.postal_code,
        country_or_region=address.country,
    )


# Contact properties written as JSON null when the neutral value is None, so an update clears them
# (kiota leaves ``None`` attributes out of the body, which would keep the old Outlook value).
_CONTACT_NULLABLE = {
    "given_name": "givenName",
    "middle_name": "middleName",
    "surname": "surname",
    "nickname": "nickName",
    "mobile_phone": "mobilePhone",
    "job_title": "jobTitle",
    "department": "department",
    "company_name": "companyName",
    "notes": "personalNotes",
    "birthday": "birthday",
}


def contact_to_graph(contact: Contact) -> GraphContact:
    """A complete Graph contact body for create/update: absent values clear the Outlook value.

    Graph has no fax field: ``business_fax`` stays in the CRM. ``displayName`` is left to Exchange
    when the CRM has none (Exchange composes it from the name parts).
    """
    graph = GraphContact(
        given_name=contact.given_name,
        middle_name=contact.middle_name,
        surname=contact.surname,
        display_name=contact.display_name,
        nick_name=contact.nickname,
        email_addresses=[graph_address(address) for address in contact.email_addresses],
        business_phones=[contact.business_phone] if contact.business_phone else [],
        home_phones=[contact.home_phone] if contact.home_phone else [],
        mobile_phone=contact.mobile_phone,
        job_title=contact.job_title,
        department=contact.department,
        company_name=contact.company_name,
        business_address=_graph_physical(contact.business_address) or GraphPhysicalAddress(),
        home_address=_graph_physical(contact.home_address) or GraphPhysicalAddress(),
        # Outlook stores birthdays at 11:59 UTC so that no time zone moves them to another day.
        birthday=(
            dt.datetime.combine(contact.birthday, dt.time(11, 59), tzinfo=dt.UTC)
            if contact.birthday
            else None
        ),
        personal_notes=contact.notes,
    )
    graph.additional_data.update(
        {name: None for field, name in _CONTACT_NULLABLE.items() if getattr(contact, field) is None}
    )
    return graph
