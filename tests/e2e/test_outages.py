"""Outages during a job, through the real components (the Functions runner, both simulators over
HTTP, Azurite): Graph down between two delta pages, Dataverse down in the middle of a $batch,
storage unresponsive under the worker, and a job that fails until the queue poisons it. Each ends
with every change in the CRM exactly once and the mailbox consistent (docs/ARCHITECTURE.md, data
flow steps 4-9; README "What crmsync promises under faults")."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from simulators.sandbox import CONNECTOR_TOKEN
from tests.e2e.conftest import E2E, Mailbox, item_path, wait_for

# Graph's delta pages hold 200 items: 230 contacts make a job of two pages.
TWO_PAGES = 230
# The host retries a failed message after host.json's visibilityTimeout (30 s); the runner takes the
# host's documented app-setting override, so a test sees five attempts in seconds, not minutes.
FAST_RETRIES = {"AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01"}


@pytest.fixture(scope="module")
def fast(e2e: E2E) -> Iterator[E2E]:
    e2e.restart_runner(**FAST_RETRIES)
    yield e2e
    e2e.restart_runner()


def _status(e2e: E2E, mailbox: Mailbox) -> dict[str, Any]:
    code, out = e2e.cli("status", mailbox.id, "--json")
    assert code == 0, out
    (status,) = json.loads(out)
    return dict(status)


def _new_tag() -> str:
    return f"o{uuid.uuid4().hex[:8]}"


def _seed_contacts(e2e: E2E, mailbox: Mailbox, count: int, tag: str | None = None) -> str:
    """``count`` contacts sharing a surname (fresh unless given); returns it."""
    tag = tag or _new_tag()
    e2e.seed(mailbox, contacts=[{"givenName": f"n{i:04d}", "surname": tag} for i in range(count)])
    return tag


def _crm_names(e2e: E2E, tag: str) -> list[str]:
    rows = e2e.crm("contacts", f"lastname eq '{tag}'", "firstname")
    return sorted(row["firstname"] for row in rows)


def _all_once(e2e: E2E, mailbox: Mailbox, tag: str, count: int) -> bool:
    """Every contact in the CRM exactly once, every one linked, nothing waiting."""
    names = _crm_names(e2e, tag)
    if len(names) < count:
        return False
    assert names == [f"n{i:04d}" for i in range(count)], "a contact was duplicated"
    status = _status(e2e, mailbox)
    return status["links"]["contact"] == count and status["backlog"] == 0


def _delta_requests(e2e: E2E, mailbox: Mailbox) -> list[dict[str, Any]]:
    log = e2e.graph_control("GET", f"requests?user={mailbox.id}")
    return [entry for entry in log if entry["path"].endswith("/contacts/delta")]


def test_graph_down_between_two_delta_pages_resumes_from_the_stored_page(fast: E2E) -> None:
    e2e = fast
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    # Graph answers the first delta page, then 503 to every delta request until it is back.
    e2e.graph_control(
        "POST",
        "faults",
        {
            "kind": "status",
            "status": 503,
            "user": mailbox.id,
            "path_contains": "/contacts/delta",
            "count": None,
            "after": 1,
        },
    )
    e2e.graph_control("DELETE", f"requests?user={mailbox.id}")
    tag = _seed_contacts(e2e, mailbox, TWO_PAGES)
    wait_for(lambda: len(_crm_names(e2e, tag)) >= 200, "the first page in the CRM")
    wait_for(
        lambda: sum(r["status"] == 503 for r in _delta_requests(e2e, mailbox)) >= 4,
        "the job to fail and be retried while Graph is down",
    )
    assert len(_crm_names(e2e, tag)) == 200  # the second page was never read

    e2e.graph_control("DELETE", f"faults?user={mailbox.id}")
    wait_for(lambda: _all_once(e2e, mailbox, tag, TWO_PAGES), "the rest once Graph is back", timeout=90)
    # The retry resumed from the stored next link, not from the start of the round.
    recovered = [r for r in _delta_requests(e2e, mailbox) if r["status"] == 200]
    assert "$skiptoken" in recovered[1]["query"]


def test_dataverse_down_in_the_middle_of_a_batch_loses_and_duplicates_nothing(fast: E2E) -> None:
    """Updates go in a ``$batch`` (each carries its If-Match), so Dataverse can commit part of one;
    the first page's creates, plain contacts, went in one UpsertMultiple, which commits whole."""
    e2e = fast
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    count, committed = 40, 10
    tag = _seed_contacts(e2e, mailbox, count)
    wait_for(lambda: _all_once(e2e, mailbox, tag, count), "the contacts in the CRM")
    title = f"{tag} lead"
    # Aimed at this test's contact writes only (their body holds the title): the shared sandbox's
    # other mailboxes keep making contact requests in the background, which must not use up ``after``.
    fault = e2e.dataverse_control(
        "POST",
        "faults",
        {
            "kind": "outage",
            "token": CONNECTOR_TOKEN,
            "path_contains": "contacts",
            "body_contains": title,
            "after": committed,
            "count": None,
        },
    )
    try:
        for contact in e2e.outlook("GET", mailbox, "contacts?$top=100")["value"]:
            e2e.outlook("PATCH", mailbox, item_path("contacts", contact["id"]), {"jobTitle": title})
        wait_for(
            lambda: e2e.dataverse_control("GET", f"faults/{fault['id']}")["fired"] >= 10,
            "Dataverse to refuse writes in the middle of the $batch",
        )
        assert 0 < len(_titled(e2e, title)) < count  # part of the batch committed, part refused
    finally:
        e2e.dataverse_control("DELETE", "faults")
    wait_for(
        lambda: len(_titled(e2e, title)) == count and _all_once(e2e, mailbox, tag, count),
        "every contact updated, once, when Dataverse is back",
        timeout=90,
    )
    assert _status(e2e, mailbox)["state"] == "active"


