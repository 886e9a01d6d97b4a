"""The webhooks against an anonymous caller: what a probe of the handlers found, each fixed.

Called as the host calls them (real ``func.HttpRequest`` objects, the registered functions) on
real Azurite, or on a storage endpoint that accepts connections and never answers. Behaviour follows
"Receive change notifications through webhooks" (learn.microsoft.com/graph/
change-notifications-delivery-webhooks) and the ``changeNotification`` resource type
(subscriptionId and tenantId are Guid).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from shared.runtime import Runtime
from simulators.azurite import Azurite
from simulators.ports import free_port
from tests.fixtures.app import registered_function, sandbox_settings, use_settings
from tests.functions.test_webhooks import TENANT, handler, payload, post, queued_jobs, subscribe
from tests.store.helpers import HTTP_LOG, response_statuses

WEBHOOKS = ("notifications", "lifecycle")


def notification(
    subscription_id: str, client_state: str, *, tenant: str = TENANT, lifecycle: bool = False
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(),
        "clientState": client_state,
        "tenantId": tenant,
    }
    if lifecycle:
        item["lifecycleEvent"] = "subscriptionRemoved"
    else:
        item |= {"changeType": "updated", "resource": "Users/u1/Contacts/AAMk="}
    return item


def request(webhook: str, items: list[dict[str, Any]], **extra: Any) -> func.HttpRequest:
    return func.HttpRequest(
        method="POST",
        url=f"http://localhost/api/{webhook}",
        body=json.dumps({"value": items}).encode(),
        **extra,
    )


async def open_all(runtime: Runtime) -> None:
    """What a running app has done once: opened (created) its tables and queues."""
    await runtime.store()
    await runtime.jobs()
    await runtime.lifecycle_jobs()


# --- 1. unknown subscription ids cost their reads once ----------------------------------------


@pytest.mark.parametrize(("ids", "reads"), [(1000, 1), (16, 16)])
async def test_unknown_ids_cost_one_scan_or_their_reads_and_a_replay_costs_nothing(
    app_runtime: Runtime, caplog: pytest.LogCaptureFixture, ids: int, reads: int
) -> None:
    """A POST of 1,000 random ids reads the (small) subscriptions table once instead of 1,000 rows;
    a few ids are read one by one; a replay of either is answered from the cached misses."""
    await open_all(app_runtime)
    body = [notification(str(uuid.uuid4()), "guess") for _ in range(ids)]
    notify = handler("notifications")
    with caplog.at_level(logging.INFO, logger=HTTP_LOG):
        assert (await notify(request("notifications", body))).status_code == 202
        first = len(response_statuses(caplog))
        caplog.clear()
        assert (await notify(request("notifications", body))).status_code == 202
        replayed = len(response_statuses(caplog))
    assert (first, replayed) == (reads, 0)
    assert await queued_jobs(app_runtime) == []


async def test_a_genuine_subscription_among_many_unknown_ids_is_found(app_runtime: Runtime) -> None:
    subscription_id, secret = await subscribe(app_runtime, "mbx-among", "users/mbx-among/contacts")
    body = [notification(str(uuid.uuid4()), "guess") for _ in range(300)]
    body.insert(150, notification(subscription_id, secret))
    assert (await handler("notifications")(request("notifications", body))).status_code == 202
    assert [(j["mailbox_id"], j["reason"]) for j in await queued_jobs(app_runtime)] == [
        ("mbx-among", "notification")
    ]


async def test_a_cached_miss_expires_and_a_stored_subscription_is_found_again(app_runtime: Runtime) -> None:
    """The miss is remembered briefly: a subscription stored after Graph's first notification beat
    the store's write is recognised once the miss expires."""
    await open_all(app_runtime)
    cache = app_runtime.subscription_cache
    now = [1000.0]
    cache.clock = lambda: now[0]
    subscription_id, secret = str(uuid.uuid4()), "s3cret"
    notify = handler("notifications")
    assert (await notify(post(payload(subscription_id, secret)))).status_code == 202  # unknown yet
    await subscribe_with_id(app_runtime, subscription_id, secret)
    assert (await notify(post(payload(subscription_id, secret)))).status_code == 202
    assert await queued_jobs(app_runtime) == []  # still the cached miss
    now[0] += cache.miss_ttl + 0.1
    assert (await notify(post(payload(subscription_id, secret)))).status_code == 202
    assert len(await queued_jobs(app_runtime)) == 1


