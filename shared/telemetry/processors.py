"""Processors that scrub every span and log record before any exporter sees it.

They are registered first (after the distro's own attribution processor, which adds no data), so
the batch processor that feeds Application Insights only ever holds scrubbed copies. Spans come
from the httpx, Azure SDK and kiota instrumentations as well as crmsync's own; none of them can
be trusted to keep URLs, query strings or exception texts clean (kiota records the full URL by
default, and an SDK exception quotes Graph's message, UPN included).

The OpenTelemetry SDK hands ``on_end`` a read-only view of the ended span; the same object goes
to every later processor, so scrubbing replaces its fields in place. tests/telemetry checks the
result through the real SDK, so an SDK upgrade that changes this fails loudly, never silently.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Status
from opentelemetry.util.types import AnyValue

from shared.telemetry.scrub import scrub_attribute, scrub_attributes, scrub_text


def _scrub_any(value: AnyValue) -> AnyValue:
    """A log body: text scrubbed, mappings and sequences scrubbed recursively, bytes dropped."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, bytes):
        return None
    if isinstance(value, dict):
        return {str(key): _scrub_any(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_any(item) for item in value]
    return value


class RedactingSpanProcessor(SpanProcessor):
    """Scrubs the name, attributes, events (exception messages and stack traces), links and status."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        span._name = scrub_text(span._name)
        span._attributes = scrub_attributes(span._attributes)
        events = [
            Event(scrub_text(event.name), scrub_attributes(event.attributes), event.timestamp)
            for event in span._events
        ]
        span._events = BoundedList.from_seq(len(events) or 1, events)
        for link in span._links:
            link._attributes = scrub_attributes(link._attributes)
        status = span._status
        if status.description:
            span._status = Status(status.status_code, scrub_text(status.description))

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class RedactingLogRecordProcessor(LogRecordProcessor):
    """Scrubs a log record's body and attributes (``exception.message``, ``exception.stacktrace``)."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        record.body = _scrub_any(record.body)
        scrubbed = ((key, scrub_attribute(key, value)) for key, value in (record.attributes or {}).items())
        record.attributes = {key: value for key, value in scrubbed if value is not None}
        if record.event_name:
            record.event_name = scrub_text(record.event_name)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
