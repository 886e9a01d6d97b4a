"""crmsync's own spans and metrics: the engine calls these one-liners, never OpenTelemetry directly.

Spans: :func:`span` (``crmsync.<step>``) with mailbox and item ids only as short fingerprints, and
:func:`sync_run` for a queued run; the HTTP calls a run makes (Graph, Dataverse, storage) are its
children through OpenTelemetry's context. A span of another process continues through a W3C
``traceparent`` string: :func:`traceparent` where the webhook enqueues, ``parent=`` where the
worker runs the job, so a notification and the CRM writes it caused form one trace.

Metrics (instrument names are what the alert queries and the status page read):

- ``crmsync.change_to_crm.latency`` / ``crmsync.change_to_outlook.latency`` (s, histogram) per item
  kind; change-to-CRM is measured from the notification that woke the run (its job's enqueue time),
  change-to-Outlook from the Dataverse webhook call or change-tracking read that found the change;
- ``crmsync.items.synced``, ``crmsync.items.parked``, ``crmsync.conflicts`` (counters) per kind, with
  the direction, the park reason's class and the conflict's winner;
- ``crmsync.throttled`` (counter) per service (``graph``, ``dataverse``), counted on every 429
  answer at the HTTP transport, retried ones included (not 429 parts inside a ``$batch``);
- ``crmsync.queue.age`` (s, histogram): how long a job waited in the queue.

Dimensions are closed vocabularies (kinds, directions, reasons), never ids: a fingerprint would
make one time series per mailbox. Instruments come from the global meter provider's proxy, so
calling these before (or without) :func:`shared.telemetry.configure` is a cheap no-op.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import re
from collections.abc import Callable, Iterator

from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import Counter, Histogram, MeterProvider
from opentelemetry.trace import Span, SpanKind, TracerProvider
from opentelemetry.util.types import AttributeValue

from shared.store.fingerprint import short_fingerprint

SCOPE = "crmsync"
_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_WORD = re.compile(r"[a-z][a-z0-9_]{0,39}")


# Instrument names (the alert rules in bicep/modules/alerts.bicep query them by name) and units.
CHANGE_TO_CRM_LATENCY = "crmsync.change_to_crm.latency"
CHANGE_TO_OUTLOOK_LATENCY = "crmsync.change_to_outlook.latency"
ITEMS_SYNCED = "crmsync.items.synced"
ITEMS_PARKED = "crmsync.items.parked"
CONFLICTS = "crmsync.conflicts"
THROTTLED = "crmsync.throttled"
QUEUE_AGE = "crmsync.queue.age"
UNITS = {
    CHANGE_TO_CRM_LATENCY: "s",
    CHANGE_TO_OUTLOOK_LATENCY: "s",
    ITEMS_SYNCED: "{item}",
    ITEMS_PARKED: "{item}",
    CONFLICTS: "{item}",
    THROTTLED: "{response}",
    QUEUE_AGE: "s",
}


class _Signals:
    """crmsync's tracer and instruments, from one pair of providers."""

    def __init__(self, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None) -> None:
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)

        def histogram(name: str, description: str) -> Histogram:
            return meter.create_histogram(name, unit=UNITS[name], description=description)

        def counter(name: str, description: str) -> Counter:
            return meter.create_counter(name, unit=UNITS[name], description=description)

        self.change_to_crm = histogram(CHANGE_TO_CRM_LATENCY, "Outlook change to its CRM write")
        self.change_to_outlook = histogram(CHANGE_TO_OUTLOOK_LATENCY, "CRM change to its Outlook write")
        self.synced = counter(ITEMS_SYNCED, "Items written")
        self.parked = counter(ITEMS_PARKED, "Items parked")
        self.conflicts = counter(CONFLICTS, "Fields changed on both sides")
        self.throttled = counter(THROTTLED, "429 answers")
        self.queue_age = histogram(QUEUE_AGE, "Time a job waited")


