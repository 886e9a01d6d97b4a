"""Recurring appointments: a ``recurringappointmentmaster`` expands into ``appointment`` instances.

Behaviour as learn.microsoft.com documents it (power-apps/developer/data-platform/...):

- "Create a recurring appointment series, instance, or exception"
  (create-recurring-appointment-series-instance-exception): creating a master creates its
  instances as ``appointment`` rows with ``seriesid`` = the master's ``activityid`` and
  ``instancetypecode`` 2 (Recurring Instance); the master itself has ``instancetypecode`` 1.
  Updating an instance makes it a Recurring Exception (3); deleting an instance adds it to the
  master's ``deletedexceptionslist``.
- "Recurring appointment partial expansion model": instances are created only up to the
  organization's future expansion window (``Organization.FutureExpansionWindow``, months) and
  not before its past expansion window (``PastExpansionWindow``, months); ``expansionstatecode``
  tells Unexpanded (0) / Partial (1) / Full (2). The simulator expands synchronously up to the
  window (``RecurrenceExpansionSynchCreateMax`` is not modelled).
- "Update a recurring appointment": a change of basic information (subject, location, ...)
  reaches every instance except exceptions that changed the same column; a change of the
  recurrence information deletes the future instances and expands the new pattern. (Dynamics
  also moves the past instances to a new series sharing ``groupid``; the simulator keeps them
  on the same series.)
- "Delete or end a recurring appointment series or instance": deleting a master deletes its
  instances; ``DeleteOpenInstances`` (Web API action, unbound: ``POST DeleteOpenInstances`` with
  ``Target``, ``SeriesEndDate``, ``StateOfPastInstances``) deletes the open and scheduled
  instances from ``SeriesEndDate`` on, sets the past ones to ``StateOfPastInstances``, ends the
  series at its last past instance and cancels it.

Pattern columns (recurringappointmentmaster table reference): ``recurrencepatterntype`` 0 daily,
1 weekly, 2 monthly, 3 yearly; ``interval``; ``daysofweekmask`` (Sunday 0x01 ... Saturday 0x40);
``dayofmonth``; ``instance`` 1-4 or 5 (last); ``monthofyear``; ``firstdayofweek`` (0 Sunday);
``isweekdaypattern`` (daily every weekday); ``isnthmonthly`` / ``isnthyearly`` (the Nth weekday
of the month, the simulator's reading of "Nth Monthly"); ``patternendtype`` 1 no end date,
2 ``occurrences``, 3 ``patternenddate``; the time of day and length from ``starttime`` /
``endtime`` (or ``duration`` minutes). Dates and times are wall clock in the series' zone
(``utcconversiontimezonecode``, else the owner's ``usersettings.timezonecode``: the columns are
UserLocal), daylight saving included.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

from simulators.dataverse import errors
from simulators.dataverse.engine import ApiRequest, ApiResponse, Engine
from simulators.dataverse.schema import load_tables
from simulators.dataverse.security import SYSTEM, Caller
from simulators.dataverse.store import Record, Ref
from simulators.dataverse.usersettings import IANA

MASTER = "recurringappointmentmaster"
NOT_RECURRING, RECURRING_MASTER, RECURRING_INSTANCE, RECURRING_EXCEPTION = 0, 1, 2, 3
# The simulated organization's settings (Organization table: months, 1-140).
FUTURE_EXPANSION_WINDOW_MONTHS = 12
PAST_EXPANSION_WINDOW_MONTHS = 12
# Columns copied from a master to its instances ("basic information").
BASIC_COLUMNS = (
    "subject",
    "location",
    "description",
    "isalldayevent",
    "prioritycode",
    "category",
    "subcategory",
    "isonlinemeeting",
    "onlinemeetingjoinurl",
    "onlinemeetingid",
    "onlinemeetingtype",
    "regardingobjectid",
    "ownerid",
    "globalobjectid",
)
PATTERN_COLUMNS = frozenset(
    {
        "recurrencepatterntype",
        "interval",
        "daysofweekmask",
        "dayofmonth",
        "instance",
        "monthofyear",
        "firstdayofweek",
        "isweekdaypattern",
        "isnthmonthly",
        "isnthyearly",
        "patternstartdate",
        "patternenddate",
        "patternendtype",
        "occurrences",
        "starttime",
        "endtime",
        "duration",
        "isalldayevent",
    }
)
_MAX_OCCURRENCES = 999  # occurrences MaxValue


def _parse(value: Any) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _add_months(day: dt.date, months: int) -> dt.date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _weekday_bit(day: dt.date) -> int:
    """daysofweekmask bit of a date: Sunday 0x01, Monday 0x02 ... Saturday 0x40."""
    return 1 << ((day.weekday() + 1) % 7)


def _nth_weekday(year: int, month: int, mask: int, instance: int) -> dt.date | None:
    """The ``instance``-th (5 = last) day of the month whose weekday is in ``mask``."""
    days = [
        dt.date(year, month, d)
        for d in range(1, calendar.monthrange(year, month)[1] + 1)
        if _weekday_bit(dt.date(year, month, d)) & mask
    ]
    if not days:
        return None
    if instance >= 5:
        return days[-1]
    return days[instance - 1] if instance <= len(days) else None


def _dates(master: Record, first: dt.date) -> Iterator[dt.date]:
    """Every date of the pattern from ``first`` on, without the range's end."""
    kind = int(master.get("recurrencepatterntype") or 0)
    interval = int(master.get("interval") or 1)
    mask = int(master.get("daysofweekmask") or 0)
    if kind == 0:
        day = first
        while True:
            if not master.get("isweekdaypattern") or day.weekday() < 5:
                yield day
            day += dt.timedelta(days=1 if master.get("isweekdaypattern") else interval)
    elif kind == 1:
        first_day = int(master.get("firstdayofweek") or 0)  # 0 = Sunday
        offset = (first.weekday() + 1 - first_day) % 7
        week = first - dt.timedelta(days=offset)
        mask = mask or _weekday_bit(first)
        while True:
            for step in range(7):
                day = week + dt.timedelta(days=step)
                if day >= first and _weekday_bit(day) & mask:
                    yield day
            week += dt.timedelta(weeks=interval)
    elif kind in (2, 3):
        months = interval if kind == 2 else 12 * interval
        relative = bool(master.get("isnthmonthly" if kind == 2 else "isnthyearly"))
        month_of_year = int(master.get("monthofyear") or first.month)
        anchor = dt.date(first.year, first.month if kind == 2 else month_of_year, 1)
        if anchor < dt.date(first.year, first.month, 1):
            anchor = _add_months(anchor, 12)
        while True:
            found: dt.date | None
            if relative:
                found = _nth_weekday(anchor.year, anchor.month, mask, int(master.get("instance") or 1))
            else:
                wanted = int(master.get("dayofmonth") or first.day)
                found = dt.date(
                    anchor.year, anchor.month, min(wanted, calendar.monthrange(anchor.year, anchor.month)[1])
                )
            if found is not None and found >= first:
                yield found
            anchor = _add_months(anchor, months)
    else:
        raise errors.bad_request(f"Unsupported recurrencepatterntype {kind}.", errors.VALUE_OUT_OF_RANGE)


