"""The hang_after_commit fault: a committed write whose answer is held, so an end-to-end test can kill
the client in the window between Dataverse's commit and the client hearing of it.

These tests run on the private simulator: clearing faults (which releases held answers) is global."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from simulators.dataverse.launcher import DataverseSimulator
from tests.dataverse_sim.test_batch import post_batch, statuses

HOLD = "hang_after_commit"
PROMPT = 5.0  # seconds: an answer that is not held comes well within this


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    """Held requests run here while the test looks at the simulator."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def _wait_until_holding(sim: DataverseSimulator, fault_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while (state := sim.fault_state(fault_id))["holding"] == 0:
        assert time.monotonic() < deadline, f"the fault never held an answer: {state}"
        time.sleep(0.02)
    return state


def _lastnames(api: httpx.Client, marker: str) -> list[str]:
    rows = api.get("contacts", params={"$select": "lastname", "$filter": f"lastname eq '{marker}'"})
    return [row["lastname"] for row in rows.json()["value"]]


def _held_until_cleared(
    sim: DataverseSimulator, background: ThreadPoolExecutor, fault_id: str, call: Callable[[], httpx.Response]
) -> tuple[Future[httpx.Response], dict[str, Any]]:
    """Start ``call``; return its pending answer and the fault's state once it is held."""
    pending = background.submit(call)
    state = _wait_until_holding(sim, fault_id)
    assert not pending.done()
    return pending, state


def test_a_single_write_commits_and_its_answer_is_held_until_the_faults_are_cleared(
    private_sim: DataverseSimulator,
    private_api: httpx.Client,
    private_token: str,
    background: ThreadPoolExecutor,
) -> None:
    marker = uuid.uuid4().hex
    fault_id = private_sim.fault(HOLD, token=private_token, count=1, table="contact", seconds=60)
    try:
        pending, state = _held_until_cleared(
            private_sim, background, fault_id, lambda: private_api.post("contacts", json={"lastname": marker})
        )
        assert (state["fired"], state["remaining"]) == (1, 0)
        assert _lastnames(private_api, marker) == [marker]  # committed while the answer is held
        other_table = private_api.post("leads", json={"lastname": marker}, timeout=PROMPT)
        used_up = private_api.post("contacts", json={"lastname": f"{marker}-2"}, timeout=PROMPT)
        assert (other_table.status_code, used_up.status_code) == (204, 204)
    finally:
        private_sim.clear_faults()
    assert pending.result(timeout=PROMPT).status_code == 204
    assert private_api.get(f"{private_sim.root_url}/_sim/faults/{fault_id}").status_code == 404


def test_a_batch_answer_is_held_when_a_committed_part_writes_the_table(
    private_sim: DataverseSimulator,
    private_api: httpx.Client,
    private_token: str,
    background: ThreadPoolExecutor,
) -> None:
    marker = uuid.uuid4().hex
    fault_id = private_sim.fault(HOLD, token=private_token, table="contact", body_contains=marker, seconds=60)
    unrelated = post_batch(
        private_api, private_sim, [[("POST", "contacts", {"lastname": f"other-{uuid.uuid4().hex}"})]]
    )
    assert statuses(unrelated) == [204]
    assert private_sim.fault_state(fault_id)["fired"] == 0  # body_contains names the awaited write only
    try:
        pending, state = _held_until_cleared(
            private_sim,
            background,
            fault_id,
            lambda: post_batch(
                private_api,
                private_sim,
                [[("POST", "leads", {"lastname": marker}), ("POST", "contacts", {"lastname": marker})]],
            ),
        )
        assert state["fired"] == 1
        assert _lastnames(private_api, marker) == [marker]
    finally:
        private_sim.clear_faults()
    assert statuses(pending.result(timeout=PROMPT)) == [204, 204]


def test_failed_writes_rolled_back_change_sets_and_reads_do_not_fire_it(
    private_sim: DataverseSimulator, private_api: httpx.Client, private_token: str
) -> None:
    marker = uuid.uuid4().hex
    fault_id = private_sim.fault(HOLD, token=private_token, count=1, table="contact", seconds=60)
    try:
        refused = private_api.post("contacts", json={"lastname": marker, "nosuchcolumn": 1}, timeout=PROMPT)
        rolled_back = post_batch(
            private_api,
            private_sim,
            [[("POST", "contacts", {"lastname": marker}), ("POST", "contacts", {"nosuchcolumn": 1})]],
        )
        read = private_api.get("contacts", params={"$top": "1"}, timeout=PROMPT)
        assert (refused.status_code, statuses(rolled_back, batch_status=400), read.status_code) == (
            400,
            [400],
            200,
        )
        assert _lastnames(private_api, marker) == []
        state = private_sim.fault_state(fault_id)
        assert (state["fired"], state["remaining"], state["holding"]) == (0, 1, 0)
    finally:
        private_sim.clear_faults()


def test_a_held_answer_goes_after_its_seconds(
    private_sim: DataverseSimulator, private_api: httpx.Client, private_token: str
) -> None:
    (contact_id,) = private_sim.seed("contact", [{"lastname": uuid.uuid4().hex}])
    fault_id = private_sim.fault(HOLD, token=private_token, count=1, table="contact", seconds=0.3)
    started = time.monotonic()
    deleted = private_api.delete(f"contacts({contact_id})", timeout=PROMPT)
    assert deleted.status_code == 204
    assert time.monotonic() - started >= 0.3
    assert private_sim.record("contact", contact_id) is None
    assert private_sim.fault_state(fault_id)["fired"] == 1


@pytest.mark.parametrize(
    "spec", [{"kind": "hang_before_commit"}, {"kind": HOLD, "table": "nosuchtable"}], ids=["kind", "table"]
)
def test_an_unknown_kind_or_table_is_refused(private_sim: DataverseSimulator, spec: dict[str, str]) -> None:
    response = private_sim.control.post("/faults", json=spec)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "0x80048d19"
