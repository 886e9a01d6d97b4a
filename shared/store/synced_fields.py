"""How a link's merge bases (per unit, the last synced fingerprints) fit into a table entity.

The three-way merge needs the values both sides agreed on at the last sync. Table Storage caps
a string property at 64 KiB (32 K UTF-16 characters) and an entity at 1 MiB and 255 properties
(learn.microsoft.com/azure/storage/tables/scalability-targets). So the values are stored as:

1. compact JSON in one property (``sf``) when it fits in :data:`CHUNK_CHARS`; else
2. zlib-compressed, base64 JSON split over up to :data:`MAX_CHUNKS` properties
   (``sfz0``, ``sfz1``...; ``sfn`` holds the count); and if even that is too big,
3. the largest values, one at a time, are replaced by :class:`HashedValue` (their SHA-256)
   until it fits. A merge cannot restore such a value, but :func:`unchanged_since_sync`
   still tells whether the current value differs from it, which is all change detection needs.

In JSON a hashed value is the one-key object ``{"$crmsync.sha256": "<hex>"}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from shared.domain.bases import FieldBase

JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None

CHUNK_CHARS = 30_000
MAX_CHUNKS = 12
_MARKER = "$crmsync.sha256"
_PLAIN = "sf"
_COUNT = "sfn"
_CHUNK = "sfz"


@dataclass(frozen=True, slots=True)
class HashedValue:
    """Stands in for a synced value too large to store: only its SHA-256 (hex) is kept."""

    sha256: str


SyncedValue: TypeAlias = JsonValue | HashedValue
SyncedFields: TypeAlias = dict[str, SyncedValue]


# One encoder: ``json.dumps`` with options builds a new one per call, and every link write calls it.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _canonical(value: Any) -> str:
    return _ENCODER.encode(value)


def hash_value(value: JsonValue) -> HashedValue:
    """The :class:`HashedValue` of a JSON value (canonical JSON, so equal values hash equally)."""
    return HashedValue(hashlib.sha256(_canonical(value).encode("ascii")).hexdigest())


def unchanged_since_sync(stored: SyncedValue, current: JsonValue) -> bool:
    """Whether ``current`` equals the value stored at the last sync (comparing hashes if it was hashed)."""
    if isinstance(stored, HashedValue):
        return hash_value(current) == stored
    return _canonical(stored) == _canonical(current)


def _to_json(value: SyncedValue) -> Any:
    return {_MARKER: value.sha256} if isinstance(value, HashedValue) else value


def _from_json(value: Any) -> SyncedValue:
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(_MARKER), str):
        return HashedValue(value[_MARKER])
    return value  # type: ignore[no-any-return]


def _try_encode(fields: Mapping[str, SyncedValue]) -> dict[str, str | int] | None:
    text = _canonical({name: _to_json(value) for name, value in fields.items()})
    if len(text) <= CHUNK_CHARS:
        return {_PLAIN: text}
    packed = base64.b64encode(zlib.compress(text.encode("ascii"), 6)).decode("ascii")
    chunks = [packed[start : start + CHUNK_CHARS] for start in range(0, len(packed), CHUNK_CHARS)]
    if len(chunks) > MAX_CHUNKS:
        return None
    properties: dict[str, str | int] = {f"{_CHUNK}{index}": chunk for index, chunk in enumerate(chunks)}
    properties[_COUNT] = len(chunks)
    return properties


def encode_synced_fields(fields: Mapping[str, SyncedValue]) -> dict[str, str | int]:
    """Entity properties holding ``fields``, hashing the largest values if they cannot fit otherwise."""
    working: SyncedFields = dict(fields)
    encoded = _try_encode(working)
    if encoded is not None:
        return encoded  # the usual case: measuring each value first would be wasted
    by_size = sorted(working, key=lambda name: len(_canonical(_to_json(working[name]))), reverse=True)
    for name in by_size:
        value = working[name]
        if not isinstance(value, HashedValue):
            working[name] = hash_value(value)
        encoded = _try_encode(working)
        if encoded is not None:
            return encoded
    raise ValueError("too many synced fields to store even as hashes")


def decode_synced_fields(properties: Mapping[str, Any]) -> SyncedFields:
    """Invert :func:`encode_synced_fields` (missing properties mean no synced fields)."""
    if _PLAIN in properties:
        text = str(properties[_PLAIN])
    elif _COUNT in properties:
        packed = "".join(str(properties[f"{_CHUNK}{index}"]) for index in range(int(properties[_COUNT])))
        text = zlib.decompress(base64.b64decode(packed)).decode("ascii")
    else:
        return {}
    return {name: _from_json(value) for name, value in json.loads(text).items()}


def normalise_synced_fields(fields: Mapping[str, SyncedValue]) -> SyncedFields:
    """What a store hands back after storing ``fields`` (the in-memory fake uses it to behave alike)."""
    return decode_synced_fields(encode_synced_fields(fields))


# --- a link's merge bases and ownership ---------------------------------------------------------

_OWNED = "own"
_LEGACY_OWNED = "@owned_by_user"  # rows written before ownership had a property of its own


def encode_link_bases(owned_by_user: bool, bases: Mapping[str, FieldBase]) -> dict[str, str | int | bool]:
    """Entity properties of a link's ownership flag and its per-unit merge bases."""
    pairs: dict[str, SyncedValue] = {unit: [base.outlook, base.crm] for unit, base in bases.items()}
    return {_OWNED: owned_by_user, **encode_synced_fields(pairs)}


def decode_link_bases(properties: Mapping[str, Any]) -> tuple[bool, dict[str, FieldBase]]:
    """Invert :func:`encode_link_bases`; a legacy row keeps its ownership inside the synced fields."""
    decoded = decode_synced_fields(properties)
    owned = properties.get(_OWNED)
    if owned is None:
        owned = decoded.get(_LEGACY_OWNED) is True
    bases = {
        unit: FieldBase(str(value[0]), str(value[1]))
        for unit, value in decoded.items()
        if isinstance(value, list) and len(value) == 2
    }
    return bool(owned), bases