def _zone(engine: Engine, master: Record) -> ZoneInfo:
    """The series' wall clock: the master's ``utcconversiontimezonecode`` ("time zone code that was
    in use when the record was created"), else its owner's usersettings ``timezonecode``. Expanding
    in the zone - not at a fixed bias - keeps a 09:00 series at 09:00 across daylight-saving changes."""
    code = master.get("utcconversiontimezonecode")
    if not isinstance(code, int) or code not in IANA:
        owner = master.get("ownerid")
        settings = engine.store.get("usersettings", owner.id) if isinstance(owner, Ref) else None
        code = (settings or {}).get("timezonecode")
    return ZoneInfo(IANA.get(code, "UTC") if isinstance(code, int) else "UTC")


def occurrences(engine: Engine, master: Record, now: dt.datetime) -> tuple[list[dt.datetime], bool]:
    """UTC starts of the occurrences inside the expansion window, and whether that is all of them."""
    start = _parse(master.get("starttime"))
    if start is None:
        return [], True
    where = _zone(engine, master)
    local_start = start.astimezone(where)
    pattern_start = _parse(master.get("patternstartdate"))
    first = pattern_start.astimezone(where).date() if pattern_start else local_start.date()
    end_type = int(master.get("patternendtype") or 1)
    end_date = _parse(master.get("patternenddate"))
    last_day = end_date.astimezone(where).date() if end_type == 3 and end_date else None
    count = int(master.get("occurrences") or 0) if end_type == 2 else _MAX_OCCURRENCES
    horizon = _add_months(now.date(), FUTURE_EXPANSION_WINDOW_MONTHS)
    floor = _add_months(now.date(), -PAST_EXPANSION_WINDOW_MONTHS)
    found: list[dt.datetime] = []
    complete = True
    for number, day in enumerate(_dates(master, first)):
        if number >= count or (last_day is not None and day > last_day):
            break
        if day > horizon:
            complete = False
            break
        if day >= floor:
            wall = dt.datetime.combine(day, local_start.time().replace(tzinfo=None), where)
            found.append(wall.astimezone(dt.UTC))
    return found, complete


def _length(master: Record) -> dt.timedelta:
    start, end = _parse(master.get("starttime")), _parse(master.get("endtime"))
    if start is not None and end is not None and end >= start:
        return end - start
    return dt.timedelta(minutes=int(master.get("duration") or 0))


