"""BulkDelete ("Delete data in bulk"; BulkDelete Action): a system job answered with its JobId,
run after the answer as its submitter, recorded in asyncoperation and bulkdeleteoperation."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from simulators.dataverse.launcher import DataverseSimulator


def _contacts(api: httpx.Client, tag: str, count: int, headers: dict[str, str] | None = None) -> list[str]:
    targets = [
        {"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": f"{tag}-{i}"} for i in range(count)
    ]
    created = api.post(
        "contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets}, headers=headers or {}
    )
    assert created.status_code == 200, created.text
    return list(created.json()["Ids"])


def _job(criteria: dict[str, Any], entity: str = "contact", **overrides: Any) -> dict[str, Any]:
    """A BulkDelete body shaped as Microsoft's Python client sends it."""
    return {
        "JobName": "probe",
        "SendEmailNotification": False,
        "ToRecipients": [],
        "CCRecipients": [],
        "RecurrencePattern": "",
        "StartDateTime": "2026-12-06T00:00:00Z",
        "QuerySet": [
            {
                "@odata.type": "Microsoft.Dynamics.CRM.QueryExpression",
                "EntityName": entity,
                "ColumnSet": {"AllColumns": False, "Columns": []},
                "Criteria": criteria,
            }
        ],
        **overrides,
    }


def _ids_in(ids: list[str]) -> dict[str, Any]:
    return {
        "FilterOperator": "And",
        "Conditions": [
            {
                "AttributeName": "contactid",
                "Operator": "In",
                "Values": [{"Value": i, "Type": "System.Guid"} for i in ids],
            }
        ],
    }


