"""What may leave the process as telemetry: URLs without ids or queries, text without addresses.

Graph and Dataverse URLs name mailboxes (``GET /users/alice@contoso.com``), items and records, and
their query strings carry filters with addresses (``$filter=emailaddress1 eq '...'``). Telemetry
keeps what an operator needs to see which API was slow or failing (scheme, host, the path's
resource names) and nothing else: every path segment that is not a plain resource name becomes
``{id}``, a key in parentheses becomes ``({key})``, the query string and fragment are dropped. In
any other text an email address or a GUID becomes its fingerprint (``shared.domain.redact``,
``shared.store.fingerprint``) and a URL is redacted as above.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.domain.redact import ADDRESS, address_fingerprint, redact_addresses
from shared.store.fingerprint import short_fingerprint

# A resource name: letters (and "_" "." for Dataverse and Graph names, "$" for $batch, $value ...),
# at most 40 characters, maybe a function call without arguments (delta()); or an API version (v1.0,
# v9.2). Anything else in a path is an id or a key.
_RESOURCE = re.compile(r"[.$]?[A-Za-z_][A-Za-z_.]{0,39}(?:\(\))?|v\d+(?:\.\d+)*")
_KEYED = re.compile(r"([.$]?[A-Za-z_][A-Za-z_.]{0,39})\(.+\)")
# A URL in text runs to the next space (OData literals put quotes inside URLs); sentence punctuation
# right after it stays outside.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"<>]+")
_TRAILING = "'.,;:"
_GUID = re.compile(r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?")

URL_KEYS = frozenset({"url.full", "http.url", "url.original", "az.service_request_url"})
PATH_KEYS = frozenset({"http.target", "url.path", "url.template_path"})
DROPPED_KEYS = frozenset({"url.query", "url.fragment", "http.request.header.prefer"})
# Correlation ids the Azure SDK records (what Azure support asks for): random, never personal.
KEPT_KEYS = frozenset({"az.client_request_id", "az.service_request_id"})
HOST_KEYS = frozenset({"server.address", "net.peer.name", "http.host", "net.host.name", "client.address"})


def redact_path(path: str) -> str:
    """A URL path with ids and keys replaced: ``/v1.0/users/{id}/messages/{id}``, ``contacts({key})``."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    segments = []
    for raw in path.split("/"):
        segment = unquote(raw)
        if not segment or _RESOURCE.fullmatch(segment):
            segments.append(segment)
        elif keyed := _KEYED.fullmatch(segment):
            segments.append(f"{keyed.group(1)}({{key}})")
        else:
            segments.append("{id}")
    return "/".join(segments)


def redact_host(host: str) -> str:
    """A host name as is; anything that is not one (an address, userinfo) as a fingerprint."""
    if _HOST.fullmatch(host) and "@" not in host:
        return host
    return address_fingerprint(host)


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` with the path redacted, no userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "{url}"
    if not parts.scheme:
        return redact_path(url)
    return f"{parts.scheme}://{redact_host(host)}{port}{redact_path(parts.path)}"


def _redact_url_in_text(match: re.Match[str]) -> str:
    url = match.group(0)
    kept = url.rstrip(_TRAILING)
    trailing = url[len(kept) :] if "?" not in kept and "#" not in kept else ""  # else part of the query
    return redact_url(kept) + trailing


def scrub_text(text: str) -> str:
    """Free text (messages, stack traces, span names): URLs redacted, then addresses and GUIDs (user,
    mailbox and record ids, which Dataverse's messages quote) fingerprinted."""
    text = redact_addresses(_URL.sub(_redact_url_in_text, text))
    return _GUID.sub(lambda match: short_fingerprint(match.group(0).lower()), text)


def looks_personal(text: str) -> bool:
    """True if the text holds an email address (used to keep ids out of metric dimensions)."""
    return ADDRESS.search(text) is not None


def scrub_attribute(key: str, value: Any) -> Any:
    """The value an attribute may be exported with, or None when it must not be exported at all."""
    if key in DROPPED_KEYS:
        return None
    if key in KEPT_KEYS:
        return value
    if isinstance(value, str):
        if key in URL_KEYS:
            return redact_url(value)
        if key in PATH_KEYS:
            return redact_path(value)
        if key in HOST_KEYS:
            return redact_host(value)
        return scrub_text(value)
    if isinstance(value, bytes):
        return None
    if isinstance(value, Sequence):
        return tuple(item for item in (scrub_attribute(key, part) for part in value) if item is not None)
    return value


def scrub_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every attribute scrubbed; attributes that must not be exported are left out."""
    scrubbed: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        clean = scrub_attribute(key, value)
        if clean is not None:
            scrubbed[key] = clean
    return scrubbed