async def subscribe_with_id(runtime: Runtime, subscription_id: str, secret: str) -> None:
    from shared.store.records import SubscriptionRecord, hash_client_state

    await (await runtime.store()).subscriptions.put(
        SubscriptionRecord(
            subscription_id=subscription_id,
            mailbox_id="mbx-late",
            resource="users/mbx-late/contacts",
            client_state_hash=hash_client_state(secret),
            expiration=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
        )
    )


async def test_misses_are_bounded_and_never_evict_a_subscription(app_runtime: Runtime) -> None:
    cache = app_runtime.subscription_cache
    cache.max_misses = 50
    subscription_id, secret = await subscribe(app_runtime, "mbx-kept", "users/mbx-kept/contacts")
    notify = handler("notifications")
    assert (await notify(post(payload(subscription_id, secret)))).status_code == 202
    junk = [notification(str(uuid.uuid4()), "guess") for _ in range(200)]
    assert (await notify(request("notifications", junk))).status_code == 202
    assert len(cache._misses) == 50
    assert subscription_id in cache._entries


# --- 2. fields that cannot be storage keys: 400, never 500, nothing queued ----------------------


@pytest.mark.parametrize("webhook", WEBHOOKS)
@pytest.mark.parametrize(
    "field",
    [
        "subscriptionId over 512 characters",
        "subscriptionId with key-forbidden characters",
        "non-ASCII tenantId",
    ],
)
async def test_a_field_that_cannot_be_a_storage_key_is_rejected_next_to_a_valid_client_state(
    app_runtime: Runtime, caplog: pytest.LogCaptureFixture, webhook: str, field: str
) -> None:
    subscription_id, secret = await subscribe(app_runtime, "mbx-keys", "users/mbx-keys/contacts")
    await open_all(app_runtime)
    bad = {
        "subscriptionId over 512 characters": notification(subscription_id + "0" * 600, secret),
        "subscriptionId with key-forbidden characters": notification(subscription_id[:-1] + "/", secret),
        "non-ASCII tenantId": notification(
            subscription_id, secret, tenant="t\u00e9nant-\u00fc-" + TENANT[10:]
        ),
    }[field]
    if webhook == "lifecycle":
        bad = notification(bad["subscriptionId"], secret, tenant=bad["tenantId"], lifecycle=True)
    genuine = notification(subscription_id, secret, lifecycle=webhook == "lifecycle")
    with caplog.at_level(logging.INFO, logger=HTTP_LOG):
        response = await handler(webhook)(request(webhook, [genuine, bad]))
        assert len(response_statuses(caplog)) == 0  # rejected before any storage key is built
    assert response.status_code == 400
    assert "value.1" in response.get_body().decode()
    assert await queued_jobs(app_runtime) == []
    assert not (
        await (await app_runtime.store()).sync_state.get_state("mbx-keys", "users/mbx-keys/contacts")
    ).dirty


# --- 3. a hanging storage answers 503 within Graph's 3 s ----------------------------------------


