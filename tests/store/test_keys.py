"""Key encoding: reversible, and never produces a character or length Table Storage refuses."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shared.store.errors import InvalidKey
from shared.store.keys import MAX_KEY_CHARS, SEPARATOR, decode_key, encode_key, key_range, row_key

# Table Storage forbids these in PartitionKey / RowKey.
FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
GRAPH_ID = "AAMkAGI2TG93AAA=/+x_y-z.AAA=="


@given(st.text(min_size=1, max_size=200))
@example(GRAPH_ID)
@example("~7E%2F|#?\\\x00\x7f\x9f")
@example("\U0001f600 Zoë")
def test_encoding_round_trips_and_is_key_safe(value: str) -> None:
    try:
        encoded = encode_key(value)
    except InvalidKey:
        # Refused only for length: each UTF-8 byte encodes to at most 3 characters.
        assert len(value.encode("utf-8")) * 3 > MAX_KEY_CHARS
        return
    assert decode_key(encoded) == value
    assert not FORBIDDEN.search(encoded)
    assert SEPARATOR not in encoded
    assert len(encoded) <= MAX_KEY_CHARS


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_distinct_ids_get_distinct_keys(first: str, second: str) -> None:
    assert (encode_key(first) == encode_key(second)) == (first == second)


def test_guids_and_logical_names_stay_readable() -> None:
    assert encode_key("00000000-0000-0000-0000-000000000001") == "00000000-0000-0000-0000-000000000001"
    assert encode_key("new_customtable") == "new_customtable"
    assert encode_key("a/b+c=") == "a~2Fb~2Bc~3D"


@pytest.mark.parametrize("bad", ["", "a" * (MAX_KEY_CHARS + 1), "/" * 200, "\ud800"])
def test_unusable_identifiers_are_refused(bad: str) -> None:
    with pytest.raises(InvalidKey):
        encode_key(bad)


@pytest.mark.parametrize("bad", ["", "a|b", "a/b", "~2f", "~ZZ", "~C3", "a~41"])
def test_decoding_refuses_what_encoding_cannot_produce(bad: str) -> None:
    with pytest.raises(InvalidKey):
        decode_key(bad)


def test_composite_keys_and_ranges() -> None:
    key = row_key("o", "email", encode_key(GRAPH_ID))
    low, high = key_range("o", "email")
    assert low <= key < high
    assert not low <= row_key("o", "emailx", "1") < high
    with pytest.raises(InvalidKey):
        row_key("o", "a" * MAX_KEY_CHARS)
