"""Nothing personal leaves through telemetry: a seeded tenant, real traffic, every exported byte checked.

The tenant holds known personal values (UPN, addresses, display names, subjects, body text) and
ids (the mailbox's, items', CRM records'). tests/telemetry/scenario.py runs real msgraph-sdk and
DataverseClient calls against the simulators, and registers the mailbox in Table Storage (Azurite,
traced by the Azure SDK; its keys and rows name the mailbox and its UPN), under production's
telemetry pipeline with in-memory exporters, including the failures whose texts quote an address
(an unknown UPN, a Dataverse error message, the SDK's own unwrapped error logged with its
traceback) and a 429 on each side. Every span, event, link, status, log body and attribute,
metric data point and resource it exported must be free of each value, plain or URL-encoded. The
same traffic without crmsync's processors (the control) must leak them, or the test would prove
nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from shared.domain.redact import address_fingerprint
from shared.store.fingerprint import short_fingerprint
from simulators.dataverse.launcher import DataverseSimulator
from tests.fixtures.graph_sim import GraphSim

ROOT = Path(__file__).resolve().parents[2]


def seed_tenant(
    graph_sim: GraphSim, dataverse_sim: DataverseSimulator, token: str, storage: str, table_prefix: str
) -> tuple[dict[str, Any], list[str]]:
    """Seed both sides; return the scenario's input and every value that must never be exported."""
    tag = uuid.uuid4().hex[:8]
    upn = f"Aurelia.Quintana.{tag}@contoso-{tag}.example"
    display = f"Aurelia Quintana {tag}"
    sender = f"Bartholomew.Ngata.{tag}@fabrikam-{tag}.example"
    contact_mail = f"Cressida.Okonkwo.{tag}@northwind-{tag}.example"
    subject = f"Confidential merger Zephyrine {tag}"
    body = f"Please wire the Oleander retainer {tag} before Friday"
    mailbox_id = graph_sim.add_user(upn=upn, display_name=display, mail=upn)
    seeded = graph_sim.seed(
        mailbox_id,
        messages={
            "inbox": [
                {
                    "subject": subject,
                    "body": {"contentType": "text", "content": body},
                    "from": {"emailAddress": {"address": sender, "name": f"Bartholomew Ngata {tag}"}},
                    "toRecipients": [{"emailAddress": {"address": upn, "name": display}}],
                }
                for _ in range(3)
            ]
        },
        contacts=[
            {
                "givenName": f"Cressida{tag}",
                "surname": f"Okonkwo{tag}",
                "emailAddresses": [{"address": contact_mail, "name": f"Cressida Okonkwo {tag}"}],
            }
        ],
    )
    role = f"role-{tag}"
    readable = ("contact", "account", "lead", "systemuser")
    dataverse_sim.add_role(role, tables={table: {"read": "organization"} for table in readable})
    crm_mail = f"Desmond.Achterberg.{tag}@contoso-{tag}.example"
    crm_user = dataverse_sim.add_user(
        internalemailaddress=crm_mail, fullname=f"Desmond Achterberg {tag}", roles=[role]
    )
    crm_contact = f"Evangelina.Moreau.{tag}@adatum-{tag}.example"
    contact_ids = dataverse_sim.seed(
        "contact",
        [
            {"firstname": f"Evangelina{tag}", "lastname": f"Moreau{tag}", "emailaddress1": crm_contact},
            {"firstname": f"Florentin{tag}", "lastname": f"Vasquez{tag}", "description": body},
        ],
    )
    fault_contact = str(uuid.uuid4())
    fault_mail = f"Gwendolyn.Farrow.{tag}@litware-{tag}.example"
    ghost = f"Horatio.Nobody.{tag}@contoso-{tag}.example"
    # A 429 on each side (retried), and a Dataverse error whose text quotes an address.
    graph_sim.fault("throttle", user=mailbox_id, count=1, retry_after=1, path_contains="contacts")
    dataverse_sim.fault("throttle", token=token, count=1, retry_after=1, path_contains=contact_ids[1])
    dataverse_sim.fault(
        "status",
        token=token,
        count=1,
        status=400,
        code="0x80040237",
        message=f"A record with matching key values already exists: emailaddress1 = {fault_mail}.",
        path_contains=fault_contact,
    )
    tenant = {
        "graph_url": graph_sim.base_url,
        "storage": storage,
        "table_prefix": table_prefix,
        "dataverse_url": dataverse_sim.api_url,
        "dataverse_token": token,
        "upn": upn,
        "mailbox_id": mailbox_id,
        "ghost_upn": ghost,
        "caller_object_id": crm_user["azureactivedirectoryobjectid"],
        "crm_contact_ids": contact_ids,
        "crm_contact_address": crm_contact,
        "fault_contact_id": fault_contact,
        "crm_user_id": crm_user["systemuserid"],
        "item_ids": [*seeded["messages"]["inbox"], *seeded["contacts"]],
    }
    item_ids = [*seeded["messages"]["inbox"], *seeded["contacts"]]
    personal = [
        upn,
        display,
        sender,
        contact_mail,
        subject,
        body,
        crm_mail,
        crm_contact,
        fault_mail,
        ghost,
        mailbox_id,
        *item_ids,
        *contact_ids,
        fault_contact,
        crm_user["azureactivedirectoryobjectid"],
        crm_user["systemuserid"],
        f"Quintana.{tag}",
        f"Ngata.{tag}",
        f"Okonkwo.{tag}",
        f"Moreau.{tag}",
        f"Farrow.{tag}",
        f"Nobody.{tag}",
    ]
    return tenant, personal


