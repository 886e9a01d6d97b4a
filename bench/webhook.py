"""Webhook handler latency: notifications against real Azurite, in-process like the host.

    python -m bench.webhook [--notifications 1000] [--mailboxes 50] [--first-of-burst 300]

Times the ``notifications`` function (parse, find the subscription, verify clientState, mark
(mailbox, resource) dirty, enqueue a job when newly dirty, 202) after an untimed warm-up that fills
the subscription cache and the connection pools, in three cases:

- ``burst``: the resource is already dirty, as for most notifications of a burst (mark only);
- ``first, same instance``: a worker in this process cleared the flag (untimed), so mark + enqueue;
- ``first, other instance``: a worker elsewhere cleared it, so this process's hint is stale.

For each: p50/p95/p99/max and the storage round trips per notification with their statuses,
counted in a separate untimed pass from the Azure SDK's HTTP log (logging costs time). It also
checks the job count: exactly one job per clean -> dirty change. Target: p99 <= 25 ms (2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import azure.functions as func

from bench._common import percentile, print_results
from function_app import app
from shared.runtime import get_runtime
from shared.store.azure.service import open_store
from shared.store.ports import Store
from shared.store.records import SubscriptionRecord, hash_client_state
from simulators.azurite import Azurite

TENANT = "00000000-0000-4000-8000-000000000001"
TARGET_P99_MS = 25.0
COUNTED_NOTIFICATIONS = 50
# The azure-core HTTP logging policy of every Tables and Queue client logs each request it sends.
_HTTP_LOG = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")

Notify = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


@dataclass(frozen=True)
class Subscription:
    mailbox_id: str
    resource: str
    body: bytes


@dataclass(frozen=True)
class CaseResult:
    name: str
    latencies_ms: list[float]
    round_trips: collections.Counter[str]

    def rows(self) -> list[tuple[str, str, str]]:
        statuses = ", ".join(
            f"{status} x{n / COUNTED_NOTIFICATIONS:g}" for status, n in self.round_trips.items()
        )
        per_notification = sum(self.round_trips.values()) / COUNTED_NOTIFICATIONS
        return [
            *(
                (f"{self.name}: {label}", f"{percentile(self.latencies_ms, share):.1f} ms", target)
                for label, share, target in (
                    ("p50", 0.50, ""),
                    ("p95", 0.95, ""),
                    ("p99", 0.99, f"<= {TARGET_P99_MS:g} ms"),
                    ("max", 1.00, ""),
                )
            ),
            (f"{self.name}: round trips", f"{per_notification:g} ({statuses})", ""),
        ]


class _ResponseCounter(logging.Handler):
    """Counts the storage responses the SDK logs, by status (the log text is never kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Response status:"):
            self.statuses[message.split()[2]] += 1


@contextmanager
def _counting_round_trips() -> Iterator[collections.Counter[str]]:
    counter = _ResponseCounter()
    level, propagate = _HTTP_LOG.level, _HTTP_LOG.propagate
    _HTTP_LOG.setLevel(logging.INFO)
    _HTTP_LOG.propagate = False
    _HTTP_LOG.addHandler(counter)
    try:
        yield counter.statuses
    finally:
        _HTTP_LOG.removeHandler(counter)
        _HTTP_LOG.setLevel(level)
        _HTTP_LOG.propagate = propagate


@contextmanager
def _uncounted() -> Iterator[None]:
    """The worker's requests are not the webhook's: keep them out of the count."""
    disabled = _HTTP_LOG.disabled
    _HTTP_LOG.disabled = True
    try:
        yield
    finally:
        _HTTP_LOG.disabled = disabled


def _payload(subscription_id: str, secret: str) -> bytes:
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    item = {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": expiry,
        "changeType": "updated",
        "resource": "Users/x/Contacts/AAMk=",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Contact", "id": "AAMk="},
        "clientState": secret,
        "tenantId": TENANT,
    }
    return json.dumps({"value": [item]}).encode()


async def _subscribe(store: Store, mailboxes: int) -> list[Subscription]:
    subscriptions = []
    for index in range(mailboxes):
        subscription_id, secret = str(uuid.uuid4()), uuid.uuid4().hex
        mailbox_id, resource = f"mailbox-{index}", f"users/mailbox-{index}/contacts"
        await store.subscriptions.put(
            SubscriptionRecord(
                subscription_id=subscription_id,
                mailbox_id=mailbox_id,
                resource=resource,
                client_state_hash=hash_client_state(secret),
                expiration=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
            )
        )
        subscriptions.append(Subscription(mailbox_id, resource, _payload(subscription_id, secret)))
    return subscriptions


async def _post(notify: Notify, subscription: Subscription) -> float:
    """One notification, as the host delivers it; its latency in ms."""
    request = func.HttpRequest(method="POST", url="/api/notifications", body=subscription.body)
    started = time.perf_counter()
    response = await notify(request)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 202:
        raise RuntimeError(f"webhook answered {response.status_code}")
    return elapsed


async def _clear(store: Store, subscription: Subscription) -> None:
    """What the worker does first: read the state and clear the dirty flag (untimed here)."""
    state = await store.sync_state.get_state(subscription.mailbox_id, subscription.resource)
    if not await store.sync_state.clear_dirty(state):
        raise RuntimeError("the dirty flag changed under the benchmark")


async def _case(
    name: str, notify: Notify, subscriptions: list[Subscription], samples: int, worker: Store | None
) -> CaseResult:
    """Time ``samples`` notifications round-robin, then count round trips in an untimed pass.
    ``worker`` (if any) clears each resource's dirty flag before its notification."""

    async def one(index: int) -> float:
        subscription = subscriptions[index % len(subscriptions)]
        if worker is not None:
            with _uncounted():
                await _clear(worker, subscription)
        return await _post(notify, subscription)

    latencies = [await one(index) for index in range(samples)]
    with _counting_round_trips() as statuses:
        for index in range(COUNTED_NOTIFICATIONS):
            await one(index)
    return CaseResult(name, latencies, collections.Counter(statuses))


async def run(notifications: int, mailboxes: int, first_of_burst: int) -> tuple[list[CaseResult], int, int]:
    """All three cases; returns them with the jobs enqueued and the jobs expected."""
    with Azurite() as azurite:
        os.environ.update(
            {
                "AzureWebJobsStorage": azurite.connection_string,
                "CRMSYNC_TENANT_ID": TENANT,
                "CRMSYNC_CLIENT_ID": "00000000-0000-4000-8000-000000000002",
                "CRMSYNC_CREDENTIAL_KIND": "sandbox",
                "CRMSYNC_GRAPH_URL": "http://127.0.0.1:9/v1.0",
                "CRMSYNC_DATAVERSE_URL": "http://127.0.0.1:9",
                "CRMSYNC_NOTIFICATION_URL": "http://127.0.0.1:9/api/notifications",
                "CRMSYNC_LIFECYCLE_URL": "http://127.0.0.1:9/api/lifecycle",
            }
        )
        handler = next(f for f in app.get_functions() if f.get_function_name() == "notifications")
        notify: Notify = handler.get_user_function()
        runtime = get_runtime()
        store = await runtime.store()
        other_instance = await open_store(connection_string=azurite.connection_string)
        try:
            subscriptions = await _subscribe(store, mailboxes)
            for index in range(2 * mailboxes):  # warm-up: cache, pools, one dirty row (and job) each
                await _post(notify, subscriptions[index % mailboxes])
            results = [
                await _case("burst", notify, subscriptions, notifications, None),
                await _case("first, same instance", notify, subscriptions, first_of_burst, store),
                await _case("first, other instance", notify, subscriptions, first_of_burst, other_instance),
            ]
            queue = await runtime.jobs()
            properties = await queue.client.get_queue_properties()
        finally:
            await other_instance.close()
            await runtime.close()
    expected = mailboxes + 2 * (first_of_burst + COUNTED_NOTIFICATIONS)
    return results, properties.approximate_message_count or 0, expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=1000, help="timed burst notifications")
    parser.add_argument("--mailboxes", type=int, default=50)
    parser.add_argument("--first-of-burst", type=int, default=300, help="timed samples per 'first' case")
    args = parser.parse_args()
    results, jobs, expected = asyncio.run(run(args.notifications, args.mailboxes, args.first_of_burst))
    rows = [row for result in results for row in result.rows()]
    rows.append(("jobs enqueued", f"{jobs}", f"{expected} (one per clean -> dirty change)"))
    print_results("webhook handler (in-process, Azurite)", rows)
    if jobs != expected:
        raise SystemExit(f"expected {expected} jobs, found {jobs}")


if __name__ == "__main__":
    main()
