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
  ``description``, ``prioritycode``, ``globalobjectid`` (as the appointment field map projects them);
  the organizer and attendees -> the master's activity parties (organizer, required, optional).

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
from shared.sync.fieldmaps.base import CrmValue, fingerprint, parse_utc, utc_text

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
# The series' organizer and attendees: the master's activity parties, one set for the whole series.
SERIES_PARTIES = ("organizer", "requiredattendees", "optionalattendees")
RECURRING_EXCEPTION = 3  # appointment.instancetypecode: an instance changed on its own
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
    time_zone = series_zone(master)
    mask = 0
    for day in pattern.get("daysOfWeek") or ():
        mask |= _DAY_BITS.get(str(day).lower(), 0)
    basic = APPOINTMENT_MAP.project(master).values  # fitted to the column limits
    values: dict[str, CrmValue] = {
        **{column: basic.get(column) for column in _BASIC_COLUMNS},
        **{column: basic[column] for column in SERIES_PARTIES if column in basic},
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


_DAY_NAMES = tuple(_DAY_BITS)  # bit n of daysofweekmask -> its Graph day name
_INDEX_NAMES = {number: name for name, number in _INSTANCE.items()}
_END_NAMES = {number: name for name, number in _END_TYPE.items()}
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]


@dataclass(frozen=True, slots=True)
class SeriesRecurrence:
    """A master's Graph ``patternedRecurrence``, or why Graph has no exact form for it."""

    recurrence: dict[str, Any]
    not_expressible: str | None = None


def _days(mask: int) -> list[str]:
    return [name for bit, name in enumerate(_DAY_NAMES) if mask & (1 << bit)]


def _local_date(value: object, time_zone: str) -> str | None:
    moment = parse_utc(value) if isinstance(value, str) else None
    return moment.astimezone(zone(time_zone)).date().isoformat() if moment is not None else None


def series_recurrence(row: dict[str, Any], time_zone: str) -> SeriesRecurrence:
    """The Graph ``patternedRecurrence`` of a recurringappointmentmaster row, the inverse of
    :func:`series_columns`; ``time_zone`` is the series' Windows zone name (its range dates are
    that zone's dates). Dynamics' "every weekday" daily pattern (``isweekdaypattern``) has no Graph
    daily form: its exact equivalent, weekly Monday-Friday every week, is used (same occurrences)."""
    kind = row.get("recurrencepatterntype")
    interval = int(row.get("interval") or 1)
    mask = int(row.get("daysofweekmask") or 0)
    pattern: dict[str, Any]
    if kind == 0 and row.get("isweekdaypattern"):
        pattern = {"type": "weekly", "interval": 1, "daysOfWeek": _WEEKDAYS, "firstDayOfWeek": "sunday"}
    elif kind == 0:
        pattern = {"type": "daily", "interval": interval}
    elif kind == 1:
        start = parse_utc(row.get("starttime")) if isinstance(row.get("starttime"), str) else None
        if not mask and start is not None:  # no days: the first occurrence's weekday, as Dynamics expands
            mask = 1 << ((start.astimezone(zone(time_zone)).weekday() + 1) % 7)
        first_day = int(row.get("firstdayofweek") or 0)
        pattern = {
            "type": "weekly",
            "interval": interval,
            "daysOfWeek": _days(mask),
            "firstDayOfWeek": _DAY_NAMES[first_day % 7],
        }
    elif kind in {2, 3}:
        nth = bool(row.get("isnthmonthly" if kind == 2 else "isnthyearly"))
        pattern = {
            "type": ("relative" if nth else "absolute") + ("Monthly" if kind == 2 else "Yearly"),
            "interval": interval,
        }
        if nth:
            if not mask:
                return SeriesRecurrence({}, "an Nth-weekday pattern without days has no Graph form")
            pattern |= {"daysOfWeek": _days(mask), "index": _INDEX_NAMES.get(int(row.get("instance") or 1))}
        else:
            pattern["dayOfMonth"] = int(row.get("dayofmonth") or 1)
        if kind == 3:
            pattern["month"] = int(row.get("monthofyear") or 1)
    else:
        return SeriesRecurrence({}, f"recurrencepatterntype {kind} has no Graph form")
    end_type = _END_NAMES.get(int(row.get("patternendtype") or 1), "noEnd")
    rng: dict[str, Any] = {
        "type": end_type,
        "startDate": _local_date(row.get("patternstartdate") or row.get("starttime"), time_zone),
        "recurrenceTimeZone": time_zone,
    }
    if end_type == "endDate":
        rng["endDate"] = _local_date(row.get("patternenddate"), time_zone)
    if end_type == "numbered":
        rng["numberOfOccurrences"] = int(row.get("occurrences") or 1)
    return SeriesRecurrence({"pattern": pattern, "range": rng})


# The columns that make the pattern (a change of any regenerates Dynamics' instances).
PATTERN_COLUMNS = frozenset(
    {
        "recurrencepatterntype",
        "interval",
        "daysofweekmask",
        "dayofmonth",
        "instance",
        "monthofyear",
        "firstdayofweek",
        "isnthmonthly",
        "isnthyearly",
        "isweekdaypattern",
        "patternstartdate",
        "patternendtype",
        "patternenddate",
        "occurrences",
        "starttime",
        "endtime",
        "duration",
        "isalldayevent",
    }
)
SERIES_READ_COLUMNS = (*sorted(PATTERN_COLUMNS), "utcconversiontimezonecode")


def pattern_fingerprint(columns: dict[str, CrmValue]) -> str:
    """A fingerprint of a series' pattern columns: what the Outlook series' pattern was when crmsync
    last wrote it (kept on the master's link, the base that tells which side changed)."""
    return fingerprint({column: columns.get(column) for column in sorted(PATTERN_COLUMNS)})


def series_zone(master: Appointment) -> str:
    """The zone an Outlook series' pattern is anchored in: its range's, else the event's, else UTC."""
    recurrence: dict[str, Any] = json.loads(master.recurrence or "{}")
    rng: dict[str, Any] = recurrence.get("range") or {}
    return str(rng.get("recurrenceTimeZone") or master.time_zone or "UTC")


def same_pattern(row: dict[str, Any], outlook: dict[str, CrmValue], time_zone: str) -> bool:
    """Whether a master row and an Outlook series' columns (:func:`series_columns`) are the same
    pattern: the row is mapped to Graph and back, so two exact forms of one pattern compare equal."""
    recurrence = series_recurrence(row, time_zone)
    start, end = parse_utc(row.get("starttime")), parse_utc(row.get("endtime"))
    if recurrence.not_expressible is not None or start is None or end is None:
        return False
    again = series_columns(
        Appointment(
            start=start,
            end=end,
            time_zone=time_zone,
            is_all_day=bool(row.get("isalldayevent")),
            recurrence=json.dumps(recurrence.recurrence),
        )
    ).values
    return all(again.get(c) == outlook.get(c) for c in PATTERN_COLUMNS)


__all__ = [
    "PATTERN_COLUMNS",
    "RECURRING_EXCEPTION",
    "SERIES_PARTIES",
    "SERIES_READ_COLUMNS",
    "SERIES_TABLE",
    "SeriesColumns",
    "SeriesRecurrence",
    "pattern_fingerprint",
    "same_pattern",
    "series_columns",
    "series_recurrence",
    "series_zone",
]
