"""Azure Storage down in the worker, end to end: Azurite (keeping its data on disk, as Azure Storage
does) is stopped while a run waits for the CRM and started again 10 s later. The CRM writes commit,
the link writes fail (after the storage clients' retries, about 3 s) and the run fails; once storage
is back the message is delivered again and the rerun writes the committed records again as the same
upserts and links them: nothing lost, nothing twice (docs/ARCHITECTURE.md, data flow step 3 and
"Failure semantics"). Its own sandbox: the shared one keeps Azurite in memory."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from simulators.azurite import Azurite
from simulators.sandbox import CONNECTOR_TOKEN, Sandbox
from tests.e2e.conftest import E2E, E2E_SETTINGS, driving, wait_for
from tests.e2e.test_outages import FAST_RETRIES, _all_once, _crm_names, _new_tag, _seed_contacts


@pytest.fixture(scope="module")
def durable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    azurite = Azurite(location=tmp_path_factory.mktemp("azurite"))
    sandbox = Sandbox(azurite=azurite, extra_settings={**E2E_SETTINGS, **FAST_RETRIES})
    with sandbox, driving(sandbox) as driver:
        yield driver


def test_storage_stopped_mid_run_and_restarted_loses_and_duplicates_nothing(durable: E2E) -> None:
    e2e = durable
    mailbox = e2e.new_mailbox()
    e2e.onboard(mailbox)
    count = 5
    tag = _new_tag()
    # This job's CRM $batch waits 2 s: long enough to take storage away under the running job.
    slow = {"kind": "latency", "latency_ms": 2000, "token": CONNECTOR_TOKEN, "body_contains": tag, "count": 1}
    fault = e2e.dataverse_control("POST", "faults", slow)
    _seed_contacts(e2e, mailbox, count, tag)
    fired = f"faults/{fault['id']}"
    wait_for(lambda: e2e.dataverse_control("GET", fired)["fired"], "the run to reach the CRM")

    azurite = e2e.sandbox.azurite
    azurite.stop()
    time.sleep(10)  # the CRM writes commit meanwhile; the links and the delta link cannot be stored
    assert len(_crm_names(e2e, tag)) == count
    azurite.start()

    wait_for(lambda: _all_once(e2e, mailbox, tag, count), "every contact once storage is back", timeout=90)