_signals = _Signals(None, None)  # the global providers (proxies until configure() sets them)


def bind(tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None) -> None:
    """Emit crmsync's spans and metrics through these providers; ``bind()`` goes back to the global
    ones. Tests bind in-memory providers without touching the process-wide ones."""
    global _signals  # noqa: PLW0603 - one binding per process, swapped whole
    _signals = _Signals(tracer_provider, meter_provider)


Clock = Callable[[], dt.datetime]

# Which side changed and when crmsync learned of it (the job's enqueue time), for latencies: a run
# woken by Graph's notification measures its CRM writes, a CRM change's run its Outlook writes.
_CHANGE_SEEN: contextvars.ContextVar[tuple[str, dt.datetime] | None] = contextvars.ContextVar(
    "change", default=None
)
_ORIGINS = {"notification": "outlook", "crm_change": "crm"}
# Latencies recorded inside :func:`collect_latencies`, per direction (``to_crm``, ``to_outlook``).
_COLLECTED: contextvars.ContextVar[dict[str, list[float]] | None] = contextvars.ContextVar(
    "collected", default=None
)


def fingerprint(value: str) -> str:
    """The short fingerprint telemetry uses for a mailbox, item or record id (``#`` + 12 hex)."""
    return short_fingerprint(value)


def _word(value: str) -> str:
    """A dimension value from a closed vocabulary; anything else becomes ``other``."""
    folded = value.strip().lower().replace("-", "_").replace(".", "_")
    return folded if _WORD.fullmatch(folded) else "other"


@contextlib.contextmanager
def span(
    step: str,
    *,
    mailbox: str | None = None,
    item: str | None = None,
    parent: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    **attributes: str | int | float | bool,
) -> Iterator[Span]:
    """A ``crmsync.<step>`` span, current inside the block; exceptions are recorded (then scrubbed).

    ``mailbox`` and ``item`` are fingerprinted here; ``parent`` is a ``traceparent`` from
    :func:`traceparent` (another process's span, e.g. the webhook's); other attributes are
    ``crmsync.<name>`` and must not hold personal values (the redacting processor is the backstop).
    """
    values: dict[str, AttributeValue] = {f"crmsync.{key}": value for key, value in attributes.items()}
    if mailbox is not None:
        values["crmsync.mailbox"] = fingerprint(mailbox)
    if item is not None:
        values["crmsync.item"] = fingerprint(item)
    context = None
    if parent and _TRACEPARENT.fullmatch(parent):
        context = propagate.extract({"traceparent": parent})
    with _signals.tracer.start_as_current_span(
        f"crmsync.{step}", context=context, kind=kind, attributes=values
    ) as current:
        yield current


@contextlib.contextmanager
def sync_run(
    *, mailbox: str, reason: str, enqueued_at: dt.datetime, parent: str | None = None
) -> Iterator[Span]:
    """The span of one queued sync run (a child of the notification's span when ``parent`` is its
    ``traceparent``); records the job's queue age. Inside it, for a run a notification asked for,
    :func:`crm_written` measures change-to-CRM latency from the job's enqueue time: Graph notifies
    within seconds of the change, and the delta items carry no change time for every kind."""
    now = dt.datetime.now(dt.UTC)
    record_queue_age((now - enqueued_at).total_seconds())
    origin = _ORIGINS.get(reason)
    token = _CHANGE_SEEN.set((origin, enqueued_at) if origin else None)
    try:
        with span("sync_run", mailbox=mailbox, parent=parent, reason=_word(reason)) as current:
            yield current
    finally:
        _CHANGE_SEEN.reset(token)


def crm_written(kind: str, count: int = 1) -> None:
    """``count`` CRM writes of ``kind`` items: counted, and inside a notified run each one's
    change-to-CRM latency."""
    record_synced(kind, "to_crm", count)
    latency = _since_change("outlook")
    if latency is not None:
        for _ in range(count):
            record_change_to_crm(latency, kind)


