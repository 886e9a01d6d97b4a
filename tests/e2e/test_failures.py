"""Nothing is lost when parts fail: a dropped notification and storage down at the webhook
(DESIGN.md, data flow steps 1-2)."""

from __future__ import annotations

import re
import uuid

from simulators.ports import free_port
from tests.e2e.conftest import E2E, Mailbox, wait_for


def _contact(e2e: E2E, mailbox: Mailbox) -> str:
    name = f"f-{uuid.uuid4().hex[:10]}"
    e2e.seed(mailbox, contacts=[{"givenName": "Fault", "surname": name}])
    return name


def _in_crm(e2e: E2E, name: str) -> list[str]:
    return [row["contactid"] for row in e2e.crm("contacts", f"lastname eq '{name}'", "contactid")]


def test_a_dropped_notification_is_caught_by_the_sweep(e2e: E2E) -> None:
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    e2e.graph_control("POST", "faults", {"kind": "drop_notifications", "user": mailbox.id, "count": 1})

    name = _contact(e2e, mailbox)
    wait_for(
        lambda: any(d["outcome"] == "dropped (fault)" for d in e2e.deliveries(mailbox)),
        "the notification drop",
    )
    assert _in_crm(e2e, name) == []  # nothing told crmsync to look

    e2e.run_timer("delta_sweep")

    wait_for(lambda: _in_crm(e2e, name), "the sweep to sync the contact")


def test_storage_down_at_the_webhook_is_retried_by_graph_and_nothing_is_lost(e2e: E2E) -> None:
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    dead = free_port()
    dead_storage = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{dead}", e2e.sandbox.azurite.connection_string)
    e2e.restart_runner(AzureWebJobsStorage=dead_storage)
    try:
        name = _contact(e2e, mailbox)
        wait_for(
            lambda: any(d["outcome"].startswith("5") for d in e2e.deliveries(mailbox)),
            "the webhook to refuse the notification with a 5xx",
        )
    finally:
        e2e.restart_runner()

    wait_for(lambda: _in_crm(e2e, name), "Graph's retry to bring the contact")
    outcomes = [d["outcome"] for d in e2e.deliveries(mailbox)]
    assert outcomes[-1] == "202"
    assert len(_in_crm(e2e, name)) == 1
