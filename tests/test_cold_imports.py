"""A cold start imports what Graph's first notification needs, and no more.

Graph expects a webhook's answer within 3 seconds, and a cold instance first imports ``function_app``
(the host indexes its functions) before it answers. The Graph and Dataverse clients, the sync engine,
the admin API and httpx's instrumentation are imported where they are first used (the runtime's
builders, the handlers, :func:`shared.telemetry.setup.instrument_http_when_imported`); these tests
fail if ``import function_app`` loads one of them again. Each runs in a fresh interpreter: this
process has imported everything already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEFERRED = (
    "msgraph",  # msgraph-sdk and kiota: Graph calls (workers, timers, admin)
    "kiota_abstractions",
    "kiota_http",
    "httpx",  # Graph and Dataverse HTTP; importing it also imports rich (httpx's command line)
    "rich",
    "typer",
    "azure.identity",  # managed identity: built on first use (storage in Azure, Graph, Dataverse)
    "tenacity",  # the Dataverse client's retries
    "shared.crm.dataverse",
    "shared.outlook.client",
    "shared.sync.job",
    "shared.sync.applier",
    "shared.sync.dispatch",
    "shared.sync.lifecycle",
    "shared.sync.maintenance",
    "shared.sync.crm_run",
    "shared.admin_api",
    "shared.admin_ops",
    "shared.admin_ui",
)
_CLOSED_INGESTION = (
    "InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"
)


def _after_import(script: str, *, app_insights: bool) -> dict[str, object]:
    """Runs ``import function_app`` then ``script`` (which prints a JSON object) in a new interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    if app_insights:
        env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = _CLOSED_INGESTION
    child = subprocess.run(  # noqa: S603 - this interpreter and a fixed script, no shell
        [sys.executable, "-c", f"import function_app\n{script}\nimport os; os._exit(0)"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _loaded(modules: object) -> list[str]:
    assert isinstance(modules, list)
    return sorted(name for name in DEFERRED if any(m == name or m.startswith(f"{name}.") for m in modules))


_MODULES = "import json, sys; print(json.dumps({'modules': sorted(sys.modules)}))"


def test_importing_the_app_loads_no_graph_dataverse_engine_or_admin_module() -> None:
    result = _after_import(_MODULES, app_insights=False)
    assert _loaded(result["modules"]) == []
    assert "azure.monitor.opentelemetry" not in result["modules"]  # nothing is exported locally


def test_with_application_insights_httpx_is_instrumented_when_first_imported() -> None:
    """The distro is configured at import (before any invocation logs), httpx is not imported, and
    importing it (as the runtime does when it builds a Graph or Dataverse client) instruments it."""
    result = _after_import(
        """
import json, sys
modules = sorted(sys.modules)
import httpx
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
instrumented = HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
print(json.dumps({"modules": modules, "instrumented": instrumented}))
""",
        app_insights=True,
    )
    assert "azure.monitor.opentelemetry" in result["modules"]
    # azure-identity is the exporters' credential (the app's managed identity in Azure)
    assert [name for name in _loaded(result["modules"]) if name != "azure.identity"] == []
    assert result["instrumented"] is True
