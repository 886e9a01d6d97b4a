"""Cold start: a fresh process imports function_app and answers its first Graph notification.

    python -m bench.cold_start [--runs 5] [--app-insights]

Each run spawns a new Python process (nothing imported, nothing cached) that imports
``function_app`` and calls the ``notifications`` function with a change notification for a
subscription stored in Azurite, as the host would after a cold start: the first answer includes
building the storage clients. Printed: the import time (wall and CPU), the first answer (from the end of the
import to the 202) and the whole process, from spawn to the answer (the child's wall clock at the 202
against the parent's at spawn; the process's exit is not counted), against Graph's 3-second
window for an answer (an endpoint that takes over 10 seconds for more than 10 % of its notifications
is marked slow, then drops them: https://learn.microsoft.com/graph/change-notifications-delivery-webhooks,
"HTTP codes and retry logic" and "Throttling").

``--app-insights`` sets ``APPLICATIONINSIGHTS_CONNECTION_STRING``, so the import configures the Azure
Monitor distro as in Azure; its ingestion endpoint is a closed local port, so nothing is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

from bench._common import print_results
from shared.store.azure.service import open_store
from shared.store.records import SubscriptionRecord, hash_client_state
from simulators.azurite import Azurite

TENANT = "00000000-0000-4000-8000-000000000001"
GRAPH_DEADLINE_S = 3.0

# What the fresh process runs: import function_app, then one notification through the function.
_CHILD = """
import asyncio, json, os, sys, time
started, cpu = time.perf_counter(), time.process_time()
from function_app import app
imported, imported_cpu = time.perf_counter(), time.process_time()
import azure.functions as func

async def first_answer():
    handler = next(f for f in app.get_functions() if f.get_function_name() == "notifications")
    request = func.HttpRequest(method="POST", url="/api/notifications", body=sys.argv[1].encode())
    response = await handler.get_user_function()(request)
    return response.status_code

status = asyncio.run(first_answer())
answered, answered_at = time.perf_counter(), time.time()
print(json.dumps({
    "status": status,
    "import": imported - started,
    "import_cpu": imported_cpu - cpu,
    "answer": answered - imported,
    "answered_at": answered_at,
}), flush=True)
os._exit(0)  # the exporters' retries to the closed port would hold the exit (--app-insights)
"""
_CLOSED_INGESTION = (
    "InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"
)


def _payload(subscription_id: str, secret: str) -> str:
    item = {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(),
        "changeType": "updated",
        "resource": "Users/x/Contacts/AAMk=",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Contact", "id": "AAMk="},
        "clientState": secret,
        "tenantId": TENANT,
    }
    return json.dumps({"value": [item]})


async def _subscribe(connection_string: str) -> str:
    """A stored subscription; returns a notification for it (each run: a resource not yet dirty)."""
    store = await open_store(connection_string=connection_string)
    try:
        subscription_id, secret, mailbox = str(uuid.uuid4()), uuid.uuid4().hex, str(uuid.uuid4())
        await store.subscriptions.put(
            SubscriptionRecord(
                subscription_id=subscription_id,
                mailbox_id=mailbox,
                resource=f"users/{mailbox}/contacts",
                client_state_hash=hash_client_state(secret),
                expiration=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
            )
        )
    finally:
        await store.close()
    return _payload(subscription_id, secret)


def _settings(connection_string: str) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": connection_string,
        "CRMSYNC_TENANT_ID": TENANT,
        "CRMSYNC_CLIENT_ID": "00000000-0000-4000-8000-000000000002",
        "CRMSYNC_CREDENTIAL_KIND": "sandbox",
        "CRMSYNC_GRAPH_URL": "http://127.0.0.1:9/v1.0",
        "CRMSYNC_DATAVERSE_URL": "http://127.0.0.1:9",
        "CRMSYNC_NOTIFICATION_URL": "http://127.0.0.1:9/api/notifications",
        "CRMSYNC_LIFECYCLE_URL": "http://127.0.0.1:9/api/lifecycle",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--app-insights", action="store_true", help="configure the Azure Monitor distro, as in Azure"
    )
    args = parser.parse_args()
    results: list[dict[str, float]] = []
    with Azurite() as azurite:
        env = {**os.environ, **_settings(azurite.connection_string)}
        if args.app_insights:
            env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = _CLOSED_INGESTION
        else:
            env.pop("APPLICATIONINSIGHTS_CONNECTION_STRING", None)
        for _ in range(args.runs):
            body = asyncio.run(_subscribe(azurite.connection_string))
            spawned_at = time.time()  # the child's time.time() at its answer is on the same clock
            child = subprocess.run(  # noqa: S603 - this interpreter and a fixed script, no shell
                [sys.executable, "-c", _CHILD, body], env=env, capture_output=True, text=True, check=True
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
            if result["status"] != 202:
                raise SystemExit(f"the first notification was answered {result['status']}")
            results.append({**result, "total": result["answered_at"] - spawned_at})
    rows = []
    for key, label in (
        ("import", "import function_app"),
        ("import_cpu", "import function_app, CPU time (steadier on a shared machine)"),
        ("answer", "first notification answered, after the import"),
        ("total", "process spawn to first answer"),
    ):
        values = [r[key] for r in results]
        rows.append(
            (
                f"{label} (median; max of {len(values)})",
                f"{statistics.median(values):.2f} s; {max(values):.2f} s",
                f"well inside {GRAPH_DEADLINE_S:g} s" if key == "total" else "",
            )
        )
    telemetry = "Azure Monitor distro configured" if args.app_insights else "no telemetry export"
    print_results(f"cold start (fresh process, Azurite, {telemetry})", rows)


if __name__ == "__main__":
    main()
