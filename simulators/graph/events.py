"""Calendar semantics: recurrence expansion, occurrences and exceptions, calendarView windows.

- learn.microsoft.com/graph/api/resources/patternedrecurrence (+ recurrencepattern,
  recurrencerange): daily, weekly, absolute/relative monthly and yearly patterns with
  endDate / noEnd / numbered ranges.
- learn.microsoft.com/graph/api/event-list-instances: occurrences and exceptions of a series
  master in a window; each has ``type`` occurrence/exception, ``seriesMasterId`` and
  ``originalStart``; updating an occurrence makes it an exception, deleting it cancels it.
- learn.microsoft.com/graph/api/user-list-calendarview: single instances, occurrences and
  exceptions (not series masters) overlapping [startDateTime, endDateTime).
- learn.microsoft.com/graph/api/resources/event, iCalUId: "different for each occurrence in a
  recurring series".
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator

from simulators.graph import timezones
from simulators.graph.core import GraphError, Json, bad_request, etag, iso_z, parse_iso
from simulators.graph.resources import View, render, shape
from simulators.graph.store import Item, Kind, Mailbox

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEK_INDEX = {"first": 0, "second": 1, "third": 2, "fourth": 3}
MAX_EXPANSION_DAYS = 3700  # about ten years: bounds the day-by-day walk of a noEnd series


def window(query: dict[str, str]) -> tuple[dt.datetime, dt.datetime]:
    """The required startDateTime/endDateTime of calendarView and instances."""
    start, end = query.get("startDateTime"), query.get("endDateTime")
    if not start or not end:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters "
            "StartDateTime and EndDateTime.",
        )
    return parse_iso(start), parse_iso(end)


def _relative_match(day: dt.date, index: str) -> bool:
    if index == "last":
        return (day + dt.timedelta(days=7)).month != day.month
    return (day.day - 1) // 7 == WEEK_INDEX.get(index, 0)


def _months_between(first: dt.date, day: dt.date) -> int:
    return (day.year - first.year) * 12 + day.month - first.month


def _week_start(day: dt.date, first_day: str) -> dt.date:
    offset = (day.weekday() - WEEKDAYS.index(first_day)) % 7
    return day - dt.timedelta(days=offset)


def matches(pattern: Json, first: dt.date, day: dt.date) -> bool:
    """Whether ``day`` carries an occurrence of ``pattern`` for a range starting ``first``."""
    kind = pattern.get("type")
    interval = int(pattern.get("interval") or 1)
    weekday = WEEKDAYS[day.weekday()]
    days_of_week = [d.lower() for d in pattern.get("daysOfWeek") or []]
    if kind == "daily":
        return (day - first).days % interval == 0
    if kind == "weekly":
        first_day = str(pattern.get("firstDayOfWeek") or "sunday").lower()
        weeks = (_week_start(day, first_day) - _week_start(first, first_day)).days // 7
        return weekday in days_of_week and weeks % interval == 0
    if kind == "absoluteMonthly":
        return day.day == pattern.get("dayOfMonth") and _months_between(first, day) % interval == 0
    if kind == "relativeMonthly":
        index = str(pattern.get("index") or "first")
        return (
            weekday in days_of_week
            and _relative_match(day, index)
            and _months_between(first, day) % interval == 0
        )
    if kind == "absoluteYearly":
        return (
            day.month == pattern.get("month")
            and day.day == pattern.get("dayOfMonth")
            and (day.year - first.year) % interval == 0
        )
    if kind == "relativeYearly":
        index = str(pattern.get("index") or "first")
        return day.month == pattern.get("month") and weekday in days_of_week and _relative_match(day, index)
    raise bad_request(f"Unsupported recurrence pattern type '{kind}'.")


def occurrence_dates(master: Item, until: dt.date) -> Iterator[dt.date]:
    """Dates of a series' occurrences from its range start up to ``until`` (inclusive)."""
    recurrence = master.props.get("recurrence") or {}
    pattern, rng = recurrence.get("pattern") or {}, recurrence.get("range") or {}
    first = dt.date.fromisoformat(
        str(rng.get("startDate") or timezones.wall_clock(master.props["start"]).date())
    )
    last = (
        dt.date.fromisoformat(rng["endDate"]) if rng.get("type") == "endDate" and rng.get("endDate") else None
    )
    count = int(rng.get("numberOfOccurrences") or 0) if rng.get("type") == "numbered" else 0
    limit = min(until, first + dt.timedelta(days=MAX_EXPANSION_DAYS))
    if last is not None:
        limit = min(limit, last)
    found = 0
    day = first
    while day <= limit:
        if matches(pattern, first, day):
            found += 1
            if count and found > count:
                return
            yield day
        day += dt.timedelta(days=1)


def _duration(master: Item) -> dt.timedelta:
    return timezones.to_utc(master.props["end"]) - timezones.to_utc(master.props["start"])


