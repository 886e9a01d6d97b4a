"""Events: time zones, all-day rules, recurrence, instances, exceptions and calendarView."""

from __future__ import annotations

from typing import Any

import httpx

from tests.graph_sim.conftest import seg

WEEKLY = {
    "pattern": {
        "type": "weekly",
        "interval": 1,
        "daysOfWeek": ["monday", "wednesday"],
        "firstDayOfWeek": "sunday",
    },
    "range": {"type": "numbered", "startDate": "2030-01-07", "numberOfOccurrences": 4},
}


def _event(graph: httpx.Client, user: str, **fields: Any) -> dict[str, Any]:
    body = {
        "subject": "Standup",
        "start": {"dateTime": "2030-01-07T09:00:00", "timeZone": "Pacific Standard Time"},
        "end": {"dateTime": "2030-01-07T09:30:00", "timeZone": "Pacific Standard Time"},
        **fields,
    }
    answer = graph.post(f"users/{user}/events", json=body)
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_times_come_back_in_utc_or_the_preferred_zone(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/event-get: start/end in UTC unless Prefer: outlook.timezone;
    originalStartTimeZone keeps the creation zone."""
    event = _event(graph, graph_user)
    assert event["start"] == {"dateTime": "2030-01-07T17:00:00.0000000", "timeZone": "UTC"}
    assert event["originalStartTimeZone"] == "Pacific Standard Time"
    berlin = graph.get(
        f"users/{graph_user}/events/{seg(event['id'])}",
        headers={"Prefer": 'outlook.timezone="Europe/Berlin"'},
    )
    assert berlin.json()["start"] == {"dateTime": "2030-01-07T18:00:00.0000000", "timeZone": "Europe/Berlin"}
    assert berlin.headers["Preference-Applied"] == 'outlook.timezone="Europe/Berlin"'


def test_all_day_events_must_span_midnights(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/resources/event (isAllDay): start and end at midnight, same zone."""
    bad = graph.post(
        f"users/{graph_user}/events",
        json={"subject": "Offsite", "isAllDay": True,
              "start": {"dateTime": "2030-02-01T09:00:00", "timeZone": "UTC"},
              "end": {"dateTime": "2030-02-02T00:00:00", "timeZone": "UTC"}},
    )  # fmt: skip
    assert bad.status_code == 400
    good = _event(
        graph, graph_user, isAllDay=True,
        start={"dateTime": "2030-02-01T00:00:00", "timeZone": "W. Europe Standard Time"},
        end={"dateTime": "2030-02-02T00:00:00", "timeZone": "W. Europe Standard Time"},
    )  # fmt: skip
    assert good["isAllDay"] is True
    assert good["start"]["dateTime"] == "2030-02-01T00:00:00.0000000"


def test_organizer_attendees_and_ical_uid(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/resources/event and attendee: the mailbox organizes, attendees
    get a responseStatus, iCalUId identifies the event across calendars."""
    event = _event(
        graph, graph_user, attendees=[{"emailAddress": {"address": "c@fabrikam.test"}, "type": "optional"}]
    )
    assert event["isOrganizer"] is True
    assert event["organizer"]["emailAddress"]["address"].endswith("@sim.crmsync.test")
    assert event["attendees"][0]["type"] == "optional"
    assert event["attendees"][0]["status"]["response"] == "none"
    assert event["iCalUId"].startswith("040000008200E00074C5B7101A82E008")
    assert event["type"] == "singleInstance"


def test_series_instances_exceptions_and_cancellations(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/event-list-instances and resources/patternedrecurrence: a numbered
    weekly series expands to its occurrences; PATCH of one makes an exception, DELETE cancels it;
    each occurrence has its own iCalUId."""
    master = _event(graph, graph_user, recurrence=WEEKLY)
    assert master["type"] == "seriesMaster"
    window = {"startDateTime": "2030-01-01T00:00:00Z", "endDateTime": "2030-02-01T00:00:00Z"}
    base = f"users/{graph_user}/events/{seg(master['id'])}/instances"
    occurrences = graph.get(base, params=window).json()["value"]
    assert [o["start"]["dateTime"][:10] for o in occurrences] == [
        "2030-01-07",
        "2030-01-09",
        "2030-01-14",
        "2030-01-16",
    ]
    assert {o["type"] for o in occurrences} == {"occurrence"}
    assert {o["seriesMasterId"] for o in occurrences} == {master["id"]}
    assert len({o["iCalUId"] for o in occurrences}) == 4
    assert occurrences[0]["originalStart"] == "2030-01-07T17:00:00Z"

    moved = graph.patch(
        f"users/{graph_user}/events/{seg(occurrences[1]['id'])}", json={"subject": "Moved standup"}
    )
    assert moved.json()["type"] == "exception"
    graph.delete(f"users/{graph_user}/events/{seg(occurrences[2]['id'])}")
    after = graph.get(base, params=window).json()["value"]
    assert [(o["type"], o["subject"]) for o in after] == [
        ("occurrence", "Standup"),
        ("exception", "Moved standup"),
        ("occurrence", "Standup"),
    ]
    listed = graph.get(f"users/{graph_user}/events").json()["value"]
    assert [e["type"] for e in listed] == ["seriesMaster"], "/events lists masters, not occurrences"


def test_calendar_view_expands_series_in_the_window(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/user-list-calendarview: single events, occurrences and exceptions
    overlapping the window (no series masters); the window is required."""
    _event(graph, graph_user, recurrence=WEEKLY)
    _event(graph, graph_user, subject="One-off",
           start={"dateTime": "2030-01-08T12:00:00", "timeZone": "UTC"},
           end={"dateTime": "2030-01-08T13:00:00", "timeZone": "UTC"})  # fmt: skip
    view = graph.get(
        f"users/{graph_user}/calendarView",
        params={"startDateTime": "2030-01-07T00:00:00Z", "endDateTime": "2030-01-10T00:00:00Z"},
    ).json()["value"]
    assert [(e["subject"], e["type"]) for e in view] == [
        ("Standup", "occurrence"),
        ("One-off", "singleInstance"),
        ("Standup", "occurrence"),
    ]
    assert graph.get(f"users/{graph_user}/calendarView").json()["error"]["code"] == "ErrorInvalidParameter"


def test_monthly_and_yearly_patterns(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/resources/recurrencepattern: relativeMonthly (index, daysOfWeek)
    and absoluteYearly (month, dayOfMonth) with an endDate range."""
    relative = _event(
        graph, graph_user, subject="Board",
        start={"dateTime": "2030-01-31T15:00:00", "timeZone": "UTC"},
        end={"dateTime": "2030-01-31T16:00:00", "timeZone": "UTC"},
        recurrence={"pattern": {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["thursday"],
                                "index": "last"},
                    "range": {"type": "endDate", "startDate": "2030-01-31", "endDate": "2030-04-30"}},
    )  # fmt: skip
    window = {"startDateTime": "2030-01-01T00:00:00Z", "endDateTime": "2031-01-01T00:00:00Z"}
    dates = [
        o["start"]["dateTime"][:10]
        for o in graph.get(
            f"users/{graph_user}/events/{seg(relative['id'])}/instances", params=window
        ).json()["value"]
    ]
    assert dates == ["2030-01-31", "2030-02-28", "2030-03-28", "2030-04-25"]
    yearly = _event(
        graph, graph_user, subject="Renewal",
        start={"dateTime": "2030-06-15T08:00:00", "timeZone": "UTC"},
        end={"dateTime": "2030-06-15T09:00:00", "timeZone": "UTC"},
        recurrence={"pattern": {"type": "absoluteYearly", "interval": 1, "month": 6, "dayOfMonth": 15},
                    "range": {"type": "noEnd", "startDate": "2030-06-15"}},
    )  # fmt: skip
    window = {"startDateTime": "2030-01-01T00:00:00Z", "endDateTime": "2033-01-01T00:00:00Z"}
    years = [
        o["start"]["dateTime"][:4]
        for o in graph.get(f"users/{graph_user}/events/{seg(yearly['id'])}/instances", params=window).json()[
            "value"
        ]
    ]
    assert years == ["2030", "2031", "2032"]


def test_rejected_update_changes_nothing(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/errors: a 400 leaves the resource as it was."""
    event = _event(graph, graph_user)
    bad = graph.patch(
        f"users/{graph_user}/events/{seg(event['id'])}",
        json={"subject": "Changed", "end": {"dateTime": "2030-01-01T00:00:00", "timeZone": "UTC"}},
    )
    assert bad.status_code == 400
    after = graph.get(f"users/{graph_user}/events/{seg(event['id'])}").json()
    assert after["subject"] == "Standup"
    assert after["changeKey"] == event["changeKey"]


def test_occurrences_keep_local_time_across_daylight_saving(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/resources/patternedrecurrence: occurrences recur at the master's
    local start time in its time zone, so their UTC time moves when daylight saving starts."""
    master = _event(
        graph, graph_user,
        start={"dateTime": "2030-03-04T09:00:00", "timeZone": "Pacific Standard Time"},
        end={"dateTime": "2030-03-04T09:30:00", "timeZone": "Pacific Standard Time"},
        recurrence={"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                    "range": {"type": "numbered", "startDate": "2030-03-04", "numberOfOccurrences": 2}},
    )  # fmt: skip
    window = {"startDateTime": "2030-03-01T00:00:00Z", "endDateTime": "2030-04-01T00:00:00Z"}
    occurrences = graph.get(f"users/{graph_user}/events/{seg(master['id'])}/instances", params=window).json()
    assert [o["start"]["dateTime"] for o in occurrences["value"]] == [
        "2030-03-04T17:00:00.0000000",
        "2030-03-11T16:00:00.0000000",
    ]


def test_an_exception_must_keep_a_valid_span(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/event-update: an occurrence's new times are validated like any
    event's; a rejected update leaves the occurrence an occurrence."""
    master = _event(graph, graph_user, recurrence=WEEKLY)
    window = {"startDateTime": "2030-01-01T00:00:00Z", "endDateTime": "2030-02-01T00:00:00Z"}
    first = graph.get(f"users/{graph_user}/events/{seg(master['id'])}/instances", params=window).json()[
        "value"
    ][0]
    bad = graph.patch(
        f"users/{graph_user}/events/{seg(first['id'])}",
        json={"end": {"dateTime": "2029-12-31T00:00:00", "timeZone": "UTC"}},
    )
    assert bad.status_code == 400
    assert graph.get(f"users/{graph_user}/events/{seg(first['id'])}").json()["type"] == "occurrence"
    moved = graph.patch(
        f"users/{graph_user}/events/{seg(first['id'])}",
        json={"start": {"dateTime": "2030-01-07T18:00:00", "timeZone": "UTC"},
              "end": {"dateTime": "2030-01-07T19:00:00", "timeZone": "UTC"}},
    ).json()  # fmt: skip
    assert (moved["type"], moved["start"]["dateTime"]) == ("exception", "2030-01-07T18:00:00.0000000")