def _completed(api: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        job = api.get(f"asyncoperations({job_id})?$select=statecode,statuscode,operationtype,name").json()
        if job["statecode"] == 3 or time.monotonic() > deadline:
            return dict(job)
        time.sleep(0.05)


def _operation(api: httpx.Client, job_id: str) -> dict[str, Any]:
    rows = api.get(
        f"bulkdeleteoperations?$select=successcount,failurecount,statecode,statuscode"
        f"&$filter=_asyncoperationid_value eq {job_id}"
    ).json()["value"]
    assert len(rows) == 1
    return dict(rows[0])


def test_the_job_deletes_what_its_query_selects_after_answering_its_job_id(api: httpx.Client) -> None:
    tag = f"bd-{uuid.uuid4().hex[:8]}"
    doomed, kept = _contacts(api, tag, 3), _contacts(api, f"{tag}-kept", 1)
    link = api.get("contacts?$select=lastname", headers={"Prefer": "odata.track-changes"}).json()[
        "@odata.deltaLink"
    ]
    answer = api.post("BulkDelete", json=_job(_ids_in(doomed)))
    assert answer.status_code == 200, answer.text
    assert answer.json()["@odata.context"].endswith("#Microsoft.Dynamics.CRM.BulkDeleteResponse")
    job_id = answer.json()["JobId"]
    job = _completed(api, job_id)
    assert (job["statecode"], job["statuscode"], job["operationtype"], job["name"]) == (3, 30, 13, "probe")
    operation = _operation(api, job_id)
    assert (operation["successcount"], operation["failurecount"], operation["statuscode"]) == (3, 0, 30)
    assert all(api.get(f"contacts({i})").status_code == 404 for i in doomed)
    assert api.get(f"contacts({kept[0]})").status_code == 200
    removed = {
        row["id"]
        for row in api.get(link).json()["value"]
        if "$deletedEntity" in row.get("@odata.context", "")
    }
    assert removed == set(doomed)


def test_or_filters_and_null_conditions_select_rows(api: httpx.Client) -> None:
    tag = f"bd-{uuid.uuid4().hex[:8]}"
    first, second, third = _contacts(api, tag, 3)
    api.patch(f"contacts({third})", json={"jobtitle": "keep"}).raise_for_status()
    criteria = {
        "FilterOperator": "Or",
        "Conditions": [
            {
                "AttributeName": "lastname",
                "Operator": "Equal",
                "Values": [{"Value": f"{tag.upper()}-0", "Type": "System.String"}],
            }
        ],
        "Filters": [
            {
                "FilterOperator": "And",
                "Conditions": [
                    {
                        "AttributeName": "lastname",
                        "Operator": "Equal",
                        "Values": [{"Value": f"{tag}-1", "Type": "System.String"}],
                    },
                    {"AttributeName": "jobtitle", "Operator": "Null", "Values": []},
                ],
            }
        ],
    }
    job_id = api.post("BulkDelete", json=_job(criteria)).json()["JobId"]
    assert _completed(api, job_id)["statuscode"] == 30
    assert [api.get(f"contacts({i})").status_code for i in (first, second, third)] == [404, 404, 200]


def test_rows_the_submitter_may_not_delete_are_failures_not_errors(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Impersonation: a user-depth delete privilege reaches only the user's own rows."""
    admin = dataverse_sim.add_user(roles=["System Administrator"])
    seller = dataverse_sim.add_user(roles=["Salesperson"])
    role = f"deleter-{uuid.uuid4().hex[:6]}"
    dataverse_sim.add_role(
        role,
        tables={"contact": {"create": "user", "read": "organization", "delete": "user"}},
        privileges={"prvBulkDelete": "organization"},
    )
    deleter = dataverse_sim.add_user(roles=[role])
    tag = f"bd-{uuid.uuid4().hex[:8]}"
    own = _contacts(api, tag, 1, {"CallerObjectId": deleter["azureactivedirectoryobjectid"]})
    others = _contacts(api, f"{tag}-x", 2, {"CallerObjectId": admin["azureactivedirectoryobjectid"]})
    as_deleter = {"CallerObjectId": deleter["azureactivedirectoryobjectid"]}
    answer = api.post("BulkDelete", json=_job(_ids_in(own + others)), headers=as_deleter)
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["JobId"]
    assert _completed(api, job_id)["statuscode"] == 30
    operation = _operation(api, job_id)
    assert (operation["successcount"], operation["failurecount"]) == (1, 2)
    assert api.get(f"contacts({own[0]})").status_code == 404
    assert all(api.get(f"contacts({i})").status_code == 200 for i in others)
    denied = api.post(
        "BulkDelete",
        json=_job(_ids_in(others)),
        headers={"CallerObjectId": seller["azureactivedirectoryobjectid"]},
    )
    assert denied.status_code == 403
    assert "prvBulkDelete" in denied.json()["error"]["message"]


def test_a_malformed_job_is_a_400_that_starts_nothing(api: httpx.Client) -> None:
    tag = f"bd-{uuid.uuid4().hex[:8]}"
    ids = _contacts(api, tag, 1)
    criteria = _ids_in(ids)
    without_name = _job(criteria)
    del without_name["JobName"]
    bad_operator = {
        "Conditions": [{"AttributeName": "contactid", "Operator": "Like", "Values": [{"Value": "x"}]}]
    }
    bad_column = {"Conditions": [{"AttributeName": "nope", "Operator": "Null"}]}
    for body in (
        without_name,
        _job(criteria, QuerySet=[]),
        _job(criteria, entity="nosuchtable"),
        _job(bad_operator),
        _job(bad_column),
        _job(criteria, RecurrencePattern="FREQ=DAILY;"),
        _job({"FilterOperator": "Xor", "Conditions": []}),
    ):
        refused = api.post("BulkDelete", json=body)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["error"]["code"] == "0x80048d19"
    assert api.post("BulkDelete", content=b"{not json").status_code == 400
    assert api.get("BulkDelete").status_code == 405
    assert api.get(f"contacts({ids[0]})").status_code == 200
    assert api.patch("asyncoperations(" + str(uuid.uuid4()) + ")", json={"statecode": 3}).status_code == 405
