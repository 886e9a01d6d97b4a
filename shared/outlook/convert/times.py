"""Graph ``dateTimeTimeZone`` <-> aware UTC.

Graph gives times as ``dateTimeTimeZone`` (a wall-clock ``dateTime`` plus a Windows or IANA zone
name; learn.microsoft.com/graph/api/resources/datetimetimezone); the neutral model holds aware UTC.
Windows zone names are mapped to IANA by :mod:`shared.domain.zones`.
"""

from __future__ import annotations

import datetime as dt
import re

from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone

from shared.domain.zones import WINDOWS_TO_IANA, zone

__all__ = ["WINDOWS_TO_IANA", "floating", "floating_date", "from_utc", "to_utc", "writable_zone", "zone"]

_FRACTION = re.compile(r"(\.\d{6})\d+")


def _wall_clock(value: DateTimeTimeZone) -> dt.datetime:
    # Graph sends 7 fractional digits ("2024-03-01T09:00:00.0000000"); Python takes at most 6.
    return dt.datetime.fromisoformat(_FRACTION.sub(r"\1", (value.date_time or "").rstrip("Z")))


def to_utc(value: DateTimeTimeZone | None) -> dt.datetime | None:
    """Graph's wall-clock ``dateTime`` in ``timeZone`` as an aware UTC datetime."""
    if value is None or not value.date_time:
        return None
    naive = _wall_clock(value)
    if naive.tzinfo is not None:
        return naive.astimezone(dt.UTC)
    return naive.replace(tzinfo=zone(value.time_zone or "UTC")).astimezone(dt.UTC)


def from_utc(value: dt.datetime, time_zone: str | None) -> DateTimeTimeZone:
    """An aware datetime as Graph's ``dateTimeTimeZone``, wall clock in ``time_zone`` (default UTC)."""
    name = time_zone or "UTC"
    local = value.astimezone(zone(name)).replace(tzinfo=None)
    return DateTimeTimeZone(date_time=local.isoformat(timespec="seconds"), time_zone=name)


def writable_zone(name: str | None) -> str | None:
    """``name`` if crmsync can compute wall clocks in it, else ``None`` (write in UTC).

    Invitations from other systems can carry zones Graph reports as custom names
    ("Customized Time Zone", ``tzone://Microsoft/Custom``); such an event is still written, in UTC.
    """
    if name is None:
        return None
    try:
        zone(name)
    except ValueError:
        return None
    return name


def floating(value: dt.datetime, time_zone: str | None) -> DateTimeTimeZone:
    """An all-day boundary: the UTC date's midnight as wall clock in the event's zone, unconverted."""
    return DateTimeTimeZone(date_time=f"{value.date().isoformat()}T00:00:00", time_zone=time_zone or "UTC")


def floating_date(value: DateTimeTimeZone | None) -> dt.datetime | None:
    """An all-day boundary as the neutral model holds it: its wall-clock date at midnight UTC.

    All-day events are floating (learn.microsoft.com/graph/api/resources/event, ``isAllDay``: start
    and end at midnight in one zone): the date is what the user chose, whatever zone labels it, so
    the label is not applied (midnight in "W. Europe Standard Time" is not the day before in UTC).
    """
    if value is None or not value.date_time:
        return None
    return dt.datetime.combine(_wall_clock(value).date(), dt.time(), dt.UTC)