def _titled(e2e: E2E, title: str) -> list[dict[str, Any]]:
    return e2e.crm("contacts", f"jobtitle eq '{title}'", "contactid")


def test_storage_unresponsive_under_the_worker_loses_and_duplicates_nothing(fast: E2E) -> None:
    """Azurite frozen (SIGSTOP: every storage call hangs, as in an outage; its in-memory data survives)
    for longer than the lease while a job waits for Dataverse, then thawed: the run's storage calls
    wait and go on (a failing one would be retried by the queue); every contact once."""
    e2e = fast
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    count = 20
    azurite = e2e.sandbox.azurite.process
    assert azurite is not None
    tag = _new_tag()
    slow = {"kind": "latency", "latency_ms": 3000, "token": CONNECTOR_TOKEN, "body_contains": tag, "count": 1}
    e2e.dataverse_control("POST", "faults", slow)  # this job's write, not a background one
    frozen = False
    try:
        _seed_contacts(e2e, mailbox, count, tag)
        wait_for(
            lambda: any(
                r["path"].endswith("/contacts/delta")
                for r in e2e.graph_control("GET", f"requests?user={mailbox.id}")
            ),
            "the job to read the delta",
        )
        azurite.send_signal(signal.SIGSTOP)
        frozen = True
        time.sleep(20)  # past the 15 s lease: the run cannot renew it
    finally:
        if frozen:
            azurite.send_signal(signal.SIGCONT)
        e2e.dataverse_control("DELETE", "faults")
    wait_for(lambda: _all_once(e2e, mailbox, tag, count), "every contact once storage is back", timeout=120)


def test_a_poisoned_job_degrades_the_mailbox_and_the_sweep_recovers_it(fast: E2E) -> None:
    e2e = fast
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    e2e.graph_control(
        "POST",
        "faults",
        {
            "kind": "status",
            "status": 500,
            "user": mailbox.id,
            "path_contains": "/contacts/delta",
            "count": None,
        },
    )
    tag = _seed_contacts(e2e, mailbox, 3)
    degraded = wait_for(
        lambda: (s := _status(e2e, mailbox))["state"] == "degraded" and s,
        "the mailbox to be degraded after the job's last attempt",
        timeout=120,
    )
    assert degraded["remedy"]
    assert _crm_names(e2e, tag) == []

    e2e.graph_control("DELETE", f"faults?user={mailbox.id}")
    e2e.run_timer("delta_sweep")
    wait_for(lambda: _all_once(e2e, mailbox, tag, 3), "the sweep to sync the contacts")
    wait_for(lambda: _status(e2e, mailbox)["state"] == "active", "the mailbox to be active again")


def _crm_tasks(e2e: E2E, tag: str) -> list[str]:
    return sorted(row["subject"] for row in e2e.crm("tasks", f"startswith(subject, '{tag}')", "subject"))


def test_the_brake_holds_mass_deletes_until_the_queued_release_names_their_number(fast: E2E) -> None:
    """Most To Do tasks deleted in Outlook at once: the brake refuses and degrades the mailbox; the
    admin API's release with another number is refused at once, with the right one it is queued and
    polled, applies exactly those deletes and the mailbox is active again."""
    e2e = fast
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    count, deleted = 8, 6
    tag = f"b{uuid.uuid4().hex[:8]}"
    titles = [f"{tag}-{i}" for i in range(count)]
    seeded = e2e.seed(mailbox, todo={"defaultList": [{"title": title} for title in titles]})
    wait_for(
        lambda: _crm_tasks(e2e, tag) == titles and _status(e2e, mailbox)["links"]["task"] == count, "tasks"
    )
    # Graph holds the To Do delta back while the user deletes, so one run sees every delete.
    e2e.graph_control(
        "POST",
        "faults",
        {"kind": "status", "status": 503, "user": mailbox.id, "path_contains": "/delta", "count": None},
    )
    tasks = f"{item_path('todo/lists', mailbox.todo_list)}/tasks"
    for task_id in seeded["todo"]["defaultList"][:deleted]:
        e2e.outlook("DELETE", mailbox, item_path(tasks, task_id))
    e2e.graph_control("DELETE", f"faults?user={mailbox.id}")
    braked = wait_for(
        lambda: (s := _status(e2e, mailbox))["brake_holds"] and s["state"] == "degraded" and s,
        "the brake to refuse the deletes and degrade the mailbox",
    )
    assert sum(braked["brake_holds"].values()) == deleted
    assert _crm_tasks(e2e, tag) == titles

    release = f"admin/mailboxes/{mailbox.id}/release-brake"
    wrong = e2e.admin_post(release, {"confirm_deletes": deleted - 1})
    assert wrong.status_code == 409
    assert f"refused {deleted} deletes" in wrong.json()["error"]
    accepted = e2e.admin_post(release, {"confirm_deletes": deleted})
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["Location"]

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = e2e.admin("GET", location.removeprefix("/api/")).json()
        return body if body["status"] in ("succeeded", "failed") else None

    operation = wait_for(finished, "the admin worker to release the brake")
    assert operation["status"] == "succeeded", operation
    assert operation["kind"] == "release_brake"
    assert _crm_tasks(e2e, tag) == titles[deleted:]
    status = _status(e2e, mailbox)
    assert status["state"] == "active"
    assert status["links"]["task"] == count - deleted
    assert not status["brake_holds"]
