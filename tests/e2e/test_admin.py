"""Admin operations end to end against the running sandbox: the CLI (``crmsync mailbox resync|enable|
disable|settings``, ``crmsync audit``) and the admin HTTP API served by the local Functions runner
(onboarding enqueued on the admin queue and run by the runner's admin worker)."""

from __future__ import annotations

import getpass
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from azure.storage.queue import QueueClient

from tests.e2e.conftest import E2E, wait_for


def _status(e2e: E2E, mailbox: str) -> dict[str, Any]:
    code, out = e2e.cli("status", mailbox, "--json")
    assert code == 0, out
    (status,) = json.loads(out)
    return dict(status)


def _queue_empty(e2e: E2E) -> bool:
    """No job waits or runs: the runner deletes a message once its handler returned."""
    settings = e2e.sandbox.app_settings()
    with QueueClient.from_connection_string(
        settings["AzureWebJobsStorage"], settings["CRMSYNC_JOB_QUEUE"]
    ) as queue:
        return queue.get_queue_properties().approximate_message_count == 0


def _resynced(e2e: E2E, mailbox: str) -> dict[str, Any] | None:
    status = _status(e2e, mailbox)
    done = status["backlog"] == 0 and all(r["baselined"] for r in status["resources"])
    return status if done else None


def _audit(e2e: E2E, mailbox: str, *args: str) -> list[dict[str, Any]]:
    code, out = e2e.cli("audit", mailbox, "--json", *args)
    assert code == 0, out
    return list(json.loads(out))


def test_cli_disable_enable_settings_resync_and_audit(e2e: E2E, tmp_path: Path) -> None:
    mailbox = e2e.new_mailbox()
    report = e2e.onboard(mailbox)
    upn = report["upn"]
    contacts = next(r for r in report["subscriptions"] if r["resource"].endswith("/contacts"))["resource"]
    actor = f"cli:{getpass.getuser().lower()}"

    code, out = e2e.cli("mailbox", "disable", upn.upper(), "--json")
    assert code == 0, out
    assert json.loads(out)["enabled"] is False
    name = f"while-off-{uuid.uuid4().hex[:8]}"
    seeded = e2e.seed(mailbox, contacts=[{"surname": name}])

    # The change is notified and its resource marked dirty, but a disabled mailbox's run stops
    # before reading: nothing reaches the CRM and the mark stays for the catch-up.
    wait_for(
        lambda: any(r["dirty"] for r in _status(e2e, upn)["resources"] if r["resource"] == contacts) or None,
        "the notification to mark the contacts dirty",
    )
    wait_for(lambda: _queue_empty(e2e) or None, "the worker to take the job")
    assert any(r["dirty"] for r in _status(e2e, upn)["resources"] if r["resource"] == contacts)
    assert e2e.crm("contacts", f"lastname eq '{name}'", "contactid") == []

    code, out = e2e.cli("mailbox", "enable", mailbox.id)
    assert code == 0, out
    (row,) = wait_for(lambda: e2e.crm("contacts", f"lastname eq '{name}'", "contactid"), "the catch-up")

    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps({"conflict_tie_break": "outlook"}))
    assert e2e.cli("mailbox", "settings", upn, str(settings_file))[0] == 0
    settings_file.write_text(json.dumps({"item_kinds": ["contact"]}))
    code, _ = e2e.cli("mailbox", "settings", upn, str(settings_file))
    assert code == 1  # a change of the subscriptions is refused, naming remove + add
    settings_file.write_text(json.dumps({"tracking": "sometimes"}))
    assert e2e.cli("mailbox", "settings", upn, str(settings_file))[0] == 2

    code, out = e2e.cli("mailbox", "resync", upn, "--json")
    assert code == 0, out
    assert json.loads(out)["enqueued"] == len(report["subscriptions"])
    wait_for(lambda: _resynced(e2e, upn), "the resync to finish")
    assert len(e2e.crm("contacts", f"lastname eq '{name}'", "contactid")) == 1  # not duplicated

    mine = [(r["action"], r["actor"]) for r in _audit(e2e, upn) if r["actor"] == actor]
    assert mine[:4] == [
        ("resync", actor),
        ("settings_changed", actor),
        ("enabled", actor),
        ("disabled", actor),
    ]
    assert ("registered", actor) in mine
    (outlook_id,) = seeded["contacts"]
    about_item = _audit(e2e, upn, "--item", outlook_id)
    assert about_item
    assert {r["outlook_id_hash"] for r in about_item} == {hashlib.sha256(outlook_id.encode()).hexdigest()}
    about_record = _audit(e2e, upn, "--item", row["contactid"])  # the CRM id finds its entries too
    assert about_record
    assert {r["crm_id_hash"] for r in about_record} == {hashlib.sha256(row["contactid"].encode()).hexdigest()}
    assert _audit(e2e, upn, "--since", "2999-01-01") == []
    code, out = e2e.cli("audit", upn)
    assert code == 0
    assert outlook_id not in out
    # A message no rule tracked has no tracking entry; the answer says so and names the rules.
    code, out = e2e.cli("audit", upn, "--item", "AAMkAGI2-never-tracked")
    assert code == 0, out
    assert "no tracking decision is recorded for this item" in " ".join(out.split())
    assert "the category 'Tracked to Dynamics 365'" in " ".join(out.split())


