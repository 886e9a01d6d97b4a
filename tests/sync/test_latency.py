"""The status page's latency figures: buckets, the last hour's window and the percentile bounds."""

from __future__ import annotations

import datetime as dt

from shared.store import open_memory_store
from shared.store.records import LATENCY_BOUNDS_S, LatencySlot, latency_slot_start
from shared.sync.latency import bucket_counts, last_hour, save

NOW = dt.datetime(2026, 11, 22, 9, 35, tzinfo=dt.UTC)


def _slot(start: dt.datetime, latencies: list[float], direction: str = "to_crm") -> LatencySlot:
    return LatencySlot(mailbox_id="m", direction=direction, start=start, counts=bucket_counts(latencies))


def test_a_latency_on_a_bound_counts_in_that_bound_s_bucket() -> None:
    counts = bucket_counts([0.0, 0.5, 0.51, 2.0, 3600.0, 3600.1])
    assert len(counts) == len(LATENCY_BOUNDS_S) + 1
    assert (counts[0], counts[1], counts[2], counts[-2], counts[-1]) == (2, 1, 1, 1, 1)


def test_the_last_hour_takes_the_slots_that_started_within_it() -> None:
    current = latency_slot_start(NOW)
    slots = [
        _slot(current, [0.4] * 18 + [1.5, 40.0]),  # 20 changes: median <= 0.5 s, p95 <= 2 s
        _slot(current - dt.timedelta(minutes=50), [0.3]),
        _slot(current - dt.timedelta(minutes=60), [5000.0] * 100),  # an hour and more ago: left out
        _slot(current, [9.0], "to_outlook"),
    ]
    summary = last_hour(slots, NOW)
    assert (summary["to_crm"].count, summary["to_crm"].p50_s, summary["to_crm"].p95_s) == (21, 0.5, 2)
    assert (summary["to_outlook"].count, summary["to_outlook"].p95_s) == (1, 10)
    assert summary["to_crm"].describe() == "21 change(s), p50 <= 0.5 s, p95 <= 2 s"


def test_no_change_and_changes_slower_than_an_hour_say_so() -> None:
    quiet = last_hour([], NOW)
    assert quiet["to_crm"].count == 0
    assert quiet["to_crm"].describe() == "no change"
    slow = last_hour([_slot(latency_slot_start(NOW), [7200.0])], NOW)["to_crm"]
    assert (slow.p50_s, slow.describe()) == (None, "1 change(s), p50 > 3600 s, p95 > 3600 s")


async def test_a_run_s_latencies_are_saved_in_its_slot_per_direction() -> None:
    store = open_memory_store()
    await save(store.sync_state, "m", {"to_crm": [0.2, 0.3], "to_outlook": []}, NOW)
    await save(store.sync_state, "m", {"to_crm": [1.2], "to_outlook": [0.7]}, NOW)
    summary = last_hour(await store.sync_state.latency_slots("m"), NOW)
    assert (summary["to_crm"].count, summary["to_outlook"].count) == (3, 1)
