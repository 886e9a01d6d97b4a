"""A change's trace crosses the queue: the webhook's span (Graph's notification, Dataverse's call)
puts its W3C traceparent in the queued message, so the worker's run span continues that trace
(tests/telemetry/engine/test_engine_signals.py shows the run taking the parent)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.runtime import Runtime
from shared.telemetry import signals
from tests.fixtures.app import registered_function
from tests.functions.test_crm_webhook import KEY, _context, _queued, _request
from tests.functions.test_crm_webhook import runtime as crm_runtime  # noqa: F401 - fixture
from tests.functions.test_webhooks import handler, payload, post, queued_jobs, subscribe


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    signals.bind(tracer_provider=provider)
    try:
        yield exporter
    finally:
        signals.bind()


def _traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def test_a_graph_notification_s_job_carries_the_notification_span(
    app_runtime: Runtime, spans: InMemorySpanExporter
) -> None:
    subscription_id, secret = await subscribe(app_runtime, "mbx-trace", "users/mbx-trace/contacts")
    assert (await handler("notifications")(post(payload(subscription_id, secret)))).status_code == 202
    (notification,) = [s for s in spans.get_finished_spans() if s.name == "crmsync.notification"]
    (job,) = await queued_jobs(app_runtime)
    assert job["traceparent"] == _traceparent(notification)


async def test_dataverse_webhook_work_carries_the_call_s_span(
    crm_runtime: Runtime,  # noqa: F811 - the fixture imported above
    spans: InMemorySpanExporter,
) -> None:
    assert (await registered_function("crm_webhook")(_request(_context(), KEY))).status_code == 202
    (call,) = [s for s in spans.get_finished_spans() if s.name == "crmsync.crm_notification"]
    (work,) = await _queued(crm_runtime)
    assert work.traceparent == _traceparent(call)
    await crm_runtime.close()
