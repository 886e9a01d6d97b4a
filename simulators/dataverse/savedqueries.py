"""The organization's default Outlook synchronization filter templates, as savedquery rows.

- savedquery / userquery ``querytype`` values: SavedQueryQueryType / UserQueryQueryType
  (learn.microsoft.com/dotnet/api/microsoft.crm.sdk.savedqueryquerytype): 0 MainApplicationView,
  16 OfflineFilters, 256 OutlookFilters ("A filter for Dynamics 365 for Outlook"), 131072
  OutlookTemplate ("A template for Dynamics 365 for Outlook").
- A user's own Outlook synchronization filters are userquery rows with querytype 256, owned by the
  user (user-owned, so a Basic User reads only their own: userquery privileges at user depth); the
  filters a new user starts with come from the organization's templates
  ("Sample: Create and retrieve Outlook filters", previous-versions/dynamicscrm-2016/developers-guide/
  gg309283; "Choose records to synchronize between Dynamics 365 and Outlook or Exchange",
  learn.microsoft.com/dynamics365/outlook-app/choose-records-synchronize: "My Contacts" - contacts the
  user owns that are active, "My Appointments" - appointments where the user is the organizer or a
  required attendee, "My Tasks" - tasks the user owns).
"""

from __future__ import annotations

from collections.abc import Callable

from simulators.dataverse.store import Store

OUTLOOK_FILTERS = 256
OUTLOOK_TEMPLATE = 131072
# participationtypemask: 5 required attendee, 7 organizer (activityparty.md).
TEMPLATES: tuple[tuple[str, str, str], ...] = (
    (
        "My Contacts",
        "contact",
        '<fetch version="1.0" mapping="logical"><entity name="contact"><attribute name="contactid"/>'
        '<filter type="and"><condition attribute="ownerid" operator="eq-userid"/>'
        '<condition attribute="statecode" operator="eq" value="0"/></filter></entity></fetch>',
    ),
    (
        "My Appointments",
        "appointment",
        '<fetch version="1.0" mapping="logical" distinct="true"><entity name="appointment">'
        '<attribute name="activityid"/><link-entity name="activityparty" from="activityid" to="activityid">'
        '<filter type="and"><condition attribute="partyid" operator="eq-userid"/>'
        '<condition attribute="participationtypemask" operator="in"><value>5</value><value>7</value>'
        "</condition></filter></link-entity></entity></fetch>",
    ),
    (
        "My Tasks",
        "task",
        '<fetch version="1.0" mapping="logical"><entity name="task"><attribute name="activityid"/>'
        '<filter type="and"><condition attribute="ownerid" operator="eq-userid"/></filter></entity></fetch>',
    ),
)


def install(store: Store, identifier: Callable[[str], str]) -> None:
    for name, table, fetch in TEMPLATES:
        store.put(
            "savedquery",
            {
                "savedqueryid": identifier(f"savedquery:{name}"),
                "name": name,
                "returnedtypecode": table,
                "fetchxml": fetch,
                "querytype": OUTLOOK_TEMPLATE,
                "isdefault": True,
                "statecode": 0,
                "statuscode": 1,
                "versionnumber": store.next_version(),
            },
            "savedqueryid",
        )
