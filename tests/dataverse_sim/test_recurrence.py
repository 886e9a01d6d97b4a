"""Recurring appointment series: expansion, exceptions, deleted instances, DeleteOpenInstances.

Docs: "Create a recurring appointment series, instance, or exception", "Recurring appointment
partial expansion model", "Update a recurring appointment", "Delete or end a recurring
appointment series or instance"; recurringappointmentmaster table reference.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

NEXT_MONDAY = dt.date.today() + dt.timedelta(days=7 - dt.date.today().weekday() + 7)
MON, WED, FRI, TUE = 0x02, 0x08, 0x20, 0x04


def _at(day: dt.date, hour: int) -> str:
    return f"{day.isoformat()}T{hour:02d}:00:00Z"


def _created_id(response: httpx.Response) -> str:
    assert response.status_code == 204, response.text
    entity_id = response.headers["OData-EntityId"]
    return entity_id[entity_id.index("(") + 1 : -1]


def _weekly(api: httpx.Client, **extra: Any) -> str:
    body = {
        "subject": "Weekly review",
        "location": "Room 1",
        "recurrencepatterntype": 1,
        "interval": 1,
        "daysofweekmask": MON | WED | FRI,
        "firstdayofweek": 1,
        "patternstartdate": _at(NEXT_MONDAY, 0),
        "patternendtype": 3,
        "patternenddate": _at(NEXT_MONDAY + dt.timedelta(days=18), 0),
        "starttime": _at(NEXT_MONDAY, 9),
        "endtime": _at(NEXT_MONDAY, 10),
        **extra,
    }
    return _created_id(api.post("recurringappointmentmasters", json=body))


def _instances(api: httpx.Client, master_id: str) -> list[dict[str, Any]]:
    rows = api.get(
        "appointments",
        params={
            "$filter": f"seriesid eq {master_id}",
            "$select": "subject,location,scheduledstart,scheduledend,instancetypecode,"
            "originalstartdate,seriesid",
            "$orderby": "scheduledstart",
        },
    )
    assert rows.status_code == 200, rows.text
    value: list[dict[str, Any]] = rows.json()["value"]
    return value


def test_a_weekly_master_expands_into_instances_linked_by_seriesid(api: httpx.Client) -> None:
    master_id = _weekly(api)
    instances = _instances(api, master_id)
    days = [NEXT_MONDAY + dt.timedelta(days=d) for d in (0, 2, 4, 7, 9, 11, 14, 16, 18)]
    assert [i["scheduledstart"] for i in instances] == [_at(d, 9) for d in days]
    assert [i["scheduledend"] for i in instances] == [_at(d, 10) for d in days]
    assert {i["instancetypecode"] for i in instances} == {2}
    assert all(i["originalstartdate"] == i["scheduledstart"] for i in instances)
    assert {i["subject"] for i in instances} == {"Weekly review"}
    master = api.get(f"recurringappointmentmasters({master_id})").json()
    assert master["instancetypecode"] == 1
    assert master["expansionstatecode"] == 2
    assert master["effectivestartdate"] == _at(days[0], 9)
    assert master["effectiveenddate"] == _at(days[-1], 10)


def test_occurrences_range_and_monthly_relative_pattern(api: httpx.Client) -> None:
    """The second Tuesday of every month, three occurrences."""
    master_id = _weekly(
        api,
        recurrencepatterntype=2,
        isnthmonthly=True,
        instance=2,
        daysofweekmask=TUE,
        patternendtype=2,
        occurrences=3,
        patternenddate=None,
    )
    starts = [dt.date.fromisoformat(i["scheduledstart"][:10]) for i in _instances(api, master_id)]
    assert len(starts) == 3
    assert all(d.weekday() == 1 and 8 <= d.day <= 14 for d in starts)
    assert len({(d.year, d.month) for d in starts}) == 3


def test_no_end_date_expands_up_to_the_future_window_only(api: httpx.Client) -> None:
    master_id = _weekly(api, patternendtype=1, patternenddate=None, daysofweekmask=MON)
    instances = _instances(api, master_id)
    assert 40 <= len(instances) <= 54  # weekly, up to the 12-month future expansion window
    master = api.get(f"recurringappointmentmasters({master_id})").json()
    assert master["expansionstatecode"] == 1  # Partial
    assert master["effectiveenddate"] is None


def test_updating_an_instance_makes_it_an_exception_the_master_update_spares(api: httpx.Client) -> None:
    master_id = _weekly(api)
    first, second, *_ = _instances(api, master_id)
    moved = _at(NEXT_MONDAY, 13)
    assert (
        api.patch(
            f"appointments({second['activityid']})",
            json={"subject": "Moved review", "scheduledstart": moved, "scheduledend": _at(NEXT_MONDAY, 14)},
        ).status_code
        == 204
    )
    assert (
        api.patch(f"recurringappointmentmasters({master_id})", json={"subject": "Review"}).status_code == 204
    )
    by_id = {i["activityid"]: i for i in _instances(api, master_id)}
    assert by_id[second["activityid"]]["instancetypecode"] == 3
    assert by_id[second["activityid"]]["subject"] == "Moved review"
    assert by_id[second["activityid"]]["scheduledstart"] == moved
    assert by_id[second["activityid"]]["originalstartdate"] == second["originalstartdate"]
    assert by_id[first["activityid"]]["subject"] == "Review"
    assert by_id[first["activityid"]]["instancetypecode"] == 2


def test_deleting_an_instance_lists_it_on_the_master(api: httpx.Client) -> None:
    master_id = _weekly(api)
    instances = _instances(api, master_id)
    assert api.delete(f"appointments({instances[3]['activityid']})").status_code == 204
    assert len(_instances(api, master_id)) == len(instances) - 1
    master = api.get(f"recurringappointmentmasters({master_id})").json()
    assert instances[3]["originalstartdate"] in master["deletedexceptionslist"]


def test_a_pattern_change_regenerates_the_future_instances(api: httpx.Client) -> None:
    master_id = _weekly(api)
    before = _instances(api, master_id)
    assert (
        api.patch(f"recurringappointmentmasters({master_id})", json={"daysofweekmask": TUE}).status_code
        == 204
    )
    after = _instances(api, master_id)
    assert not {i["activityid"] for i in before} & {i["activityid"] for i in after}
    assert [dt.date.fromisoformat(i["scheduledstart"][:10]).weekday() for i in after] == [1, 1, 1]


def test_deleting_the_master_deletes_its_instances(api: httpx.Client) -> None:
    master_id = _weekly(api)
    assert _instances(api, master_id)
    assert api.delete(f"recurringappointmentmasters({master_id})").status_code == 204
    assert _instances(api, master_id) == []


def test_delete_open_instances_ends_the_series(api: httpx.Client) -> None:
    master_id = _weekly(api)
    instances = _instances(api, master_id)
    end = _at(NEXT_MONDAY + dt.timedelta(days=8), 0)
    response = api.post(
        "DeleteOpenInstances",
        json={
            "Target": {
                "@odata.type": "Microsoft.Dynamics.CRM.recurringappointmentmaster",
                "activityid": master_id,
            },
            "SeriesEndDate": end,
            "StateOfPastInstances": 1,
        },
    )
    assert response.status_code == 204, response.text
    left = _instances(api, master_id)
    assert [i["activityid"] for i in left] == [i["activityid"] for i in instances[:4]]
    states = api.get(
        "appointments", params={"$filter": f"seriesid eq {master_id}", "$select": "statecode"}
    ).json()
    assert {row["statecode"] for row in states["value"]} == {1}
    master = api.get(f"recurringappointmentmasters({master_id})").json()
    assert master["statecode"] == 2
    assert master["patternendtype"] == 3
    assert master["patternenddate"] == instances[3]["scheduledstart"]


def test_master_parties_reach_the_instances(api: httpx.Client, dataverse_sim: Any) -> None:
    [contact_id] = dataverse_sim.seed("contact", [{"lastname": "Guest", "emailaddress1": "g@example.com"}])
    master_id = _weekly(
        api,
        recurringappointmentmaster_activity_parties=[
            {"partyid_contact@odata.bind": f"/contacts({contact_id})", "participationtypemask": 5}
        ],
    )
    first = _instances(api, master_id)[0]
    parties = api.get(
        f"appointments({first['activityid']})/appointment_activity_parties",
        params={"$select": "_partyid_value,participationtypemask"},
    ).json()["value"]
    assert {(p["_partyid_value"], p["participationtypemask"]) for p in parties} >= {(contact_id, 5)}


def test_a_one_off_appointment_is_not_recurring(api: httpx.Client) -> None:
    appointment_id = _created_id(
        api.post(
            "appointments",
            json={
                "subject": "Once",
                "scheduledstart": _at(NEXT_MONDAY, 9),
                "scheduledend": _at(NEXT_MONDAY, 10),
            },
        )
    )
    row = api.get(f"appointments({appointment_id})?$select=instancetypecode,seriesid").json()
    assert row["instancetypecode"] == 0
    assert row["seriesid"] is None


def _next_change(month: int, week: int) -> dt.date:
    """The next ``week``-th (-1 last) Sunday of ``month`` - a daylight-saving change - a week away."""
    for year in (dt.date.today().year, dt.date.today().year + 1):
        sundays = [
            day
            for day in (dt.date(year, month, 1) + dt.timedelta(days=n) for n in range(31))
            if day.month == month and day.weekday() == 6
        ]
        change = sundays[week]
        if change > dt.date.today() + dt.timedelta(days=7):
            return change
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "case",
    [
        (110, 3, -1, 8, 7),  # W. Europe: 09:00 CET is 08:00Z, 09:00 CEST 07:00Z
        (110, 10, -1, 7, 8),
        (35, 3, 1, 14, 13),  # Eastern, second Sunday of March: 09:00 EST is 14:00Z, EDT 13:00Z
        (35, 11, 0, 13, 14),  # first Sunday of November
    ],
)
def test_a_series_keeps_its_local_time_across_daylight_saving(
    api: httpx.Client, case: tuple[int, int, int, int, int]
) -> None:
    """Expansion runs on the series' wall clock (``utcconversiontimezonecode``): a weekly 09:00
    series stays at 09:00 local on both sides of the change, so its UTC hour moves."""
    code, month, week, before, after = case
    monday = _next_change(month, week) - dt.timedelta(days=6)
    master_id = _weekly(
        api,
        utcconversiontimezonecode=code,
        daysofweekmask=MON,
        patternendtype=2,
        occurrences=2,
        patternenddate=None,
        patternstartdate=_at(monday, 0),
        starttime=_at(monday, before),
        endtime=_at(monday, before + 1),
    )
    starts = [i["scheduledstart"] for i in _instances(api, master_id)]
    assert starts == [_at(monday, before), _at(monday + dt.timedelta(days=7), after)]
