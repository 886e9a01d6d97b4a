"""usersettings (one row per user, with ``timezonecode``) and the timezonedefinition lookup.

- "Specify time zone settings for a user" (power-apps/developer/data-platform/specify-time-zone-
  settings-user): ``usersettings.timezonecode`` is the user's time zone code; the supported codes
  and their Windows standard names are the ``timezonedefinition`` rows (``timezonecode``,
  ``standardname``); ``timezonebias`` is system calculated from the code ("Time zone tables").
- The entity set is ``usersettingscollection``, keyed by the user's ``systemuserid``
  (usersettings table reference). Every new user gets a row with the organization's default time
  zone (the simulator's organization is set to UTC, code 92; a real organization's default is
  chosen when the environment is created). Change it with
  ``PATCH usersettingscollection(<systemuserid>) {"timezonecode": 110}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simulators.dataverse import errors
from simulators.dataverse.security import BUSINESS_UNIT_ID
from simulators.dataverse.store import Ref, Store

ORGANIZATION_TIME_ZONE = 92
# (timezonecode, standardname, userinterfacename, bias in minutes: UTC = local + bias)
TIME_ZONES: tuple[tuple[int, str, str, int], ...] = (
    (4, "Pacific Standard Time", "(GMT-08:00) Pacific Time (US & Canada)", 480),
    (10, "Mountain Standard Time", "(GMT-07:00) Mountain Time (US & Canada)", 420),
    (20, "Central Standard Time", "(GMT-06:00) Central Time (US & Canada)", 360),
    (35, "Eastern Standard Time", "(GMT-05:00) Eastern Time (US & Canada)", 300),
    (85, "GMT Standard Time", "(GMT+00:00) Dublin, Edinburgh, Lisbon, London", 0),
    (92, "UTC", "(GMT) Coordinated Universal Time", 0),
    (
        95,
        "Central Europe Standard Time",
        "(GMT+01:00) Belgrade, Bratislava, Budapest, Ljubljana, Prague",
        -60,
    ),
    (105, "Romance Standard Time", "(GMT+01:00) Brussels, Copenhagen, Madrid, Paris", -60),
    (110, "W. Europe Standard Time", "(GMT+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna", -60),
    (235, "Tokyo Standard Time", "(GMT+09:00) Osaka, Sapporo, Tokyo", -540),
    (255, "AUS Eastern Standard Time", "(GMT+10:00) Canberra, Melbourne, Sydney", -600),
)
CODES = frozenset(code for code, *_ in TIME_ZONES)
# The tz database zone of each code (CLDR windowsZones.xml, territory "001"): wall clocks with their
# daylight-saving changes, for what the platform computes in a user's local time (series expansion).
IANA = {
    4: "America/Los_Angeles",
    10: "America/Denver",
    20: "America/Chicago",
    35: "America/New_York",
    85: "Europe/London",
    92: "UTC",
    95: "Europe/Budapest",
    105: "Europe/Paris",
    110: "Europe/Berlin",
    235: "Asia/Tokyo",
    255: "Australia/Sydney",
}
BIAS = {code: bias for code, _, _, bias in TIME_ZONES}
_DAYLIGHT = {"UTC": "UTC"}


def install(store: Store, definition_id: Callable[[str], str]) -> None:
    for code, standard, display, bias in TIME_ZONES:
        store.put(
            "timezonedefinition",
            {
                "timezonedefinitionid": definition_id(f"timezonedefinition:{code}"),
                "timezonecode": code,
                "standardname": standard,
                "daylightname": _DAYLIGHT.get(standard, standard.replace("Standard", "Daylight")),
                "userinterfacename": display,
                "bias": bias,
                "retiredorder": 0,
                "versionnumber": store.next_version(),
            },
            "timezonedefinitionid",
        )


def row_for(user_id: str, version: int) -> dict[str, Any]:
    """The usersettings row a new user starts with."""
    return {
        "systemuserid": user_id,
        "timezonecode": ORGANIZATION_TIME_ZONE,
        "timezonebias": BIAS[ORGANIZATION_TIME_ZONE],
        "localeid": 1033,
        "uilanguageid": 1033,
        "helplanguageid": 1033,
        "businessunitid": Ref("businessunit", BUSINESS_UNIT_ID),
        # Not a column of the table: the user the row belongs to, so user-depth privileges reach only
        # one's own settings (the row is never projected with it).
        "ownerid": Ref("systemuser", user_id),
        "versionnumber": version,
    }


def check(payload: dict[str, Any]) -> None:
    """A time zone code must name a timezonedefinition row."""
    code = payload.get("timezonecode")
    if isinstance(code, int) and not isinstance(code, bool) and code not in CODES:
        raise errors.bad_request(
            f"A validation error occurred. The value {code} of 'timezonecode' on record of type "
            "'usersettings' is outside the valid range.",
            errors.VALUE_OUT_OF_RANGE,
        )


def settle(record: dict[str, Any]) -> None:
    """timezonebias is system calculated from timezonecode (standard time; daylight not modelled)."""
    code = record.get("timezonecode")
    record["timezonebias"] = BIAS.get(code) if isinstance(code, int) else None
