"""The composition root registers every blueprint and the handlers answer real requests."""

from __future__ import annotations

import gc
import json

import azure.functions as func
import pytest

from shared.runtime import Runtime
from tests.fixtures.app import registered_function


def test_every_trigger_family_is_registered() -> None:
    for name in (
        "health",
        "notifications",
        "lifecycle",
        "sync_worker",
        "renew_subscriptions",
        "delta_sweep",
        "retry_parked",
        "add_mailbox",
        "remove_mailbox",
        "list_mailboxes",
        "status",
        "resync",
    ):
        assert callable(registered_function(name))


def test_health_answers_with_version() -> None:
    response = registered_function("health")(func.HttpRequest(method="GET", url="/api/health", body=b""))
    assert response.status_code == 200
    assert json.loads(response.get_body())["status"] == "ok"


def test_worker_poison_threshold_matches_host_json() -> None:
    from pathlib import Path

    from shared.sync.dispatch import MAX_DEQUEUE_COUNT

    host = json.loads((Path(__file__).resolve().parent.parent / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] == MAX_DEQUEUE_COUNT


async def test_shutdown_closes_every_client_the_app_opened(
    app_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """The local runner awaits ``function_app.shutdown()`` on exit: nothing is left open (no
    'Unclosed client session' from the storage SDK's aiohttp sessions, no open Graph pool)."""
    import function_app

    await app_runtime.store()
    await app_runtime.jobs()
    await app_runtime.sync_job()  # also opens the tracking index's table service
    graph = await app_runtime.graph()
    http = graph.request_adapter._http_client  # kiota's httpx client: the pool the runtime owns

    await function_app.shutdown()
    gc.collect()

    assert http.is_closed
    assert "Unclosed" not in caplog.text
