"""The Dataverse webhook handler, in-process on Azurite: a right key and a RemoteExecutionContext
queue routing work and answer 202; a missing or wrong key (403) or a body that is not such a context
(400, 413) queue nothing; without a configured key every call is refused."""

from __future__ import annotations

import json
import uuid

import azure.functions as func
import pytest

from shared.runtime import Runtime
from shared.store.crm_jobs import CrmWork
from simulators.azurite import Azurite
from tests.fixtures.app import registered_function, sandbox_settings, use_settings

KEY = "k" * 48


def _request(body: bytes, code: str | None) -> func.HttpRequest:
    params = {"code": code} if code is not None else {}
    return func.HttpRequest("POST", "http://localhost/api/crm/webhook", body=body, params=params, headers={})


def _context(message: str = "Update", table: str = "task") -> bytes:
    return json.dumps(
        {
            "MessageName": message,
            "PrimaryEntityName": table,
            "PrimaryEntityId": str(uuid.uuid4()),
            "InputParameters": [],
        }
    ).encode()


async def _queued(runtime: Runtime) -> list[CrmWork]:
    client = (await runtime.crm_work())._queue.client
    return [CrmWork.parse(m.content) async for m in client.receive_messages(max_messages=32)]


@pytest.fixture
async def runtime(monkeypatch: pytest.MonkeyPatch, azurite: Azurite) -> Runtime:
    settings = sandbox_settings(
        azurite.connection_string,
        graph_url="http://127.0.0.1:9/v1.0",
        dataverse_url="http://127.0.0.1:9",
        functions_url="http://127.0.0.1:9",
    )
    return await use_settings(monkeypatch, {**settings, "CRMSYNC_CRM_WEBHOOK_KEY": KEY})


async def test_a_keyed_context_is_queued_for_routing(runtime: Runtime) -> None:
    body = _context()
    answer = await registered_function("crm_webhook")(_request(body, KEY))
    assert answer.status_code == 202
    (work,) = await _queued(runtime)
    assert work.changed == (uuid.UUID(json.loads(body)["PrimaryEntityId"]),)
    assert work.mailbox_id is None
    await runtime.close()


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        (_context(), None, 403),
        (_context(), KEY[:-1] + "x", 403),
        (b"{not json", KEY, 400),
        (_context(table="account"), KEY, 400),
        (b"x" * (256 * 1024 + 1), KEY, 413),
    ],
)
async def test_forged_or_bad_input_is_refused_and_queues_nothing(
    runtime: Runtime, body: bytes, code: str | None, status: int
) -> None:
    answer = await registered_function("crm_webhook")(_request(body, code))
    assert answer.status_code == status
    assert await _queued(runtime) == []
    await runtime.close()


async def test_without_a_configured_key_every_call_is_refused(
    monkeypatch: pytest.MonkeyPatch, azurite: Azurite
) -> None:
    settings = sandbox_settings(
        azurite.connection_string,
        graph_url="http://127.0.0.1:9/v1.0",
        dataverse_url="http://127.0.0.1:9",
        functions_url="http://127.0.0.1:9",
    )
    runtime = await use_settings(monkeypatch, settings)
    answer = await registered_function("crm_webhook")(_request(_context(), ""))
    assert answer.status_code == 403
    assert await _queued(runtime) == []
    await runtime.close()
