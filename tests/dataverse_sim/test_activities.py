"""Activities, activity parties and lookups.

Docs: "Activity tables"; activityparty.md; "Associate table rows on create".
"""

from __future__ import annotations

import uuid

import httpx

from simulators.dataverse.launcher import DataverseSimulator


def _entity_id(response: httpx.Response) -> str:
    assert response.status_code == 204, response.text
    entity_id = response.headers["OData-EntityId"]
    return entity_id[entity_id.index("(") + 1 : -1]


def test_email_deep_insert_with_parties_and_regarding(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """activityparty.md: email_activity_parties with partyid_<table>@odata.bind, addressused and the masks."""
    [contact_id] = dataverse_sim.seed("contact", [{"lastname": "Rcpt", "emailaddress1": "r@example.com"}])
    email_id = _entity_id(
        api.post(
            "emails",
            json={
                "subject": "Hello",
                "regardingobjectid_contact_email@odata.bind": f"/contacts({contact_id})",
                "email_activity_parties": [
                    {
                        "partyid_systemuser@odata.bind": f"/systemusers({dataverse_sim.app_user_id})",
                        "participationtypemask": 1,
                    },
                    {
                        "partyid_contact@odata.bind": f"/contacts({contact_id})",
                        "participationtypemask": 2,
                        "addressused": "r@example.com",
                    },
                    {"addressused": "unresolved@example.com", "participationtypemask": 3},
                ],
            },
        )
    )
    row = api.get(
        f"emails({email_id})?$select=subject,_regardingobjectid_value"
        "&$expand=email_activity_parties($select=_partyid_value,participationtypemask,addressused)"
    ).json()
    assert row["_regardingobjectid_value"] == contact_id
    parties = sorted(
        (p["participationtypemask"], p["_partyid_value"], p["addressused"])
        for p in row["email_activity_parties"]
    )
    assert parties == [
        (1, dataverse_sim.app_user_id, None),
        (2, contact_id, "r@example.com"),
        (3, None, "unresolved@example.com"),
    ]
    listed = api.get(f"emails({email_id})/email_activity_parties").json()["value"]
    assert len(listed) == 3


def test_invalid_participation_mask_is_400_and_writes_nothing(api: httpx.Client) -> None:
    """activityparty.md ParticipationTypeMask: email takes 1-4 (and 8, 9, 13); 5 (attendee) -> 400."""
    subject = f"bad mask {uuid.uuid4()}"
    refused = api.post(
        "emails",
        json={
            "subject": subject,
            "email_activity_parties": [{"addressused": "a@b.c", "participationtypemask": 5}],
        },
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "0x8004431a"
    assert api.get("emails", params={"$filter": f"subject eq '{subject}'"}).json()["value"] == []


def test_appointment_parties_replace_on_update(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """appointment_activity_parties: 5 required, 6 optional, 7 organizer; a PATCH replaces the list."""
    [first, second] = dataverse_sim.seed("contact", [{"lastname": "A1"}, {"lastname": "A2"}])
    appointment_id = _entity_id(
        api.post(
            "appointments",
            json={
                "subject": "Meet",
                "scheduledstart": "2026-11-23T09:00:00Z",
                "scheduledend": "2026-11-23T10:00:00Z",
                "appointment_activity_parties": [
                    {
                        "partyid_systemuser@odata.bind": f"/systemusers({dataverse_sim.app_user_id})",
                        "participationtypemask": 7,
                    },
                    {"partyid_contact@odata.bind": f"/contacts({first})", "participationtypemask": 5},
                ],
            },
        )
    )
    api.patch(
        f"appointments({appointment_id})",
        json={
            "appointment_activity_parties": [
                {"partyid_contact@odata.bind": f"/contacts({second})", "participationtypemask": 6}
            ]
        },
    ).raise_for_status()
    parties = api.get(f"appointments({appointment_id})/appointment_activity_parties").json()["value"]
    assert [(p["_partyid_value"], p["participationtypemask"]) for p in parties] == [(second, 6)]


def test_parent_customer_binding_to_contact_or_account(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """contact.md: parentcustomerid (Customer) binds as parentcustomerid_account / _contact; null unbinds."""
    [account_id] = dataverse_sim.seed("account", [{"name": "Parent Co"}])
    [parent_id] = dataverse_sim.seed("contact", [{"lastname": "Parent"}])
    child = _entity_id(
        api.post(
            "contacts",
            json={"lastname": "C", "parentcustomerid_contact@odata.bind": f"/contacts({parent_id})"},
        )
    )
    api.patch(
        f"contacts({child})", json={"parentcustomerid_account@odata.bind": f"/accounts({account_id})"}
    ).raise_for_status()
    row = api.get(
        f"contacts({child})?$select=_parentcustomerid_value",
        headers={"Prefer": 'odata.include-annotations="*"'},
    ).json()
    assert row["_parentcustomerid_value"] == account_id
    assert row["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    api.patch(f"contacts({child})", json={"parentcustomerid_account@odata.bind": None}).raise_for_status()
    assert (
        api.get(f"contacts({child})?$select=_parentcustomerid_value").json()["_parentcustomerid_value"]
        is None
    )
    wrong_table = api.post(
        "contacts", json={"lastname": "W", "parentcustomerid_account@odata.bind": f"/contacts({parent_id})"}
    )
    assert wrong_table.status_code == 400
    missing = api.post(
        "contacts",
        json={"lastname": "M", "parentcustomerid_contact@odata.bind": f"/contacts({uuid.uuid4()})"},
    )
    assert missing.status_code == 404


def test_deleting_an_email_deletes_its_parties_and_attachments(api: httpx.Client) -> None:
    """Cascade delete of an activity's parties and attachments (activitymimeattachment objectid)."""
    email_id = _entity_id(
        api.post(
            "emails",
            json={
                "subject": "With file",
                "email_activity_parties": [{"addressused": "x@y.z", "participationtypemask": 2}],
            },
        )
    )
    attachment_id = _entity_id(
        api.post(
            "activitymimeattachments",
            json={
                "objectid_email@odata.bind": f"/emails({email_id})",
                "filename": "a.txt",
                "mimetype": "text/plain",
                "body": "aGk=",
            },
        )
    )
    party_ids = [
        p["activitypartyid"] for p in api.get(f"emails({email_id})/email_activity_parties").json()["value"]
    ]
    assert api.delete(f"emails({email_id})").status_code == 204
    assert api.get(f"activitymimeattachments({attachment_id})").status_code == 404
    assert all(api.get(f"activityparties({party_id})").status_code == 404 for party_id in party_ids)


def test_state_and_status_codes_follow_the_documented_pairs(api: httpx.Client) -> None:
    """task.md StateCode/StatusCode: status implies state; state takes its default status; mismatch -> 400."""
    task_id = _entity_id(api.post("tasks", json={"subject": "Do"}))
    assert (api.get(f"tasks({task_id})?$select=statecode,statuscode").json()["statuscode"]) == 2
    api.patch(f"tasks({task_id})", json={"statuscode": 5}).raise_for_status()
    row = api.get(f"tasks({task_id})?$select=statecode,statuscode").json()
    assert (row["statecode"], row["statuscode"]) == (1, 5)
    api.patch(f"tasks({task_id})", json={"statecode": 2}).raise_for_status()
    row = api.get(f"tasks({task_id})?$select=statecode,statuscode").json()
    assert (row["statecode"], row["statuscode"]) == (2, 6)
    mismatch = api.patch(f"tasks({task_id})", json={"statecode": 0, "statuscode": 5})
    assert mismatch.status_code == 400
    out_of_range = api.patch(f"tasks({task_id})", json={"prioritycode": 42})
    assert out_of_range.status_code == 400
    assert out_of_range.json()["error"]["code"] == "0x8004431a"


def test_a_lead_can_be_an_email_party_and_is_found_by_any_email_column(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """lead.md: emailaddress1-3 (String, 100) and lead_activity_parties (partyid_lead), Dynamics 365 Sales."""
    address = f"lead-{uuid.uuid4().hex[:8]}@example.com"
    [lead_id] = dataverse_sim.seed("lead", [{"lastname": "Prospect", "emailaddress3": address}])
    found = api.get("leads", params={"$select": "leadid", "$filter": f"emailaddress3 eq '{address}'"}).json()
    assert [row["leadid"] for row in found["value"]] == [lead_id]
    email_id = _entity_id(
        api.post(
            "emails",
            json={
                "subject": "To a lead",
                "email_activity_parties": [
                    {"partyid_lead@odata.bind": f"/leads({lead_id})", "participationtypemask": 2}
                ],
            },
        )
    )
    parties = api.get(f"emails({email_id})/email_activity_parties").json()["value"]
    assert [(p["_partyid_value"], p["participationtypemask"]) for p in parties] == [(lead_id, 2)]


def test_a_party_bound_to_a_record_gets_its_primary_email_as_address(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """activityparty.md: ``addressused`` is the address "associated with the target entity", and the
    read-only ``addressusedemailcolumnnumber`` the party record's email column it came from. A given
    address is kept."""
    user = dataverse_sim.add_user(internalemailaddress="Organizer@Contoso.example")
    [contact_id] = dataverse_sim.seed(
        "contact", [{"lastname": "Guest", "emailaddress1": "guest@example.com"}]
    )
    appointment_id = _entity_id(
        api.post(
            "appointments",
            json={
                "subject": "Review",
                "appointment_activity_parties": [
                    {
                        "partyid_systemuser@odata.bind": f"/systemusers({user['systemuserid']})",
                        "participationtypemask": 7,
                    },
                    {"partyid_contact@odata.bind": f"/contacts({contact_id})", "participationtypemask": 5},
                    {
                        "partyid_contact@odata.bind": f"/contacts({contact_id})",
                        "participationtypemask": 6,
                        "addressused": "other@example.com",
                    },
                ],
            },
        )
    )
    listed = api.get(
        f"appointments({appointment_id})/appointment_activity_parties"
        "?$select=participationtypemask,addressused,addressusedemailcolumnnumber"
    ).json()["value"]
    parties = sorted(
        (p["participationtypemask"], p["addressused"], p["addressusedemailcolumnnumber"]) for p in listed
    )
    assert parties == [
        (5, "guest@example.com", 1),
        (6, "other@example.com", None),
        (7, "Organizer@Contoso.example", 1),
    ]
