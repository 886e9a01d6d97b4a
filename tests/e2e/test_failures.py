"""Nothing is lost when parts fail: a dropped notification, storage down at the webhook (docs/ARCHITECTURE.md,
data flow steps 1-2) and a worker killed between the CRM write and the link write (step 3)."""

from __future__ import annotations

import re
import uuid

from simulators.ports import free_port
from tests.e2e.conftest import E2E, Mailbox, wait_for
from tests.e2e.test_outlook_to_crm import links


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


def test_a_worker_killed_between_the_crm_write_and_the_link_write_creates_no_duplicate(e2e: E2E) -> None:
    """docs/ARCHITECTURE.md, data flow step 3:
    a crash at any point re-runs the page and every step is idempotent.
    The CRM commits the contact but holds its answer, the runner is SIGKILLed while it waits; the
    queue's retry (after the 15 s lease and the 30 s visibility timeout) must link that record, not
    write a second one. Whether the write is a single request or a $batch part does not matter."""
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    name = f"k-{uuid.uuid4().hex[:10]}"
    hold = {
        "kind": "hang_after_commit",
        "table": "contact",
        "body_contains": name,
        "seconds": 120,
        "count": 1,
    }
    fault_id = e2e.dataverse_control("POST", "faults", hold)["id"]
    try:
        e2e.seed(mailbox, contacts=[{"givenName": "Killed", "surname": name}])
        wait_for(
            lambda: e2e.dataverse_control("GET", f"faults/{fault_id}")["holding"],
            "the contact's CRM write to commit with its answer held",
        )
        assert len(_in_crm(e2e, name)) == 1
        assert links(e2e, mailbox)["contact"] == 0
        e2e.restart_runner()
    finally:
        e2e.dataverse_control("DELETE", "faults")

    wait_for(lambda: links(e2e, mailbox)["contact"] == 1, "the rerun to link the contact", timeout=90)
    assert len(_in_crm(e2e, name)) == 1
