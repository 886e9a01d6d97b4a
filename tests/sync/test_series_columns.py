"""An Outlook series master's patternedRecurrence -> recurringappointmentmaster columns, field by field
(Graph recurrencePattern / recurrenceRange; the recurringappointmentmaster table reference)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from shared.domain.model import Appointment, EventKind
from shared.sync.fieldmaps.series import series_columns

START = dt.datetime(2027, 3, 1, 8, 0, tzinfo=dt.UTC)  # 09:00 in Berlin


def _master(pattern: dict[str, Any], rng: dict[str, Any], **extra: Any) -> Appointment:
    return Appointment(
        subject="Review",
        start=START,
        end=START + dt.timedelta(minutes=45),
        time_zone="W. Europe Standard Time",
        event_kind=EventKind.SERIES_MASTER,
        ical_uid="UID",
        recurrence=json.dumps({"pattern": pattern, "range": rng}),
        **extra,
    )


NO_END = {"type": "noEnd", "startDate": "2027-03-01"}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (
            {"type": "daily", "interval": 2},
            {"recurrencepatterntype": 0, "interval": 2, "daysofweekmask": None},
        ),
        (
            {
                "type": "weekly",
                "interval": 1,
                "daysOfWeek": ["monday", "thursday"],
                "firstDayOfWeek": "monday",
            },
            {"recurrencepatterntype": 1, "daysofweekmask": 0x02 | 0x10, "firstdayofweek": 1},
        ),
        (
            {"type": "absoluteMonthly", "interval": 3, "dayOfMonth": 15},
            {
                "recurrencepatterntype": 2,
                "interval": 3,
                "dayofmonth": 15,
                "isnthmonthly": False,
                "instance": None,
            },
        ),
        (
            {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["tuesday"], "index": "second"},
            {"recurrencepatterntype": 2, "isnthmonthly": True, "instance": 2, "daysofweekmask": 0x04},
        ),
        (
            {"type": "absoluteYearly", "interval": 1, "dayOfMonth": 1, "month": 3},
            {"recurrencepatterntype": 3, "dayofmonth": 1, "monthofyear": 3, "isnthyearly": False},
        ),
        (
            {"type": "relativeYearly", "interval": 1, "daysOfWeek": ["friday"], "index": "last", "month": 11},
            {
                "recurrencepatterntype": 3,
                "instance": 5,
                "daysofweekmask": 0x20,
                "monthofyear": 11,
                "isnthyearly": True,
            },
        ),
    ],
)
def test_each_pattern_type(pattern: dict[str, Any], expected: dict[str, Any]) -> None:
    columns = series_columns(_master(pattern, NO_END))
    assert columns.not_expressible is None
    assert {k: columns.values[k] for k in expected} == expected


def test_each_range_type_and_the_times() -> None:
    daily = {"type": "daily", "interval": 1}
    no_end = series_columns(_master(daily, NO_END)).values
    assert (no_end["patternendtype"], no_end["patternenddate"], no_end["occurrences"]) == (1, None, None)
    numbered = series_columns(
        _master(daily, {**NO_END, "type": "numbered", "numberOfOccurrences": 10})
    ).values
    assert (numbered["patternendtype"], numbered["occurrences"]) == (2, 10)
    dated = series_columns(_master(daily, {**NO_END, "type": "endDate", "endDate": "2027-04-30"})).values
    assert dated["patternendtype"] == 3
    # Range dates are the series zone's local midnight (UserLocal date-only columns), across DST too.
    assert dated["patternstartdate"] == "2027-02-28T23:00:00Z"
    assert dated["patternenddate"] == "2027-04-29T22:00:00Z"
    assert (dated["starttime"], dated["endtime"], dated["duration"]) == (
        "2027-03-01T08:00:00Z",
        "2027-03-01T08:45:00Z",
        45,
    )
    assert (dated["subject"], dated["globalobjectid"], dated["isalldayevent"]) == ("Review", "UID", False)


@pytest.mark.parametrize(
    ("pattern", "rng"),
    [
        ({"type": "daily", "interval": 1001}, NO_END),
        ({"type": "daily", "interval": 1}, {**NO_END, "type": "numbered", "numberOfOccurrences": 1000}),
    ],
)
def test_what_dynamics_cannot_express_is_said(pattern: dict[str, Any], rng: dict[str, Any]) -> None:
    columns = series_columns(_master(pattern, rng))
    assert columns.not_expressible is not None
    assert columns.values == {}
