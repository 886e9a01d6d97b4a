"""The telemetry pipeline: Azure Monitor's distro, configured so nothing personal is exported.

What :func:`azure_monitor_options` asks of ``configure_azure_monitor`` (options documented in the
distro's ``configure_azure_monitor`` docstring, azure-monitor-opentelemetry 1.8):

- ``span_processors`` / ``log_record_processors``: the redacting processors, which the distro
  registers before its own batch processors, so Application Insights only receives scrubbed spans
  and logs (URLs without ids or queries, no addresses in messages or stack traces);
- ``instrumentation_options``: the distro's httpx instrumentation off (crmsync instruments httpx
  itself, below, with a response hook that counts 429s), and requests, urllib, urllib3 and the web
  frameworks off (crmsync calls nothing through them; azure-identity's token calls are not worth a
  URL in telemetry); the Azure SDK's own tracing (storage tables and queues) stays on;
- ``enable_live_metrics=False``: Live Metrics streams span and log documents to the portal outside
  the exporters; crmsync's dashboards are the metrics and alerts.

:func:`install` builds the same providers, processors and instrumentations around other exporters
(tests use OpenTelemetry's in-memory ones), so a test sees what production would export.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.sdk.resources import Resource

from shared.telemetry.processors import RedactingLogRecordProcessor, RedactingSpanProcessor
from shared.telemetry.signals import record_throttled, service_of

if TYPE_CHECKING:
    from opentelemetry.instrumentation.httpx import RequestInfo, ResponseInfo
    from opentelemetry.trace import Span

LOGGER_NAME = "shared"
SERVICE_NAME = "crmsync"
_OFF = ("httpx", "httpx2", "requests", "urllib", "urllib3", "django", "fastapi", "flask", "psycopg2")


def _count_throttling(response: ResponseInfo, request: RequestInfo) -> None:
    if response.status_code == 429:
        url = request.url
        path = getattr(url, "path", "")
        host = getattr(url, "host", "")
        record_throttled(
            service_of(path if isinstance(path, str) else "", host if isinstance(host, str) else "")
        )


def _response_hook(span: Span, request: RequestInfo, response: ResponseInfo) -> None:
    _count_throttling(response, request)


async def _async_response_hook(span: Span, request: RequestInfo, response: ResponseInfo) -> None:
    _count_throttling(response, request)


def instrument_http() -> None:
    """httpx (Graph through msgraph-sdk, Dataverse) traced through the global providers, 429s counted.

    Only clients created afterwards are instrumented: call it before the runtime builds its clients.
    """
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor  # noqa: PLC0415 - imports httpx

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(response_hook=_response_hook, async_response_hook=_async_response_hook)


def instrument_http_when_imported() -> None:
    """:func:`instrument_http` as soon as httpx is imported (at once if it already is).

    Only Graph and Dataverse clients use httpx and the runtime builds them on first use, so a cold
    start's webhook answers without importing httpx and its instrumentation; every client is still
    created after httpx is instrumented, since none can be created before httpx is imported.
    """
    wrapt.register_post_import_hook(lambda _httpx: instrument_http(), "httpx")


def resource() -> Resource:
    return Resource.create({"service.name": SERVICE_NAME})


def azure_monitor_options() -> dict[str, Any]:
    """The keyword arguments crmsync passes to ``configure_azure_monitor`` (besides the credential)."""
    off: Mapping[str, Mapping[str, bool]] = {name: {"enabled": False} for name in _OFF}
    return {
        "logger_name": LOGGER_NAME,
        "resource": resource(),
        "span_processors": [RedactingSpanProcessor()],
        "log_record_processors": [RedactingLogRecordProcessor()],
        "instrumentation_options": {**off, "azure_sdk": {"enabled": True}},
        "enable_live_metrics": False,
    }


def install(*, span_exporter: Any, log_exporter: Any, metric_reader: Any) -> None:
    """What ``configure_azure_monitor(**azure_monitor_options())`` sets up, around the given exporters.

    Spans are sampled always and exported synchronously (tests read them right away); everything
    else (resource, processors in the same order, logger, instrumentations) is production's.
    """
    # Heavy imports, only where telemetry is installed.
    from azure.core.settings import settings  # noqa: PLC0415
    from azure.core.tracing.ext.opentelemetry_span import OpenTelemetrySpan  # noqa: PLC0415
    from opentelemetry import _logs, metrics, trace  # noqa: PLC0415
    from opentelemetry.instrumentation.logging.handler import LoggingHandler  # noqa: PLC0415
    from opentelemetry.sdk._logs import LoggerProvider  # noqa: PLC0415
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415

    options = azure_monitor_options()
    tracer_provider = TracerProvider(resource=options["resource"])
    for processor in options["span_processors"]:
        tracer_provider.add_span_processor(processor)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    trace.set_tracer_provider(tracer_provider)

    logger_provider = LoggerProvider(resource=options["resource"])
    for log_processor in options["log_record_processors"]:
        logger_provider.add_log_record_processor(log_processor)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    _logs.set_logger_provider(logger_provider)
    logging.getLogger(options["logger_name"]).addHandler(LoggingHandler(logger_provider=logger_provider))

    metrics.set_meter_provider(MeterProvider(metric_readers=[metric_reader], resource=options["resource"]))
    settings.tracing_implementation = OpenTelemetrySpan
    instrument_http()
