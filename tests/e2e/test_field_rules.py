"""Field directions and column security through the sandbox: a field the organization sets to "to
Dynamics" (syncattributemapping, read by the worker as the application) does not flow back to
Outlook; a secured column the user may neither read nor write is not blanked in Outlook and not
written, the rest of the record syncs, and the audit says why (never values)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import E2E, CrmUser, Mailbox, item_path, wait_for
from tests.e2e.test_crm_to_outlook import PARTY_ROLE, as_user, connected, find

__all__ = ["connected"]  # the module fixture: the webhook registered, the change baseline taken


def _app(e2e: E2E, method: str, path: str, body: Any = None) -> Any:
    """An administrator's change in Dynamics' settings (Web API, as the application user)."""
    response = e2e.http.request(
        method,
        f"{e2e.sandbox.dataverse_api_url}/{path}",
        json=body,
        headers={"Authorization": f"Bearer {e2e.crm_token}"},
    )
    assert response.status_code < 300, (method, path, response.status_code, response.text[:300])
    return response.json() if response.content else None


def _user(e2e: E2E, mailbox: Mailbox, profiles: list[str] = []) -> CrmUser:  # noqa: B006
    row = e2e.dataverse_control(
        "POST",
        "users",
        {
            "systemuserid": str(uuid.uuid4()),
            "azureactivedirectoryobjectid": mailbox.id,
            "internalemailaddress": f"e2e-{mailbox.id[:8]}@contoso.example",
            "fullname": "E2E field rules",
            "roles": [e2e.role, PARTY_ROLE, "Salesperson"],
            "fieldsecurityprofiles": profiles,
        },
    )
    return CrmUser(row["systemuserid"], row["azureactivedirectoryobjectid"])


@pytest.fixture
def job_title_to_dynamics(connected: E2E) -> Iterator[E2E]:
    """The organization sets Job Title to "to Dynamics" (2); a fresh worker reads it (no stale cache)."""
    (row,) = _app(
        connected,
        "GET",
        "syncattributemappings?$select=syncattributemappingid"
        "&$filter=attributecrmname eq 'jobtitle'",  # only contacts have it
    )["value"]
    path = f"syncattributemappings({row['syncattributemappingid']})"
    _app(connected, "PATCH", path, {"syncdirection": 2})
    connected.restart_runner()
    try:
        yield connected
    finally:
        _app(connected, "PATCH", path, {"syncdirection": 3})
        connected.restart_runner()


def test_a_field_set_to_dynamics_does_not_flow_back_to_outlook(job_title_to_dynamics: E2E) -> None:
    e2e = job_title_to_dynamics
    mailbox = e2e.new_mailbox()
    user = _user(e2e, mailbox)
    e2e.onboard(mailbox, user)
    name = f"dir-{uuid.uuid4().hex[:8]}"
    contact = as_user(
        e2e, user, "POST", "contacts", {"lastname": name, "firstname": "Ada", "jobtitle": "CRM title"}
    )
    (created,) = wait_for(lambda: find(e2e, mailbox, "contacts", "surname", name), "the contact in Outlook")
    assert not created.get("jobTitle")  # to Dynamics only: the CRM value never reaches Outlook
    as_user(
        e2e, user, "PATCH", f"contacts({contact['contactid']})", {"jobtitle": "Later", "firstname": "Grace"}
    )
    (updated,) = wait_for(
        lambda: [c for c in find(e2e, mailbox, "contacts", "surname", name) if c["givenName"] == "Grace"],
        "the first name in Outlook",
    )
    assert not updated.get("jobTitle")
    e2e.outlook("PATCH", mailbox, item_path("contacts", created["id"]), {"jobTitle": "Outlook title"})
    wait_for(
        lambda: e2e.crm("contacts", f"lastname eq '{name}' and jobtitle eq 'Outlook title'", "contactid"),
        "the Outlook job title in Dynamics",
    )


def test_a_secured_column_is_neither_blanked_in_outlook_nor_written(connected: E2E) -> None:
    e2e = connected
    profile = f"e2e-secured-{uuid.uuid4().hex[:6]}"
    # Department becomes secured; this profile grants its users nothing on it (no read, update, create).
    e2e.dataverse_control(
        "POST",
        "fieldsecurityprofiles",
        {"name": profile, "permissions": [{"table": "contact", "column": "department"}]},
    )
    e2e.restart_runner()  # a worker that cached the column security before the column was secured
    mailbox = e2e.new_mailbox()
    user = _user(e2e, mailbox, [profile])
    e2e.onboard(mailbox, user)
    name = f"sec-{uuid.uuid4().hex[:8]}"
    created = e2e.outlook(
        "POST", mailbox, "contacts", {"surname": name, "givenName": "Ada", "department": "Research"}
    )
    (row,) = wait_for(
        lambda: e2e.crm("contacts", f"lastname eq '{name}'", "contactid,firstname,department"),
        "the contact in Dynamics",
    )
    assert (row["firstname"], row["department"]) == ("Ada", None)  # the rest synced; department not written
    as_user(e2e, user, "PATCH", f"contacts({row['contactid']})", {"firstname": "Grace"})
    wait_for(
        lambda: (
            e2e.outlook("GET", mailbox, item_path("contacts", created["id"]))["givenName"] == "Grace" or None
        ),
        "the CRM change in Outlook",
    )
    assert (
        e2e.outlook("GET", mailbox, item_path("contacts", created["id"]))["department"] == "Research"
    )  # not blanked
    code, out = e2e.cli("audit", mailbox.id, "--item", row["contactid"], "--json")
    assert code == 0, out
    reasons = {r["reason_code"] for r in json.loads(out) if r["action"] == "field_skipped"}
    assert reasons >= {"secured-field-skipped.department", "secured-field-unreadable.department"}
    assert "Research" not in out


def test_a_mailbox_setting_for_a_fixed_field_is_refused_naming_it(e2e: E2E, tmp_path: Path) -> None:
    mailbox = e2e.new_mailbox()
    user = e2e.new_crm_user(mailbox)
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"field_directions": {"contact": {"firstname": "to_crm"}}}))
    code, out = e2e.cli(
        "mailbox", "add", mailbox.id, "--crm-user", user.systemuserid, "--settings", str(fixed)
    )
    assert code == 1
    assert "contact.firstname has a fixed direction" in out
    e2e.onboard(mailbox, user)
    code, out = e2e.cli("mailbox", "settings", mailbox.id, str(fixed))
    assert code == 1
    assert "contact.firstname has a fixed direction" in out
    settable = tmp_path / "settable.json"
    settable.write_text(json.dumps({"field_directions": {"contact": {"jobtitle": "to_crm"}}}))
    assert e2e.cli("mailbox", "settings", mailbox.id, str(settable))[0] == 0
