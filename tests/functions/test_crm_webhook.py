"""The Dataverse webhook handler, in-process on Azurite: a right key and a RemoteExecutionContext
mark the table's change read due, queue it once per burst and answer 202; a missing or wrong key
(403) or a body that is not such a context (400, 413) mark and queue nothing; without a configured
key every call is refused."""

from __future__ import annotations

import json
import uuid

import azure.functions as func
import pytest

from shared.runtime import Runtime
from shared.store.crm_jobs import CrmWork, CrmWorkSource
from shared.sync.crm_changes import CHANGES_PARTITION, changes_resource
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


async def test_a_burst_of_keyed_contexts_queues_one_change_read_per_table(runtime: Runtime) -> None:
    """Each call used to queue the routing of its own record: a burst of Dynamics changes became a
    queued message per change (chaos at 10,000 operations: 6,400 waiting, nearly all one record)."""
    webhook = registered_function("crm_webhook")
    answers = [await webhook(_request(_context(table=table), KEY)) for table in ("task",) * 5 + ("contact",)]
    assert [a.status_code for a in answers] == [202] * 6
    queued = await _queued(runtime)
    assert sorted((w.table, w.source, w.changed, w.mailbox_id) for w in queued) == [
        ("contact", CrmWorkSource.CHANGES_DUE, (), None),
        ("task", CrmWorkSource.CHANGES_DUE, (), None),
    ]
    store = await runtime.store()
    for table in ("task", "contact"):
        assert (await store.sync_state.get_state(CHANGES_PARTITION, changes_resource(table))).dirty
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
    store = await runtime.store()
    assert not (await store.sync_state.get_state(CHANGES_PARTITION, changes_resource("task"))).dirty
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
