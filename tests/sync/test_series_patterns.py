"""The pattern matrix: each recurrence round-trips Outlook -> Dynamics -> Outlook and
Dynamics -> Outlook -> Dynamics through the connector's mapping (series_columns /
series_recurrence), and both simulators expand every form to the same occurrences - the same UTC
moments, so a 09:00 W. Europe series stays at 09:00 local across the daylight-saving changes.

Graph: "patternedRecurrence", "recurrencePattern", "recurrenceRange", "event: instances";
Dataverse: recurringappointmentmaster table reference, "Create a recurring appointment series,
instance, or exception" (learn.microsoft.com)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest

from shared.domain.model import Appointment, EventKind
from shared.sync.fieldmaps.series import PATTERN_COLUMNS, series_columns, series_recurrence
from simulators.dataverse.launcher import DataverseSimulator
from tests.fixtures.graph_sim import GraphSim

ZONE = "W. Europe Standard Time"
BERLIN = ZoneInfo("Europe/Berlin")
W_EUROPE_CODE = 110  # timezonedefinition.timezonecode of "W. Europe Standard Time"
TODAY = dt.date.today()
FIRST = TODAY + dt.timedelta(days=14 - TODAY.weekday())  # a Monday two weeks or less away
# Both sides must have expanded: Dynamics up to its 12-month window, so compare eleven months.
UNTIL = dt.datetime.combine(TODAY + dt.timedelta(days=330), dt.time(), dt.UTC)
START = dt.datetime.combine(FIRST, dt.time(9), BERLIN)
END_DATE = str(FIRST + dt.timedelta(days=200))  # across the March change


def _range(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "startDate": str(FIRST), "recurrenceTimeZone": ZONE, **extra}


OUTLOOK_PATTERNS = {
    "daily every 3 days, no end": ({"type": "daily", "interval": 3}, _range("noEnd")),
    "weekly every 2 weeks Mon+Thu, end date": (
        {"type": "weekly", "interval": 2, "daysOfWeek": ["monday", "thursday"], "firstDayOfWeek": "monday"},
        _range("endDate", endDate=END_DATE),
    ),
    "weekly every 2 weeks Sun+Mon, week from Monday": (
        {"type": "weekly", "interval": 2, "daysOfWeek": ["sunday", "monday"], "firstDayOfWeek": "monday"},
        _range("numbered", numberOfOccurrences=8),
    ),
    "weekly every 2 weeks Sun+Mon, week from Sunday": (
        {"type": "weekly", "interval": 2, "daysOfWeek": ["sunday", "monday"], "firstDayOfWeek": "sunday"},
        _range("numbered", numberOfOccurrences=8),
    ),
    "absolute monthly day 15 every 2 months, end date": (
        {"type": "absoluteMonthly", "interval": 2, "dayOfMonth": 15},
        _range("endDate", endDate=END_DATE),
    ),
    "relative monthly first Wednesday, numbered": (
        {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["wednesday"], "index": "first"},
        _range("numbered", numberOfOccurrences=6),
    ),
    "relative monthly last Friday, no end": (
        {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"], "index": "last"},
        _range("noEnd"),
    ),
    "absolute yearly 30 March, no end": (
        {"type": "absoluteYearly", "interval": 1, "dayOfMonth": 30, "month": 3},
        _range("noEnd"),
    ),
    "relative yearly last Sunday of March (the change day), numbered": (
        {"type": "relativeYearly", "interval": 1, "daysOfWeek": ["sunday"], "index": "last", "month": 3},
        _range("numbered", numberOfOccurrences=2),
    ),
}

DYNAMICS_PATTERNS: dict[str, dict[str, Any]] = {
    "daily every weekday (no Graph daily form)": {
        "recurrencepatterntype": 0,
        "interval": 1,
        "isweekdaypattern": True,
        "patternendtype": 3,
        "patternenddate": END_DATE,
    },
    "weekly Mon+Wed+Fri, no end": {
        "recurrencepatterntype": 1,
        "interval": 1,
        "daysofweekmask": 0x02 | 0x08 | 0x20,
        "firstdayofweek": 1,
        "patternendtype": 1,
    },
    "monthly last Friday every 2 months, numbered": {
        "recurrencepatterntype": 2,
        "interval": 2,
        "isnthmonthly": True,
        "instance": 5,
        "daysofweekmask": 0x20,
        "patternendtype": 2,
        "occurrences": 4,
    },
    "monthly day 1, numbered": {
        "recurrencepatterntype": 2,
        "interval": 1,
        "dayofmonth": 1,
        "patternendtype": 2,
        "occurrences": 5,
    },
    "yearly second Tuesday of June, no end": {
        "recurrencepatterntype": 3,
        "interval": 1,
        "isnthyearly": True,
        "instance": 2,
        "daysofweekmask": 0x04,
        "monthofyear": 6,
        "patternendtype": 1,
    },
}


def _master(recurrence: dict[str, Any]) -> Appointment:
    return Appointment(
        subject="Matrix",
        start=START,
        end=START + dt.timedelta(minutes=30),
        time_zone=ZONE,
        event_kind=EventKind.SERIES_MASTER,
        recurrence=json.dumps(recurrence),
    )


def _graph_occurrences(graph_sim: GraphSim, user: str, recurrence: dict[str, Any]) -> list[dt.datetime]:
    """Create the series in the Graph simulator and list its occurrences' UTC starts."""
    with httpx.Client(base_url=graph_sim.base_url, headers=graph_sim.headers, timeout=30) as http:
        local = START.strftime("%Y-%m-%dT%H:%M:%S")
        ending = (START + dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S")
        body = {
            "subject": "Matrix",
            "start": {"dateTime": local, "timeZone": ZONE},
            "end": {"dateTime": ending, "timeZone": ZONE},
            "recurrence": recurrence,
        }
        created = http.post(f"users/{user}/events", json=body)
        assert created.status_code == 201, created.text
        window = {"startDateTime": f"{FIRST - dt.timedelta(days=1)}T00:00:00Z", "endDateTime": _z(UNTIL)}
        url: str | None = f"users/{user}/events/{quote(created.json()['id'], safe='')}/instances"
        starts: list[dt.datetime] = []
        params: dict[str, str] | None = window
        while url:
            page = http.get(url, params=params)
            assert page.status_code == 200, page.text
            for event in page.json()["value"]:
                assert event["start"]["timeZone"] == "UTC"
                starts.append(
                    dt.datetime.fromisoformat(event["start"]["dateTime"][:19]).replace(tzinfo=dt.UTC)
                )
            url, params = page.json().get("@odata.nextLink"), None
        return sorted(starts)


def _dynamics_occurrences(sim: DataverseSimulator, token: str, columns: dict[str, Any]) -> list[dt.datetime]:
    """Create the master in the Dataverse simulator and list its instances' UTC starts."""
    with httpx.Client(base_url=sim.api_url + "/", headers=sim.headers(token), timeout=30) as http:
        body = {
            "subject": "Matrix",
            "starttime": _z(START),
            "endtime": _z(START + dt.timedelta(minutes=30)),
            "patternstartdate": _z(dt.datetime.combine(FIRST, dt.time(), BERLIN)),
            "utcconversiontimezonecode": W_EUROPE_CODE,
            **{k: v for k, v in columns.items() if v is not None},
        }
        if isinstance(body.get("patternenddate"), str) and len(body["patternenddate"]) == 10:
            body["patternenddate"] = _z(
                dt.datetime.combine(dt.date.fromisoformat(END_DATE), dt.time(), BERLIN)
            )
        created = http.post("recurringappointmentmasters", json=body)
        assert created.status_code == 204, created.text
        master_id = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
        rows = http.get(
            "appointments", params={"$filter": f"seriesid eq {master_id}", "$select": "scheduledstart"}
        )
        assert rows.status_code == 200, rows.text
        starts = [
            dt.datetime.fromisoformat(r["scheduledstart"].replace("Z", "+00:00"))
            for r in rows.json()["value"]
        ]
        return sorted(s for s in starts if s < UNTIL)


def _z(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(columns: dict[str, Any]) -> dict[str, Any]:
    """A master row as Dataverse returns it (the times the matrix uses, the range dates as moments)."""
    row = {
        "starttime": _z(START),
        "endtime": _z(START + dt.timedelta(minutes=30)),
        "patternstartdate": _z(dt.datetime.combine(FIRST, dt.time(), BERLIN)),
        **columns,
    }
    if isinstance(row.get("patternenddate"), str) and len(row["patternenddate"]) == 10:
        row["patternenddate"] = _z(dt.datetime.combine(dt.date.fromisoformat(END_DATE), dt.time(), BERLIN))
    return row


@pytest.mark.parametrize("name", list(OUTLOOK_PATTERNS))
def test_outlook_to_dynamics_to_outlook(
    name: str, graph_sim: GraphSim, graph_user: str, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    pattern, rng = OUTLOOK_PATTERNS[name]
    recurrence = {"pattern": pattern, "range": rng}
    outlook = _graph_occurrences(graph_sim, graph_user, recurrence)
    assert outlook, "the pattern has occurrences in the window"
    columns = series_columns(_master(recurrence))
    assert columns.not_expressible is None
    assert _dynamics_occurrences(dataverse_sim, dataverse_token, columns.values) == outlook
    back = series_recurrence(_row(columns.values), ZONE)
    assert back.not_expressible is None
    assert {k: v for k, v in back.recurrence["pattern"].items() if k in pattern} == pattern
    assert _graph_occurrences(graph_sim, graph_user, back.recurrence) == outlook


@pytest.mark.parametrize("name", list(DYNAMICS_PATTERNS))
def test_dynamics_to_outlook_to_dynamics(
    name: str, graph_sim: GraphSim, graph_user: str, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    columns = DYNAMICS_PATTERNS[name]
    dynamics = _dynamics_occurrences(dataverse_sim, dataverse_token, columns)
    assert dynamics, "the pattern has occurrences in the window"
    recurrence = series_recurrence(_row(columns), ZONE)
    assert recurrence.not_expressible is None
    assert _graph_occurrences(graph_sim, graph_user, recurrence.recurrence) == dynamics
    again = series_columns(_master(recurrence.recurrence))
    assert again.not_expressible is None
    assert _dynamics_occurrences(dataverse_sim, dataverse_token, again.values) == dynamics
    if not columns.get("isweekdaypattern"):  # else its exact Graph form, weekly Monday-Friday
        assert {k: again.values[k] for k in columns if k in PATTERN_COLUMNS and k != "patternenddate"} == {
            k: v for k, v in columns.items() if k != "patternenddate"
        }


def test_a_pattern_graph_cannot_express_is_said() -> None:
    """An Nth-weekday pattern without days has no Graph form: said, not bent into another one."""
    row = _row({"recurrencepatterntype": 2, "isnthmonthly": True, "instance": 2, "daysofweekmask": 0})
    assert series_recurrence(row, ZONE).not_expressible is not None