def _occurrence_span(master: Item, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """UTC start/end of the occurrence on ``day``: the master's wall-clock time in its own zone."""
    start_tz = timezones.zone(str(master.props["start"].get("timeZone") or "UTC"))
    wall = timezones.wall_clock(master.props["start"])
    start = dt.datetime.combine(day, wall.time(), start_tz).astimezone(dt.UTC)
    return start, start + _duration(master)


def check_override(master: Item, original: str, overrides: Json) -> None:
    """An exception's own start/end must still make a valid span (as for any event)."""
    if "recurrence" in overrides or "singleValueExtendedProperties" in overrides:
        raise bad_request("An occurrence carries neither its own recurrence nor extended properties.")
    start = timezones.to_utc(overrides["start"]) if "start" in overrides else parse_iso(original)
    end = (
        timezones.to_utc(overrides["end"]) if "end" in overrides else parse_iso(original) + _duration(master)
    )
    if end < start:
        raise bad_request("The event's end time must be after its start time.")


def occurrence_id(master_id: str, original_start: str) -> str:
    return master_id + "AAAQ" + base64.b64encode(original_start.encode("ascii")).decode("ascii")


def _instance_ical(master: Item, day: dt.date) -> str:
    ical = str(master.props.get("iCalUId") or "")
    return ical[:32] + f"{day.year:04X}{day.month:02X}{day.day:02X}" + ical[40:]


def instance_json(box: Mailbox, master: Item, original: str, view: View) -> Json | None:
    """An occurrence or exception as Graph renders it; None when it was cancelled."""
    overrides = master.exceptions.get(original, {})
    if overrides is None:
        return None
    start = parse_iso(original)
    end = start + _duration(master)
    full = render(box, master, View(view.immutable_ids, view.time_zone))
    master_id = full["id"]
    instance_id = occurrence_id(master_id, original)
    box.occurrences[instance_id] = (master.immutable_id, original)
    # An exception changes when it is edited and when its series is (its other fields come from the master).
    own = master.exception_keys.get(original)
    key = master.change_key if own is None else f"{master.change_key[:8]}{own}"
    full.pop("recurrence", None)  # an instance has no recurrence of its own
    full.update(
        {
            "@odata.etag": etag(key),
            "id": instance_id,
            "changeKey": key,
            "type": "exception" if overrides else "occurrence",
            "seriesMasterId": master_id,
            "originalStart": original,
            "iCalUId": _instance_ical(master, start.date()),
        }
    )
    if master.props.get("isAllDay"):
        wall = timezones.wall_clock(master.props["start"])
        days = (timezones.wall_clock(master.props["end"]) - wall).days
        local_day = start.astimezone(
            timezones.zone(str(master.props["start"].get("timeZone") or "UTC"))
        ).date()
        full["start"] = timezones.render_floating(dt.datetime.combine(local_day, dt.time()), view.time_zone)
        full["end"] = timezones.render_floating(
            dt.datetime.combine(local_day + dt.timedelta(days=days), dt.time()), view.time_zone
        )
    else:
        full["start"] = timezones.render(start, view.time_zone)
        full["end"] = timezones.render(end, view.time_zone)
    for name, value in (overrides or {}).items():
        if name in ("start", "end"):
            full[name] = timezones.render(timezones.to_utc(value), view.time_zone)
        else:
            full[name] = value
    return shape(full, master, view)


def instances(box: Mailbox, master: Item, start: dt.datetime, end: dt.datetime, view: View) -> list[Json]:
    """Occurrences and exceptions of ``master`` overlapping [start, end)."""
    found: list[tuple[dt.datetime, Json]] = []
    for day in occurrence_dates(master, (end + dt.timedelta(days=1)).date()):
        occ_start, occ_end = _occurrence_span(master, day)
        original = iso_z(occ_start)
        overrides = master.exceptions.get(original) or {}
        if "start" in overrides:
            occ_start = timezones.to_utc(overrides["start"])
        if "end" in overrides:
            occ_end = timezones.to_utc(overrides["end"])
        if occ_start < end and occ_end > start:
            body = instance_json(box, master, original, view)
            if body is not None:
                found.append((occ_start, body))
    return [body for _, body in sorted(found, key=lambda pair: pair[0])]


def calendar_view(box: Mailbox, start: dt.datetime, end: dt.datetime, view: View) -> list[Json]:
    """Everything the calendar shows in the window, ordered by start."""
    found: list[tuple[str, Json]] = []
    for item in box.items_in(Kind.EVENT):
        if item.props.get("recurrence"):
            found.extend((b["originalStart"], b) for b in instances(box, item, start, end, view))
            continue
        if timezones.to_utc(item.props["start"]) < end and timezones.to_utc(item.props["end"]) > start:
            found.append((iso_z(timezones.to_utc(item.props["start"])), render(box, item, view)))
    return [body for _, body in sorted(found, key=lambda pair: pair[0])]


def find(box: Mailbox, key: str) -> tuple[Item, str | None]:
    """An event by id: a single event or series master, or one occurrence of a series."""
    if key in box.occurrences:
        master_id, original = box.occurrences[key]
        master = box.items.get(master_id)
        if master is None or master.exceptions.get(original, {}) is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return master, original
    return box.item(key, Kind.EVENT), None
