"""Fitting strings to Dataverse column limits (UTF-16 lengths, surrogate pairs kept whole)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.crm.limits import ELLIPSIS, MAX_LENGTHS, Fitted, fit_text, fit_value, utf16_length


def test_short_text_is_unchanged() -> None:
    assert fit_text("Quarterly review", 200) == "Quarterly review"


def test_long_subject_is_cut_to_the_limit_with_an_ellipsis() -> None:
    fitted = fit_text("x" * 250, 200)
    assert fitted == "x" * 199 + ELLIPSIS
    assert utf16_length(fitted) == 200


def test_an_emoji_counts_two_and_is_never_split() -> None:
    text = "ab" + "😀" * 5  # 2 + 10 UTF-16 code units
    assert utf16_length(text) == 12
    fitted = fit_text(text, 6)
    # budget 5 after the ellipsis: "ab" (2) + one emoji (2) = 4; a second emoji would need 6.
    assert fitted == "ab😀" + ELLIPSIS
    assert fitted.encode("utf-16-le").decode("utf-16-le") == fitted  # no lone surrogate


def test_fit_value_reports_column_and_original_length_but_not_the_value() -> None:
    value, note = fit_value("appointment", "subject", "s" * 201)
    assert utf16_length(value) == 200
    assert note == Fitted("appointment", "subject", 201, 200)


def test_fit_value_leaves_unlimited_columns_alone() -> None:
    assert fit_value("appointment", "no_such_column", "y" * 5000) == ("y" * 5000, None)


@given(st.text(), st.integers(min_value=1, max_value=40))
def test_fitted_text_always_fits_and_keeps_a_prefix(text: str, limit: int) -> None:
    fitted = fit_text(text, limit)
    assert utf16_length(fitted) <= limit
    if fitted != text:
        assert fitted.endswith(ELLIPSIS)
        assert text.startswith(fitted.removesuffix(ELLIPSIS))
    fitted.encode("utf-16", errors="strict")  # would raise on a lone surrogate


def test_every_limit_is_positive() -> None:
    assert all(limit > 0 for table in MAX_LENGTHS.values() for limit in table.values())
