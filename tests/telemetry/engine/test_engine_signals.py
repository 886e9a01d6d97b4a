"""What a notified sync run emits: its span and the engine's metrics (its HTTP calls, the CRM writes
among them, are children of the span through OpenTelemetry's context: test_no_personal_data_exported).

A real run (Azurite, the Graph simulator with msgraph-sdk, the Dataverse simulator with
DataverseClient) with crmsync's signals bound to in-memory providers of this test's own, the
redacting processor first as in production.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.outlook.subscriptions import ResourceKind, resource_path
from shared.store.fingerprint import short_fingerprint
from shared.store.jobs import JobReason, SyncJob
from shared.telemetry import signals
from shared.telemetry.processors import RedactingSpanProcessor
from tests.engine.conftest import Engine

Captured = tuple[InMemorySpanExporter, InMemoryMetricReader]


@pytest.fixture
def captured() -> Iterator[Captured]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(RedactingSpanProcessor())
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    signals.bind(tracer_provider, MeterProvider(metric_readers=[reader]))
    try:
        yield spans, reader
    finally:
        signals.bind()


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


async def test_a_notified_run_has_a_span_and_counts_its_crm_writes(
    engine: Engine, captured: Captured
) -> None:
    spans, reader = captured
    box = (await engine.register()).mailbox_id
    engine.graph_sim.seed(
        box,
        contacts=[{"givenName": "Grace", "surname": "Hopper"}, {"givenName": "Alan", "surname": "Turing"}],
    )
    notified = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3)
    job = SyncJob(
        mailbox_id=box,
        resource=resource_path(ResourceKind.CONTACTS, box),
        reason=JobReason.NOTIFICATION,
        enqueued_at=notified,
    )

    report = await engine.job().run_job(job)

    assert report.crm_writes == 2
    finished = spans.get_finished_spans()
    (run,) = [span for span in finished if span.name == "crmsync.sync_run"]
    assert run.attributes is not None
    assert run.attributes["crmsync.mailbox"] == short_fingerprint(box)
    assert run.attributes["crmsync.reason"] == "notification"
    assert all(box not in span.to_json() for span in finished)
    points = _points(reader)
    (synced,) = points["crmsync.items.synced"]
    assert synced.value == 2
    assert dict(synced.attributes) == {"crmsync.kind": "contact", "crmsync.direction": "to_crm"}
    (latency,) = points["crmsync.change_to_crm.latency"]
    assert latency.count == 2
    assert latency.min >= 3.0
    (age,) = points["crmsync.queue.age"]
    assert age.count == 1
    assert age.sum >= 3.0


async def test_a_run_continues_the_trace_its_job_carries(engine: Engine, captured: Captured) -> None:
    spans, _ = captured
    box = (await engine.register()).mailbox_id
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    job = SyncJob(
        mailbox_id=box,
        resource=resource_path(ResourceKind.CONTACTS, box),
        reason=JobReason.NOTIFICATION,
        traceparent=f"00-{trace_id}-{span_id}-01",
    )

    await engine.job().run_job(job)

    (run,) = [span for span in spans.get_finished_spans() if span.name == "crmsync.sync_run"]
    assert run.parent is not None
    assert (f"{run.context.trace_id:032x}", f"{run.parent.span_id:016x}") == (trace_id, span_id)
