"""Reversible, Table-key-safe encoding of the identifiers crmsync uses as PartitionKey / RowKey.

Graph ids contain ``/``, ``+`` and ``=``; Table Storage forbids ``/``, ``\\``, ``#``, ``?`` and
control characters (U+0000-U+001F, U+007F-U+009F) in keys and limits each key to 1 KiB, i.e.
512 UTF-16 characters (learn.microsoft.com, "Understanding the Table service data model",
rest/api/storageservices/understanding-the-table-service-data-model, "Characters disallowed in
key fields"). Keys also travel in URL paths, so the encoding keeps
only URL-unreserved ASCII: letters, digits, ``-``, ``_`` and ``.`` pass through (GUIDs and
Dataverse logical names stay readable in Storage Explorer); every other character becomes
``~XX`` per UTF-8 byte. ``|`` never appears in an encoded part, so it separates the parts of a
composite row key unambiguously.
"""

from __future__ import annotations

import re
import string

from shared.store.errors import InvalidKey

MAX_KEY_CHARS = 512
SEPARATOR = "|"
_PASS_THROUGH = frozenset(string.ascii_letters + string.digits + "-_.")
_PLAIN = re.compile(r"[A-Za-z0-9_.\-]+")
_ENCODED = re.compile(r"(?:[A-Za-z0-9_.\-]|~[0-9A-F]{2})+")


def encode_key(value: str) -> str:
    """Encode one identifier; :class:`InvalidKey` if it is empty or too long once encoded."""
    if not value:
        raise InvalidKey("an empty identifier cannot be a table key")
    if _PLAIN.fullmatch(value):  # most ids (GUIDs, Graph ids but their '=' padding) need no escape
        _check_length(value)
        return value
    try:
        encoded = "".join(
            char if char in _PASS_THROUGH else "".join(f"~{byte:02X}" for byte in char.encode("utf-8"))
            for char in value
        )
    except UnicodeEncodeError as exc:
        raise InvalidKey("identifier is not valid Unicode (lone surrogate)") from exc
    _check_length(encoded)
    return encoded


def decode_key(encoded: str) -> str:
    """Invert :func:`encode_key`; :class:`InvalidKey` for anything it could not have produced."""
    if not _ENCODED.fullmatch(encoded):
        raise InvalidKey("not an encoded table key")
    raw = bytearray()
    index = 0
    while index < len(encoded):
        if encoded[index] == "~":
            raw.append(int(encoded[index + 1 : index + 3], 16))
            index += 3
        else:
            raw.append(ord(encoded[index]))
            index += 1
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidKey("encoded table key is not UTF-8") from exc
    if encode_key(decoded) != encoded:
        raise InvalidKey("not the canonical encoding of a table key")
    return decoded


def row_key(*parts: str) -> str:
    """Join already-safe parts (encoded ids, fixed tags) with ``|``, within the key size limit."""
    joined = SEPARATOR.join(parts)
    _check_length(joined)
    return joined


def key_range(*parts: str) -> tuple[str, str]:
    """The ``[low, high)`` RowKey range of every key that starts with ``parts`` plus a separator.

    ``}`` sorts right after ``|``, so ``ge 'o|' and lt 'o}'`` is exactly the ``o|...`` rows.
    """
    prefix = SEPARATOR.join(parts)
    return prefix + SEPARATOR, prefix + "}"


def _check_length(key: str) -> None:
    if len(key) > MAX_KEY_CHARS:
        raise InvalidKey(f"table key would be {len(key)} characters; the limit is {MAX_KEY_CHARS}")
