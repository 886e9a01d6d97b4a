"""All-day appointments: Graph's floating dates <-> the CRM user's local midnights (UserLocal columns).

appointment.scheduledstart / scheduledend hold a UTC moment shown in the user's zone, so an all-day
event is stored as the CRM user's local midnights (usersettings.timezonecode), else the event's zone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from msgraph.generated.models.event import Event

from shared.domain.model import Appointment, ItemKind
from shared.domain.zones import IANA_TO_WINDOWS, WINDOWS_TO_IANA, windows_name, zone
from shared.outlook.convert.common import parse_graph_json
from shared.outlook.convert.events import appointment_from_graph, appointment_to_graph
from shared.sync.fieldmaps import field_map

BERLIN = "W. Europe Standard Time"
NEW_YORK = "Eastern Standard Time"


def _all_day(start: str, end: str, time_zone: str, *, label: str | None = None) -> Appointment:
    """An all-day event as Graph returns it: floating midnights labelled with a zone."""
    body: dict[str, Any] = {
        "id": "AAMk-all-day",
        "subject": "Offsite",
        "isAllDay": True,
        "start": {"dateTime": f"{start}T00:00:00.0000000", "timeZone": label or time_zone},
        "end": {"dateTime": f"{end}T00:00:00.0000000", "timeZone": label or time_zone},
        "originalStartTimeZone": time_zone,
        "type": "singleInstance",
    }
    return appointment_from_graph(parse_graph_json(body, Event))


def _times(crm_zone: str | None, event: Appointment) -> tuple[object, object]:
    values = field_map(ItemKind.APPOINTMENT, crm_zone).project(event).values
    return values["scheduledstart"], values["scheduledend"]


@pytest.mark.parametrize("label", [None, "UTC"])  # labelled with the event's zone, or read as UTC
def test_berlin_all_day_event_is_stored_as_the_users_local_midnights_across_dst(label: str | None) -> None:
    event = _all_day("2027-03-27", "2027-03-29", BERLIN, label=label)
    assert (event.start, event.end) == (
        dt.datetime(2027, 3, 27, tzinfo=dt.UTC),
        dt.datetime(2027, 3, 29, tzinfo=dt.UTC),
    )
    # Saturday 00:00 CET (+01:00) to Monday 00:00 CEST (+02:00): the clocks went forward on Sunday.
    assert _times(BERLIN, event) == ("2027-03-26T23:00:00Z", "2027-03-28T22:00:00Z")


def test_new_york_all_day_event_across_its_dst_change() -> None:
    # America/New_York springs forward on Sunday 2027-03-14: EST (-05:00) to EDT (-04:00).
    event = _all_day("2027-03-13", "2027-03-15", NEW_YORK)
    assert _times(NEW_YORK, event) == ("2027-03-13T05:00:00Z", "2027-03-15T04:00:00Z")


def test_the_crm_users_zone_wins_over_the_events_and_the_event_zone_is_the_fallback() -> None:
    event = _all_day("2027-03-27", "2027-03-29", "Pacific Standard Time")
    assert _times(BERLIN, event) == ("2027-03-26T23:00:00Z", "2027-03-28T22:00:00Z")
    # Unknown CRM user zone: the event's own midnights (PDT, -07:00, since 2027-03-14).
    assert _times(None, event) == ("2027-03-27T07:00:00Z", "2027-03-29T07:00:00Z")


def test_a_crm_all_day_appointment_becomes_the_same_dates_in_outlook_and_round_trips() -> None:
    fmap = field_map(ItemKind.APPOINTMENT, BERLIN)
    crm = {
        "subject": "Offsite",
        "scheduledstart": "2027-03-26T23:00:00Z",
        "scheduledend": "2027-03-28T22:00:00Z",
        "isalldayevent": True,
    }
    item = fmap.item_from_crm(crm)
    assert item.is_all_day
    assert (item.start, item.end) == (
        dt.datetime(2027, 3, 27, tzinfo=dt.UTC),
        dt.datetime(2027, 3, 29, tzinfo=dt.UTC),
    )
    graph = appointment_to_graph(item)
    assert graph.start is not None
    assert graph.end is not None
    assert (graph.start.date_time, graph.end.date_time) == ("2027-03-27T00:00:00", "2027-03-29T00:00:00")
    # What crmsync wrote reads back as the same CRM values: the echo changes nothing.
    projected = fmap.project(item).values
    assert {column: projected[column] for column in crm} == crm


def test_an_event_in_another_zone_round_trips_through_the_crm_users_zone() -> None:
    event = _all_day("2027-11-06", "2027-11-08", "Tokyo Standard Time")
    fmap = field_map(ItemKind.APPOINTMENT, NEW_YORK)
    values = fmap.project(event).values
    # Across New York's fall back (2027-11-07): EDT midnight, then EST midnight.
    assert values["scheduledstart"] == "2027-11-06T04:00:00Z"
    assert values["scheduledend"] == "2027-11-08T05:00:00Z"
    back = fmap.apply(event, values)
    assert (back.start, back.end, back.is_all_day) == (event.start, event.end, True)


def test_timed_events_keep_their_exact_moments_whatever_the_users_zone() -> None:
    moment = dt.datetime(2027, 3, 27, 8, 30, tzinfo=dt.UTC)
    event = Appointment(start=moment, end=moment + dt.timedelta(hours=1), time_zone=BERLIN)
    assert _times(BERLIN, event) == ("2027-03-27T08:30:00Z", "2027-03-27T09:30:00Z")
    back = field_map(ItemKind.APPOINTMENT, BERLIN).apply(
        event, {"scheduledstart": "2027-03-28T07:00:00Z", "scheduledend": "2027-03-28T08:00:00Z"}
    )
    assert back.start == dt.datetime(2027, 3, 28, 7, tzinfo=dt.UTC)


def test_ticking_all_day_in_the_crm_takes_the_local_dates_of_the_times() -> None:
    fmap = field_map(ItemKind.APPOINTMENT, BERLIN)
    timed = Appointment(
        start=dt.datetime(2027, 3, 26, 23, 30, tzinfo=dt.UTC),  # Saturday 00:30 in Berlin
        end=dt.datetime(2027, 3, 27, 10, tzinfo=dt.UTC),
    )
    # Applied before the times whatever order the values come in (the map's order).
    changed = fmap.apply(timed, {"scheduledstart": "2027-03-26T23:00:00Z", "isalldayevent": True})
    assert changed.is_all_day
    assert (changed.start, changed.end) == (
        dt.datetime(2027, 3, 27, tzinfo=dt.UTC),
        dt.datetime(2027, 3, 28, tzinfo=dt.UTC),
    )
    untimed = fmap.apply(changed, {"isalldayevent": False})
    assert (untimed.start, untimed.end) == (
        dt.datetime(2027, 3, 26, 23, tzinfo=dt.UTC),
        dt.datetime(2027, 3, 27, 23, tzinfo=dt.UTC),
    )


def test_windows_and_iana_names_both_ways() -> None:
    assert zone(BERLIN).key == "Europe/Berlin"
    assert zone("Europe/Berlin").key == "Europe/Berlin"
    assert windows_name("Europe/Berlin") == BERLIN
    assert windows_name("America/New_York") == NEW_YORK
    assert windows_name(BERLIN) == BERLIN
    assert windows_name("Mars/Olympus_Mons") is None
    for windows, iana in WINDOWS_TO_IANA.items():
        assert zone(windows).key == zone(iana).key  # every row names a zone the tz database has
        assert WINDOWS_TO_IANA[IANA_TO_WINDOWS[iana]] == iana
