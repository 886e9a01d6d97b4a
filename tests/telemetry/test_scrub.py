"""URLs, attribute values and free text as telemetry may carry them (shared/telemetry/scrub.py)."""

from __future__ import annotations

import pytest

from shared.store.fingerprint import short_fingerprint
from shared.telemetry.scrub import redact_url, scrub_attribute, scrub_attributes, scrub_text

UPN = "Alice.Smith@Contoso.com"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://graph.microsoft.com/v1.0/users/alice.smith%40contoso.com/messages/AAMkAGI2TG93AAA%3D"
            "?$filter=from/emailAddress/address eq 'bob@fabrikam.com'&$select=subject",
            "https://graph.microsoft.com/v1.0/users/{id}/messages/{id}",
        ),
        (
            "https://graph.microsoft.com/v1.0/users/Alice.Smith@Contoso.com/mailFolders/inbox/messages/delta()"
            "?$deltatoken=LztZwWjo5IivWBhyxw5rAKeD3SzArBn4#frag",
            "https://graph.microsoft.com/v1.0/users/{id}/mailFolders/inbox/messages/delta()",
        ),
        (
            "https://contoso.crm.dynamics.com/api/data/v9.2/contacts(3f2b8f8a-1c2d-4e5f-8a9b-0c1d2e3f4a5b)"
            "?$select=fullname,emailaddress1",
            "https://contoso.crm.dynamics.com/api/data/v9.2/contacts({key})",
        ),
        (
            "https://contoso.crm.dynamics.com/api/data/v9.2/emails(messageid='<x1@mail.contoso.com>')",
            "https://contoso.crm.dynamics.com/api/data/v9.2/emails({key})",
        ),
        (
            "https://acct.table.core.windows.net/crmsynclinks(PartitionKey='m1',RowKey='AAMkAG')?$select=x",
            "https://acct.table.core.windows.net/crmsynclinks({key})",
        ),
        (
            "https://alice:secret@graph.microsoft.com:8443/v1.0/$batch",
            "https://graph.microsoft.com:8443/v1.0/$batch",
        ),
    ],
)
def test_urls_keep_host_and_resource_names_only(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_text_loses_addresses_urls_and_guids_but_keeps_its_words() -> None:
    text = (
        "GET https://graph.microsoft.com/v1.0/users/alice%40contoso.com failed for Alice.Smith@Contoso.com "
        "(user 3F2B8F8A-1C2D-4E5F-8A9B-0C1D2E3F4A5B)"
    )

    scrubbed = scrub_text(text)

    assert scrubbed == (
        "GET https://graph.microsoft.com/v1.0/users/{id} failed for "
        f"{short_fingerprint(UPN.lower())} (user {short_fingerprint('3f2b8f8a-1c2d-4e5f-8a9b-0c1d2e3f4a5b')})"
    )


def test_attributes_by_meaning() -> None:
    attributes = {
        "url.full": f"https://graph.microsoft.com/v1.0/users/{UPN}?$top=1",
        "http.target": f"/v1.0/users/{UPN}?$top=1",
        "url.query": "$filter=emailaddress1 eq 'bob@fabrikam.com'",
        "server.address": UPN,
        "net.peer.name": "graph.microsoft.com",
        "enduser.id": UPN,
        "tags": ("ok", UPN),
        "http.status_code": 429,
    }

    assert scrub_attributes(attributes) == {
        "url.full": "https://graph.microsoft.com/v1.0/users/{id}",
        "http.target": "/v1.0/users/{id}",
        "server.address": short_fingerprint(UPN.lower()),
        "net.peer.name": "graph.microsoft.com",
        "enduser.id": short_fingerprint(UPN.lower()),
        "tags": ("ok", short_fingerprint(UPN.lower())),
        "http.status_code": 429,
    }
    assert scrub_attribute("http.request.body", b"alice@contoso.com") is None


def test_a_quoted_url_in_a_sentence_keeps_the_sentence() -> None:
    text = f"Request to 'https://graph.microsoft.com/v1.0/users/{UPN}' failed. See https://aka.ms/x."

    assert scrub_text(text) == (
        "Request to 'https://graph.microsoft.com/v1.0/users/{id}' failed. See https://aka.ms/x."
    )
