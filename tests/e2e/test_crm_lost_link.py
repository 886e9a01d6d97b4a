"""A CRM -> Outlook run that died between the Graph create and its link write: the next change of the
record routed to the mailbox (before any fill or resync) links the item it had created instead of
creating it a second time. The run records its intent to create before the Graph request; the state
such a crash leaves - the item in Outlook, the intent recorded, no link - is made here by removing
the link row and recording the intent, as the fill tests remove link rows."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest

from shared.config import Settings
from shared.runtime import Runtime
from tests.e2e.conftest import E2E, Mailbox, item_path, wait_for
from tests.e2e.test_crm_to_outlook import _future_slot, as_user, connected, find, onboarded

__all__ = ["connected"]  # the module fixture: the webhook registered and the baseline taken


async def _crash_after_create(e2e: E2E, mailbox: Mailbox, table: str, record_id: str, title: str) -> None:
    runtime = Runtime(Settings.model_validate(e2e.sandbox.app_settings()))
    try:
        store = await runtime.store()
        link = await store.links.get_by_crm(mailbox.id, table, record_id)
        assert link is not None
        await store.links.delete(link)
        await store.sync_state.note_creates(mailbox.id, table, {record_id: title})
    finally:
        await runtime.close()


def _pending(e2e: E2E, mailbox: Mailbox, table: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        runtime = Runtime(Settings.model_validate(e2e.sandbox.app_settings()))
        try:
            return await (await runtime.store()).sync_state.pending_creates(mailbox.id, table)
        finally:
            await runtime.close()

    return asyncio.run(read())


KINDS: dict[str, dict[str, Any]] = {
    "contact": {
        "set": "contacts",
        "key": "contactid",
        "collection": "contacts",
        "field": "surname",
        "create": lambda name, user: {"lastname": name},
        "change": {"firstname": "Grace"},
        "changed": lambda item: item.get("givenName") == "Grace",
    },
    "appointment": {
        "set": "appointments",
        "key": "activityid",
        "collection": "events",
        "field": "subject",
        "create": lambda name, user: {
            "subject": name,
            "scheduledstart": _future_slot()[0],
            "scheduledend": _future_slot()[1],
            "appointment_activity_parties": [  # organized by the user: the default filter takes it
                {
                    "partyid_systemuser@odata.bind": f"/systemusers({user.systemuserid})",
                    "participationtypemask": 7,
                }
            ],
        },
        "change": {"location": "Room 9"},
        "changed": lambda item: (item.get("location") or {}).get("displayName") == "Room 9",
    },
    "task": {
        "set": "tasks",
        "key": "activityid",
        "collection": None,  # the mailbox's To Do list
        "field": "title",
        "create": lambda name, user: {"subject": name},
        "change": {"description": "call back"},
        "changed": lambda item: "call back" in ((item.get("body") or {}).get("content") or ""),
    },
}


@pytest.mark.parametrize("table", sorted(KINDS))
def test_a_change_after_a_lost_link_write_links_the_item_instead_of_creating_it_again(
    connected: E2E, table: str
) -> None:
    e2e = connected
    kind = KINDS[table]
    mailbox, user = onboarded(e2e)
    collection = kind["collection"] or item_path("todo/lists", mailbox.todo_list) + "/tasks"
    name = f"lost-link-{table}-{dt.datetime.now(dt.UTC).strftime('%H%M%S%f')}"
    record = as_user(e2e, user, "POST", kind["set"], kind["create"](name, user))
    record_id = record[kind["key"]]
    created_at = dt.datetime.now(dt.UTC)
    wait_for(lambda: find(e2e, mailbox, collection, kind["field"], name), f"the {table} in Outlook")
    # The intent is cleared once the link is written, just after the item appears in Outlook.
    wait_for(lambda: _pending(e2e, mailbox, table) == {} or None, f"the {table}'s create intent cleared")
    # Nothing of the Outlook -> CRM side may still be on its way (it would link the item itself).
    resource = {"contact": "contacts", "appointment": "events", "task": "tasks"}[table]
    wait_for(
        lambda: _settled(e2e, mailbox, resource, created_at), "the echo of crmsync's create to be synced"
    )
    asyncio.run(_crash_after_create(e2e, mailbox, table, record_id, name if table == "task" else ""))

    as_user(e2e, user, "PATCH", f"{kind['set']}({record_id})", kind["change"])
    wait_for(
        lambda: (
            [i for i in find(e2e, mailbox, collection, kind["field"], name) if kind["changed"](i)] or None
        ),
        "the change on the item created before the crash",
    )
    assert len(find(e2e, mailbox, collection, kind["field"], name)) == 1  # linked, not created twice
    # The run clears the intent just after its Outlook write (which the wait above may see first).
    wait_for(lambda: _pending(e2e, mailbox, table) == {} or None, f"the {table}'s create intent cleared")
    assert len(find(e2e, mailbox, collection, kind["field"], name)) == 1


def _settled(e2e: E2E, mailbox: Mailbox, resource: str, after: dt.datetime) -> bool:
    """The mailbox's resource synced after ``after``, nothing pending."""
    code, out = e2e.cli("status", mailbox.id, "--json")
    assert code == 0, out
    (status,) = json.loads(out)
    return status["backlog"] == 0 and all(
        not r["dirty"] and r["last_sync_at"] and dt.datetime.fromisoformat(r["last_sync_at"]) > after
        for r in status["resources"]
        if r["resource"].endswith("/" + resource)
    )
