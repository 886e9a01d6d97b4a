"""Upsert and conditional operations.

Docs: "Upsert a table row"; "Perform conditional operations using the Web API".
"""

from __future__ import annotations

import uuid

import httpx

from simulators.dataverse.launcher import DataverseSimulator


def test_upsert_creates_then_updates_with_204_and_entity_id(api: httpx.Client) -> None:
    """Upsert a table row: PATCH creates or updates; 204 either way, OData-EntityId names the row."""
    contact_id = str(uuid.uuid4())
    created = api.patch(f"contacts({contact_id})", json={"lastname": "Up"})
    assert created.status_code == 204
    assert created.headers["OData-EntityId"].endswith(f"/contacts({contact_id})")
    updated = api.patch(f"contacts({contact_id})", json={"firstname": "Sert"})
    assert updated.status_code == 204
    assert api.get(f"contacts({contact_id})?$select=fullname").json()["fullname"] == "Sert Up"


def test_upsert_with_representation_is_201_then_200(api: httpx.Client) -> None:
    """Upsert a table row: with Prefer: return=representation, 201 Created then 200 OK."""
    contact_id = str(uuid.uuid4())
    prefer = {"Prefer": "return=representation"}
    first = api.patch(f"contacts({contact_id})?$select=lastname", json={"lastname": "A"}, headers=prefer)
    second = api.patch(f"contacts({contact_id})?$select=lastname", json={"lastname": "B"}, headers=prefer)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["lastname"] == "B"
    assert first.json()["@odata.etag"] != second.json()["@odata.etag"]


def test_if_match_star_prevents_create(api: httpx.Client) -> None:
    """Perform conditional operations, "Prevent create in upsert": If-Match: * on a missing row -> 404."""
    contact_id = str(uuid.uuid4())
    refused = api.patch(f"contacts({contact_id})", json={"lastname": "X"}, headers={"If-Match": "*"})
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "0x80040217"
    assert api.get(f"contacts({contact_id})").status_code == 404


def test_if_none_match_star_prevents_update(api: httpx.Client) -> None:
    """Perform conditional operations, "Prevent update in upsert": If-None-Match: * on a row -> 412."""
    contact_id = str(uuid.uuid4())
    assert (
        api.patch(
            f"contacts({contact_id})", json={"lastname": "Kept"}, headers={"If-None-Match": "*"}
        ).status_code
        == 204
    )
    refused = api.patch(f"contacts({contact_id})", json={"lastname": "Lost"}, headers={"If-None-Match": "*"})
    assert refused.status_code == 412
    assert refused.json()["error"]["code"] == "0x80040237"
    assert api.get(f"contacts({contact_id})?$select=lastname").json()["lastname"] == "Kept"


def test_stale_etag_is_412_concurrency_version_mismatch(api: httpx.Client) -> None:
    """Perform conditional operations, "Apply optimistic concurrency": stale If-Match -> 412 0x80060882."""
    contact_id = str(uuid.uuid4())
    api.patch(f"contacts({contact_id})", json={"lastname": "V1"})
    old_etag = api.get(f"contacts({contact_id})?$select=lastname").json()["@odata.etag"]
    assert (
        api.patch(
            f"contacts({contact_id})", json={"lastname": "V2"}, headers={"If-Match": old_etag}
        ).status_code
        == 204
    )
    stale = api.patch(f"contacts({contact_id})", json={"lastname": "V3"}, headers={"If-Match": old_etag})
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "0x80060882"
    stale_delete = api.delete(f"contacts({contact_id})", headers={"If-Match": old_etag})
    assert stale_delete.status_code == 412
    assert api.get(f"contacts({contact_id})?$select=lastname").json()["lastname"] == "V2"


def test_conditional_retrieval_is_304_when_unchanged(api: httpx.Client) -> None:
    """Perform conditional operations, "Conditional retrievals": If-None-Match with the etag -> 304."""
    contact_id = str(uuid.uuid4())
    api.patch(f"contacts({contact_id})", json={"lastname": "Same"})
    current = api.get(f"contacts({contact_id})?$select=lastname").json()["@odata.etag"]
    assert current.startswith('W/"')
    assert (
        api.get(f"contacts({contact_id})?$select=lastname", headers={"If-None-Match": current}).status_code
        == 304
    )
    api.patch(f"contacts({contact_id})", json={"lastname": "Changed"})
    assert (
        api.get(f"contacts({contact_id})?$select=lastname", headers={"If-None-Match": current}).status_code
        == 200
    )


def test_alternate_key_upsert_only_for_defined_keys(
    private_sim: DataverseSimulator, private_api: httpx.Client
) -> None:
    """Use an alternate key to reference a row: PATCH table(key='value') upserts; undefined keys -> 400."""
    message_id = f"<{uuid.uuid4()}@example.com>"
    undefined = private_api.patch(f"appointments(subject='{uuid.uuid4()}')", json={"subject": "no key"})
    assert undefined.status_code == 400
    private_sim.define_key("email", "crmsync_messageid", ["messageid"])
    quoted = message_id.replace("'", "''")
    created = private_api.patch(f"emails(messageid='{quoted}')", json={"subject": "first"})
    assert created.status_code == 204
    again = private_api.patch(f"emails(messageid='{quoted}')", json={"subject": "second"})
    assert again.headers["OData-EntityId"] == created.headers["OData-EntityId"]
    row = private_api.get(f"emails(messageid='{quoted}')?$select=subject,messageid").json()
    assert (row["subject"], row["messageid"]) == ("second", message_id)


def test_duplicate_alternate_key_on_create_is_0x80060892(
    private_sim: DataverseSimulator, private_api: httpx.Client
) -> None:
    """Define alternate keys: creating a second row with the same key values -> DuplicateRecordEntityKey."""
    private_sim.define_key("email", "crmsync_messageid", ["messageid"])
    message_id = f"<{uuid.uuid4()}@example.com>"
    assert private_api.post("emails", json={"subject": "a", "messageid": message_id}).status_code == 204
    duplicate = private_api.post("emails", json={"subject": "b", "messageid": message_id})
    assert duplicate.status_code == 412
    assert duplicate.json()["error"]["code"] == "0x80060892"


def test_conditional_retrieval_with_expand_or_annotations_is_never_304(api: httpx.Client) -> None:
    """Perform conditional operations, "Query must not include $expand / annotations": never 304."""
    contact_id = str(uuid.uuid4())
    api.patch(f"contacts({contact_id})", json={"lastname": "Same"})
    current = api.get(f"contacts({contact_id})?$select=lastname").json()["@odata.etag"]
    annotated = api.get(
        f"contacts({contact_id})?$select=lastname",
        headers={"If-None-Match": current, "Prefer": 'odata.include-annotations="*"'},
    )
    expanded = api.get(
        f"contacts({contact_id})?$select=lastname&$expand=ownerid($select=fullname)",
        headers={"If-None-Match": current},
    )
    assert (annotated.status_code, expanded.status_code) == (200, 200)
    assert expanded.json()["ownerid"]["fullname"]
