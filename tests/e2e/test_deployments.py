"""Two crmsync deployments (production: the sandbox's runner; staging: another table prefix and job
queue on the same storage, driven with the CLI) against one tenant and one CRM: one synchronizing
deployment per mailbox, held by the claim on the mailbox (shared/outlook/claim.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.cli import app as crmsync
from tests.e2e.conftest import E2E, Mailbox, wait_for

STAGING = {"CRMSYNC_TABLE_PREFIX": "staging", "CRMSYNC_JOB_QUEUE": "staging-jobs"}


@pytest.fixture(scope="module")
def production(e2e: E2E) -> Iterator[E2E]:
    """The runner reads the claim at every run (the default trusts a read for 5 minutes)."""
    e2e.restart_runner(CRMSYNC_CLAIM_CHECK_SECONDS="0")
    yield e2e
    e2e.restart_runner()


def _staging(e2e: E2E, *args: str) -> tuple[int, str]:
    """``crmsync <args>`` as the staging deployment; (exit code, stdout + stderr)."""
    settings = e2e.sandbox.app_settings()
    # Its own function app in Azure; here production's runner answers Graph's validation for it, and
    # ignores its notifications (their subscription ids are staging's).
    urls = {
        name: f"{settings[name]}?deployment=staging"
        for name in ("CRMSYNC_NOTIFICATION_URL", "CRMSYNC_LIFECYCLE_URL")
    }
    env = {**settings, **STAGING, **urls}
    result = CliRunner().invoke(crmsync, list(args), env=env)
    return result.exit_code, result.stdout + result.stderr + repr(result.exception)


def _status(e2e: E2E, mailbox: Mailbox) -> dict[str, Any]:
    code, out = e2e.cli("status", mailbox.id, "--json")
    assert code == 0, out
    (status,) = json.loads(out)
    return dict(status)


def test_a_mailbox_syncs_with_one_deployment_and_a_take_over_stops_the_other(production: E2E) -> None:
    e2e = production
    mailbox = e2e.new_mailbox()
    user = e2e.new_crm_user(mailbox)
    e2e.onboard(mailbox, user)

    code, out = _staging(e2e, "mailbox", "add", mailbox.id, "--crm-user", user.systemuserid)
    assert code == 1, out
    message = " ".join(out.split())
    assert "synchronized by another crmsync deployment 'devstoreaccount1/crmsync'" in message
    assert "--take-over" in message
    code, out = _staging(e2e, "status", "--json")
    assert mailbox.id not in out  # the refusal registered nothing

    code, out = _staging(
        e2e, "mailbox", "add", mailbox.id, "--crm-user", user.systemuserid, "--take-over", "--json"
    )
    assert code == 0, out
    # Production's next run reads the claim, writes nothing and switches the mailbox off.
    name = f"t-{uuid.uuid4().hex[:8]}"
    e2e.seed(mailbox, contacts=[{"givenName": "Taken", "surname": name}])
    stopped = wait_for(
        lambda: (s := _status(e2e, mailbox))["state"] == "disabled" and s, "production to stop syncing"
    )
    assert not stopped["enabled"]
    assert any(r["last_error"] == "synchronized_by_another_deployment" for r in stopped["resources"])
    assert e2e.crm("contacts", f"lastname eq '{name}'", "contactid") == []

    # Removing it in production keeps staging's claim; staging syncs on.
    code, out = e2e.cli("mailbox", "remove", mailbox.id)
    assert code == 0, out
    code, out = e2e.cli("mailbox", "add", mailbox.id, "--crm-user", user.systemuserid)
    assert code == 1
    code, out = _staging(e2e, "mailbox", "remove", mailbox.id)
    assert code == 0, out
    e2e.onboard(mailbox, user)  # released: production may have it again
    wait_for(lambda: e2e.crm("contacts", f"lastname eq '{name}'", "contactid"), "production to sync it")
