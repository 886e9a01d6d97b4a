"""``crmsync mailbox add|list|remove`` and ``crmsync status`` against the running sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.conftest import E2E, TRACKED, wait_for, when


def test_onboarding_reports_the_baseline_and_status_shows_it(e2e: E2E) -> None:
    mailbox = e2e.new_mailbox(
        contacts=[{"givenName": "Grace", "surname": "Hopper"}],
        events=[{"subject": "Kick-off", "start": when(2, 9), "end": when(2, 10)}],
        messages={
            "inbox": [{"subject": "Offer", "categories": [TRACKED], "internetMessageId": "<cli-1@x.example>"}]
        },
    )
    user = e2e.new_crm_user(mailbox)

    report = e2e.onboard(mailbox, user)

    assert report["mailbox_id"] == mailbox.id
    assert report["crm_user_id"] == user.systemuserid
    assert len(report["subscriptions"]) == 4  # mail, contacts, events, tasks
    assert report["items_synced"] == 3
    assert report["parked"] == 0

    def drained() -> dict[str, Any] | None:
        # Onboarding stamps the CRM id on each Outlook item; the runner syncs those echoes.
        code, out = e2e.cli("status", mailbox.id, "--json")
        assert code == 0, out
        (status,) = json.loads(out)
        return status if status["backlog"] == 0 else None

    status = wait_for(drained, "the notification backlog to drain")
    assert status["state"] == "active"
    assert status["last_sync_at"] is not None
    assert {r["resource"] for r in status["resources"]} == {s["resource"] for s in status["subscriptions"]}
    assert all(r["baselined"] for r in status["resources"])
    assert status["links"] == {"email": 1, "contact": 1, "appointment": 1, "task": 0}
    code, out = e2e.cli("mailbox", "list", "--json")
    assert code == 0
    assert mailbox.id in {m["mailbox_id"] for m in json.loads(out)}

    code, out = e2e.cli("mailbox", "remove", report["upn"], "--json")

    assert code == 0, out
    assert json.loads(out)["subscriptions_deleted"] == 4
    assert e2e.graph_control("GET", f"subscriptions?user={mailbox.id}") == []
    assert e2e.cli("status", mailbox.id)[0] == 1


def test_a_mailbox_is_never_synced_as_another_persons_crm_user(e2e: E2E) -> None:
    """Alice's mailbox under Bob's CRM user is refused (exit 1), whether or not Bob is onboarded:
    the CRM user's Entra object id must be the mailbox owner's, so one CRM user has one mailbox."""
    first = e2e.new_mailbox()
    user = e2e.new_crm_user(first)
    second = e2e.new_mailbox()

    code, out = e2e.cli("mailbox", "add", second.id, "--crm-user", user.systemuserid)
    assert code == 1
    assert "not the mailbox owner's" in " ".join(out.split())  # the console wraps long lines

    e2e.onboard(first, user)
    code, out = e2e.cli("mailbox", "add", second.id, "--crm-user", user.systemuserid)
    assert code == 1
    assert "not the mailbox owner's" in " ".join(out.split())  # the console wraps long lines
    assert e2e.graph_control("GET", f"subscriptions?user={second.id}") == []


def test_a_crm_user_without_create_privileges_is_refused(e2e: E2E) -> None:
    role = f"readonly-{e2e.role}"
    e2e.dataverse_control("POST", "roles", {"name": role, "tables": {"contact": {"read": "organization"}}})
    mailbox = e2e.new_mailbox()
    row = e2e.dataverse_control(
        "POST",
        "users",
        {"fullname": "No rights", "roles": [role], "azureactivedirectoryobjectid": mailbox.id},
    )

    code, out = e2e.cli("mailbox", "add", mailbox.id, "--crm-user", row["systemuserid"])

    assert code == 1
    assert "cannot create" in out
    assert mailbox.id not in {m["mailbox_id"] for m in json.loads(e2e.cli("mailbox", "list", "--json")[1])}


def test_bad_input_and_bad_settings_exit_2(e2e: E2E) -> None:
    mailbox = e2e.new_mailbox()
    assert e2e.cli("mailbox", "add", mailbox.id, "--crm-user", "not-a-guid")[0] == 2
    code, out = e2e.cli(
        "mailbox", "add", "nobody@contoso.example", "--crm-user", e2e.new_crm_user().systemuserid
    )
    assert code == 1
    assert "no Exchange Online mailbox" in out
    code, out = e2e.cli("mailbox", "list", CRMSYNC_DATAVERSE_URL=None)
    assert code == 2
    assert "CRMSYNC_DATAVERSE_URL" in out


def test_mailbox_settings_file_is_validated_and_applied(e2e: E2E, tmp_path: Path) -> None:
    mailbox = e2e.new_mailbox()
    user = e2e.new_crm_user(mailbox)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tracking": "sometimes"}))
    code, out = e2e.cli("mailbox", "add", mailbox.id, "--crm-user", user.systemuserid, "--settings", str(bad))
    assert code == 2
    assert "tracking" in out
    good = tmp_path / "contacts-only.json"
    good.write_text(json.dumps({"item_kinds": ["contact"]}))
    code, out = e2e.cli(
        "mailbox", "add", mailbox.id, "--crm-user", user.systemuserid, "--settings", str(good), "--json"
    )
    assert code == 0, out
    report = json.loads(out[out.index("{") :])
    assert [s["resource"] for s in report["subscriptions"]] == [f"users/{mailbox.id}/contacts"]
