"""The local Functions runner behaves like the host for HTTP, queue and timer triggers.

Runs a real uvicorn server on loopback and real Azurite queues; the handlers are
plain v2-model functions defined here so the runner is tested on its own.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import azure.functions as func
import httpx
import pytest
import uvicorn
from azure.storage.queue.aio import QueueClient

from simulators.azurite import Azurite
from simulators.functions_host import FunctionsHost, NCrontab, PollDelay, QueueSettings
from simulators.ports import free_port


def _make_app(queue_name: str, seen: list[str], fired: list[str]) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="echo/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(f"{req.route_params['name']}:{req.params.get('q', '')}", status_code=200)

    @app.route(route="echo/{name}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
    def forget(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(status_code=204)

    @app.route(route="secret", methods=["POST"])
    async def secret(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.get_body(), status_code=201, mimetype="application/json")

    @app.queue_trigger(arg_name="msg", queue_name=queue_name, connection="AzureWebJobsStorage")
    async def worker(msg: func.QueueMessage) -> None:
        body = msg.get_body().decode()
        if body == "always-fails":
            raise RuntimeError("simulated handler failure")
        if body == "slow":  # runs until three fast messages were handled (5 s at most)
            seen.append("slow started")
            for _ in range(100):
                if sum(entry.startswith("fast") for entry in seen) == 3:
                    break
                await asyncio.sleep(0.05)
        if body == "sleepy":  # longer than the fixture's 2 s message lease
            seen.append("sleepy started")
            await asyncio.sleep(3.5)
        seen.append(body)

    @app.timer_trigger(arg_name="timer", schedule="0 0 3 * * *")
    def nightly(timer: func.TimerRequest) -> None:
        fired.append("nightly")

    return app


@pytest.fixture
async def running(azurite: Azurite) -> AsyncIterator[tuple[FunctionsHost, str, list[str], list[str], str]]:
    queue_name = "q" + uuid.uuid4().hex[:12]
    seen: list[str] = []
    fired: list[str] = []
    host = FunctionsHost(
        app=_make_app(queue_name, seen, fired),
        storage_connection_string=azurite.connection_string,
        queue_settings=QueueSettings(
            batch_size=4, max_dequeue_count=2, visibility_timeout=1, max_polling_interval=0.2, message_lease=2
        ),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(host.asgi(), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield host, f"http://127.0.0.1:{port}", seen, fired, queue_name
    server.should_exit = True
    await task


async def _eventually(condition: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_http_routes_params_and_auth_levels(
    running: tuple[FunctionsHost, str, list[str], list[str], str],
) -> None:
    host, base, *_ = running
    async with httpx.AsyncClient(base_url=base) as client:
        echoed = await client.get("/api/echo/alice", params={"q": "1"})
        assert (echoed.status_code, echoed.text) == (200, "alice:1")
        assert (await client.post("/api/echo/alice")).status_code == 405
        assert (await client.delete("/api/echo/alice")).status_code == 204  # same route, another function
        assert (await client.post("/api/secret", content=b"{}")).status_code == 401
        wrong = await client.post("/api/secret", content=b"{}", headers={"x-functions-key": "nope"})
        assert wrong.status_code == 401
        ok = await client.post(
            "/api/secret", content=b'{"a":1}', headers={"x-functions-key": host.function_key}
        )
        assert (ok.status_code, ok.json()) == (201, {"a": 1})
        by_code = await client.post("/api/secret", params={"code": host.master_key}, content=b"{}")
        assert by_code.status_code == 201
        assert (await client.get("/api/nothing-here")).status_code == 404


async def test_queue_messages_are_base64_delivered_and_poisoned_after_max_dequeue(
    running: tuple[FunctionsHost, str, list[str], list[str], str], azurite: Azurite
) -> None:
    _, _, seen, _, queue_name = running
    async with QueueClient.from_connection_string(azurite.connection_string, queue_name) as queue:
        for body in ("job-1", "always-fails", "job-2"):
            await queue.send_message(base64.b64encode(body.encode()).decode())
        await _eventually(lambda: sorted(seen) == ["job-1", "job-2"])
    async with QueueClient.from_connection_string(
        azurite.connection_string, queue_name + "-poison"
    ) as poison:
        poisoned: list[str] = []

        async def drain() -> bool:
            poisoned.extend([base64.b64decode(m.content).decode() async for m in poison.receive_messages()])
            return poisoned == ["always-fails"]

        deadline = asyncio.get_running_loop().time() + 15
        while not await drain():
            assert asyncio.get_running_loop().time() < deadline, "poison message never arrived"
            await asyncio.sleep(0.2)


async def test_a_message_stays_hidden_while_its_function_runs_past_the_lease(
    running: tuple[FunctionsHost, str, list[str], list[str], str], azurite: Azurite
) -> None:
    """The host renews a running message's invisibility at half its lease (azure-webjobs-sdk
    ``QueueListener``: 10 minutes, here 2 s), so a run longer than the lease is not delivered twice."""
    _, _, seen, _, queue_name = running
    async with QueueClient.from_connection_string(azurite.connection_string, queue_name) as queue:
        await queue.send_message(base64.b64encode(b"sleepy").decode())
        await _eventually(lambda: "sleepy" in seen)
        await asyncio.sleep(1.5)  # a second delivery would have started by now
        assert seen.count("sleepy started") == 1
        assert await queue.peek_messages() == []  # and the message was deleted


async def test_a_long_job_does_not_hold_back_the_next_batch(
    running: tuple[FunctionsHost, str, list[str], list[str], str], azurite: Azurite
) -> None:
    """ "Concurrency": once the messages in flight are down to newBatchThreshold (batchSize / 2 by
    default), the host fetches the next batch; it does not wait for the whole batch to finish."""
    _, _, seen, _, queue_name = running
    async with QueueClient.from_connection_string(azurite.connection_string, queue_name) as queue:
        await queue.send_message(base64.b64encode(b"slow").decode())
        await _eventually(lambda: seen == ["slow started"])
        for n in range(3):
            await queue.send_message(base64.b64encode(f"fast-{n}".encode()).decode())
        await _eventually(lambda: "slow" in seen)
    assert seen[-1] == "slow"
    assert sorted(seen[1:-1]) == ["fast-0", "fast-1", "fast-2"]


def test_polls_back_off_as_the_host_does() -> None:
    """ "Polling algorithm": 100 ms after a poll that found messages, about 200 ms after an empty
    one, doubling up to maxPollingInterval; no faster than the host."""
    delay = PollDelay(maximum=2.0)
    assert [delay.next(found=False) for _ in range(6)] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert delay.next(found=True) == 0.1
    assert delay.next(found=False) == 0.2
    assert QueueSettings(batch_size=8).refill_at == 4
    assert QueueSettings(batch_size=8, new_batch_threshold=1).refill_at == 1


async def test_timer_runs_on_demand_through_the_admin_api(
    running: tuple[FunctionsHost, str, list[str], list[str], str],
) -> None:
    host, base, _, fired, _ = running
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.post("/admin/functions/nightly", json={"input": ""})).status_code == 401
        response = await client.post(
            "/admin/functions/nightly", json={"input": ""}, headers={"x-functions-key": host.master_key}
        )
        assert response.status_code == 202
    assert fired == ["nightly"]


def test_ncrontab_six_fields() -> None:
    every_five_minutes = NCrontab.parse("0 */5 * * * *")
    start = dt.datetime(2026, 11, 22, 10, 3, 7, tzinfo=dt.UTC)
    assert every_five_minutes.next_after(start) == dt.datetime(2026, 11, 22, 10, 5, 0, tzinfo=dt.UTC)
    weekdays_at_nine = NCrontab.parse("0 30 9 * * 1-5")
    saturday = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
    assert weekdays_at_nine.next_after(saturday) == dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="six fields"):
        NCrontab.parse("*/5 * * * *")
    with pytest.raises(ValueError, match="out of range"):
        NCrontab.parse("0 61 * * * *")


def test_queue_settings_take_the_hosts_app_setting_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """learn.microsoft.com/azure/azure-functions/functions-host-json, "Override host.json values":
    an app setting AzureFunctionsJobHost__path__to__setting wins over host.json."""
    host_json = tmp_path / "host.json"
    host_json.write_text(
        '{"extensions": {"queues": {"visibilityTimeout": "00:00:30", "maxDequeueCount": 5}}}'
    )
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__queues__visibilityTimeout", "00:00:01")

    settings = QueueSettings.from_host_json(host_json)

    assert settings.visibility_timeout == 1
    assert settings.max_dequeue_count == 5
