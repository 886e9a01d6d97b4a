"""Time zone names: Windows <-> IANA, and wall clocks in a zone.

Graph names zones the Windows way ("W. Europe Standard Time") unless asked otherwise, Dataverse's
``timezonedefinition.standardname`` too; Python's :mod:`zoneinfo` needs IANA names. The mapping is
CLDR's ``windowsZones.xml`` (unicode-org/cldr, common/supplemental/windowsZones.xml), territory
"001": the primary IANA zone of each Windows zone, and back. Vendored as a table rather than a
dependency: the Windows zone set changes a few times a decade, and a new name that is missing here
still works when Graph reports it in IANA form (``Prefer: outlook.timezone``) or is written in UTC.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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

# IANA -> Windows: the first Windows name whose primary zone it is (aliases "UTC" map to "UTC").
IANA_TO_WINDOWS: dict[str, str] = {}
for _windows, _iana in WINDOWS_TO_IANA.items():
    IANA_TO_WINDOWS.setdefault(_iana, _windows)
IANA_TO_WINDOWS["Asia/Kolkata"] = "India Standard Time"  # the current IANA name of Asia/Calcutta


def windows_name(name: str) -> str | None:
    """The Windows name for an IANA (or already Windows) zone name, or None if CLDR has none."""
    if name in WINDOWS_TO_IANA:
        return name
    return IANA_TO_WINDOWS.get(name)


@cache
def _resolve(name: str) -> ZoneInfo:
    return ZoneInfo(WINDOWS_TO_IANA.get(name, name))


def zone(name: str) -> ZoneInfo:
    """The IANA zone for a Windows or IANA zone name as Graph or Dataverse reports it."""
    try:
        return _resolve(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def known_zone(name: str | None) -> ZoneInfo | None:
    """``zone(name)``, or None for no name or a name no table or tz database knows."""
    if not name:
        return None
    try:
        return zone(name)
    except ValueError:
        return None


def local_midnight(day: dt.date, where: ZoneInfo) -> dt.datetime:
    """The UTC moment at which ``day`` starts in ``where`` (the first instant of that local date)."""
    return dt.datetime.combine(day, dt.time(), where).astimezone(dt.UTC)


def local_date(moment: dt.datetime, where: ZoneInfo) -> dt.date:
    """The local date of a moment in ``where``."""
    return moment.astimezone(where).date()
