"""$batch ("Execute batch operations using the Web API")."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx

from simulators.dataverse.launcher import DataverseSimulator

Operation = tuple[str, str, dict[str, Any] | None]


def _operation(method: str, url: str, body: dict[str, Any] | None, content_id: int | None = None) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{method} {url} HTTP/1.1"]
    if body is not None:
        lines += ["Content-Type: application/json; type=entry", "", json.dumps(body)]
    else:
        lines += [""]
    return "\r\n".join(lines) + "\r\n"


def batch_body(api_url: str, items: list[Operation | list[Operation]]) -> tuple[str, str]:
    """A multipart/mixed batch; a list item is a change set whose operations get Content-IDs 1..n."""
    boundary = f"batch_{uuid.uuid4().hex}"
    parts = []
    for item in items:
        if isinstance(item, list):
            change_set = f"changeset_{uuid.uuid4().hex}"
            inner = "".join(
                f"--{change_set}\r\n" + _operation(m, u if u.startswith("$") else f"{api_url}/{u}", b, i + 1)
                for i, (m, u, b) in enumerate(item)
            )
            opening = f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={change_set}\r\n\r\n"
            parts.append(f"{opening}{inner}--{change_set}--\r\n")
        else:
            method, url, body = item
            parts.append(f"--{boundary}\r\n" + _operation(method, f"{api_url}/{url}", body))
    return f"multipart/mixed; boundary={boundary}", "".join(parts) + f"--{boundary}--\r\n"


def statuses(response: httpx.Response, batch_status: int = 200) -> list[int]:
    """The status line of every operation's response, in order (change set responses inlined)."""
    assert response.status_code == batch_status, response.text
    assert response.headers["content-type"].startswith("multipart/mixed")
    return [int(code) for code in re.findall(r"^HTTP/1\.1 (\d{3})", response.text, flags=re.MULTILINE)]


def post_batch(
    api: httpx.Client, dataverse_sim: DataverseSimulator, items: list[Any], **headers: str
) -> httpx.Response:
    content_type, body = batch_body(dataverse_sim.api_url, items)
    return api.post("$batch", content=body, headers={"Content-Type": content_type, **headers})


def _lastnames(api: httpx.Client, tag: str) -> list[str]:
    rows = api.get(
        "contacts",
        params={"$select": "lastname", "$filter": f"startswith(lastname, '{tag}')", "$orderby": "lastname"},
    )
    return [r["lastname"] for r in rows.json()["value"]]


def test_change_set_with_content_id_reference(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Change sets: Content-ID 1 names the created row; $1 is usable in a later @odata.bind and URL."""
    tag = uuid.uuid4().hex
    response = post_batch(
        api,
        dataverse_sim,
        [
            [
                ("POST", "accounts", {"name": f"{tag} Co"}),
                ("POST", "contacts", {"lastname": f"{tag}-a", "parentcustomerid_account@odata.bind": "$1"}),
                ("PATCH", "$1", {"telephone1": "555"}),
            ],
            (
                "GET",
                f"contacts?$select=lastname,_parentcustomerid_value&$filter=lastname%20eq%20'{tag}-a'",
                None,
            ),
        ],
    )
    assert statuses(response) == [204, 204, 204, 200]
    assert "changesetresponse_" in response.text
    row = json.loads(response.text[response.text.index('{"@odata.context"') : response.text.rindex("}") + 1])[
        "value"
    ][0]
    account = api.get(f"accounts({row['_parentcustomerid_value']})?$select=name,telephone1").json()
    assert (account["name"], account["telephone1"]) == (f"{tag} Co", "555")


def test_failed_change_set_writes_nothing(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Change sets are all-or-nothing; the failure is the change set's only response."""
    tag = uuid.uuid4().hex
    response = post_batch(
        api,
        dataverse_sim,
        [
            [
                ("POST", "contacts", {"lastname": f"{tag}-1"}),
                ("POST", "contacts", {"lastname": f"{tag}-2", "firstname": "x" * 51}),
            ]
        ],
    )
    assert statuses(response, batch_status=400) == [400]
    assert "0x80044331" in response.text
    assert _lastnames(api, tag) == []


def test_batch_stops_at_first_failure_unless_continue_on_error(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Handling errors: without Prefer: odata.continue-on-error the batch stops at the first error and
    is itself 400 Bad Request; with it, all run and the batch is 200 OK."""
    tag = uuid.uuid4().hex
    items = [
        ("POST", "contacts", {"lastname": f"{tag}-1"}),
        ("POST", "contacts", {"nosuchcolumn": 1}),
        ("POST", "contacts", {"lastname": f"{tag}-3"}),
    ]
    assert statuses(post_batch(api, dataverse_sim, items), batch_status=400) == [204, 400]
    assert _lastnames(api, tag) == [f"{tag}-1"]
    assert statuses(post_batch(api, dataverse_sim, items, Prefer="odata.continue-on-error")) == [
        204,
        400,
        204,
    ]
    assert _lastnames(api, tag) == [f"{tag}-1", f"{tag}-1", f"{tag}-3"]


def test_more_than_1000_operations_is_400(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Batch requests can contain up to 1,000 individual requests."""
    tag = uuid.uuid4().hex
    operations: list[Any] = [("POST", "contacts", {"lastname": f"{tag}-{i:04d}"}) for i in range(1001)]
    too_many = post_batch(api, dataverse_sim, operations)
    assert too_many.status_code == 400
    assert _lastnames(api, tag) == []
    assert statuses(post_batch(api, dataverse_sim, operations[:1000])) == [204] * 1000
    assert len(_lastnames(api, tag)) == 1000


def test_batch_caller_object_id_applies_to_parts(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Impersonate another user: a CallerObjectId on the $batch request applies to each request in it."""
    role = f"reader-{uuid.uuid4().hex}"
    dataverse_sim.add_role(role, tables={"contact": {"read": "organization"}})
    user = dataverse_sim.add_user(roles=[role])
    response = post_batch(
        api,
        dataverse_sim,
        [("GET", "WhoAmI", None), ("POST", "contacts", {"lastname": "denied"})],
        CallerObjectId=user["azureactivedirectoryobjectid"],
        Prefer="odata.continue-on-error",
    )
    assert statuses(response) == [200, 403]
    assert user["systemuserid"] in response.text
