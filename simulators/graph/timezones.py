"""Graph's dateTimeTimeZone values: Windows or IANA zone names, 7-digit fractions, no offset.

learn.microsoft.com/graph/api/resources/datetimetimezone: ``dateTime`` is a local
wall-clock time and ``timeZone`` names a zone in Windows or IANA form; Outlook
answers with ``2026-11-22T10:00:00.0000000``.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from simulators.graph.core import Json, bad_request, parse_iso

# The Windows zone names clients commonly send (CLDR windowsZones.xml, territory 001).
WINDOWS_TO_IANA = {
    "utc": "UTC",
    "coordinated universal time": "UTC",
    "gmt standard time": "Europe/London",
    "greenwich standard time": "Atlantic/Reykjavik",
    "w. europe standard time": "Europe/Berlin",
    "central europe standard time": "Europe/Budapest",
    "romance standard time": "Europe/Paris",
    "central european standard time": "Europe/Warsaw",
    "e. europe standard time": "Europe/Chisinau",
    "fle standard time": "Europe/Kiev",
    "gtb standard time": "Europe/Bucharest",
    "russian standard time": "Europe/Moscow",
    "eastern standard time": "America/New_York",
    "central standard time": "America/Chicago",
    "mountain standard time": "America/Denver",
    "us mountain standard time": "America/Phoenix",
    "pacific standard time": "America/Los_Angeles",
    "alaskan standard time": "America/Anchorage",
    "hawaiian standard time": "Pacific/Honolulu",
    "atlantic standard time": "America/Halifax",
    "e. south america standard time": "America/Sao_Paulo",
    "india standard time": "Asia/Kolkata",
    "china standard time": "Asia/Shanghai",
    "tokyo standard time": "Asia/Tokyo",
    "singapore standard time": "Asia/Singapore",
    "aus eastern standard time": "Australia/Sydney",
    "new zealand standard time": "Pacific/Auckland",
    "arabian standard time": "Asia/Dubai",
    "south africa standard time": "Africa/Johannesburg",
}


def zone(name: str) -> zoneinfo.ZoneInfo:
    """Resolve a Windows or IANA zone name; unknown names are a 400 as in Outlook."""
    key = name.strip()
    iana = WINDOWS_TO_IANA.get(key.lower(), key)
    try:
        return zoneinfo.ZoneInfo(iana)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise bad_request(f"Time zone '{name}' is not supported.", "TimeZoneNotSupportedException") from exc


def to_utc(value: Json) -> dt.datetime:
    """A dateTimeTimeZone as an aware UTC datetime."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise bad_request("A dateTimeTimeZone needs a dateTime string.")
    wall = parse_iso(value["dateTime"]).replace(tzinfo=None)
    return wall.replace(tzinfo=zone(str(value.get("timeZone") or "UTC"))).astimezone(dt.UTC)


def wall_clock(value: Json) -> dt.datetime:
    """The naive local time a dateTimeTimeZone names (all-day events are floating)."""
    return parse_iso(str(value.get("dateTime"))).replace(tzinfo=None)


def render(moment: dt.datetime, zone_name: str) -> Json:
    """A UTC instant as Graph renders it in the zone a client asked for (Prefer: outlook.timezone)."""
    local = moment.astimezone(zone(zone_name))
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": zone_name}


def render_floating(wall: dt.datetime, zone_name: str) -> Json:
    return {"dateTime": wall.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": zone_name}
