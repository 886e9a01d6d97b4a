"""``POST /api/admin/mailboxes/{mailbox}/release-brake`` on real Azurite: the administrator must name
the number of deletes the brake refused; anything else changes nothing."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage

from shared.domain.model import ItemKind
from shared.runtime import Runtime
from tests.fixtures.app import registered_function
from tests.functions.test_admin import queued, register


def _release(mailbox: str, body: Any) -> func.HttpRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return func.HttpRequest(
        method="POST",
        url=f"http://localhost/api/admin/mailboxes/{mailbox}/release-brake",
        route_params={"mailbox": mailbox},
        body=raw,
    )


async def _braked(runtime: Runtime, refused: int) -> str:
    store = await runtime.store()
    mailbox = str(uuid.uuid4())
    await store.registry.register(
        mailbox_id=mailbox,
        upn="u@sim.crmsync.test",
        crm_user_id=str(uuid.uuid4()),
        crm_caller_object_id=mailbox,
    )
    log = await store.sync_state.get_delete_log(mailbox, ItemKind.CONTACT)
    await store.sync_state.put_delete_log(dataclasses.replace(log, refused=refused))  # the brake tripped
    return mailbox


async def test_release_brake_refuses_another_number_and_names_the_refused_one(app_runtime: Runtime) -> None:
    release = registered_function("release_brake")
    mailbox = await _braked(app_runtime, 12)

    wrong = await release(_release(mailbox, {"confirm_deletes": 11}))

    assert wrong.status_code == 409
    assert "refused 12 deletes" in json.loads(wrong.get_body())["error"]
    store = await app_runtime.store()
    assert (await store.sync_state.get_delete_log(mailbox, ItemKind.CONTACT)).refused == 12  # still held


async def test_release_brake_answers_bad_input_and_unknown_mailboxes_with_4xx(app_runtime: Runtime) -> None:
    release = registered_function("release_brake")
    mailbox = await _braked(app_runtime, 3)

    assert (await release(_release(mailbox, {"confirm_deletes": "3"}))).status_code == 400
    assert (await release(_release(mailbox, {"confirm": 3}))).status_code == 400
    assert (await release(_release(mailbox, b"\xff"))).status_code == 400
    assert (await release(_release(str(uuid.uuid4()), {"confirm_deletes": 3}))).status_code == 404
    unbraked = await _braked(app_runtime, 0)
    answer = await release(_release(unbraked, {"confirm_deletes": 0}))
    assert answer.status_code == 409
    assert "no mass-delete brake" in json.loads(answer.get_body())["error"]


async def test_the_release_is_queued_and_a_redelivery_after_it_was_applied_succeeds(
    app_runtime: Runtime,
) -> None:
    """202 and an operation; Graph is unreachable here, so the worker's first attempt raises (the host
    retries). A redelivery that finds the brake released (an attempt applied it, then died before
    recording so) records the operation succeeded instead of failing it."""
    mailbox = (await register(app_runtime)).mailbox_id  # subscribed to its contacts
    store = await app_runtime.store()
    log = await store.sync_state.get_delete_log(mailbox, ItemKind.CONTACT)
    await store.sync_state.put_delete_log(dataclasses.replace(log, refused=7))  # the brake tripped
    accepted = await registered_function("release_brake")(_release(mailbox, {"confirm_deletes": 7}))
    assert accepted.status_code == 202
    operation_id = json.loads(accepted.get_body())["operation_id"]
    (job,) = await queued(app_runtime, f"{app_runtime.settings.job_queue}-admin")
    assert job["kind"] == "release_brake"
    assert job["confirm_deletes"] == 7
    worker = registered_function("admin_worker")
    body = json.dumps(job).encode()
    operations = await app_runtime.admin_operations()

    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the transport raises
        await worker(QueueMessage(id="1", body=body, dequeue_count=1))  # type: ignore[no-untyped-call]
    assert (await operations.get(operation_id)).status == "running"
    log = await store.sync_state.get_delete_log(mailbox, ItemKind.CONTACT)
    await store.sync_state.put_delete_log(dataclasses.replace(log, refused=0))  # released meanwhile
    await worker(QueueMessage(id="1", body=body, dequeue_count=2))  # type: ignore[no-untyped-call]

    assert (await operations.get(operation_id)).status == "succeeded"