@pytest.fixture
def hanging_endpoint() -> Iterator[int]:
    """A TCP port that accepts every connection and never answers (storage hung, not down)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


@pytest.mark.parametrize("webhook", WEBHOOKS)
async def test_a_hanging_storage_answers_503_within_three_seconds(
    monkeypatch: pytest.MonkeyPatch, hanging_endpoint: int, webhook: str
) -> None:
    endpoint = f"http://127.0.0.1:{hanging_endpoint}/devstoreaccount1"
    storage = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"TableEndpoint={endpoint};QueueEndpoint={endpoint};"
    )
    url = "http://127.0.0.1:9"
    runtime = await use_settings(
        monkeypatch, sandbox_settings(storage, graph_url=url + "/v1.0", dataverse_url=url, functions_url=url)
    )
    try:
        body = [notification(str(uuid.uuid4()), "s", lifecycle=webhook == "lifecycle")]
        started = time.perf_counter()
        response = await asyncio.wait_for(handler(webhook)(request(webhook, body)), timeout=15)
        elapsed = time.perf_counter() - started
    finally:
        await runtime.close()
    assert response.status_code == 503
    assert elapsed < 3.0


async def test_the_dataverse_webhook_answers_503_within_three_seconds_when_storage_hangs(
    monkeypatch: pytest.MonkeyPatch, hanging_endpoint: int
) -> None:
    """Dataverse's asynchronous service waits far longer than Graph, but a hung queue must still
    fail the system job promptly (it is retried) instead of holding the call for the SDK's minute."""
    endpoint = f"http://127.0.0.1:{hanging_endpoint}/devstoreaccount1"
    storage = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"TableEndpoint={endpoint};QueueEndpoint={endpoint};"
    )
    url = "http://127.0.0.1:9"
    key = "k" * 48
    settings = sandbox_settings(storage, graph_url=url + "/v1.0", dataverse_url=url, functions_url=url)
    runtime = await use_settings(monkeypatch, {**settings, "CRMSYNC_CRM_WEBHOOK_KEY": key})
    context = {"MessageName": "Update", "PrimaryEntityName": "contact", "PrimaryEntityId": str(uuid.uuid4())}
    try:
        started = time.perf_counter()
        response = await asyncio.wait_for(
            registered_function("crm_webhook")(
                func.HttpRequest(
                    "POST",
                    "http://localhost/api/crm/webhook",
                    body=json.dumps(context).encode(),
                    params={"code": key},
                )
            ),
            timeout=15,
        )
        elapsed = time.perf_counter() - started
    finally:
        await runtime.close()
    assert response.status_code == 503
    assert elapsed < 3.0


# --- 4. the validation echo ------------------------------------------------------------------------


@pytest.mark.parametrize("webhook", WEBHOOKS)
async def test_the_validation_echo_is_plain_text_that_no_browser_sniffs(webhook: str) -> None:
    token = "Validation: Testing client application reachability for subscription Request-Id: " + str(
        uuid.uuid4()
    )
    response = await handler(webhook)(
        func.HttpRequest(
            method="POST", url=f"http://localhost/api/{webhook}", params={"validationToken": token}, body=b""
        )
    )
    assert (response.status_code, response.mimetype, response.get_body()) == (
        200,
        "text/plain",
        token.encode(),
    )
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("webhook", WEBHOOKS)
@pytest.mark.parametrize(
    "token", ["", "line\r\nSet-Cookie: x=1", "nul\x00byte", "bell\x07", "caf\u00e9", "a" * 1025], ids=repr
)
async def test_an_insane_validation_token_is_refused_not_echoed(webhook: str, token: str) -> None:
    response = await handler(webhook)(
        func.HttpRequest(
            method="POST", url=f"http://localhost/api/{webhook}", params={"validationToken": token}, body=b""
        )
    )
    assert response.status_code == 400
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    if token:
        assert token.encode() not in response.get_body()


# --- 5. the body cap before the body is read -------------------------------------------------------


@pytest.mark.parametrize("webhook", WEBHOOKS)
async def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_read(
    app_runtime: Runtime, webhook: str
) -> None:
    """The body sent is empty: had the handler read it, the answer would be 400 (not JSON)."""
    await open_all(app_runtime)
    declared = str(app_runtime.settings.max_notification_bytes + 1)
    response = await handler(webhook)(
        func.HttpRequest(
            method="POST",
            url=f"http://localhost/api/{webhook}",
            headers={"Content-Length": declared},
            body=b"",
        )
    )
    assert response.status_code == 413
    assert await queued_jobs(app_runtime) == []


