"""Production's start-up, exporters included: what reaches "Application Insights" holds nothing personal.

``shared.telemetry.configure()`` runs as in the function app, with the real Azure Monitor distro
and exporters; the connection string's ingestion endpoint is a local sink that records every
envelope the exporters send (``POST /v2.1/track``, the Breeze API). The tenant and traffic are
test_no_personal_data_exported's; here the check covers what the distro itself adds (its
instrumentations, resource detectors, envelope fields) and proves crmsync's processors sit before
the exporters' batch processors.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from simulators.dataverse.launcher import DataverseSimulator
from tests.fixtures.graph_sim import GraphSim
from tests.telemetry.test_no_personal_data_exported import ROOT, leaks, seed_tenant


class _Sink(BaseHTTPRequestHandler):
    envelopes: list[dict[str, Any]]

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        items = json.loads(raw)
        self.server.envelopes.extend(items if isinstance(items, list) else [items])  # type: ignore[attr-defined]
        answer = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def ingestion() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.envelopes = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server.envelopes  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def test_what_the_azure_exporters_send_holds_no_personal_value(
    *,
    graph_sim: GraphSim,
    dataverse_sim: DataverseSimulator,
    dataverse_token: str,
    storage_connection_string: str,
    table_prefix: str,
    ingestion: tuple[str, list[dict[str, Any]]],
    tmp_path: Any,
) -> None:
    endpoint, envelopes = ingestion
    tenant, personal = seed_tenant(
        graph_sim, dataverse_sim, dataverse_token, storage_connection_string, table_prefix
    )
    env = {
        **os.environ,
        "APPLICATIONINSIGHTS_CONNECTION_STRING": (
            f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={endpoint}"
        ),
        # Not crmsync's telemetry: the SDK's own usage statistics to Microsoft, and the VM resource
        # detector's metadata-service probe (no such service here).
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "azure_app_service",
        # Every trace (the default samples by rate, which would make the checks below random).
        "OTEL_TRACES_SAMPLER": "always_on",
        "TMPDIR": str(tmp_path),  # the exporters' offline storage
    }
    env.pop("AzureWebJobsStorage__clientId", None)

    done = subprocess.run(
        [sys.executable, "-m", "tests.telemetry.scenario", "distro"],
        input=json.dumps(tenant),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    assert leaks(envelopes, personal) == []
    kinds = {envelope["data"]["baseType"] for envelope in envelopes}
    assert {"RemoteDependencyData", "MessageData", "MetricData"} <= kinds, kinds
    dependencies = [
        e["data"]["baseData"] for e in envelopes if e["data"]["baseType"] == "RemoteDependencyData"
    ]
    graph_calls = [d for d in dependencies if d.get("type") == "HTTP" and "/v1.0/users/" in d.get("data", "")]
    assert graph_calls, dependencies[:5]
    assert all("?" not in d["data"] for d in graph_calls)
    assert any(d["data"].endswith("/v1.0/users/{id}") for d in graph_calls), [d["data"] for d in graph_calls]
    metric_names = {
        metric["name"]
        for e in envelopes
        if e["data"]["baseType"] == "MetricData"
        for metric in e["data"]["baseData"]["metrics"]
    }
    assert {"crmsync.throttled", "crmsync.change_to_crm.latency"} <= metric_names, metric_names
