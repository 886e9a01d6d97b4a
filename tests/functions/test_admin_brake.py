"""``POST /api/admin/mailboxes/{mailbox}/release-brake`` on real Azurite: the administrator must name
the number of deletes the brake refused; anything else changes nothing."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import azure.functions as func

from shared.domain.model import ItemKind
from shared.runtime import Runtime
from tests.fixtures.app import registered_function


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
