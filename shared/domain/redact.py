"""Email addresses inside free text replaced by a short fingerprint (error messages, telemetry).

Graph and Dataverse error messages may quote an address ("Resource 'alice@contoso.com' does not
exist ..."); crmsync keeps their code and wording but never the address. The stand-in is the same
``#`` + 12 hex digits as ``shared.store.fingerprint.short_fingerprint`` of the lower-cased address, so
an administrator who knows the address can still find it in the logs.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

# Local part (the characters addresses use in practice), "@" (or its URL encoding), then a dotted
# host name. Deliberately broad: a false positive only hides a harmless token, a miss leaks one.
ADDRESS = re.compile(
    r"[A-Za-z0-9._%+\-]+(?:@|%40)"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)+",
    re.IGNORECASE,
)


def address_fingerprint(address: str) -> str:
    """``#`` + the first 12 hex digits of SHA-256 of the address, URL-decoded and lower-cased."""
    normalized = unquote(address).strip().lower()
    return "#" + hashlib.sha256(normalized.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def redact_addresses(text: str) -> str:
    """``text`` with every email address (also URL-encoded) replaced by its fingerprint."""
    return ADDRESS.sub(lambda match: address_fingerprint(match.group(0)), text)
