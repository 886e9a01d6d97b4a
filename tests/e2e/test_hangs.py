"""A Graph or a Dataverse that accepts the request and never answers, through the real components
(the Functions runner, both simulators over HTTP, Azurite). The client's timeout
(CRMSYNC_GRAPH_TIMEOUT_SECONDS, CRMSYNC_DATAVERSE_TIMEOUT_SECONDS; 2 s here instead of 60 s and
120 s, so the test takes seconds) decides how long a run waits: the run gives up, the mailbox's
lease is free for the retry, and once the service answers again every change lands exactly once
(README "What crmsync promises under faults")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from simulators.sandbox import CONNECTOR_TOKEN
from tests.e2e.conftest import E2E, Mailbox, wait_for
from tests.e2e.test_outages import FAST_RETRIES, _all_once, _crm_names, _new_tag, _seed_contacts, _status

#: How long the runner waits for one Graph or Dataverse answer in these tests.
TIMEOUT_SECONDS = 2
#: The e2e sandbox's lease (tests/e2e/conftest.py).
LEASE_SECONDS = 15


@pytest.fixture(scope="module")
def impatient(e2e: E2E) -> Iterator[E2E]:
    e2e.restart_runner(
        **FAST_RETRIES,
        CRMSYNC_GRAPH_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
        CRMSYNC_DATAVERSE_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
    )
    yield e2e
    e2e.restart_runner()


def _hung_delta_reads(e2e: E2E, mailbox: Mailbox) -> list[dict[str, Any]]:
    """The mailbox's contact delta requests whose client gave up waiting (the simulator logs 499)."""
    log = e2e.graph_control("GET", f"requests?user={mailbox.id}")
    return [r for r in log if r["path"].endswith("/contacts/delta") and r["status"] == 499]


def _at(entry: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))


def test_a_graph_that_never_answers_fails_the_run_and_the_retry_lands_the_change(impatient: E2E) -> None:
    e2e = impatient
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    # Graph accepts this mailbox's contact delta reads and answers none of them until cleared.
    hang = {"kind": "hang", "user": mailbox.id, "path_contains": "/contacts/delta", "count": None}
    e2e.graph_control("POST", "faults", hang)
    try:
        tag = _seed_contacts(e2e, mailbox, 3)
        hung = wait_for(
            lambda: (reads := _hung_delta_reads(e2e, mailbox))[1:] and reads,
            "two runs to give up on the hanging delta read",
        )
        # Only a run holding the mailbox's lease reads the delta, and the first run's keeper renewed
        # the lease while it waited: the second run got it because the first gave up after the
        # client's timeout and released it, not because it expired.
        assert (_at(hung[1]) - _at(hung[0])).total_seconds() < LEASE_SECONDS
        assert _crm_names(e2e, tag) == []
    finally:
        e2e.graph_control("DELETE", f"faults?user={mailbox.id}")
    wait_for(lambda: _all_once(e2e, mailbox, tag, 3), "the contacts once Graph answers again")
    assert _status(e2e, mailbox)["state"] == "active"


def test_a_dataverse_that_never_answers_is_given_up_on_and_the_retry_writes_once(impatient: E2E) -> None:
    e2e = impatient
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    count = 5
    tag = _new_tag()
    # Dataverse holds this test's contact writes (their body holds the tag) and answers none of them.
    hang = {"kind": "hang", "token": CONNECTOR_TOKEN, "body_contains": tag, "count": None}
    fault = e2e.dataverse_control("POST", "faults", hang)
    try:
        _seed_contacts(e2e, mailbox, count, tag)
        wait_for(
            lambda: e2e.dataverse_control("GET", f"faults/{fault['id']}")["fired"] >= 2,
            "the runner to give up on the hanging write and send it again",
        )
        assert _crm_names(e2e, tag) == []  # a held request does nothing
    finally:
        e2e.dataverse_control("DELETE", "faults")
    wait_for(lambda: _all_once(e2e, mailbox, tag, count), "every contact once Dataverse answers again")
    assert _status(e2e, mailbox)["state"] == "active"
