"""The synced-fields encoding: lossless when it fits, hashes (still comparable) when it cannot."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from shared.domain.bases import FieldBase
from shared.store.synced_fields import (
    CHUNK_CHARS,
    MAX_CHUNKS,
    HashedValue,
    JsonValue,
    decode_link_bases,
    decode_synced_fields,
    encode_link_bases,
    encode_synced_fields,
    hash_value,
    unchanged_since_sync,
)

json_values: st.SearchStrategy[JsonValue] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _fits_in_an_entity(properties: dict[str, str | int]) -> bool:
    strings = [value for value in properties.values() if isinstance(value, str)]
    return len(properties) <= MAX_CHUNKS + 1 and all(len(value) <= CHUNK_CHARS for value in strings)


@given(st.dictionaries(st.text(max_size=20), json_values, max_size=8))
def test_small_fields_round_trip_exactly(fields: dict[str, JsonValue]) -> None:
    properties = encode_synced_fields(fields)
    assert _fits_in_an_entity(properties)
    assert decode_synced_fields(properties) == fields


def test_large_compressible_fields_are_chunked_losslessly() -> None:
    fields: dict[str, JsonValue] = {"description": "The same paragraph again. " * 40_000}
    properties = encode_synced_fields(fields)
    assert _fits_in_an_entity(properties)
    assert "sf" not in properties
    assert decode_synced_fields(properties) == fields


def test_only_the_values_that_cannot_fit_become_hashes() -> None:
    noise = random.Random(1)
    huge = noise.randbytes(350_000).hex()
    fields: dict[str, JsonValue] = {"huge": huge, "subject": "Kick-off", "count": 3}

    decoded = decode_synced_fields(encode_synced_fields(fields))
    assert decoded == {"huge": hash_value(huge), "subject": "Kick-off", "count": 3}
    assert _fits_in_an_entity(encode_synced_fields(fields))


def test_change_detection_works_for_plain_and_hashed_values() -> None:
    assert unchanged_since_sync({"b": 1, "a": [2]}, {"a": [2], "b": 1})
    assert not unchanged_since_sync("x", "y")
    assert unchanged_since_sync(hash_value({"k": "v"}), {"k": "v"})
    assert not unchanged_since_sync(hash_value({"k": "v"}), {"k": "w"})


def test_no_fields_means_no_properties_needed() -> None:
    assert decode_synced_fields({}) == {}
    assert decode_synced_fields(encode_synced_fields({})) == {}
    assert isinstance(
        decode_synced_fields(encode_synced_fields({"h": HashedValue("0" * 64)}))["h"], HashedValue
    )


def test_link_bases_round_trip_and_a_legacy_row_keeps_its_ownership() -> None:
    bases = {"subject": FieldBase("a" * 32, "b" * 32)}
    assert decode_link_bases(encode_link_bases(True, bases)) == (True, bases)
    assert decode_link_bases(encode_link_bases(False, {})) == (False, {})
    legacy = encode_synced_fields({"@owned_by_user": True, "subject": ["a" * 32, "b" * 32]})
    assert decode_link_bases(legacy) == (True, bases)
