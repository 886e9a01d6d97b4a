"""Field synchronization mappings (syncattributemapping / syncattributemappingprofile).

The rows transcribe "What fields can be synchronized with Outlook?" (Dynamics 365 Customer
Engagement admin guide, what-fields-synchronized-outlook; learn.microsoft.com/dynamics365/
customerengagement/on-premises/admin/what-fields-synchronized-outlook) for contact, appointment and
task: the Outlook field (``attributeexchangename``), the Dynamics column (``attributecrmname``),
the default direction and whether an administrator may change it ("Settable sync": a field with
all four arrows is settable, a field with none there is fixed). Directions: 0 None, 1 ToExchange,
2 ToCRM, 3 Bidirectional ("Control field synchronization between Dynamics 365 and Outlook").

``allowedsyncdirection`` is the simulator's encoding of "Settable sync" (Microsoft documents the
column as "allowed sync directions" without values): 3 any direction may be chosen, 0 the direction
is fixed; changing a fixed field's ``syncdirection`` is refused (400), as the settings UI offers no
other arrow for it. Checked against the table's published columns (AttributeCRMName,
AttributeExchangeName, SyncDirection / DefaultSyncDirection 0 None, 1 ToExchange, 2 ToCRM, 3
Bidirectional, AllowedSyncDirection, IsComputed, ComputedProperties, MappingName,
ParentSyncAttributeMappingId, SyncAttributeMappingProfileId): none names the table, which Dataverse
keeps as an object type code (``EntityTypeCode``: contact 2, appointment 4201, task 4212) that the
table's Web API rows do not carry. The table of each row is read, as Dynamics' own clients read it,
with ``RetrievePrincipalSyncAttributeMappings`` (a function bound to a systemuser or team;
"RetrievePrincipalSyncAttributeMappings Function" and "AttributeMapping ComplexType",
learn.microsoft.com/previous-versions/dynamicscrm-2016/developers-guide/mt593098 and mt607733):
``AttributeMappings``, each with ``EntityTypeCode``, ``AttributeCrmName``, ``SyncDirection``,
``DefaultSyncDirection``, ``AllowedSyncDirection``, ``IsComputed`` and ``ComputedProperties`` (a
collection). Profiles other than the system one (assigned to users and teams) are not modelled:
every principal gets the system profile's mappings.
Fields the page marks "Computed" (aggregates such as Appointment Time)
carry ``iscomputed`` and the columns they aggregate in ``computedproperties``.
"""

from __future__ import annotations

from collections.abc import Callable

from simulators.dataverse import errors
from simulators.dataverse.store import Ref, Store

ENTITY_TYPE_CODES = {"contact": 2, "appointment": 4201, "task": 4212}
PROFILE_ID = "5b0e1c3a-0a11-4c0e-9a11-0000000d0001"
BOTH, TO_EXCHANGE, TO_CRM, NONE = 3, 1, 2, 0
SETTABLE, FIXED = True, False
FIXED_DIRECTION = 0

# (table, Outlook field, Dynamics column, default direction, settable, computed columns)
MAPPINGS: tuple[tuple[str, str, str, int, bool, str | None], ...] = (
    (
        "appointment",
        "Appointment Time",
        "scheduledstart",
        BOTH,
        FIXED,
        "scheduledstart,scheduledend,scheduleddurationminutes,isalldayevent",
    ),
    ("appointment", "Attachments", "attachments", NONE, FIXED, "attachments"),
    ("appointment", "Body", "description", BOTH, SETTABLE, None),
    ("appointment", "Importance", "prioritycode", BOTH, FIXED, None),
    ("appointment", "Location", "location", BOTH, SETTABLE, None),
    ("appointment", "Optional Attendees", "optionalattendees", BOTH, FIXED, None),
    ("appointment", "Organizer", "organizer", BOTH, FIXED, None),
    ("appointment", "Regarding", "regardingobjectid", BOTH, FIXED, None),
    ("appointment", "Required Attendees", "requiredattendees", BOTH, FIXED, None),
    ("appointment", "Show Time As", "statuscode", BOTH, FIXED, None),
    ("appointment", "Subject", "subject", BOTH, SETTABLE, None),
    ("contact", "Anniversary", "anniversary", BOTH, SETTABLE, None),
    ("contact", "Assistant's Name", "assistantname", BOTH, SETTABLE, None),
    ("contact", "Assistant's Phone", "assistantphone", BOTH, SETTABLE, None),
    ("contact", "Birthday", "birthdate", BOTH, SETTABLE, None),
    ("contact", "Business Fax", "fax", BOTH, SETTABLE, None),
    ("contact", "Business Phone", "telephone1", BOTH, SETTABLE, None),
    ("contact", "Business Phone 2", "business2", BOTH, SETTABLE, None),
    ("contact", "Callback", "callback", BOTH, SETTABLE, None),
    ("contact", "Children", "childrensnames", BOTH, SETTABLE, None),
    ("contact", "Company Main Phone", "company", BOTH, SETTABLE, None),
    ("contact", "Department", "department", BOTH, SETTABLE, None),
    ("contact", "E-mail", "emailaddress1", BOTH, SETTABLE, None),
    ("contact", "E-mail 2", "emailaddress2", BOTH, SETTABLE, None),
    ("contact", "E-mail 3", "emailaddress3", BOTH, SETTABLE, None),
    ("contact", "FTP Site", "ftpsiteurl", BOTH, SETTABLE, None),
    ("contact", "Full Name", "fullname", BOTH, FIXED, "firstname,middlename,lastname"),
    ("contact", "Government ID Number", "governmentid", BOTH, SETTABLE, None),
    (
        "contact",
        "Home Address",
        "address2",
        BOTH,
        SETTABLE,
        "address2_line1,address2_line2,address2_line3,address2_city,address2_stateorprovince,"
        "address2_postalcode,address2_country",
    ),
    ("contact", "Home Phone", "telephone2", BOTH, SETTABLE, None),
    ("contact", "Home Phone 2", "home2", BOTH, SETTABLE, None),
    ("contact", "Job Title", "jobtitle", BOTH, SETTABLE, None),
    (
        "contact",
        "Mailing Address/Business Address",
        "address1",
        BOTH,
        SETTABLE,
        "address1_line1,address1_line2,address1_line3,address1_city,address1_stateorprovince,"
        "address1_postalcode,address1_country",
    ),
    ("contact", "Manager's Name", "managername", BOTH, SETTABLE, None),
    ("contact", "Mobile", "mobilephone", BOTH, SETTABLE, None),
    ("contact", "Nickname", "nickname", BOTH, SETTABLE, None),
    ("contact", "Notes", "description", BOTH, SETTABLE, None),
    (
        "contact",
        "Other Address",
        "address3",
        BOTH,
        SETTABLE,
        "address3_line1,address3_line2,address3_line3,address3_city,address3_stateorprovince,"
        "address3_postalcode,address3_country",
    ),
    ("contact", "Other Phone", "telephone3", BOTH, SETTABLE, None),
    ("contact", "Pager", "pager", BOTH, SETTABLE, None),
    ("contact", "Parent (Regarding)", "parentcustomerid", BOTH, FIXED, None),
    ("contact", "Spouse/Partner", "spousesname", BOTH, SETTABLE, None),
    ("contact", "Web Page", "websiteurl", BOTH, SETTABLE, None),
    ("contact", "Yomi First Name", "yomifirstname", BOTH, SETTABLE, None),
    ("contact", "Yomi Last Name", "yomilastname", BOTH, SETTABLE, None),
    ("task", "% Complete", "percentcomplete", BOTH, SETTABLE, None),
    ("task", "Date Completed", "actualend", BOTH, SETTABLE, None),
    ("task", "Due Date", "scheduledend", BOTH, SETTABLE, None),
    ("task", "Importance", "prioritycode", BOTH, FIXED, None),
    ("task", "Notes", "description", BOTH, SETTABLE, None),
    ("task", "Regarding", "regardingobjectid", BOTH, FIXED, None),
    ("task", "Start Date", "scheduledstart", BOTH, SETTABLE, None),
    ("task", "Status", "statuscode", BOTH, FIXED, None),
    ("task", "Subject", "subject", BOTH, SETTABLE, None),
)


