"""Webhook registration through the Web API and asynchronous delivery of the RemoteExecutionContext.

Docs: "Register a WebHook" (serviceendpoint contract 8, WebhookKey sends ?code=<key>, authvalue cannot
be retrieved); "Use WebHooks to create external handlers for server events" (body, headers, 256 KB,
one more attempt on 502/503/504); "Behavior of specialized update operations" (Assign, SetState).
A small local HTTP server receives the posts.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from simulators.dataverse.launcher import DataverseSimulator
from tests.dataverse_sim.webhook_receiver import Receiver, Registration, record_id_of


def _attributes(entity: dict[str, Any]) -> dict[str, Any]:
    return {pair["key"]: pair["value"] for pair in entity["Attributes"]}


def _parameter(body: dict[str, Any], key: str) -> Any:
    return next(p["value"] for p in body["InputParameters"] if p["key"] == key)


def test_registration_rows_and_write_only_authvalue(private_api: httpx.Client, hook: Registration) -> None:
    endpoint = private_api.get(
        f"serviceendpoints({hook.endpoint})?$select=contract,authtype,url,authvalue"
    ).json()
    assert (endpoint["contract"], endpoint["authtype"], endpoint["authvalue"]) == (8, 4, None)
    step_id = hook.step("Create", "contact")
    step = private_api.get(
        f"sdkmessageprocessingsteps({step_id})?$select=mode,stage,_eventhandler_value,_sdkmessageid_value"
    ).json()
    assert (step["mode"], step["stage"], step["_eventhandler_value"]) == (1, 40, hook.endpoint)
    listed = private_api.get("serviceendpoints?$filter=contract eq 8&$select=name").json()["value"]
    assert hook.endpoint in {row["serviceendpointid"] for row in listed}


def test_unsupported_registrations_are_refused(private_api: httpx.Client, hook: Registration) -> None:
    """Only asynchronous post-operation webhook steps are simulated; others are refused, not ignored."""
    with pytest.raises(AssertionError):
        hook.step("Create", "contact", mode=0)
    queue = private_api.post(
        "serviceendpoints",
        json={"name": "q", "contract": 2, "authtype": 2, "url": "https://x", "authvalue": "k"},
    )
    assert queue.status_code == 400


def test_create_update_assign_setstate_delete_are_delivered(
    private_sim: DataverseSimulator,
    private_api: httpx.Client,
    receiver: Receiver,
    hook: Registration,
) -> None:
    """Each message reaches the endpoint with the documented context, the key as ?code=, the headers.
    An owner change and a state change each run Update once more and raise Assign / SetState."""
    for message in ("Create", "Update", "Delete", "Assign", "SetState"):
        hook.step(message, "contact")
    seller = private_sim.add_user(roles=["Salesperson"])
    other = private_sim.add_user(roles=["Salesperson"])
    contact_id = record_id_of(
        private_api.post(
            "contacts",
            json={"lastname": "Hook", "ownerid@odata.bind": f"/systemusers({seller['systemuserid']})"},
        )
    )
    [created] = receiver.wait(contact_id, 1)
    body = created["body"]
    assert created["query"]["code"][0].startswith("key-")
    assert created["headers"]["x-ms-dynamics-entity-name"] == "contact"
    assert created["headers"]["x-ms-dynamics-request-name"] == "Create"
    assert created["headers"]["x-ms-correlation-request-id"] == body["CorrelationId"]
    assert (body["MessageName"], body["PrimaryEntityName"], body["PrimaryEntityId"]) == (
        "Create",
        "contact",
        contact_id,
    )
    assert (body["Depth"], body["Stage"], body["Mode"]) == (1, 40, 1)
    assert body["UserId"] == body["InitiatingUserId"] == private_sim.app_user_id
    for name in ("BusinessUnitId", "OrganizationId", "OperationCreatedOn", "OperationId"):
        assert body[name]
    target = _parameter(body, "Target")
    assert target["LogicalName"] == "contact"
    assert target["Id"] == contact_id
    owner = _attributes(target)["ownerid"]
    assert (owner["LogicalName"], owner["Id"]) == ("systemuser", seller["systemuserid"])
    assert body["OutputParameters"] == [{"key": "id", "value": contact_id}]

    assert private_api.patch(f"contacts({contact_id})", json={"firstname": "Web"}).status_code == 204
    assert (
        private_api.patch(
            f"contacts({contact_id})", json={"ownerid@odata.bind": f"/systemusers({other['systemuserid']})"}
        ).status_code
        == 204
    )
    assert (
        private_api.patch(f"contacts({contact_id})", json={"statecode": 1, "statuscode": 2}).status_code
        == 204
    )
    assert private_api.delete(f"contacts({contact_id})").status_code == 204
    posts = receiver.wait(contact_id, 7)
    by_message: dict[str, list[dict[str, Any]]] = {}
    for post in posts:
        by_message.setdefault(post["body"]["MessageName"], []).append(post["body"])
    assert {name: len(bodies) for name, bodies in by_message.items()} == {
        "Create": 1,
        "Update": 3,
        "Assign": 1,
        "SetState": 1,
        "Delete": 1,
    }
    updated = [_attributes(_parameter(body, "Target")) for body in by_message["Update"]]
    assert any(attributes.get("firstname") == "Web" for attributes in updated)
    assert any(attributes.get("ownerid", {}).get("Id") == other["systemuserid"] for attributes in updated)
    assert any(
        attributes.get("statecode")
        == {"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 1}
        for attributes in updated
    )
    assignee = _parameter(by_message["Assign"][0], "Assignee")
    assert assignee["Id"] == other["systemuserid"]
    assert _parameter(by_message["SetState"][0], "State")["Value"] == 1
    assert _parameter(by_message["SetState"][0], "Status")["Value"] == 2
    by_message_one = {name: bodies[0] for name, bodies in by_message.items()}
    assert _parameter(by_message_one["Delete"], "Target")["Id"] == contact_id


def test_post_image_carries_the_owner_on_update(
    private_sim: DataverseSimulator, private_api: httpx.Client, receiver: Receiver, hook: Registration
) -> None:
    """An entity image registered on the step (sdkmessageprocessingstepimage) adds the owner."""
    step_id = hook.step("Update", "contact", filteringattributes="firstname,lastname")
    image = private_api.post(
        "sdkmessageprocessingstepimages",
        json={
            "name": "owner",
            "entityalias": "owner",
            "imagetype": 1,
            "attributes": "ownerid",
            "messagepropertyname": "Target",
            "sdkmessageprocessingstepid@odata.bind": f"/sdkmessageprocessingsteps({step_id})",
        },
    )
    assert image.status_code == 204
    seller = private_sim.add_user(roles=["Salesperson"])
    contact_id = record_id_of(
        private_api.post(
            "contacts",
            json={"lastname": "I", "ownerid@odata.bind": f"/systemusers({seller['systemuserid']})"},
        )
    )
    assert private_api.patch(f"contacts({contact_id})", json={"jobtitle": "not filtered"}).status_code == 204
    assert private_api.patch(f"contacts({contact_id})", json={"firstname": "Filtered"}).status_code == 204
    [post] = receiver.wait(contact_id, 1)
    time.sleep(0.2)
    assert len(receiver.for_record(contact_id)) == 1  # the jobtitle update matched no filtering attribute
    images = {i["key"]: _attributes(i["value"]) for i in post["body"]["PostEntityImages"]}
    assert images["owner"]["ownerid"]["Id"] == seller["systemuserid"]


def test_delivery_never_blocks_the_write_and_retries_once(
    private_sim: DataverseSimulator, private_api: httpx.Client, receiver: Receiver, hook: Registration
) -> None:
    """The endpoint's slowness does not delay the write; 503 gets one more attempt, 500 none."""
    hook.step("Create", "contact")
    receiver.delay = 1.5
    started = time.monotonic()
    slow_id = record_id_of(private_api.post("contacts", json={"lastname": "Slow"}))
    assert time.monotonic() - started < 1.0
    receiver.wait(slow_id, 1)
    receiver.delay = 0.0
    receiver.statuses = [503]
    retried_id = record_id_of(private_api.post("contacts", json={"lastname": "Retry"}))
    assert [p["status"] for p in receiver.wait(retried_id, 2)] == [503, 200]
    receiver.statuses = [500, 500]
    failed_id = record_id_of(private_api.post("contacts", json={"lastname": "Fail"}))
    receiver.wait(failed_id, 1)
    time.sleep(0.3)
    assert [p["status"] for p in receiver.for_record(failed_id)] == [500]
    log = {entry["id"]: entry for entry in private_sim.webhook_deliveries()}
    assert (log[retried_id]["statuses"], log[retried_id]["outcome"]) == ([503, 200], "succeeded")
    assert (log[failed_id]["statuses"], log[failed_id]["outcome"]) == ([500], "failed")
    assert "code=" not in log[failed_id]["url"]