def test_http_onboarding_is_enqueued_and_polled_until_the_worker_finished(e2e: E2E) -> None:
    mailbox = e2e.new_mailbox(contacts=[{"givenName": "Ada", "surname": f"Http-{uuid.uuid4().hex[:6]}"}])
    user = e2e.new_crm_user(mailbox)
    api = f"{e2e.sandbox.functions_url}/api"
    headers = {"x-functions-key": e2e.sandbox.function_key}

    response = e2e.http.post(
        f"{api}/admin/mailboxes", json={"mailbox": mailbox.id, "crmUser": user.systemuserid}, headers=headers
    )

    assert response.status_code == 202, response.text
    location = response.headers["Location"]
    assert location == response.json()["status_url"]

    def finished() -> dict[str, Any] | None:
        polled = e2e.http.get(f"{e2e.sandbox.functions_url}{location}", headers=headers)
        assert polled.status_code == 200
        body: dict[str, Any] = polled.json()
        return body if body["status"] in ("succeeded", "failed") else None

    operation = wait_for(finished, "the admin worker to onboard the mailbox")
    assert operation["status"] == "succeeded", operation
    assert operation["mailbox_id"] == mailbox.id
    assert operation["items_synced"] == 1
    upn = e2e.graph_control("GET", f"users/{mailbox.id}")["userPrincipalName"]
    status = e2e.http.get(f"{api}/admin/status", params={"mailbox": upn}, headers=headers)
    assert status.status_code == 200
    assert status.json()[0]["links"]["contact"] == 1

    resync = e2e.http.post(f"{api}/admin/mailboxes/{upn}/resync", headers=headers)
    assert resync.status_code == 202
    assert resync.json()["enqueued"] == 4
    removed = e2e.http.delete(f"{api}/admin/mailboxes/{upn}", headers=headers)
    assert removed.status_code == 200
    assert removed.json()["subscriptions_deleted"] == 4
    # The trail outlives the registration: read by the removed mailbox's id.
    trail = e2e.http.get(f"{api}/admin/mailboxes/{mailbox.id}/audit", headers=headers)
    assert trail.status_code == 200
    actions = [r["action"] for r in trail.json()]
    assert actions[0] == "unregistered"
    assert "registered" in actions
    assert "resync" in actions
    admin_actions = {"registered", "subscribed", "resync", "unsubscribed", "unregistered"}
    assert {r["actor"] for r in trail.json() if r["action"] in admin_actions} == {"function-key"}
    assert _audit(e2e, mailbox.id) == trail.json()  # the CLI reads the same trail
