"""Logging and telemetry set-up, once per worker process (called by function_app.py), and the API
the engine uses to emit crmsync's own spans and metrics (:mod:`shared.telemetry.signals`).

- HTTP client libraries log request URLs at INFO; a Graph or Dataverse URL names mailboxes and
  records, so those loggers stay at WARNING.
- The handlers on the root logger (the Functions worker's, feeding the host's logs) get a filter
  that scrubs each record's message and traceback (addresses, URLs with ids, GUIDs).
- With ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set, traces, logs and metrics go to Application
  Insights through the Azure Monitor OpenTelemetry distro (entra-authenticated in Azure, since
  the deployment turns local auth off), configured by :mod:`shared.telemetry.setup` so that no
  URL, query string or email address is exported. Without it, nothing is exported and the
  signals API costs a no-op call.
"""

from __future__ import annotations

import logging
import os

from shared.telemetry.logs import RedactingLogFilter
from shared.telemetry.signals import (
    Clock,
    collect_latencies,
    crm_written,
    fingerprint,
    outlook_written,
    record_change_to_crm,
    record_change_to_outlook,
    record_conflict,
    record_parked,
    record_queue_age,
    record_synced,
    record_throttled,
    span,
    sync_run,
    traceparent,
)

__all__ = [
    "Clock",
    "collect_latencies",
    "configure",
    "crm_written",
    "fingerprint",
    "outlook_written",
    "record_change_to_crm",
    "record_change_to_outlook",
    "record_conflict",
    "record_parked",
    "record_queue_age",
    "record_synced",
    "record_throttled",
    "span",
    "sync_run",
    "traceparent",
]

_QUIET = (
    "httpx",
    "httpcore",
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.identity",
    "kiota_http",
)


def configure() -> None:
    """Quiet the chatty loggers, scrub what the host's log handlers receive, and export to Application
    Insights when it is configured."""
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    scrub_root_handlers()
    connection_string = os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    if connection_string:
        # Heavy imports, only where telemetry is exported (Azure).
        from azure.identity import ManagedIdentityCredential  # noqa: PLC0415
        from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415

        from shared.telemetry.setup import (  # noqa: PLC0415
            azure_monitor_options,
            instrument_http_when_imported,
        )

        identity = os.environ.get("AzureWebJobsStorage__clientId")  # the app's user-assigned identity
        configure_azure_monitor(
            connection_string=connection_string,
            credential=ManagedIdentityCredential(client_id=identity) if identity else None,
            **azure_monitor_options(),
        )
        instrument_http_when_imported()


def scrub_root_handlers() -> None:
    """Every handler on the root logger (the Functions worker's, which forwards to the host's logs)
    formats scrubbed records: no address, URL with ids or GUID in a message or a traceback. The
    worker attaches its handler before it imports the function app, which calls :func:`configure`."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, RedactingLogFilter) for existing in handler.filters):
            handler.addFilter(RedactingLogFilter())