def test_payload_over_256_kb_is_trimmed_and_flagged(
    private_api: httpx.Client, receiver: Receiver, hook: Registration
) -> None:
    hook.step("Create", "email")
    email_id = record_id_of(private_api.post("emails", json={"subject": "big", "description": "x" * 300_000}))
    [post] = receiver.wait(email_id, 1)
    assert post["headers"]["x-ms-dynamics-msg-size-exceeded"]
    for removed in ("InputParameters", "PreEntityImages", "PostEntityImages", "ParentContext"):
        assert removed not in post["body"]
    assert post["body"]["PrimaryEntityId"] == email_id
    small_id = record_id_of(private_api.post("emails", json={"subject": "small"}))
    [small] = receiver.wait(small_id, 1)
    assert "x-ms-dynamics-msg-size-exceeded" not in small["headers"]
    assert small["body"]["InputParameters"]


def test_rolled_back_change_set_raises_nothing(
    private_api: httpx.Client, receiver: Receiver, hook: Registration
) -> None:
    """Asynchronous steps run after commit: a failed change set delivers nothing."""
    hook.step("Create", "contact")
    contact_id = str(uuid.uuid4())
    boundary, changeset = "batch_x", "changeset_y"
    parts = [
        ("POST", "contacts", {"contactid": contact_id, "lastname": "Rolled back"}),
        ("POST", "contacts", {"lastname": "x" * 500}),
    ]
    lines = [f"--{boundary}", f"Content-Type: multipart/mixed; boundary={changeset}", ""]
    for index, (method, url, payload) in enumerate(parts, 1):
        lines += [
            f"--{changeset}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {index}",
            "",
            f"{method} {url} HTTP/1.1",
            "Content-Type: application/json",
            "",
            json.dumps(payload),
        ]
    lines += [f"--{changeset}--", f"--{boundary}--", ""]
    response = private_api.post(
        "$batch",
        content="\r\n".join(lines).encode(),
        headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
    )
    assert response.status_code == 400  # "Handling errors": the batch stopped at a failure
    assert "400" in response.text
    ok_id = record_id_of(private_api.post("contacts", json={"lastname": "Committed"}))
    receiver.wait(ok_id, 1)
    assert receiver.for_record(contact_id) == []


