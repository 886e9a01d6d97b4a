"""The last hour's change-to-CRM and change-to-Outlook latency per mailbox, kept in Table Storage.

Application Insights holds the histograms (``crmsync.change_to_*.latency``), but the status page and
``crmsync status`` must answer without it, for one mailbox. So a run also adds its latencies to a
ten-minute slot row of its mailbox (:class:`~shared.store.records.LatencySlot`): one read and one
write per run and direction that wrote something, never one per item. Figures are bucket bounds
(``p95 <= 2 s``), the precision a histogram has.

A latency runs from the moment crmsync learned of the change (Graph's notification, the Dataverse
webhook call or the change-tracking read that found it) to the write on the other side.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from azure.core.exceptions import AzureError

from shared import telemetry
from shared.store.errors import StaleWrite
from shared.store.ports import SyncStateStore
from shared.store.records import LATENCY_BOUNDS_S, LatencySlot, latency_slot_start

logger = logging.getLogger(__name__)

DIRECTIONS = ("to_crm", "to_outlook")
WINDOW = dt.timedelta(hours=1)


def bucket_counts(latencies_s: Iterable[float]) -> tuple[int, ...]:
    """How many latencies fall in each bucket of :data:`LATENCY_BOUNDS_S` (bounds inclusive)."""
    counts = [0] * (len(LATENCY_BOUNDS_S) + 1)
    for latency in latencies_s:
        counts[bisect.bisect_left(LATENCY_BOUNDS_S, latency)] += 1
    return tuple(counts)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Changes that reached the other side in the window, and bounds of their median and p95
    (``None``: beyond the last bound, over an hour)."""

    count: int
    p50_s: float | None
    p95_s: float | None

    def describe(self) -> str:
        if not self.count:
            return "no change"
        return f"{self.count} change(s), p50 {_bound(self.p50_s)}, p95 {_bound(self.p95_s)}"


def _bound(value: float | None) -> str:
    if value is None:
        return f"> {LATENCY_BOUNDS_S[-1]:g} s"
    return f"<= {value:g} s"


def _percentile_bound(counts: tuple[int, ...], fraction: float) -> float | None:
    total = sum(counts)
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= fraction * total:
            return LATENCY_BOUNDS_S[index] if index < len(LATENCY_BOUNDS_S) else None
    return None  # unreachable with total > 0


def last_hour(slots: Iterable[LatencySlot], now: dt.datetime) -> dict[str, LatencySummary]:
    """Per direction, the changes written in the last hour (the slots that started after
    ``now - 1 h``, the current one included: 50 to 60 minutes of changes)."""
    since = now - WINDOW
    totals = {direction: [0] * (len(LATENCY_BOUNDS_S) + 1) for direction in DIRECTIONS}
    for slot in slots:
        if slot.direction in totals and since < slot.start <= now:
            totals[slot.direction] = [a + b for a, b in zip(totals[slot.direction], slot.counts, strict=True)]
    summaries = {}
    for direction, counts in totals.items():
        frozen = tuple(counts)
        total = sum(frozen)
        summaries[direction] = LatencySummary(
            total,
            _percentile_bound(frozen, 0.5) if total else None,
            _percentile_bound(frozen, 0.95) if total else None,
        )
    return summaries


async def save(
    state: SyncStateStore, mailbox_id: str, samples: dict[str, list[float]], at: dt.datetime
) -> None:
    """Add a run's latencies to the mailbox's current slot. Best effort: the writes themselves are
    done, so a storage failure here is logged and the figures miss this run, nothing else."""
    start = latency_slot_start(at)
    for direction, latencies in samples.items():
        if not latencies:
            continue
        slot = LatencySlot(
            mailbox_id=mailbox_id, direction=direction, start=start, counts=bucket_counts(latencies)
        )
        try:
            await state.add_latencies(slot)
        except (AzureError, StaleWrite) as exc:
            logger.warning("latency figures of a run not stored (%s)", type(exc).__name__)


@contextlib.asynccontextmanager
async def measured(state: SyncStateStore, mailbox_id: str, clock: telemetry.Clock) -> AsyncIterator[None]:
    """Collect the latencies the block's writes record, then :func:`save` them (also when the
    block fails half way: what was written was written)."""
    with telemetry.collect_latencies() as samples:
        try:
            yield
        finally:
            await save(state, mailbox_id, samples, clock())