def _instances(engine: Engine, master_id: str) -> list[Record]:
    ids = engine.store.find("appointment", "seriesid", master_id) or set()
    rows = [engine.store.get("appointment", i) for i in sorted(ids)]
    return [r for r in rows if r is not None]


def expand(
    engine: Engine,
    master: Record,
    request: ApiRequest,
    *,
    since: dt.datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Create the missing instances of ``master`` (from ``since`` on), and set its expansion columns."""
    now = dt.datetime.now(dt.UTC)
    starts, complete = occurrences(engine, master, now)
    master_id = master["activityid"]
    have = {r.get("originalstartdate") for r in _instances(engine, master_id)}
    deleted = set(_deleted_list({**master, **(extra or {})}))
    length = _length(master)
    table = load_tables()["appointment"]
    parties = _party_payload(engine, master)
    for start in starts:
        original = _iso(start)
        if original in have or original in deleted or (since is not None and start < since):
            continue
        payload: dict[str, Any] = {
            c: master.get(c)
            for c in BASIC_COLUMNS
            if c not in {"regardingobjectid", "ownerid"} and c in table.columns
        }
        payload["scheduledstart"] = original
        payload["scheduledend"] = _iso(start + length)
        payload["appointment_activity_parties"] = parties
        for column, target in (("ownerid", "ownerid"), ("regardingobjectid", None)):
            ref = master.get(column)
            if isinstance(ref, Ref):
                nav = target or f"regardingobjectid_{ref.table}_appointment"
                payload[f"{nav}@odata.bind"] = f"/{load_tables()[ref.table].entity_set}({ref.id})"
        engine.write(
            table,
            str(uuid.uuid4()),
            payload,
            existing=None,
            caller=SYSTEM,
            request=request,
            computed={
                "seriesid": master_id,
                "instancetypecode": RECURRING_INSTANCE,
                "originalstartdate": original,
            },
        )
    summary: dict[str, Any] = {
        "instancetypecode": RECURRING_MASTER,
        "expansionstatecode": 2 if complete else 1,
        "lastexpandedinstancedate": _iso(starts[-1]) if starts else None,
        "effectivestartdate": _iso(starts[0]) if starts else None,
        "effectiveenddate": _iso(starts[-1] + length) if starts and complete else None,
        "scheduledstart": _iso(starts[0]) if starts else None,
        "scheduledend": _iso(starts[-1] + length) if starts and complete else None,
        **(extra or {}),
    }
    if any(master.get(k) != v for k, v in summary.items()):
        engine.write(
            load_tables()[MASTER],
            master_id,
            {},
            existing=master,
            caller=SYSTEM,
            request=request,
            computed=summary,
        )


def _party_payload(engine: Engine, master: Record) -> list[dict[str, Any]]:
    ids = engine.store.find("activityparty", "activityid", Ref(MASTER, master["activityid"])) or set()
    out: list[dict[str, Any]] = []
    for party_id in sorted(ids):
        party = engine.store.get("activityparty", party_id) or {}
        item: dict[str, Any] = {"participationtypemask": party.get("participationtypemask")}
        if party.get("addressused"):
            item["addressused"] = party["addressused"]
        target = party.get("partyid")
        if isinstance(target, Ref):
            item[f"partyid_{target.table}@odata.bind"] = (
                f"/{load_tables()[target.table].entity_set}({target.id})"
            )
        if item["participationtypemask"] in {5, 6, 7}:
            out.append(item)
    return out


def _deleted_list(master: Record) -> list[str]:
    text = master.get("deletedexceptionslist")
    return [part for part in str(text).split(",") if part] if text else []


def after_master_write(
    engine: Engine, before: Record | None, master: Record, payload: dict[str, Any], request: ApiRequest
) -> None:
    """Expand a new master; propagate an update to the instances (or re-expand a new pattern)."""
    if before is None:
        expand(engine, master, request)
        return
    changed = {c for c in payload if before.get(c) != master.get(c)} | {
        k.split("@", 1)[0] for k in payload if k.endswith("@odata.bind")
    }
    if changed & PATTERN_COLUMNS:
        now = dt.datetime.now(dt.UTC)
        for row in _instances(engine, master["activityid"]):
            start = _parse(row.get("originalstartdate"))
            if start is not None and start >= now:
                engine.delete(load_tables()["appointment"], row["activityid"])
        remaining = [d for d in _deleted_list(master) if (_parse(d) or now) < now]
        expand(
            engine, master, request, since=now, extra={"deletedexceptionslist": ",".join(remaining) or None}
        )
        return
    basic = [c for c in BASIC_COLUMNS if c in changed or any(n.startswith(c + "_") for n in changed)]
    parties_changed = "recurringappointmentmaster_activity_parties" in payload
    if not basic and not parties_changed:
        return
    table = load_tables()["appointment"]
    parties = _party_payload(engine, master)
    for row in _instances(engine, master["activityid"]):
        own = set(_modified_columns(row))
        update: dict[str, Any] = {c: master.get(c) for c in basic if c not in own and c in table.columns}
        for column in ("regardingobjectid", "ownerid"):
            if column in basic and column not in own:
                update.pop(column, None)
                ref = master.get(column)
                nav = (
                    "ownerid"
                    if column == "ownerid"
                    else f"regardingobjectid_{getattr(ref, 'table', 'contact')}_appointment"
                )
                update[f"{nav}@odata.bind"] = (
                    f"/{load_tables()[ref.table].entity_set}({ref.id})" if isinstance(ref, Ref) else None
                )
        if parties_changed and "appointment_activity_parties" not in own:
            update["appointment_activity_parties"] = parties
        if update:
            engine.write(table, row["activityid"], update, existing=row, caller=SYSTEM, request=request)


def _modified_columns(row: Record) -> list[str]:
    text = row.get("modifiedfieldsmask")
    return [part for part in str(text).split(",") if part] if text else []


def instance_computed(
    existing: Record | None, payload: dict[str, Any], caller: Caller
) -> dict[str, Any] | None:
    """Platform columns of an appointment write: a new one is Not Recurring; a client's update
    of a recurring instance makes it a Recurring Exception, remembering the columns it changed."""
    if existing is None:
        return {"instancetypecode": NOT_RECURRING}
    if caller.system or existing.get("instancetypecode") not in {RECURRING_INSTANCE, RECURRING_EXCEPTION}:
        return None
    columns = [k.split("@", 1)[0] for k in payload if not k.startswith("@")]
    changed = sorted(
        set(_modified_columns(existing)) | {c for c in columns if existing.get(c) != payload.get(c)}
    )
    return {"instancetypecode": RECURRING_EXCEPTION, "modifiedfieldsmask": ",".join(changed) or None}


def before_delete(engine: Engine, table_name: str, record: Record, request: ApiRequest) -> None:
    """Deleting a master takes its instances; deleting an instance is listed on its master."""
    if table_name == MASTER:
        for row in _instances(engine, record["activityid"]):
            engine.delete(load_tables()["appointment"], row["activityid"])
        return
    series = record.get("seriesid")
    master = engine.store.get(MASTER, series) if series else None
    if table_name != "appointment" or master is None:
        return
    listed = [*_deleted_list(master), str(record.get("originalstartdate"))]
    engine.write(
        load_tables()[MASTER],
        master["activityid"],
        {},
        existing=master,
        caller=SYSTEM,
        request=request,
        computed={"deletedexceptionslist": ",".join(listed)},
    )


def delete_open_instances(engine: Engine, request: ApiRequest, caller: Caller) -> ApiResponse:
    """``POST DeleteOpenInstances``: end a series at ``SeriesEndDate`` (see the module docstring)."""
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise errors.bad_request("The request body is not valid JSON.") from None
    target = body.get("Target") if isinstance(body, dict) else None
    end = _parse(body.get("SeriesEndDate")) if isinstance(body, dict) else None
    state = body.get("StateOfPastInstances") if isinstance(body, dict) else None
    master_id = str((target or {}).get("activityid") or "").lower() if isinstance(target, dict) else ""
    if not master_id or end is None or not isinstance(state, int):
        raise errors.bad_request(
            "DeleteOpenInstances takes Target (a recurringappointmentmaster with its activityid), "
            "SeriesEndDate and StateOfPastInstances."
        )
    table = load_tables()[MASTER]
    master = engine.store.get(MASTER, master_id)
    if master is None:
        raise errors.not_found(MASTER, master_id)
    engine.security.require(caller, "Write", table, getattr(master.get("ownerid"), "id", None), master_id)
    appointment = load_tables()["appointment"]
    past: list[Record] = []
    for row in _instances(engine, master_id):
        start = _parse(row.get("scheduledstart"))
        if start is not None and start >= end:
            if row.get("statecode") in {0, 3}:
                engine.delete(appointment, row["activityid"])
        else:
            past.append(row)
    for row in past:
        if row.get("statecode") != state:
            engine.write(
                appointment,
                row["activityid"],
                {"statecode": state},
                existing=row,
                caller=SYSTEM,
                request=request,
            )
    starts = [s for s in (_parse(r.get("scheduledstart")) for r in past) if s is not None]
    last = max(starts, default=None)
    ended: dict[str, Any] = {"patternendtype": 3, "statecode": 2}
    computed: dict[str, Any] = {}
    if last is not None:
        ended["patternenddate"] = _iso(last)
        computed["effectiveenddate"] = _iso(last + _length(master))
    engine.write(table, master_id, ended, existing=master, caller=SYSTEM, request=request, computed=computed)
    return ApiResponse(204)