def test_http_header_and_query_string_authentication(private_api: httpx.Client, receiver: Receiver) -> None:
    """HttpHeader (5) sends each setting as a header, HttpQueryString (6) as query parameters."""
    settings = '<settings><setting name="x-crmsync-key" value="{v}" /></settings>'
    header = Registration(private_api, receiver.url, settings.format(v="h-secret"), authtype=5)
    query = Registration(private_api, receiver.url, settings.format(v="q-secret"), authtype=6)
    try:
        header.step("Create", "account")
        query.step("Create", "account")
        account_id = record_id_of(private_api.post("accounts", json={"name": "auth"}))
        posts = receiver.wait(account_id, 2)
        assert sorted(p["headers"].get("x-crmsync-key", "") for p in posts) == ["", "h-secret"]
        assert sorted(p["query"].get("x-crmsync-key", [""])[0] for p in posts) == ["", "q-secret"]
        assert all("code" not in p["query"] for p in posts)
    finally:
        header.remove()
        query.remove()
    malformed = private_api.post(
        "serviceendpoints",
        json={"name": "bad", "contract": 8, "authtype": 5, "url": receiver.url, "authvalue": "key"},
    )
    assert malformed.status_code == 400


def test_impersonated_writes_and_disabled_steps(
    private_sim: DataverseSimulator, private_api: httpx.Client, receiver: Receiver, hook: Registration
) -> None:
    """The context names the user the write ran as; a disabled step (statecode 1) delivers nothing."""
    step_id = hook.step("Create", "contact")
    seller = private_sim.add_user(roles=["Salesperson"])
    as_seller = {"CallerObjectId": seller["azureactivedirectoryobjectid"]}
    contact_id = record_id_of(private_api.post("contacts", json={"lastname": "Mine"}, headers=as_seller))
    [post] = receiver.wait(contact_id, 1)
    assert post["body"]["UserId"] == post["body"]["InitiatingUserId"] == seller["systemuserid"]
    disabled = private_api.patch(
        f"sdkmessageprocessingsteps({step_id})", json={"statecode": 1, "statuscode": 2}
    )
    assert disabled.status_code == 204
    quiet_id = record_id_of(private_api.post("contacts", json={"lastname": "Quiet"}))
    enabled_again = private_api.patch(
        f"sdkmessageprocessingsteps({step_id})", json={"statecode": 0, "statuscode": 1}
    )
    assert enabled_again.status_code == 204
    heard_id = record_id_of(private_api.post("contacts", json={"lastname": "Heard"}))
    receiver.wait(heard_id, 1)
    assert receiver.for_record(quiet_id) == []