def outlook_written(kind: str, count: int = 1) -> None:
    """``count`` Outlook writes of ``kind`` items: counted, and inside the run of a CRM change
    each one's change-to-Outlook latency."""
    record_synced(kind, "to_outlook", count)
    latency = _since_change("crm")
    if latency is not None:
        for _ in range(count):
            record_change_to_outlook(latency, kind)


def _since_change(origin: str) -> float | None:
    seen = _CHANGE_SEEN.get()
    if seen is None or seen[0] != origin:
        return None
    return (dt.datetime.now(dt.UTC) - seen[1]).total_seconds()


@contextlib.contextmanager
def collect_latencies() -> Iterator[dict[str, list[float]]]:
    """Inside the block, every change-to-CRM and change-to-Outlook latency is also kept in the
    yielded lists (``to_crm``, ``to_outlook``), for the mailbox's own figures."""
    collected: dict[str, list[float]] = {"to_crm": [], "to_outlook": []}
    token = _COLLECTED.set(collected)
    try:
        yield collected
    finally:
        _COLLECTED.reset(token)


def traceparent() -> str | None:
    """The current span's W3C ``traceparent`` (to put in a queue message), None outside a span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    value = carrier.get("traceparent")
    return value if value and _TRACEPARENT.fullmatch(value) else None


def record_change_to_crm(latency_s: float, kind: str) -> None:
    """An Outlook change reached the CRM ``latency_s`` seconds after it was made."""
    _signals.change_to_crm.record(max(latency_s, 0.0), {"crmsync.kind": _word(kind)})
    _collect("to_crm", latency_s)


def record_change_to_outlook(latency_s: float, kind: str) -> None:
    """A CRM change reached Outlook ``latency_s`` seconds after it was made."""
    _signals.change_to_outlook.record(max(latency_s, 0.0), {"crmsync.kind": _word(kind)})
    _collect("to_outlook", latency_s)


def _collect(direction: str, latency_s: float) -> None:
    collected = _COLLECTED.get()
    if collected is not None:
        collected[direction].append(max(latency_s, 0.0))


def record_synced(kind: str, direction: str, count: int = 1) -> None:
    """``count`` items of ``kind`` written towards ``direction`` (``to_crm``, ``to_outlook``)."""
    if count > 0:
        _signals.synced.add(count, {"crmsync.kind": _word(kind), "crmsync.direction": _word(direction)})


def record_parked(kind: str, reason: str) -> None:
    """An item was parked; ``reason`` is the error's class name (e.g. ``PrivilegeDenied``), never its text."""
    _signals.parked.add(1, {"crmsync.kind": _word(kind), "crmsync.reason": _word(reason)})


def record_conflict(kind: str, winner: str) -> None:
    """A field changed on both sides; ``winner`` is ``crm`` or ``outlook``."""
    _signals.conflicts.add(1, {"crmsync.kind": _word(kind), "crmsync.winner": _word(winner)})


def record_throttled(service: str) -> None:
    """One 429 answer from ``service`` (``graph`` or ``dataverse``)."""
    _signals.throttled.add(1, {"crmsync.service": _word(service)})


def record_queue_age(age_s: float) -> None:
    """A sync job started ``age_s`` seconds after it was enqueued."""
    _signals.queue_age.record(max(age_s, 0.0))


def service_of(path: str, host: str = "") -> str:
    """``graph``, ``dataverse``, ``storage`` or ``other`` from a request's host and path.

    By path first (``/v1.0``, ``/beta`` and ``/api/data/``), so the sandbox's simulators on loopback
    count like the real services."""
    if path.startswith(("/v1.0/", "/beta/")) or host.endswith("graph.microsoft.com"):
        return "graph"
    if "/api/data/" in path or host.endswith(".dynamics.com"):
        return "dataverse"
    if host.endswith(".core.windows.net"):
        return "storage"
    return "other"