def _run(mode: str, tenant: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 - our own module, no shell
        [sys.executable, "-m", "tests.telemetry.scenario", mode],
        input=json.dumps(tenant),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    exported: dict[str, Any] = json.loads(done.stdout)
    return exported


def leaks(exported: dict[str, Any], personal: list[str]) -> list[str]:
    text = json.dumps(exported).lower()
    forms = {form.lower() for value in personal for form in (value, quote(value, safe=""), quote(value))}
    return sorted(form for form in forms if form in text)


@pytest.fixture
def seeded(
    graph_sim: GraphSim,
    dataverse_sim: DataverseSimulator,
    dataverse_token: str,
    storage_connection_string: str,
    table_prefix: str,
) -> tuple[dict[str, Any], list[str]]:
    return seed_tenant(graph_sim, dataverse_sim, dataverse_token, storage_connection_string, table_prefix)


def _spans(exported: dict[str, Any]) -> list[dict[str, Any]]:
    return list(exported["spans"])


def _metric_points(exported: dict[str, Any], name: str) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for resource_metrics in exported["metrics"]["resource_metrics"]:
        for scope in resource_metrics["scope_metrics"]:
            for metric in scope["metrics"]:
                if metric["name"] == name:
                    points.extend(metric["data"]["data_points"])
    return points


def test_production_pipeline_exports_no_personal_value(seeded: tuple[dict[str, Any], list[str]]) -> None:
    tenant, personal = seeded

    exported = _run("redacted", tenant)

    assert leaks(exported, personal) == []
    spans = _spans(exported)
    # The HTTP spans are there, redacted rather than dropped: an operator still sees which API.
    urls = [
        value
        for span in spans
        for key, value in span["attributes"].items()
        if key in ("url.full", "http.url") and "/users/" in value
    ]
    assert any(url.endswith("/v1.0/users/{id}") for url in urls), urls
    storage = [
        span["attributes"]["url.full"]
        for span in spans
        if "azsdk-python-data-tables" in span["attributes"].get("user_agent.original", "")
    ]
    assert storage, "the Azure SDK's table spans are exported"
    assert all("?" not in url and "PartitionKey" not in url for url in storage), storage
    assert all("?" not in url for url in urls)
    # The notification's trace continues in the run, and the CRM writes are inside it.
    by_name = {span["name"]: span for span in spans if span["name"].startswith("crmsync.")}
    notification, run = by_name["crmsync.notification"], by_name["crmsync.sync_run"]
    assert run["context"]["trace_id"] == notification["context"]["trace_id"]
    assert run["parent_id"] == notification["context"]["span_id"]
    dataverse = [span for span in spans if "/api/data/" in span["attributes"].get("http.url", "")]
    assert dataverse
    assert all(span["context"]["trace_id"] == run["context"]["trace_id"] for span in dataverse)
    assert run["attributes"]["crmsync.mailbox"] == short_fingerprint(tenant["mailbox_id"])
    # The logged failures are exported, with the fingerprint where the address was.
    bodies = " ".join(str(record["body"]) for record in exported["logs"])
    assert address_fingerprint(tenant["ghost_upn"]) in bodies
    # Metrics: throttling on both sides, latency, parked.
    throttled = {
        point["attributes"]["crmsync.service"]: point["value"]
        for point in _metric_points(exported, "crmsync.throttled")
    }
    assert throttled.get("graph", 0) >= 1
    assert throttled.get("dataverse", 0) >= 1
    assert _metric_points(exported, "crmsync.change_to_crm.latency")[0]["count"] == len(
        tenant["crm_contact_ids"]
    )
    assert (
        _metric_points(exported, "crmsync.items.parked")[0]["attributes"]["crmsync.reason"]
        == "duplicaterecord"
    )


def test_control_without_the_processors_leaks(seeded: tuple[dict[str, Any], list[str]]) -> None:
    """The same traffic without crmsync's processors exports the UPN and ids: the check above can fail."""
    tenant, personal = seeded

    leaked = leaks(_run("raw", tenant), personal)

    assert tenant["upn"].lower() in leaked or quote(tenant["upn"], safe="").lower() in leaked
    assert tenant["ghost_upn"].lower() in leaked
    assert tenant["mailbox_id"].lower() in leaked
