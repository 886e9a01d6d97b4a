"""Logging and telemetry set-up, once per worker process (called by function_app.py).

- HTTP client libraries log request URLs at INFO; crmsync keeps addresses out of URLs, but a
  Graph or Dataverse URL still names mailboxes and records, so those loggers stay at WARNING.
- With ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set, traces, logs and metrics go to Application
  Insights through the Azure Monitor OpenTelemetry distro (entra-authenticated in Azure, since
  the deployment turns local auth off). Without it, nothing is exported.
"""

from __future__ import annotations

import logging
import os

_QUIET = (
    "httpx",
    "httpcore",
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.identity",
    "kiota_http",
)


def configure() -> None:
    """Quiet the chatty loggers; export to Application Insights when it is configured."""
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    connection_string = os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    if connection_string:
        # Heavy imports, only where telemetry is exported (Azure).
        from azure.identity import ManagedIdentityCredential  # noqa: PLC0415
        from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415

        identity = os.environ.get("AzureWebJobsStorage__clientId")  # the app's user-assigned identity
        configure_azure_monitor(
            connection_string=connection_string,
            logger_name="shared",
            credential=ManagedIdentityCredential(client_id=identity) if identity else None,
        )
