"""An Outlook series master (Graph ``patternedRecurrence``) -> Dataverse ``recurringappointmentmaster``.

Graph: "patternedRecurrence", "recurrencePattern" and "recurrenceRange" resource types
(learn.microsoft.com/graph/api/resources/...). Dataverse: the recurringappointmentmaster table
reference (power-apps/developer/data-platform/reference/entities/recurringappointmentmaster).
Field by field:

- pattern.type daily / weekly / absolute+relativeMonthly / absolute+relativeYearly ->
  ``recurrencepatterntype`` 0 / 1 / 2 / 3; the relative forms set ``isnthmonthly`` /
  ``isnthyearly``;
- pattern.interval -> ``interval`` (1-1000); daysOfWeek -> ``daysofweekmask`` (Sunday 0x01 ...
  Saturday 0x40); dayOfMonth -> ``dayofmonth``; index first..fourth, last -> ``instance`` 1..5;
  month -> ``monthofyear``; firstDayOfWeek -> ``firstdayofweek`` (0 Sunday);
- range.type noEnd / numbered / endDate -> ``patternendtype`` 1 / 2 / 3; startDate, endDate,
  numberOfOccurrences -> ``patternstartdate``, ``patternenddate``, ``occurrences`` (1-999);
- the master's start and end -> ``starttime``, ``endtime``, ``duration`` (minutes); isAllDay,
  subject, location, body, importance, iCalUId -> ``isalldayevent``, ``subject``, ``location``,
  ``description``, ``prioritycode``, ``globalobjectid`` (as the appointment field map projects them).

The range dates are dates in the series' time zone (``range.recurrenceTimeZone``, else the
event's): they are written as that zone's local midnight (the columns are UserLocal date-only, a
UTC moment shown in the user's zone), so a user in the series' zone sees the same dates.

What Dynamics cannot express is said, not bent: an interval over 1000 or more than 999
occurrences has no exact form in the table (its documented ranges), so :func:`series_columns`
returns the reason and the series is synchronised as its occurrences instead.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from shared.domain.model import Appointment
from shared.outlook.convert.times import zone
from shared.sync.fieldmaps.appointment import APPOINTMENT_MAP
from shared.sync.fieldmaps.base import CrmValue, utc_text

SERIES_TABLE = "recurringappointmentmaster"
_DAY_BITS = {
    "sunday": 0x01,
    "monday": 0x02,
    "tuesday": 0x04,
    "wednesday": 0x08,
    "thursday": 0x10,
    "friday": 0x20,
    "saturday": 0x40,
}
_FIRST_DAY = {day: number for number, day in enumerate(_DAY_BITS)}
_INSTANCE = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": 5}
_PATTERN_TYPE = {
    "daily": (0, None),
    "weekly": (1, None),
    "absoluteMonthly": (2, False),
    "relativeMonthly": (2, True),
    "absoluteYearly": (3, False),
    "relativeYearly": (3, True),
}
_END_TYPE = {"noEnd": 1, "numbered": 2, "endDate": 3}
# The series' basic columns, as the appointment field map projects them.
_BASIC_COLUMNS = ("subject", "location", "description", "isalldayevent", "prioritycode", "globalobjectid")
MAX_INTERVAL = 1000  # recurringappointmentmaster.interval MaxValue
MAX_OCCURRENCES = 999  # recurringappointmentmaster.occurrences MaxValue


@dataclass(frozen=True, slots=True)
class SeriesColumns:
    """The master's columns, or why Dynamics has no exact form for the pattern."""

    values: dict[str, CrmValue]
    not_expressible: str | None = None


def _local_midnight(day: str | None, time_zone: str) -> str | None:
    if not day:
        return None
    date = dt.date.fromisoformat(day[:10])
    return utc_text(dt.datetime.combine(date, dt.time(), zone(time_zone)))


def series_columns(master: Appointment) -> SeriesColumns:
    """The recurringappointmentmaster columns of a Graph series master (see the module docstring)."""
    recurrence: dict[str, Any] = json.loads(master.recurrence or "{}")
    pattern: dict[str, Any] = recurrence.get("pattern") or {}
    rng: dict[str, Any] = recurrence.get("range") or {}
    kind = str(pattern.get("type") or "")
    if kind not in _PATTERN_TYPE:
        return SeriesColumns({}, f"pattern type {kind or 'missing'} has no Dynamics form")
    interval = int(pattern.get("interval") or 1)
    occurrences = rng.get("numberOfOccurrences")
    if interval > MAX_INTERVAL:
        return SeriesColumns({}, f"an interval over {MAX_INTERVAL} has no Dynamics form")
    end_type = _END_TYPE.get(str(rng.get("type") or "noEnd"), 1)
    if end_type == 2 and int(occurrences or 0) > MAX_OCCURRENCES:
        return SeriesColumns({}, f"more than {MAX_OCCURRENCES} occurrences have no Dynamics form")
    pattern_type, nth = _PATTERN_TYPE[kind]
    time_zone = str(rng.get("recurrenceTimeZone") or master.time_zone or "UTC")
    mask = 0
    for day in pattern.get("daysOfWeek") or ():
        mask |= _DAY_BITS.get(str(day).lower(), 0)
    basic = APPOINTMENT_MAP.project(master).values  # fitted to the column limits
    values: dict[str, CrmValue] = {
        **{column: basic.get(column) for column in _BASIC_COLUMNS},
        "recurrencepatterntype": pattern_type,
        "interval": interval,
        "daysofweekmask": mask or None,
        "firstdayofweek": _FIRST_DAY.get(str(pattern.get("firstDayOfWeek") or "sunday").lower(), 0),
        "dayofmonth": int(pattern["dayOfMonth"]) if nth is False and pattern.get("dayOfMonth") else None,
        "instance": _INSTANCE.get(str(pattern.get("index") or "first"), 1) if nth else None,
        "monthofyear": int(pattern["month"]) if pattern_type == 3 and pattern.get("month") else None,
        "isnthmonthly": bool(nth) if pattern_type == 2 else False,
        "isnthyearly": bool(nth) if pattern_type == 3 else False,
        "isweekdaypattern": False,
        "patternstartdate": _local_midnight(rng.get("startDate"), time_zone),
        "patternendtype": end_type,
        "patternenddate": _local_midnight(rng.get("endDate"), time_zone) if end_type == 3 else None,
        "occurrences": int(occurrences) if end_type == 2 and occurrences else None,
        "starttime": utc_text(master.start),
        "endtime": utc_text(master.end),
        "duration": int((master.end - master.start).total_seconds() // 60),
    }
    return SeriesColumns(values)


__all__ = ["SERIES_TABLE", "SeriesColumns", "series_columns"]