_TABLES: dict[str, str] = {}  # mapping id -> its table (Dataverse's EntityTypeCode, not a Web API column)


def install(store: Store, mapping_id: Callable[[str], str]) -> None:
    """The system profile and its default mappings (ids from ``mapping_id(name)``)."""
    store.put(
        "syncattributemappingprofile",
        {
            "syncattributemappingprofileid": PROFILE_ID,
            "name": "System Default Mapping Profile",
            "description": "Default field synchronization directions between Dynamics and Exchange.",
            "issystem": True,
            "versionnumber": store.next_version(),
        },
        "syncattributemappingprofileid",
    )
    for table, outlook, column, direction, settable, computed in MAPPINGS:
        name = f"{table}.{column}"
        identifier = mapping_id(f"syncattributemapping:{name}")
        _TABLES[identifier] = table
        store.put(
            "syncattributemapping",
            {
                "syncattributemappingid": identifier,
                "mappingname": name,
                "attributeexchangename": outlook,
                "attributecrmname": column,
                "syncdirection": direction,
                "defaultsyncdirection": direction,
                "allowedsyncdirection": BOTH if settable else FIXED_DIRECTION,
                "iscomputed": computed is not None,
                "computedproperties": computed,
                "syncattributemappingprofileid": Ref("syncattributemappingprofile", PROFILE_ID),
                "ismanaged": True,
                "versionnumber": store.next_version(),
            },
            "syncattributemappingid",
        )


def check(existing: dict[str, object] | None, payload: dict[str, object]) -> None:
    """A fixed mapping keeps its direction."""
    if existing is None or "syncdirection" not in payload:
        return
    if existing.get("allowedsyncdirection") == FIXED_DIRECTION and payload["syncdirection"] != existing.get(
        "defaultsyncdirection"
    ):
        raise errors.bad_request(
            f"The synchronization direction of {existing.get('mappingname')} is fixed.",
            errors.VALUE_OUT_OF_RANGE,
        )


def principal_mappings(store: Store) -> list[dict[str, object]]:
    """``RetrievePrincipalSyncAttributeMappings``' ``AttributeMappings`` (AttributeMapping ComplexType)."""
    mappings: list[dict[str, object]] = []
    for row in store.rows["syncattributemapping"].values():
        identifier = str(row["syncattributemappingid"])
        computed = row.get("computedproperties")
        mappings.append(
            {
                "AttributeMappingId": identifier,
                "MappingName": row.get("mappingname"),
                "AttributeCrmName": row.get("attributecrmname"),
                "AttributeExchangeName": row.get("attributeexchangename"),
                "EntityTypeCode": ENTITY_TYPE_CODES[_TABLES[identifier]],
                "SyncDirection": row.get("syncdirection"),
                "DefaultSyncDirection": row.get("defaultsyncdirection"),
                "AllowedSyncDirection": row.get("allowedsyncdirection"),
                "IsComputed": bool(row.get("iscomputed")),
                "ComputedProperties": [c.strip() for c in str(computed).split(",") if c.strip()]
                if computed
                else [],
            }
        )
    return mappings
