"""Bulk operation messages ("Use bulk operation messages"; CreateMultiple / UpdateMultiple /
UpsertMultiple Action): results, all-or-nothing errors, security, change tracking and webhooks."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from simulators.dataverse.launcher import DataverseSimulator
from tests.dataverse_sim.webhook_receiver import Receiver, Registration

CONTACT = "Microsoft.Dynamics.CRM.contact"


def _contacts(count: int, tag: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"@odata.type": CONTACT, "lastname": f"{tag}-{i}", **extra} for i in range(count)]


def _ids_with(api: httpx.Client, tag: str) -> set[str]:
    rows = api.get(f"contacts?$select=lastname&$filter=startswith(lastname,'{tag}')").json()["value"]
    return {row["contactid"] for row in rows}


def test_create_multiple_returns_ids_and_is_change_tracked(api: httpx.Client) -> None:
    link = api.get("contacts?$select=lastname", headers={"Prefer": "odata.track-changes"}).json()[
        "@odata.deltaLink"
    ]
    tag = f"bulk-{uuid.uuid4().hex[:8]}"
    response = api.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _contacts(3, tag)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["@odata.context"].endswith("#Microsoft.Dynamics.CRM.CreateMultipleResponse")
    assert len(body["Ids"]) == 3
    assert set(body["Ids"]) == _ids_with(api, tag)
    changed = {row.get("contactid") for row in api.get(link).json()["value"]}
    assert set(body["Ids"]) <= changed


def test_any_error_rolls_the_whole_operation_back(api: httpx.Client) -> None:
    """Standard tables: all operations roll back on error; @odata.type is required on every item."""
    tag = f"bulk-{uuid.uuid4().hex[:8]}"
    too_long = [*_contacts(2, tag), {"@odata.type": CONTACT, "lastname": "x" * 500}]
    failed = api.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": too_long})
    assert failed.status_code == 400
    assert failed.json()["error"]["code"] == "0x80044331"
    untyped = [*_contacts(1, tag), {"lastname": f"{tag}-untyped"}]
    refused = api.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": untyped})
    assert refused.status_code == 400
    wrong = [{"@odata.type": "Microsoft.Dynamics.CRM.account", "name": tag}]
    assert (
        api.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": wrong}).status_code == 400
    )
    assert api.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": []}).status_code == 400
    assert _ids_with(api, tag) == set()
    [existing] = api.post(
        "contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _contacts(1, tag)}
    ).json()["Ids"]
    duplicate = api.post(
        "contacts/Microsoft.Dynamics.CRM.CreateMultiple",
        json={"Targets": [*_contacts(1, f"{tag}-dup"), {"@odata.type": CONTACT, "contactid": existing}]},
    )
    assert duplicate.status_code == 412
    assert duplicate.json()["error"]["message"] == "Cannot insert duplicate key."
    assert _ids_with(api, f"{tag}-dup") == set()


def test_update_multiple_and_missing_record(api: httpx.Client) -> None:
    tag = f"bulk-{uuid.uuid4().hex[:8]}"
    ids = api.post(
        "contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _contacts(2, tag)}
    ).json()["Ids"]
    updates = [{"@odata.type": CONTACT, "contactid": i, "jobtitle": "Updated"} for i in ids]
    assert (
        api.post("contacts/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": updates}).status_code
        == 204
    )
    assert {api.get(f"contacts({i})?$select=jobtitle").json()["jobtitle"] for i in ids} == {"Updated"}
    missing = str(uuid.uuid4())
    again = [
        {"@odata.type": CONTACT, "contactid": ids[0], "jobtitle": "Again"},
        {"@odata.type": CONTACT, "contactid": missing, "jobtitle": "Again"},
    ]
    failed = api.post("contacts/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": again})
    assert failed.status_code == 404
    assert failed.json()["error"]["message"] == f"contact With Ids = {missing} Do Not Exist"
    assert api.get(f"contacts({ids[0]})?$select=jobtitle").json()["jobtitle"] == "Updated"


def test_upsert_multiple_by_alternate_key_and_id(
    private_sim: DataverseSimulator, private_api: httpx.Client
) -> None:
    private_sim.define_key("email", "crmsync_messageid", ["messageid"])
    message_id = f"<{uuid.uuid4().hex}@example.com>"
    email_type = "Microsoft.Dynamics.CRM.email"
    targets = [
        {"@odata.type": email_type, "@odata.id": f"emails(messageid='{message_id}')", "subject": "first"},
    ]
    assert (
        private_api.post(
            "emails/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": targets}
        ).status_code
        == 204
    )
    rows = private_api.get(f"emails?$select=subject&$filter=messageid eq '{message_id}'").json()["value"]
    assert [row["subject"] for row in rows] == ["first"]
    email_id = rows[0]["activityid"]
    new_id = str(uuid.uuid4())
    targets = [
        {"@odata.type": email_type, "@odata.id": f"emails(messageid='{message_id}')", "subject": "second"},
        {"@odata.type": email_type, "activityid": new_id, "subject": "by id"},
    ]
    assert (
        private_api.post(
            "emails/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": targets}
        ).status_code
        == 204
    )
    assert private_api.get(f"emails({email_id})?$select=subject").json()["subject"] == "second"
    assert private_api.get(f"emails({new_id})?$select=subject").json()["subject"] == "by id"


def test_bulk_runs_with_the_callers_privileges(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    seller = dataverse_sim.add_user(roles=["Salesperson"])
    reader = dataverse_sim.add_user(roles=[])
    tag = f"bulk-{uuid.uuid4().hex[:8]}"
    as_seller = {"CallerObjectId": seller["azureactivedirectoryobjectid"]}
    created = api.post(
        "contacts/Microsoft.Dynamics.CRM.CreateMultiple",
        json={"Targets": _contacts(2, tag)},
        headers=as_seller,
    )
    assert created.status_code == 200
    owners = {
        api.get(f"contacts({i})?$select=_ownerid_value").json()["_ownerid_value"]
        for i in created.json()["Ids"]
    }
    assert owners == {seller["systemuserid"]}
    denied = api.post(
        "contacts/Microsoft.Dynamics.CRM.CreateMultiple",
        json={"Targets": _contacts(1, f"{tag}-denied")},
        headers={"CallerObjectId": reader["azureactivedirectoryobjectid"]},
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "0x80040220"


def test_unsupported_table_and_method(api: httpx.Client) -> None:
    missing = api.post(
        "activityparties/Microsoft.Dynamics.CRM.CreateMultiple",
        json={"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.activityparty"}]},
    )
    assert missing.status_code == 404
    assert api.get("contacts/Microsoft.Dynamics.CRM.CreateMultiple").status_code == 405


def test_bulk_writes_raise_the_single_record_events(
    private_api: httpx.Client, receiver: Receiver, hook: Registration
) -> None:
    """Message pipelines merged: CreateMultiple raises Create (and UpdateMultiple Update) per record."""
    hook.step("Create", "contact")
    hook.step("Update", "contact")
    ids = private_api.post(
        "contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _contacts(3, "hooked")}
    ).json()["Ids"]
    updates = [{"@odata.type": CONTACT, "contactid": i, "firstname": "B"} for i in ids]
    assert (
        private_api.post(
            "contacts/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": updates}
        ).status_code
        == 204
    )
    for record_id in ids:
        messages = sorted(p["body"]["MessageName"] for p in receiver.wait(record_id, 2))
        assert messages == ["Create", "Update"]


def test_hang_after_commit_holds_a_committed_bulk_write(
    private_sim: DataverseSimulator, private_api: httpx.Client, private_token: str
) -> None:
    """The hang_after_commit fault counts a committed CreateMultiple as a write of its table."""
    tag = f"held-{uuid.uuid4().hex[:8]}"
    fault_id = private_sim.fault(
        "hang_after_commit", token=private_token, count=1, table="contact", seconds=60
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pending = pool.submit(
                private_api.post,
                "contacts/Microsoft.Dynamics.CRM.CreateMultiple",
                json={"Targets": _contacts(2, tag)},
            )
            deadline = time.monotonic() + 10
            while private_sim.fault_state(fault_id)["holding"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert not pending.done()
            assert len(_ids_with(private_api, tag)) == 2  # committed while the answer is held
        finally:
            private_sim.clear_faults()
        assert pending.result(timeout=5).status_code == 200
