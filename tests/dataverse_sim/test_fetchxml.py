"""FetchXML queries, refused query options, Outlook filters and table definitions.

Docs: "Query data using FetchXml" (fetchxml/overview, filter-rows, join-tables, reference/operators);
"Query table definitions using the Web API"; "Include formatted values"; SavedQueryQueryType.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from simulators.dataverse.launcher import DataverseSimulator


def _user(dataverse_sim: DataverseSimulator, roles: list[str]) -> dict[str, Any]:
    return dataverse_sim.add_user(roles=roles, fullname=f"U {uuid.uuid4().hex[:6]}")


def _as(user: dict[str, Any]) -> dict[str, str]:
    return {"CallerObjectId": user["azureactivedirectoryobjectid"]}


def _fetch(api: httpx.Client, entity_set: str, xml: str, **headers: str) -> httpx.Response:
    return api.get(entity_set, params={"fetchXml": xml}, headers=headers)


@pytest.mark.parametrize(
    "query",
    [
        {"sql": "SELECT * FROM contact"},
        {"$apply": "groupby((lastname))"},
        {"$skip": "1"},
    ],
)
def test_a_query_option_the_service_does_not_implement_is_refused(
    dataverse_sim: DataverseSimulator, api: httpx.Client, query: dict[str, str]
) -> None:
    """Never 200 with every row and column for an option that was not applied."""
    dataverse_sim.seed("contact", [{"lastname": "Anyone"}])
    response = api.get("contacts", params=query)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "0x80060888"
    assert next(iter(query)) in response.json()["error"]["message"]


def test_fetchxml_filters_select_and_order(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """attribute, filter and/or nested, eq/ne/null/not-null/in/like, order, top."""
    tag = uuid.uuid4().hex
    dataverse_sim.seed(
        "contact",
        [
            {"firstname": "Ann", "lastname": tag, "address1_city": "Oslo", "numberofchildren": 1},
            {"firstname": "Bob", "lastname": tag, "address1_city": "Bergen", "numberofchildren": 2},
            {"firstname": "Cid", "lastname": tag, "numberofchildren": 3},
        ],
    )

    def names(condition: str, **fetch: str) -> list[str]:
        extra = "".join(f' {k}="{v}"' for k, v in fetch.items())
        xml = (
            f'<fetch{extra}><entity name="contact"><attribute name="firstname"/>'
            f'<order attribute="firstname" descending="true"/>'
            f'<filter><condition attribute="lastname" operator="eq" value="{tag}"/>{condition}</filter>'
            "</entity></fetch>"
        )
        response = _fetch(api, "contacts", xml)
        assert response.status_code == 200, response.text
        rows = response.json()["value"]
        assert all(set(row) == {"@odata.etag", "firstname", "contactid"} for row in rows)
        return [row["firstname"] for row in rows]

    assert names("") == ["Cid", "Bob", "Ann"]
    assert names('<condition attribute="address1_city" operator="eq" value="oslo"/>') == ["Ann"]
    assert names('<condition attribute="address1_city" operator="ne" value="Oslo"/>') == ["Bob"]
    assert names('<condition attribute="address1_city" operator="null"/>') == ["Cid"]
    assert names('<condition attribute="address1_city" operator="not-null"/>') == ["Bob", "Ann"]
    assert names('<condition attribute="address1_city" operator="like" value="%ER%"/>') == ["Bob"]
    in_values = (
        '<condition attribute="numberofchildren" operator="in"><value>1</value><value>3</value></condition>'
    )
    assert names(in_values) == ["Cid", "Ann"]
    nested = (
        '<filter type="or"><condition attribute="numberofchildren" operator="eq" value="3"/>'
        '<filter type="and"><condition attribute="address1_city" operator="eq" value="Bergen"/>'
        '<condition attribute="numberofchildren" operator="eq" value="2"/></filter></filter>'
    )
    assert names(nested) == ["Cid", "Bob"]
    assert names("", top="1") == ["Cid"]


def test_fetchxml_dates_and_the_calling_user(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """eq-userid / ne-userid are the impersonated user; on-or-after / on-or-before compare dates."""
    me = _user(dataverse_sim, ["Salesperson"])
    other = _user(dataverse_sim, ["Salesperson"])
    tag = uuid.uuid4().hex
    dataverse_sim.seed(
        "task",
        [
            {
                "subject": f"{tag} mine",
                "scheduledend": "2026-03-01T10:00:00Z",
                "ownerid@odata.bind": f"/systemusers({me['systemuserid']})",
            },
            {
                "subject": f"{tag} theirs",
                "scheduledend": "2026-03-02T23:00:00Z",
                "ownerid@odata.bind": f"/systemusers({other['systemuserid']})",
            },
        ],
    )

    def subjects(condition: str, caller: dict[str, Any] | None) -> list[str]:
        xml = (
            '<fetch><entity name="task"><attribute name="subject"/><order attribute="subject"/><filter>'
            f'<condition attribute="subject" operator="like" value="{tag}%"/>{condition}'
            "</filter></entity></fetch>"
        )
        response = _fetch(api, "tasks", xml, **(_as(caller) if caller else {}))
        assert response.status_code == 200, response.text
        return [row["subject"].split()[1] for row in response.json()["value"]]

    assert subjects('<condition attribute="ownerid" operator="eq-userid"/>', me) == ["mine"]
    assert subjects('<condition attribute="ownerid" operator="ne-userid"/>', None) == ["mine", "theirs"]
    # A Salesperson reads only their own tasks: the query runs under the caller's privileges.
    assert subjects("", other) == ["theirs"]
    after = '<condition attribute="scheduledend" operator="on-or-after" value="2026-03-02"/>'
    before = '<condition attribute="scheduledend" operator="on-or-before" value="2026-03-01"/>'
    assert subjects(after, None) == ["theirs"]
    assert subjects(before, None) == ["mine"]


def test_fetchxml_link_entity_to_activityparty(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """link-entity inner with its own filter (organizer or required attendee) and linked attributes."""
    me = _user(dataverse_sim, ["Salesperson"])
    tag = uuid.uuid4().hex
    bind = f"/systemusers({me['systemuserid']})"
    ids = dataverse_sim.seed(
        "appointment",
        [
            {
                "subject": f"{tag} organized",
                "ownerid@odata.bind": bind,
                "appointment_activity_parties": [
                    {"participationtypemask": 7, "partyid_systemuser@odata.bind": bind}
                ],
            },
            {
                "subject": f"{tag} required",
                "ownerid@odata.bind": bind,
                "appointment_activity_parties": [
                    {"participationtypemask": 5, "partyid_systemuser@odata.bind": bind}
                ],
            },
            {
                "subject": f"{tag} optional",
                "ownerid@odata.bind": bind,
                "appointment_activity_parties": [
                    {"participationtypemask": 6, "partyid_systemuser@odata.bind": bind}
                ],
            },
        ],
    )
    xml = (
        '<fetch><entity name="appointment"><attribute name="subject"/><order attribute="subject"/>'
        f'<filter><condition attribute="subject" operator="like" value="{tag}%"/></filter>'
        '<link-entity name="activityparty" from="activityid" to="activityid" alias="me" link-type="inner">'
        '<attribute name="participationtypemask"/><filter>'
        '<condition attribute="partyid" operator="eq-userid"/>'
        '<condition attribute="participationtypemask" operator="in">'
        "<value>5</value><value>7</value></condition>"
        "</filter></link-entity></entity></fetch>"
    )
    response = _fetch(api, "appointments", xml, **_as(me))
    assert response.status_code == 200, response.text
    rows = response.json()["value"]
    assert [(r["subject"].split()[1], r["me.participationtypemask"]) for r in rows] == [
        ("organized", 7),
        ("required", 5),
    ]
    assert {r["activityid"] for r in rows} == set(ids[:2])
    outer = xml.replace('link-type="inner"', 'link-type="outer"')
    response = _fetch(api, "appointments", outer, **_as(me))
    assert [r["subject"].split()[1] for r in response.json()["value"]] == [
        "optional",
        "organized",
        "required",
    ]


@pytest.mark.parametrize(
    ("xml", "code"),
    [
        ("<fetch><entity name='contact'>", "0x80040201"),
        ("<fetch><attribute name='x'/></fetch>", "0x80041102"),
        ("<fetch><entity name='account'/></fetch>", "0x80040203"),
        (
            "<fetch><entity name='contact'><filter><condition attribute='lastname' operator='sounds-like' "
            "value='x'/></filter></entity></fetch>",
            "0x80040203",
        ),
        ("<fetch><entity name='contact'><attribute name='nosuch'/></entity></fetch>", "0x80060888"),
    ],
)
def test_malformed_fetchxml_is_a_400(api: httpx.Client, xml: str, code: str) -> None:
    response = _fetch(api, "contacts", xml)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_fetchxml_takes_no_other_query_option(api: httpx.Client) -> None:
    response = api.get(
        "contacts", params={"fetchXml": "<fetch><entity name='contact'/></fetch>", "$top": "1"}
    )
    assert response.status_code == 400


def test_userquery_outlook_filters_are_readable_only_by_their_owner(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """userquery is user-owned: a Basic User / Salesperson reads only their own filters."""
    alice = _user(dataverse_sim, ["Salesperson"])
    bob = _user(dataverse_sim, ["Salesperson"])
    fetch = "<fetch><entity name='contact'><attribute name='contactid'/></entity></fetch>"
    created = api.post(
        "userqueries",
        json={"name": "Oslo contacts", "returnedtypecode": "contact", "fetchxml": fetch, "querytype": 256},
        headers={**_as(alice), "Prefer": "return=representation"},
    )
    assert created.status_code == 201, created.text
    row = created.json()
    assert row["_ownerid_value"] == alice["systemuserid"]
    assert (row["statecode"], row["statuscode"]) == (0, 1)
    query = {"$filter": "querytype eq 256", "$select": "name"}
    mine = api.get("userqueries", params=query, headers=_as(alice)).json()["value"]
    assert [r["name"] for r in mine] == ["Oslo contacts"]
    assert api.get("userqueries", params=query, headers=_as(bob)).json()["value"] == []
    denied = api.get(f"userqueries({row['userqueryid']})", headers=_as(bob))
    assert denied.status_code == 403
    disabled = api.patch(f"userqueries({row['userqueryid']})", json={"statecode": 1}, headers=_as(alice))
    assert disabled.status_code == 204
    assert api.get(f"userqueries({row['userqueryid']})?$select=statuscode").json()["statuscode"] == 2


def test_the_default_outlook_filter_templates_are_savedqueries(api: httpx.Client) -> None:
    rows = api.get(
        "savedqueries", params={"$filter": "querytype eq 131072", "$select": "name,returnedtypecode,fetchxml"}
    ).json()["value"]
    by_name = {row["name"]: row for row in rows}
    assert {"My Contacts", "My Appointments", "My Tasks"} <= set(by_name)
    assert by_name["My Contacts"]["returnedtypecode"] == "contact"
    assert _fetch(api, "contacts", by_name["My Contacts"]["fetchxml"]).status_code == 200


def test_entity_definitions(api: httpx.Client) -> None:
    """ "Query table definitions using the Web API": by $filter, by key, picklists with their options."""
    found = api.get(
        "EntityDefinitions",
        params={
            "$select": "LogicalName,EntitySetName,PrimaryIdAttribute",
            "$filter": "LogicalName eq 'contact'",
        },
    )
    assert found.status_code == 200, found.text
    [definition] = found.json()["value"]
    assert definition["EntitySetName"] == "contacts"
    assert definition["PrimaryIdAttribute"] == "contactid"
    assert "PrimaryNameAttribute" not in definition
    one = api.get("EntityDefinitions(LogicalName='contact')").json()
    assert one["MetadataId"] == definition["MetadataId"]
    assert api.get(f"EntityDefinitions({one['MetadataId']})").json()["LogicalName"] == "contact"
    picklists = api.get(
        "EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        params={"$select": "LogicalName", "$expand": "OptionSet"},
    )
    assert picklists.status_code == 200, picklists.text
    by_name = {row["LogicalName"]: row for row in picklists.json()["value"]}
    options = by_name["preferredcontactmethodcode"]["OptionSet"]["Options"]
    assert {o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"] for o in options}[2] == "Email"
    assert "statecode" not in by_name
    assert api.get("EntityDefinitions(LogicalName='nosuch')").status_code == 404
    assert api.get("EntityDefinitions", params={"$filter": "contains(LogicalName,'c')"}).status_code == 400


def test_formatted_values_and_the_entity_id_header_casing(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Prefer odata.include-annotations="*": FormattedValue of choices, lookups, money and dates."""
    created = api.post(
        "contacts",
        json={
            "lastname": "Formatted",
            "preferredcontactmethodcode": 2,
            "creditlimit": 1234.5,
            "birthdate": "1990-04-05",
        },
    )
    assert created.status_code == 204
    raw_names = [name for name, _ in created.headers.raw]
    assert b"OData-EntityId" in raw_names
    contact_id = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    formatted = "@OData.Community.Display.V1.FormattedValue"
    row = api.get(f"contacts({contact_id})", headers={"Prefer": 'odata.include-annotations="*"'}).json()
    assert row[f"preferredcontactmethodcode{formatted}"] == "Email"
    assert row[f"statecode{formatted}"] == "Active"
    assert row[f"creditlimit{formatted}"] == "$1,234.50"
    assert row[f"birthdate{formatted}"] == "4/5/1990"
    assert row[f"_ownerid_value{formatted}"] == "crmsync application"
    assert row["_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "systemuser"
    plain = api.get(f"contacts({contact_id})").json()
    assert not any(key.endswith(formatted) for key in plain)


def test_fetchxml_pages_by_count_and_page(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """ "Page results using FetchXml": count rows per page, page N, morerecords while more follow."""
    tag = uuid.uuid4().hex
    dataverse_sim.seed("contact", [{"firstname": f"P{i}", "lastname": tag} for i in range(5)])

    def page(number: int) -> tuple[list[str], bool]:
        xml = (
            f'<fetch count="2" page="{number}"><entity name="contact"><attribute name="firstname"/>'
            f'<order attribute="firstname"/><filter><condition attribute="lastname" operator="eq" '
            f'value="{tag}"/></filter></entity></fetch>'
        )
        body = _fetch(api, "contacts", xml).json()
        return [row["firstname"] for row in body["value"]], body["@Microsoft.Dynamics.CRM.morerecords"]

    assert page(1) == (["P0", "P1"], True)
    assert page(3) == (["P4"], False)
    both = '<fetch top="1" count="1"><entity name="contact"/></fetch>'
    assert _fetch(api, "contacts", both).status_code == 400
