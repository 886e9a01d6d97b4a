"""Webhook handler latency: a burst of notifications against real Azurite, in-process like the host.

    python -m bench.webhook [--notifications 1000] [--mailboxes 50]

Prints p50/p95/p99/max of the ``notifications`` function (parse, verify clientState, mark dirty,
enqueue) and how many jobs the burst became. Target: p99 <= 25 ms on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import time
import uuid

import azure.functions as func

from function_app import app
from shared.runtime import get_runtime
from shared.store.records import SubscriptionRecord, hash_client_state
from simulators.azurite import Azurite


def _payload(subscription_id: str, secret: str, tenant: str) -> bytes:
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    item = {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": expiry,
        "changeType": "updated",
        "resource": "Users/x/Contacts/AAMk=",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Contact", "id": "AAMk="},
        "clientState": secret,
        "tenantId": tenant,
    }
    return json.dumps({"value": [item]}).encode()


async def run(notifications: int, mailboxes: int) -> dict[str, float]:
    with Azurite() as azurite:
        tenant = "00000000-0000-4000-8000-000000000001"
        os.environ.update(
            {
                "AzureWebJobsStorage": azurite.connection_string,
                "CRMSYNC_TENANT_ID": tenant,
                "CRMSYNC_CLIENT_ID": "00000000-0000-4000-8000-000000000002",
                "CRMSYNC_CREDENTIAL_KIND": "sandbox",
                "CRMSYNC_GRAPH_URL": "http://127.0.0.1:9/v1.0",
                "CRMSYNC_DATAVERSE_URL": "http://127.0.0.1:9",
                "CRMSYNC_NOTIFICATION_URL": "http://127.0.0.1:9/api/notifications",
                "CRMSYNC_LIFECYCLE_URL": "http://127.0.0.1:9/api/lifecycle",
            }
        )
        handler = next(f for f in app.get_functions() if f.get_function_name() == "notifications")
        notify = handler.get_user_function()
        runtime = get_runtime()
        store = await runtime.store()
        subscriptions = []
        for index in range(mailboxes):
            subscription_id, secret = str(uuid.uuid4()), uuid.uuid4().hex
            await store.subscriptions.put(
                SubscriptionRecord(
                    subscription_id=subscription_id,
                    mailbox_id=f"mailbox-{index}",
                    resource=f"users/mailbox-{index}/contacts",
                    client_state_hash=hash_client_state(secret),
                    expiration=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
                )
            )
            subscriptions.append(_payload(subscription_id, secret, tenant))
        # Warm the pools and the subscription cache like a running app.
        for body in subscriptions:
            request = func.HttpRequest(method="POST", url="/api/notifications", body=body)
            await notify(request)
        latencies = []
        for index in range(notifications):
            request = func.HttpRequest(
                method="POST", url="/api/notifications", body=subscriptions[index % mailboxes]
            )
            started = time.perf_counter()
            response = await notify(request)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 202:
                raise RuntimeError(f"webhook answered {response.status_code}")
        queue = await runtime.jobs()
        properties = await queue.client.get_queue_properties()
        await runtime.close()
    latencies.sort()
    return {
        "notifications": notifications,
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * len(latencies)) - 1],
        "p99_ms": latencies[int(0.99 * len(latencies)) - 1],
        "max_ms": latencies[-1],
        "jobs_enqueued": float(properties.approximate_message_count or 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=1000)
    parser.add_argument("--mailboxes", type=int, default=50)
    args = parser.parse_args()
    result = asyncio.run(run(args.notifications, args.mailboxes))
    print("webhook handler (in-process, Azurite):")
    for key, value in result.items():
        print(f"  {key:>14}: {value:,.2f}")


if __name__ == "__main__":
    main()