@pytest.mark.parametrize("declared", ["-1", "12abc", "1e9", " "])
async def test_a_content_length_that_is_not_a_number_is_a_400(app_runtime: Runtime, declared: str) -> None:
    response = await handler("notifications")(
        func.HttpRequest(
            method="POST",
            url="http://localhost/api/notifications",
            headers={"Content-Length": declared},
            body=b"{}",
        )
    )
    assert response.status_code == 400


# --- 6. the caller's query string never reaches the logs -------------------------------------------


@pytest.mark.parametrize("storage", ["up", "down"])
async def test_no_query_parameter_value_is_logged(
    monkeypatch: pytest.MonkeyPatch, azurite: Azurite, caplog: pytest.LogCaptureFixture, storage: str
) -> None:
    secret_value = "attacker-" + uuid.uuid4().hex
    dead = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
    connection = (
        azurite.connection_string
        if storage == "up"
        else "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"TableEndpoint={dead};QueueEndpoint={dead};"
    )
    url = "http://127.0.0.1:9"
    runtime = await use_settings(
        monkeypatch,
        sandbox_settings(connection, graph_url=url + "/v1.0", dataverse_url=url, functions_url=url),
    )
    try:
        subscription_id, secret = (
            await subscribe(runtime, "mbx-log", "users/mbx-log/contacts")
            if storage == "up"
            else (str(uuid.uuid4()), "s")
        )
        answers = set()
        with caplog.at_level(logging.DEBUG):
            for webhook in WEBHOOKS:
                lifecycle = webhook == "lifecycle"
                for body in (
                    [notification(subscription_id, secret, lifecycle=lifecycle)],
                    [notification(subscription_id, "forged", lifecycle=lifecycle)],
                    [{"subscriptionId": secret_value}],
                ):
                    req = request(webhook, body, params={"q": secret_value, secret_value: "x"})
                    answers.add((await handler(webhook)(req)).status_code)
    finally:
        await runtime.close()
    assert answers == ({202, 403, 400} if storage == "up" else {503, 400})
    assert caplog.records
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert secret_value not in logged


class SwitchableProxy:
    """A TCP proxy to a storage endpoint that can be told to stop answering (storage that hangs
    in the middle of a call, after the connections are open)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.hang = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await source.read(65536):
                    if not self.hang:  # hung: swallow the request, never answer
                        sink.write(data)
                        await sink.drain()
            sink.close()

        for task in (pipe(reader, up_writer), pipe(up_reader, writer)):
            created = asyncio.create_task(task)
            self._tasks.add(created)
            created.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()


async def test_a_queue_that_hangs_after_the_mark_answers_503_in_time_and_takes_the_mark_back(
    monkeypatch: pytest.MonkeyPatch, azurite: Azurite
) -> None:
    """The dirty mark is written, then the job's enqueue hangs: the deadline answers 503 within 3 s
    and the mark is taken back, so Graph's retry (storage answering again) enqueues the job."""
    proxy = SwitchableProxy(azurite.queue_port)
    port = await proxy.start()
    connection = re.sub(
        r"QueueEndpoint=[^;]+;",
        f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;",
        azurite.connection_string,
    )
    url = "http://127.0.0.1:9"
    runtime = await use_settings(
        monkeypatch,
        sandbox_settings(connection, graph_url=url + "/v1.0", dataverse_url=url, functions_url=url),
    )
    try:
        subscription_id, secret = await subscribe(runtime, "mbx-hang", "users/mbx-hang/contacts")
        await open_all(runtime)
        notify = handler("notifications")
        proxy.hang = True
        started = time.perf_counter()
        response = await asyncio.wait_for(notify(post(payload(subscription_id, secret))), timeout=15)
        elapsed = time.perf_counter() - started
        assert (response.status_code, elapsed < 3.0) == (503, True)
        store = await runtime.store()
        assert not (await store.sync_state.get_state("mbx-hang", "users/mbx-hang/contacts")).dirty
        proxy.hang = False
        assert (await notify(post(payload(subscription_id, secret)))).status_code == 202
        assert [(j["mailbox_id"], j["reason"]) for j in await queued_jobs(runtime)] == [
            ("mbx-hang", "notification")
        ]
    finally:
        await runtime.close()
        await proxy.close()
