"""Stand-ins for identifiers wherever an identifier must not appear verbatim (logs, errors, audit)."""

from __future__ import annotations

import hashlib


def fingerprint(value: str) -> str:
    """SHA-256 hex of an identifier: stable across machines, reveals nothing about the id."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def short_fingerprint(value: str) -> str:
    """A short fingerprint for human-facing messages (``#`` + 12 hex digits)."""
    return "#" + fingerprint(value)[:12]
