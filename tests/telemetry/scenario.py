"""Real traffic under crmsync's telemetry pipeline, in a process of its own; prints what was exported.

``python -m tests.telemetry.scenario MODE`` reads the seeded tenant (JSON on stdin), installs
telemetry, runs real msgraph-sdk and DataverseClient calls against the simulators and, except in
``distro`` mode, prints every exported span, log record and metric as JSON (the SDK's own
``to_json``) on stdout. MODE is ``redacted`` (:func:`shared.telemetry.setup.install`: production's
pipeline with in-memory exporters), ``raw`` (the same instrumentations without crmsync's
processors: the control that shows what would leak) or ``distro`` (production's
``shared.telemetry.configure()`` with the Azure Monitor exporters, whose ingestion endpoint the
test points at a local sink).

A process of its own because OpenTelemetry's global providers and the httpx instrumentation are
process-wide and can be set once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from typing import Any

import httpx
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import telemetry
from shared.crm.dataverse import DataverseClient
from shared.crm.errors import CrmError
from shared.domain.model import ItemKind
from shared.outlook.client import build_graph_client
from shared.outlook.credentials import StaticTokenCredential
from shared.outlook.delta import DeltaReader
from shared.outlook.errors import GraphError
from shared.outlook.mailbox import OutlookMailbox
from shared.store import open_store
from shared.telemetry import setup
from tests.crm.conftest import SCOPE, FixedTokenCredential

log = logging.getLogger("shared.scenario")


def _install_raw(
    spans: InMemorySpanExporter, logs: InMemoryLogRecordExporter, reader: InMemoryMetricReader
) -> None:
    """The instrumentations and exporters without crmsync's redacting processors (the control)."""
    from azure.core.settings import settings
    from azure.core.tracing.ext.opentelemetry_span import OpenTelemetrySpan
    from opentelemetry import _logs, metrics, trace
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tracer_provider = TracerProvider(resource=setup.resource())
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    logger_provider = LoggerProvider(resource=setup.resource())
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    _logs.set_logger_provider(logger_provider)
    logging.getLogger(setup.LOGGER_NAME).addHandler(LoggingHandler(logger_provider=logger_provider))
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader], resource=setup.resource()))
    settings.tracing_implementation = OpenTelemetrySpan
    setup.instrument_http()


async def traffic(tenant: dict[str, Any]) -> None:
    """What a notification-triggered run does on both sides, plus the failures that quote addresses."""
    graph_http = httpx.AsyncClient(timeout=30, trust_env=False)  # created after install: instrumented
    graph = build_graph_client(
        StaticTokenCredential(base_url=tenant["graph_url"]),
        base_url=tenant["graph_url"],
        http_client=graph_http,
        max_retries=2,
    )
    credential = FixedTokenCredential(tenant["dataverse_token"])
    async with (
        graph_http,
        DataverseClient(tenant["dataverse_url"], credential, scope=SCOPE, max_retry_wait=1) as crm,
    ):
        with telemetry.span("notification", mailbox=tenant["mailbox_id"], kind=SpanKind.SERVER):
            parent = telemetry.traceparent()
        with telemetry.span("sync_run", mailbox=tenant["mailbox_id"], parent=parent, resource="messages"):
            mailbox = OutlookMailbox(graph)
            user = await mailbox.user(tenant["upn"])  # GET /users/{upn}
            reader = DeltaReader(graph, page_size=2)
            async for _page in reader.messages(user.id, mailbox_address=tenant["upn"]):
                pass
            async for _page in reader.contacts(user.id):
                pass
            caller = tenant["caller_object_id"]
            for record_id in tenant["crm_contact_ids"]:
                with telemetry.span("crm_write", mailbox=user.id, item=record_id, kind=SpanKind.CLIENT):
                    await crm.get("contact", uuid.UUID(record_id), caller=caller)
                    telemetry.record_change_to_crm(1.25, "contact")
                    telemetry.record_synced("contact", "to_crm")
            await crm.find_by_email(tenant["crm_contact_address"], caller=caller)
            try:
                await crm.get("contact", uuid.UUID(tenant["fault_contact_id"]), caller=caller)
            except CrmError as exc:  # the simulator's fault: a message quoting an address
                telemetry.record_parked("contact", type(exc).__name__)
                log.warning("CRM write failed: %s", exc)
            try:
                await mailbox.user(tenant["ghost_upn"])
            except GraphError as exc:
                log.warning("lookup failed: %s", exc)
            try:  # the SDK's own error, unwrapped: its text quotes the UPN
                await graph.users.by_user_id(tenant["ghost_upn"]).get()
            except Exception:
                log.exception("unwrapped SDK error for %s", tenant["ghost_upn"])
            await _storage(tenant, user.id)
            telemetry.record_conflict("contact", "crm")
            telemetry.record_queue_age(0.5)


async def _storage(tenant: dict[str, Any], mailbox_id: str) -> None:
    """Table Storage through azure-data-tables (the Azure SDK's own tracing): keys name the mailbox."""
    store = await open_store(connection_string=tenant["storage"], prefix=tenant["table_prefix"])
    try:
        await store.registry.register(
            mailbox_id=mailbox_id,
            upn=tenant["upn"],
            crm_user_id=tenant["crm_user_id"],
            crm_caller_object_id=tenant["caller_object_id"],
        )
        await store.registry.get_mailbox(mailbox_id)
        await store.links.get_by_outlook(mailbox_id, ItemKind.CONTACT, tenant["item_ids"][0])
        await store.sync_state.mark_dirty(mailbox_id, f"users/{mailbox_id}/contacts")
    finally:
        await store.close()


def _through_the_distro(tenant: dict[str, Any]) -> None:
    """Production's own start-up (``APPLICATIONINSIGHTS_CONNECTION_STRING`` points at the test's sink),
    the traffic, then every provider flushed so the Azure Monitor exporters send what they hold."""
    from opentelemetry import _logs, metrics, trace

    telemetry.configure()
    logging.getLogger(setup.LOGGER_NAME).setLevel(logging.INFO)
    asyncio.run(traffic(tenant))
    for provider in (trace.get_tracer_provider(), _logs.get_logger_provider(), metrics.get_meter_provider()):
        provider.force_flush()  # type: ignore[attr-defined]


def main() -> None:
    mode = sys.argv[1]
    tenant = json.load(sys.stdin)
    if mode == "distro":
        _through_the_distro(tenant)
        return
    spans = InMemorySpanExporter()
    logs = InMemoryLogRecordExporter()
    reader = InMemoryMetricReader()
    if mode == "redacted":
        setup.install(span_exporter=spans, log_exporter=logs, metric_reader=reader)
    else:
        _install_raw(spans, logs, reader)
    logging.getLogger(setup.LOGGER_NAME).setLevel(logging.INFO)
    asyncio.run(traffic(tenant))
    data = reader.get_metrics_data()
    exported = {
        "spans": [json.loads(span.to_json()) for span in spans.get_finished_spans()],
        "logs": [json.loads(record.to_json()) for record in logs.get_finished_logs()],
        "metrics": json.loads(data.to_json()) if data is not None else None,
    }
    sys.stdout.write(json.dumps(exported))


if __name__ == "__main__":
    main()
