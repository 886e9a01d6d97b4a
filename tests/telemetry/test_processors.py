"""The redacting processors on the real OpenTelemetry SDK: what a later processor (the exporter's) sees.

Providers of this test's own (not the global ones), each with the redacting processor first and an
in-memory exporter after it, exactly as production orders them before the Azure batch processors.
"""

from __future__ import annotations

import json
import logging
import uuid

from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from shared.store.fingerprint import short_fingerprint
from shared.telemetry.processors import RedactingLogRecordProcessor, RedactingSpanProcessor

UPN = "dana.whitfield@contoso.example"
URL = f"https://graph.microsoft.com/v1.0/users/{UPN}/messages?$filter=subject%20eq%20'Merger'"  # as sent


def test_span_name_attributes_events_links_and_status_are_scrubbed() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("linked") as other:
        pass

    with tracer.start_as_current_span(
        f"GET {URL}",
        kind=SpanKind.CLIENT,
        attributes={"url.full": URL, "url.query": "$filter=subject eq 'Merger'", "enduser.id": UPN},
        links=[Link(other.get_span_context(), {"crmsync.from": UPN})],
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        span.record_exception(ValueError(f"Resource '{UPN}' does not exist"))
        span.add_event("retry", {"http.url": URL})
        span.set_status(Status(StatusCode.ERROR, f"failed for {UPN}"))

    exported = exporter.get_finished_spans()[-1]
    text = exported.to_json()
    assert UPN not in text
    assert "Merger" not in text
    assert exported.name == "GET https://graph.microsoft.com/v1.0/users/{id}/messages"
    assert exported.attributes == {
        "url.full": "https://graph.microsoft.com/v1.0/users/{id}/messages",
        "enduser.id": short_fingerprint(UPN),
    }
    assert [event.name for event in exported.events] == ["exception", "retry"]
    assert exported.events[0].attributes is not None
    assert (
        exported.events[0].attributes["exception.message"]
        == f"Resource '{short_fingerprint(UPN)}' does not exist"
    )
    assert exported.links[0].attributes == {"crmsync.from": short_fingerprint(UPN)}
    assert exported.status.description == f"failed for {short_fingerprint(UPN)}"


def test_log_body_and_exception_attributes_are_scrubbed() -> None:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(RedactingLogRecordProcessor())
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"shared.test_processors.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(LoggingHandler(logger_provider=provider))

    try:
        raise LookupError(f"no mailbox at {URL}")
    except LookupError:
        logger.exception("lookup of %s failed", UPN, extra={"crmsync.who": UPN})

    (record,) = exporter.get_finished_logs()
    text = json.dumps(json.loads(record.to_json()))
    assert UPN not in text
    assert "Merger" not in text
    assert record.log_record.body == f"lookup of {short_fingerprint(UPN)} failed"
    attributes = dict(record.log_record.attributes or {})
    assert attributes["crmsync.who"] == short_fingerprint(UPN)
    assert "/v1.0/users/{id}/messages" in str(attributes["exception.stacktrace"])
