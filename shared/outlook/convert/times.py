"""Graph ``dateTimeTimeZone`` <-> aware UTC.

Graph gives times as ``dateTimeTimeZone`` (a wall-clock ``dateTime`` plus a Windows or IANA zone
name; learn.microsoft.com/graph/api/resources/datetimetimezone); the neutral model holds aware UTC.
Windows zone names are mapped to IANA with the CLDR ``windowsZones`` table (the common ones below).
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone

# CLDR windowsZones.xml, territory "001" (the primary IANA zone of each Windows zone).
WINDOWS_TO_IANA: dict[str, str] = {
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "tzone://Microsoft/Utc": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "Romance Standard Time": "Europe/Paris",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kiev",
    "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow",
    "Turkey Standard Time": "Europe/Istanbul",
    "Israel Standard Time": "Asia/Jerusalem",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Calcutta",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles",
    "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Atlantic Standard Time": "America/Halifax",
    "Canada Central Standard Time": "America/Regina",
    "E. South America Standard Time": "America/Sao_Paulo",
    "Argentina Standard Time": "America/Buenos_Aires",
    "Central Standard Time (Mexico)": "America/Mexico_City",
}

_FRACTION = re.compile(r"(\.\d{6})\d+")


def zone(name: str) -> ZoneInfo:
    """The IANA zone for a Windows or IANA zone name as Graph reports it."""
    try:
        return ZoneInfo(WINDOWS_TO_IANA.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def to_utc(value: DateTimeTimeZone | None) -> dt.datetime | None:
    """Graph's wall-clock ``dateTime`` in ``timeZone`` as an aware UTC datetime."""
    if value is None or not value.date_time:
        return None
    # Graph sends 7 fractional digits ("2024-03-01T09:00:00.0000000"); Python takes at most 6.
    naive = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value.date_time.rstrip("Z")))
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
