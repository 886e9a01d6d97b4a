"""Mail folders, messages, moves and ids, categories, extended properties, attachments."""

from __future__ import annotations

import base64

import httpx

from tests.fixtures.graph_sim import GraphSim
from tests.graph_sim.conftest import seg

IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}
CRM_ID_PROP = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name CrmId"


def _inbox_message(graph_sim: GraphSim, user: str, **fields: object) -> str:
    body = {
        "subject": "Quote",
        "from": {"emailAddress": {"address": "buyer@fabrikam.test", "name": "Buyer"}},
        "toRecipients": [{"emailAddress": {"address": "me@contoso.test"}}],
        **fields,
    }
    return str(graph_sim.seed(user, messages={"inbox": [body]})["messages"]["inbox"][0])


def test_well_known_folder_names_and_child_folders(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/resources/mailfolder (well-known names), mailfolder-post-childfolders."""
    inbox = graph.get(f"users/{graph_user}/mailFolders/inbox").json()
    assert inbox["displayName"] == "Inbox"
    names = {f["displayName"] for f in graph.get(f"users/{graph_user}/mailFolders").json()["value"]}
    assert {"Inbox", "Drafts", "Sent Items", "Deleted Items"} <= names
    child = graph.post(f"users/{graph_user}/mailFolders/inbox/childFolders", json={"displayName": "CRM"})
    assert child.status_code == 201
    assert child.json()["parentFolderId"] == inbox["id"]
    children = graph.get(f"users/{graph_user}/mailFolders/{seg(inbox['id'])}/childFolders").json()["value"]
    assert [c["displayName"] for c in children] == ["CRM"]
    assert graph.get(f"users/{graph_user}/mailFolders/inbox").json()["childFolderCount"] == 1


def test_post_message_creates_a_draft_in_drafts(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/user-post-messages: the new message is a draft in Drafts."""
    drafts = graph.get(f"users/{graph_user}/mailFolders/drafts").json()
    message = graph.post(
        f"users/{graph_user}/messages",
        json={"subject": "Hi", "toRecipients": [{"emailAddress": {"address": "a@b.test"}}]},
    ).json()
    assert message["isDraft"] is True
    assert message["parentFolderId"] == drafts["id"]
    assert message["internetMessageId"].startswith("<")
    assert message["conversationId"]


def test_sent_message_fields_only_change_on_drafts(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/api/message-update: subject, body, recipients only while isDraft."""
    message_id = _inbox_message(graph_sim, graph_user)
    refused = graph.patch(f"users/{graph_user}/messages/{seg(message_id)}", json={"subject": "changed"})
    assert refused.status_code == 400
    allowed = graph.patch(f"users/{graph_user}/messages/{seg(message_id)}", json={"categories": ["Tracked"]})
    assert allowed.status_code == 200
    assert allowed.json()["categories"] == ["Tracked"]
    assert allowed.json()["subject"] == "Quote"


def test_move_changes_the_rest_id_but_not_the_immutable_id(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/outlook-immutable-id and message-move: 201 with the moved message;
    the default id changes on a move, the immutable id does not."""
    immutable_id = _inbox_message(graph_sim, graph_user)
    rest_id = graph.get(f"users/{graph_user}/messages/{seg(immutable_id)}").json()["id"]
    assert rest_id != immutable_id
    moved = graph.post(f"users/{graph_user}/messages/{seg(rest_id)}/move", json={"destinationId": "archive"})
    assert moved.status_code == 201
    assert moved.json()["id"] != rest_id
    assert graph.get(f"users/{graph_user}/messages/{seg(rest_id)}").status_code == 404
    again = graph.get(f"users/{graph_user}/messages/{seg(immutable_id)}", headers=IMMUTABLE)
    assert again.json()["id"] == immutable_id
    assert again.headers["Preference-Applied"] == 'IdType="ImmutableId"'
    archive = graph.get(f"users/{graph_user}/mailFolders/archive").json()
    assert again.json()["parentFolderId"] == archive["id"]
    moved_immutably = graph.post(
        f"users/{graph_user}/messages/{seg(immutable_id)}/move",
        json={"destinationId": "inbox"},
        headers=IMMUTABLE,
    )
    assert moved_immutably.json()["id"] == immutable_id


def test_message_shape_keeps_addresses_and_ids(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/api/resources/message: from, toRecipients, ccRecipients, bccRecipients,
    internetMessageId and conversationId as given."""
    message_id = _inbox_message(
        graph_sim,
        graph_user,
        ccRecipients=[{"emailAddress": {"address": "cc@contoso.test"}}],
        bccRecipients=[{"emailAddress": {"address": "bcc@contoso.test"}}],
        internetMessageId="<abc@fabrikam.test>",
        conversationId="AAQkADconv/+=",
    )
    message = graph.get(f"users/{graph_user}/messages/{seg(message_id)}").json()
    assert message["from"]["emailAddress"]["address"] == "buyer@fabrikam.test"
    assert message["ccRecipients"][0]["emailAddress"]["address"] == "cc@contoso.test"
    assert message["bccRecipients"][0]["emailAddress"]["address"] == "bcc@contoso.test"
    assert message["internetMessageId"] == "<abc@fabrikam.test>"
    assert message["conversationId"] == "AAQkADconv/+="
    assert message["isDraft"] is False
    filtered = graph.get(
        f"users/{graph_user}/messages", params={"$filter": "internetMessageId eq '<abc@fabrikam.test>'"}
    ).json()["value"]
    assert [m["id"] for m in filtered] == [message["id"]]


def test_single_value_extended_properties_write_expand_and_filter(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/api/singlevaluelegacyextendedproperty-post-singlevalueextendedproperties
    (written with PATCH) and singlevaluelegacyextendedproperty-get ($expand with $filter, $filter any)."""
    message_id = _inbox_message(graph_sim, graph_user)
    other_id = _inbox_message(graph_sim, graph_user, subject="other")
    patched = graph.patch(
        f"users/{graph_user}/messages/{seg(message_id)}",
        json={"singleValueExtendedProperties": [{"id": CRM_ID_PROP, "value": "crm-42"}]},
    )
    assert patched.status_code == 200
    assert (
        "singleValueExtendedProperties"
        not in graph.get(f"users/{graph_user}/messages/{seg(message_id)}").json()
    )
    expanded = graph.get(
        f"users/{graph_user}/messages/{seg(message_id)}",
        params={"$expand": f"singleValueExtendedProperties($filter=id eq '{CRM_ID_PROP}')"},
    ).json()
    assert expanded["singleValueExtendedProperties"] == [{"id": CRM_ID_PROP, "value": "crm-42"}]
    without = graph.get(
        f"users/{graph_user}/messages/{seg(other_id)}",
        params={"$expand": f"singleValueExtendedProperties($filter=id eq '{CRM_ID_PROP}')"},
    ).json()
    assert "singleValueExtendedProperties" not in without
    found = graph.get(
        f"users/{graph_user}/messages",
        params={
            "$filter": (
                f"singleValueExtendedProperties/any(ep: ep/id eq '{CRM_ID_PROP}' and ep/value eq 'crm-42')"
            )
        },
        headers=IMMUTABLE,
    ).json()["value"]
    assert [m["id"] for m in found] == [message_id]


def test_master_categories(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/outlookuser-post-mastercategories, outlookcategory-update/delete:
    displayName is fixed after creation, color is preset0..preset24 or none."""
    base = f"users/{graph_user}/outlook/masterCategories"
    created = graph.post(base, json={"displayName": "Tracked to Dynamics 365", "color": "preset9"})
    assert created.status_code == 201
    category = created.json()
    assert (
        graph.post(base, json={"displayName": "Tracked to Dynamics 365", "color": "preset1"}).status_code
        == 409
    )
    assert graph.patch(f"{base}/{category['id']}", json={"displayName": "x"}).status_code == 400
    assert graph.patch(f"{base}/{category['id']}", json={"color": "preset2"}).json()["color"] == "preset2"
    assert [c["displayName"] for c in graph.get(base).json()["value"]] == ["Tracked to Dynamics 365"]
    assert graph.delete(f"{base}/{category['id']}").status_code == 204
    assert graph.get(base).json()["value"] == []


def test_file_attachments(graph: httpx.Client, graph_sim: GraphSim, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/message-post-attachments and attachment-get: a fileAttachment
    with base64 contentBytes; the message's hasAttachments follows."""
    message_id = _inbox_message(graph_sim, graph_user)
    base = f"users/{graph_user}/messages/{seg(message_id)}/attachments"
    content = base64.b64encode(b"%PDF-1.7 quote").decode()
    created = graph.post(
        base,
        json={"@odata.type": "#microsoft.graph.fileAttachment", "name": "quote.pdf",
              "contentType": "application/pdf", "contentBytes": content},
    )  # fmt: skip
    assert created.status_code == 201
    attachment = created.json()
    assert attachment["size"] == len(b"%PDF-1.7 quote")
    assert graph.get(f"users/{graph_user}/messages/{seg(message_id)}").json()["hasAttachments"] is True
    fetched = graph.get(f"{base}/{seg(attachment['id'])}").json()
    assert fetched["@odata.type"] == "#microsoft.graph.fileAttachment"
    assert fetched["contentBytes"] == content
    assert graph.delete(f"{base}/{seg(attachment['id'])}").status_code == 204
    assert graph.get(f"users/{graph_user}/messages/{seg(message_id)}").json()["hasAttachments"] is False


def test_body_content_type_preference(graph: httpx.Client, graph_sim: GraphSim, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/message-get: Prefer: outlook.body-content-type="text" returns the
    HTML body as text (and says so in Preference-Applied)."""
    message_id = _inbox_message(
        graph_sim,
        graph_user,
        body={"contentType": "html", "content": "<html><body><p>Price &amp; terms</p></body></html>"},
    )
    url = f"users/{graph_user}/messages/{seg(message_id)}"
    assert graph.get(url).json()["body"]["contentType"] == "html"
    as_text = graph.get(url, headers={"Prefer": 'outlook.body-content-type="text"'})
    assert as_text.json()["body"] == {"contentType": "text", "content": "Price & terms"}
    assert as_text.headers["Preference-Applied"] == 'outlook.body-content-type="text"'


def test_filter_on_a_nested_property_with_count(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/query-parameters: $filter on a nested property path and $count=true."""
    _inbox_message(graph_sim, graph_user)
    _inbox_message(graph_sim, graph_user, **{"from": {"emailAddress": {"address": "other@fabrikam.test"}}})
    page = graph.get(
        f"users/{graph_user}/messages",
        params={"$filter": "from/emailAddress/address eq 'buyer@fabrikam.test'", "$count": "true"},
    ).json()
    assert page["@odata.count"] == 1
    assert [m["from"]["emailAddress"]["address"] for m in page["value"]] == ["buyer@fabrikam.test"]
    unsupported = graph.get(f"users/{graph_user}/messages", params={"$filter": "startswith(subject, 'x')"})
    assert unsupported.status_code == 400


def test_deleting_a_folder_deletes_its_subfolders_and_messages(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/api/mailfolder-delete; distinguished folders cannot be deleted."""
    parent = graph.post(f"users/{graph_user}/mailFolders", json={"displayName": "Projects"}).json()
    child = graph.post(
        f"users/{graph_user}/mailFolders/{seg(parent['id'])}/childFolders", json={"displayName": "Contoso"}
    ).json()
    [message_id] = graph_sim.seed(graph_user, messages={child["id"]: [{"subject": "deep"}]})["messages"][
        child["id"]
    ]
    assert graph.delete(f"users/{graph_user}/mailFolders/{seg(parent['id'])}").status_code == 204
    assert graph.get(f"users/{graph_user}/mailFolders/{seg(child['id'])}").status_code == 404
    assert graph.get(f"users/{graph_user}/messages/{seg(message_id)}").status_code == 404
    assert graph.delete(f"users/{graph_user}/mailFolders/inbox").status_code == 403


def test_a_mail_folder_keeps_single_value_extended_properties(graph: httpx.Client, graph_user: str) -> None:
    """singlevaluelegacyextendedproperty-post-singlevalueextendedproperties (PATCH of a mailFolder) and
    -get ($expand with a filter on the id): also on msgfolderroot, by its name or its id."""
    prop = "String {5c7d3a0e-2b8f-4e61-9a4d-c3f1e2b7a915} Name crmsync.deployment"
    expand = {"$expand": f"singleValueExtendedProperties($filter=id eq '{prop}')"}
    root = f"users/{graph_user}/mailFolders/msgfolderroot"
    assert "singleValueExtendedProperties" not in graph.get(root, params=expand).json()
    patched = graph.patch(root, json={"singleValueExtendedProperties": [{"id": prop, "value": "a"}]})
    assert patched.status_code == 200
    by_id = f"users/{graph_user}/mailFolders/{seg(patched.json()['id'])}"
    assert graph.get(by_id, params=expand).json()["singleValueExtendedProperties"] == [
        {"id": prop, "value": "a"}
    ]
    assert "singleValueExtendedProperties" not in graph.get(root).json()  # only when expanded
