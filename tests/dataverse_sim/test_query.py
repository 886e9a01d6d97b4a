"""Query options ("Query data using the Web API"; "Page results"; "Lookup properties")."""

from __future__ import annotations

import json
import uuid

import httpx

from simulators.dataverse.launcher import DataverseSimulator


def _seed_family(dataverse_sim: DataverseSimulator, tag: str, count: int) -> list[str]:
    return dataverse_sim.seed(
        "contact",
        [
            {
                "firstname": f"P{i:02d}",
                "lastname": tag,
                "emailaddress1": f"p{i}.{tag}@example.com",
                "numberofchildren": i,
            }
            for i in range(count)
        ],
    )


def test_select_returns_only_named_columns_plus_id_and_etag(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Query data, "Select columns": $select limits the columns; the primary key and etag always come."""
    tag = uuid.uuid4().hex
    [contact_id] = _seed_family(dataverse_sim, tag, 1)
    row = api.get(f"contacts({contact_id})?$select=firstname").json()
    assert set(row) == {"@odata.context", "@odata.etag", "firstname", "contactid"}
    unknown = api.get(f"contacts({contact_id})?$select=nosuch")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "0x80060888"


def test_filter_operators_and_functions(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Query data, "Filter rows": comparison, logical operators and string functions, case-insensitive."""
    tag = uuid.uuid4().hex
    _seed_family(dataverse_sim, tag, 6)

    def names(condition: str) -> list[str]:
        response = api.get(
            "contacts",
            params={
                "$select": "firstname",
                "$filter": f"lastname eq '{tag}' and ({condition})",
                "$orderby": "firstname",
            },
        )
        assert response.status_code == 200, response.text
        return [row["firstname"] for row in response.json()["value"]]

    assert names("numberofchildren gt 3") == ["P04", "P05"]
    assert names("numberofchildren le 1 or numberofchildren eq 5") == ["P00", "P01", "P05"]
    assert names("numberofchildren ne 0 and numberofchildren lt 2") == ["P01"]
    assert names("not (numberofchildren ge 1)") == ["P00"]
    assert names("startswith(emailaddress1, 'P3.')") == ["P03"]
    assert names(f"contains(emailaddress1, '2.{tag.upper()}')") == ["P02"]
    assert names(f"emailaddress1 eq 'P4.{tag}@EXAMPLE.com'") == ["P04"]


def test_lookup_filter_uses_value_property(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Lookup properties: filter a lookup with _<name>_value eq <guid>."""
    [account_id] = dataverse_sim.seed("account", [{"name": f"Acme {uuid.uuid4()}"}])
    [contact_id] = dataverse_sim.seed(
        "contact", [{"lastname": "Child", "parentcustomerid_account@odata.bind": f"/accounts({account_id})"}]
    )
    rows = api.get(
        f"contacts?$select=_parentcustomerid_value&$filter=_parentcustomerid_value eq {account_id}"
    ).json()["value"]
    assert [(r["contactid"], r["_parentcustomerid_value"]) for r in rows] == [(contact_id, account_id)]


def test_orderby_top_and_count(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Query data: $orderby desc, $top, $count=true."""
    tag = uuid.uuid4().hex
    _seed_family(dataverse_sim, tag, 5)
    body = api.get(
        "contacts",
        params={
            "$select": "firstname",
            "$filter": f"lastname eq '{tag}'",
            "$orderby": "numberofchildren desc",
            "$top": "2",
            "$count": "true",
        },
    ).json()
    assert [row["firstname"] for row in body["value"]] == ["P04", "P03"]
    assert body["@odata.count"] == 2


def test_paging_with_maxpagesize_and_next_link(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Page results: Prefer: odata.maxpagesize=N -> N rows a page and @odata.nextLink until the end."""
    tag = uuid.uuid4().hex
    _seed_family(dataverse_sim, tag, 7)
    seen: list[str] = []
    url: str | None = f"contacts?$select=firstname&$filter=lastname eq '{tag}'"
    pages = 0
    while url:
        response = api.get(url, headers={"Prefer": "odata.maxpagesize=3"})
        assert response.headers["Preference-Applied"] == "odata.maxpagesize=3"
        body = response.json()
        assert len(body["value"]) <= 3
        seen += [row["firstname"] for row in body["value"]]
        url = body.get("@odata.nextLink")
        pages += 1
    assert pages == 3
    assert sorted(seen) == [f"P{i:02d}" for i in range(7)]


def test_top_is_ignored_with_maxpagesize(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Page results, "Don't use the $top query option while paging records": with both, $top is ignored."""
    tag = uuid.uuid4().hex
    _seed_family(dataverse_sim, tag, 5)
    seen: list[str] = []
    url: str | None = f"contacts?$select=firstname&$filter=lastname eq '{tag}'&$top=3"
    while url:
        body = api.get(url, headers={"Prefer": "odata.maxpagesize=2"}).json()
        seen += [row["firstname"] for row in body["value"]]
        url = body.get("@odata.nextLink")
    assert sorted(seen) == [f"P{i:02d}" for i in range(5)]


def test_count_segment_is_a_plain_number(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Count rows using OData: ``<entityset>/$count`` answers just the number as text/plain."""
    tag = uuid.uuid4().hex
    _seed_family(dataverse_sim, tag, 3)
    response = api.get("contacts/$count", params={"$filter": f"lastname eq '{tag}'"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "3"


def test_counts_and_pages_stop_at_5000(private_sim: DataverseSimulator, private_api: httpx.Client) -> None:
    """Count rows using OData: @odata.count goes up to 5,000; totalrecordcount(limitexceeded) tell more."""
    tag = uuid.uuid4().hex
    private_sim.seed("lead", [{"lastname": tag} for _ in range(5001)])
    prefer = {"Prefer": 'odata.maxpagesize=1,odata.include-annotations="Microsoft.Dynamics.CRM.*"'}
    query = {"$select": "lastname", "$filter": f"lastname eq '{tag}'"}
    too_large = private_api.get("leads", params=query, headers={"Prefer": "odata.maxpagesize=6000"})
    assert len(too_large.json()["value"]) == 5000, "Page results: a max page size over 5,000 is ignored"
    assert "Preference-Applied" not in too_large.headers
    counted = private_api.get("leads", params={**query, "$count": "true"}, headers=prefer).json()
    assert counted["@odata.count"] == 5000
    assert counted["@Microsoft.Dynamics.CRM.totalrecordcount"] == 5000
    assert counted["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] is True
    uncounted = private_api.get("leads", params=query, headers=prefer).json()
    assert uncounted["@Microsoft.Dynamics.CRM.totalrecordcount"] == -1
    assert private_api.get("leads/$count", params={"$filter": f"lastname eq '{tag}'"}).text == "5000"


def test_links_keep_the_scheme_a_tls_front_forwards(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Dataverse is reached over https and clients follow @odata.nextLink verbatim: behind a TLS
    terminator on the loopback (``X-Forwarded-Proto: https``, uvicorn's proxy headers) the links the
    simulator writes are https."""
    tag = uuid.uuid4().hex
    _seed_family(dataverse_sim, tag, 2)
    headers = {"Prefer": "odata.maxpagesize=1", "X-Forwarded-Proto": "https"}
    body = api.get(f"contacts?$select=firstname&$filter=lastname eq '{tag}'", headers=headers).json()
    assert body["@odata.nextLink"].startswith("https://")
    assert body["@odata.context"].startswith("https://")
    plain = api.get(
        f"contacts?$select=firstname&$filter=lastname eq '{tag}'", headers={"Prefer": "odata.maxpagesize=1"}
    )
    assert plain.json()["@odata.nextLink"].startswith("http://")


def test_lookup_annotations_name_the_navigation_property_and_table(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Select columns, "Lookup property data": with Prefer: odata.include-annotations naming them,
    ``_x_value@Microsoft.Dynamics.CRM.associatednavigationproperty`` (what $expand takes) and
    ``...lookuplogicalname``; Preference-Applied echoes the preference."""
    [account_id] = dataverse_sim.seed("account", [{"name": f"Acme {uuid.uuid4()}"}])
    [contact_id] = dataverse_sim.seed(
        "contact", [{"lastname": "L", "parentcustomerid_account@odata.bind": f"/accounts({account_id})"}]
    )
    prefer = (
        'odata.include-annotations="Microsoft.Dynamics.CRM.associatednavigationproperty,'
        'Microsoft.Dynamics.CRM.lookuplogicalname"'
    )
    response = api.get(
        f"contacts?$select=_parentcustomerid_value,_ownerid_value&$filter=contactid eq {contact_id}",
        headers={"Prefer": prefer},
    )
    assert response.headers["Preference-Applied"] == prefer
    [row] = response.json()["value"]
    navigation = "@Microsoft.Dynamics.CRM.associatednavigationproperty"
    assert row[f"_parentcustomerid_value{navigation}"] == "parentcustomerid_account"
    assert row["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    assert row[f"_ownerid_value{navigation}"] == "ownerid"
    assert "_ownerid_value@OData.Community.Display.V1.FormattedValue" not in row


def test_in_on_the_primary_key_finds_exactly_the_rows_of_those_ids(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """In on the primary key (how a client reads back the versions of records it wrote in bulk):
    ids compare case-insensitively, an unknown id matches nothing, and an and-ed condition holds."""
    tag = uuid.uuid4().hex
    ids = _seed_family(dataverse_sim, tag, 4)
    wanted = json.dumps([ids[0].upper(), ids[2], str(uuid.uuid4())])
    by_id = f"Microsoft.Dynamics.CRM.In(PropertyName='contactid',PropertyValues={wanted})"
    rows = api.get("contacts", params={"$select": "firstname", "$filter": by_id})
    assert rows.status_code == 200, rows.text
    assert sorted(row["firstname"] for row in rows.json()["value"]) == ["P00", "P02"]
    rows = api.get("contacts", params={"$select": "firstname", "$filter": f"{by_id} and firstname eq 'P02'"})
    assert [row["firstname"] for row in rows.json()["value"]] == ["P02"]


def test_in_and_between_query_functions(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Filter rows, Dataverse query functions: Microsoft.Dynamics.CRM.In / NotIn / Between / NotBetween
    with PropertyName and PropertyValues (strings, read as the column's type)."""
    tag = uuid.uuid4().hex
    _seed_family(dataverse_sim, tag, 5)

    def names(function: str) -> list[str]:
        query = f"contacts?$select=firstname&$filter=lastname eq '{tag}' and {function}&$orderby=firstname"
        response = api.get(query)
        assert response.status_code == 200, response.text
        return [row["firstname"] for row in response.json()["value"]]

    assert names("""Microsoft.Dynamics.CRM.In(PropertyName='firstname',PropertyValues=["p01","P03"])""") == [
        "P01",
        "P03",
    ]
    assert names(
        """Microsoft.Dynamics.CRM.Between(PropertyName='numberofchildren',PropertyValues=["1","3"])"""
    ) == [
        "P01",
        "P02",
        "P03",
    ]
    assert names(
        """Microsoft.Dynamics.CRM.NotIn(PropertyName='numberofchildren',PropertyValues=["0","4"])"""
    ) == [
        "P01",
        "P02",
        "P03",
    ]
    assert names(
        """not Microsoft.Dynamics.CRM.NotBetween(PropertyName='numberofchildren',PropertyValues=["3","9"])"""
    ) == [
        "P03",
        "P04",
    ]
    assert (
        api.get("contacts?$filter=Microsoft.Dynamics.CRM.Today(PropertyName='createdon')").status_code == 400
    )


def test_parameter_aliases_in_filter_and_orderby(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Query data, "Use parameter aliases with query options" ($filter and $orderby), also as a query
    function's arguments ("Filter rows", Manage single quotes); an alias in a string stays text."""
    tag = uuid.uuid4().hex
    _seed_family(dataverse_sim, tag, 4)
    rows = api.get(
        "contacts",
        params={
            "$select": "firstname",
            "$filter": "lastname eq @tag and Microsoft.Dynamics.CRM.In(PropertyName=@p1,PropertyValues=@p2)",
            "$orderby": "@p3 desc",
            "@tag": f"'{tag}'",
            "@p1": "'firstname'",
            "@p2": '["P00","P02","P03"]',
            "@p3": "numberofchildren",
        },
    )
    assert rows.status_code == 200, rows.text
    assert [row["firstname"] for row in rows.json()["value"]] == ["P03", "P02", "P00"]
    literal = api.get(
        "contacts",
        params={
            "$select": "firstname",
            "$filter": f"emailaddress1 eq 'p1.{tag}@example.com'",
            "@example": "1",
        },
    )
    assert [row["firstname"] for row in literal.json()["value"]] == ["P01"]


def test_expand_single_valued_lookup(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Query data, "Join tables": $expand a single-valued navigation property with its own $select."""
    name = f"Acme {uuid.uuid4()}"
    [account_id] = dataverse_sim.seed("account", [{"name": name}])
    [contact_id] = dataverse_sim.seed(
        "contact", [{"lastname": "E", "parentcustomerid_account@odata.bind": f"/accounts({account_id})"}]
    )
    row = api.get(
        f"contacts({contact_id})?$select=lastname&$expand=parentcustomerid_account($select=name)"
    ).json()
    assert row["parentcustomerid_account"]["name"] == name


def test_filter_on_a_lookups_related_row(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Filter rows, "Filter using lookup column property values": ``<navigation property>/<property>``."""
    name = f"Acme {uuid.uuid4()}"
    [account_id] = dataverse_sim.seed("account", [{"name": name}])
    [contact_id] = dataverse_sim.seed(
        "contact", [{"lastname": "E", "parentcustomerid_account@odata.bind": f"/accounts({account_id})"}]
    )
    dataverse_sim.seed("contact", [{"lastname": "E"}])
    rows = api.get(
        "contacts", params={"$select": "lastname", "$filter": f"parentcustomerid_account/name eq '{name}'"}
    )
    assert rows.status_code == 200, rows.text
    assert [row["contactid"] for row in rows.json()["value"]] == [contact_id]
    unknown = api.get("contacts", params={"$filter": "parentcustomerid_account/nosuch eq 'x'"})
    assert unknown.status_code == 400


def test_nested_expand_of_single_valued_navigation_properties(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Retrieve a table row, options to apply to expanded tables: a nested $expand on a single-valued
    navigation property (``;`` between options); an option the simulator does not apply there is a 400."""
    [account_id] = dataverse_sim.seed("account", [{"name": f"Acme {uuid.uuid4()}"}])
    [contact_id] = dataverse_sim.seed(
        "contact", [{"lastname": "E", "parentcustomerid_account@odata.bind": f"/accounts({account_id})"}]
    )
    row = api.get(
        f"contacts({contact_id})?$select=lastname"
        "&$expand=parentcustomerid_account($select=name;$expand=ownerid($select=fullname))"
    ).json()
    assert row["parentcustomerid_account"]["ownerid"]["fullname"] == "crmsync application"
    refused = api.get(f"contacts({contact_id})?$expand=parentcustomerid_account($select=name;$top=1)")
    assert refused.status_code == 400
    assert row["parentcustomerid_account"]["accountid"] == account_id


def test_whoami_names_the_application_user(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """WhoAmI function: the calling user's id."""
    assert api.get("WhoAmI").json()["UserId"] == dataverse_sim.app_user_id


def test_or_of_indexed_equalities_and_unknown_filter_column(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Query data, "Filter rows": `or` of equalities (from the email index); unknown column -> 400."""
    tag = uuid.uuid4().hex
    _seed_family(dataverse_sim, tag, 4)
    condition = f"emailaddress1 eq 'p1.{tag}@example.com' or emailaddress1 eq 'P3.{tag}@example.com'"
    rows = api.get(
        "contacts", params={"$select": "firstname", "$filter": condition, "$orderby": "firstname"}
    ).json()
    assert [row["firstname"] for row in rows["value"]] == ["P01", "P03"]
    mixed = f"emailaddress1 eq 'p1.{tag}@example.com' or (lastname eq '{tag}' and numberofchildren eq 2)"
    rows = api.get(
        "contacts", params={"$select": "firstname", "$filter": mixed, "$orderby": "firstname"}
    ).json()
    assert [row["firstname"] for row in rows["value"]] == ["P01", "P02"]
    unknown = api.get("contacts", params={"$filter": "nosuch eq 1"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "0x80060888"
