"""Chaos: random changes on both sides of three mailboxes while faults are injected, then quiet, then
both sides compared item by item.

    python -m bench.chaos --seed 1 --ops 1000 [--fault-every 8] [--quiet-seconds 300]

Outlook changes (contacts, events, To Do tasks, tracked mail) go through the Graph simulator as the
user makes them; CRM changes (contacts, appointments, tasks) through the Dataverse Web API as the CRM
user. Between them the driver injects the faults the simulators and the sandbox offer: Graph 429,
503, slow answers and lost answers (the request committed, its answer a 503, as a gateway timeout);
Dataverse outages, 429 and answers held back after the commit; notifications dropped, duplicated,
reordered and replayed; Graph delta tokens and Dataverse change-tracking tokens expired; the
Functions runner SIGKILLed (mid-page, whatever it was doing); a Dataverse answer slower than the
lease; a subscription removed by Graph (its lifecycle notification); Azurite frozen and thawed.
The same seed gives the same operations and faults (the timing of the runner's work, not the driver,
differs between runs).

After the last operation the faults are cleared and the driver waits for quiet: it runs the timers
(the CRM change-tracking read and the delta sweep, as their schedules would) until both sides match
the driver's model and no mailbox has a backlog nor CRM -> Outlook work queued, or
``--quiet-seconds`` pass. Then it prints the operations, the faults per kind, the messages left on
the CRM work and poison queues, and the items lost (missing on a side), duplicated (more than once
on a side, or unknown) and diverged (a side holds another value, or an item deleted on its side is
still there), and crmsync's Dataverse requests (its token's entries in the simulator's log, counted
every 100 operations), which meet the service protection limit. Contacts are changed, not deleted
(by Dynamics' rules a delete leaves the other side's copy untracked: nothing to compare);
appointments and tasks are deleted on both sides.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from bench import chaos_dump
from bench._common import ENTITY_SETS, FULL_ACCESS, OBSERVER_TOKEN, TRACKED, print_results
from simulators.azurite import ROOT
from simulators.sandbox import CONNECTOR_TOKEN, SANDBOX_TENANT, Sandbox

MAILBOXES = 3
LEASE_SECONDS = 15  # the shortest the settings allow: a killed run's mailbox is free again soon
# The host's documented override of host.json's visibilityTimeout, so a failed job is retried in
# a second, and Graph's notification retries shortened as in tests/e2e (a test cannot wait minutes).
APP_SETTINGS = {
    "CRMSYNC_LEASE_SECONDS": str(LEASE_SECONDS),
    "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01",
    # Random deletes would trip the mass-delete brake, which waits for an administrator by design
    # (tested on its own in tests/e2e/test_failures.py); chaos measures what is lost, not the brake.
    "CRMSYNC_MASS_DELETE_RATIO": "1",
    # The timers run when the driver says (as their schedules would: the CRM read every
    # CRM_READ_EVERY operations, the sweep in the quiet), so a run's outcome does not depend on
    # whether a quarter hour struck during it; the first sweep is then each mailbox's safety read.
    **dict.fromkeys(
        (
            "CRMSYNC_RENEW_SCHEDULE",
            "CRMSYNC_SWEEP_SCHEDULE",
            "CRMSYNC_PARKED_RETRY_SCHEDULE",
            "CRMSYNC_CRM_CHANGES_SCHEDULE",
        ),
        "0 0 0 1 1 *",
    ),
}
CRM_READ_EVERY = 50
REQUESTS_EVERY = 100
NOTIFICATION_TIMINGS = {
    "notification_timeout_seconds": 5.0,
    "retry_initial_seconds": 0.3,
    "retry_max_seconds": 2.0,
    "retry_max_attempts": 12,
}
ROLE = "chaos"
PARTY_ROLE = "chaos-parties"
KINDS = ("contact", "event", "task", "mail")
CRM_TABLE = {"contact": "contact", "event": "appointment", "task": "task", "mail": "email"}
FAULTS = (
    "graph_429",
    "graph_503",
    "graph_slow",
    "graph_lost_answer",
    "dataverse_outage",
    "dataverse_429",
    "dataverse_hang_after_commit",
    "notifications_dropped",
    "notifications_duplicated",
    "notifications_reordered",
    "notification_replayed",
    "delta_tokens_expired",
    "change_tokens_expired",
    "subscription_removed",
    "worker_killed",
    "lease_expired",
    "azurite_frozen",
)
# Faults that stop or restart a process cost seconds each: rarer than the rest.
SLOW_FAULTS = {"worker_killed": 0.25, "lease_expired": 0.1, "azurite_frozen": 0.25}


@dataclass
class Item:
    """One item the driver made: edited only on the side it was made on, so the expected value on
    both sides is its last version."""

    key: str
    kind: str
    side: str  # "outlook" or "crm": where it was made and is changed
    mailbox: int
    native_id: str
    version: int = 1
    in_outlook: bool = True
    in_crm: bool = True

    def text(self) -> str:
        return f"{self.key} v{self.version}"


@dataclass
class Box:
    mailbox_id: str
    systemuserid: str
    todo_list: str
    crm_token: str = ""  # the CRM user's own token: a person's edits in Dynamics, not an application's


@dataclass
class Report:
    operations: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    waiting: int = 0  # jobs waiting plus mailboxes not active at the end (-1: not asked, sides differ)
    notes: list[str] = field(default_factory=list)  # crmsync status of each mailbox, when not clean
    queued: dict[str, int] = field(default_factory=dict)  # messages left on each queue at the end
    items: int = 0  # items made (each compared on both sides, tracked mail on the CRM side)
    ops_seconds: float = 0.0
    quiet_seconds: float = 0.0
    dataverse_requests: int = 0  # crmsync's from set-up to the end, a $batch once, as the limits count
    dataverse_throttled: int = 0  # of those, answered 429 (injected faults included)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.diverged)


def _when(day: int, hour: int) -> str:
    start = dt.datetime.now(dt.UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return (start + dt.timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%S")


class Chaos:
    """The sandbox driven as three users on both sides, a fault injector and an observer."""

    def __init__(self, sandbox: Sandbox, seed: int) -> None:
        self.sandbox = sandbox
        self.rng = random.Random(seed)  # a reproducible sequence, not a secret
        self.http = httpx.Client(timeout=60, trust_env=False)
        self.graph_control = f"http://127.0.0.1:{sandbox.graph_port}/_sim"
        self.dataverse_control = f"{sandbox.dataverse_url}/_sim"
        self.boxes: list[Box] = []
        self.items: list[Item] = []
        self.report = Report()
        self.next_key = 0
        self.dump: Path | None = None  # --dump: the post-mortem files' folder

    # -- raw HTTP ------------------------------------------------------------------------------

    def control(self, method: str, url: str, body: Any = None) -> Any:
        response = self.http.request(method, url, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def cli(self, *args: str) -> str:
        """``crmsync <args>`` as the administrator runs it, against this sandbox."""
        done = subprocess.run(  # noqa: S603 - our own CLI, no shell
            [sys.executable, "-m", "shared.cli", *args],
            env={**os.environ, **self.sandbox.app_settings()},
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout

    def run_timer(self, name: str) -> None:
        """A timer function now (the host's admin route with the master key), as its schedule would."""
        with contextlib.suppress(httpx.HTTPError):
            self.http.post(
                f"{self.sandbox.functions_url}/admin/functions/{name}",
                json={"input": ""},
                headers={"x-functions-key": self.sandbox.master_key},
            )

    def outlook(self, method: str, box: Box, path: str, body: Any = None) -> httpx.Response:
        """A change or read the mailbox's user makes in Outlook; the mailbox's injected faults hit it
        too, so it retries as Outlook would (callers look a lost create up before posting again)."""
        url = f"{self.sandbox.graph_url}/users/{box.mailbox_id}/{path}"
        return self.http.request(method, url, json=body, headers={"Authorization": "Bearer chaos"})

    def dynamics(self, method: str, box: Box, path: str, body: Any = None) -> httpx.Response:
        """A change the CRM user makes in Dynamics, with the user's own token: no application acts
        on the user's behalf (``modifiedonbehalfby`` stays empty, as for an edit in the browser)."""
        return self.http.request(
            method,
            f"{self.sandbox.dataverse_api_url}/{path}",
            json=body,
            headers={"Authorization": f"Bearer {box.crm_token}", "Prefer": "return=representation"},
        )

    # -- set-up --------------------------------------------------------------------------------

    def set_up(self) -> None:
        self.control(
            "PATCH", f"{self.graph_control}/config", {"tenant_id": SANDBOX_TENANT, **NOTIFICATION_TIMINGS}
        )
        tables: dict[str, Any] = {key: {"read": "organization"} for key in ("systemuser", "account", "lead")}
        tables |= dict.fromkeys(ENTITY_SETS, FULL_ACCESS)
        self.control("POST", f"{self.dataverse_control}/roles", {"name": ROLE, "tables": tables})
        parties = {"systemuser": {"read": "organization", "appendto": "organization"}}
        self.control("POST", f"{self.dataverse_control}/roles", {"name": PARTY_ROLE, "tables": parties})
        self.cli("crm", "connect", "--json")
        self.run_timer("crm_changes")  # the change-tracking baseline
        for n in range(MAILBOXES):
            mailbox_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            upn = f"chaos-{n}@contoso.example"
            user = {"id": mailbox_id, "userPrincipalName": upn, "displayName": f"Chaos {n}"}
            info = self.control("POST", f"{self.graph_control}/users", user)
            crm = self.control(
                "POST",
                f"{self.dataverse_control}/users",
                {
                    "systemuserid": str(uuid.uuid4()),
                    "azureactivedirectoryobjectid": mailbox_id,
                    "internalemailaddress": upn,
                    "fullname": f"Chaos {n}",
                    "roles": [ROLE, PARTY_ROLE, "Salesperson"],
                },
            )
            box = Box(mailbox_id, crm["systemuserid"], info["defaultTodoList"], f"chaos-user-{n}")
            token = {"token": box.crm_token, "systemuserid": box.systemuserid}
            self.control("POST", f"{self.dataverse_control}/tokens", token)
            self.cli("mailbox", "add", mailbox_id, "--crm-user", box.systemuserid, "--json")
            self.boxes.append(box)

    # -- operations ----------------------------------------------------------------------------

    def _tasks(self, box: Box) -> str:
        return f"todo/lists/{quote(box.todo_list, safe='')}/tasks"

    def _outlook_path(self, item: Item) -> str:
        box = self.boxes[item.mailbox]
        collection = {"contact": "contacts", "event": "events", "task": self._tasks(box)}[item.kind]
        return f"{collection}/{quote(item.native_id, safe='')}"

    def _crm_path(self, item: Item) -> str:
        return f"{ENTITY_SETS[CRM_TABLE[item.kind]]}({item.native_id})"

    def _outlook_body(self, item: Item, *, create: bool) -> dict[str, Any]:
        if item.kind == "contact":
            return {"givenName": f"v{item.version}", **({"surname": item.key} if create else {})}
        if item.kind == "task":
            return {"title": item.text()}
        body: dict[str, Any] = {"subject": item.text()}
        if create:
            day, hour = self.rng.randint(1, 20), self.rng.randint(8, 16)
            body |= {
                "start": {"dateTime": _when(day, hour), "timeZone": "UTC"},
                "end": {"dateTime": _when(day, hour + 1), "timeZone": "UTC"},
            }
        return body

    def _crm_body(self, item: Item, box: Box, *, create: bool) -> dict[str, Any]:
        if item.kind == "contact":
            return {"firstname": f"v{item.version}", **({"lastname": item.key} if create else {})}
        body: dict[str, Any] = {"subject": item.text()}
        if create and item.kind == "event":
            day, hour = self.rng.randint(1, 20), self.rng.randint(8, 16)
            body |= {
                "scheduledstart": _when(day, hour) + "Z",
                "scheduledend": _when(day, hour + 1) + "Z",
                "appointment_activity_parties": [
                    {
                        "partyid_systemuser@odata.bind": f"/systemusers({box.systemuserid})",
                        "participationtypemask": 7,
                    }
                ],
            }
        return body

    def _retry(self, send: Any) -> httpx.Response:
        """The user's client retrying its own request through the mailbox's injected faults."""
        for _ in range(30):
            response: httpx.Response = send()
            if response.status_code < 500 and response.status_code != 429:
                return response
            time.sleep(0.2)
        raise RuntimeError(f"the driver's own request kept failing: {response.status_code}")

    def _find_outlook(self, item: Item) -> str | None:
        """After a lost answer: the created item's id, if Graph committed it."""
        box = self.boxes[item.mailbox]
        collection = {"contact": "contacts", "event": "events", "task": self._tasks(box)}[item.kind]
        for found in self.outlook_items(box, collection):
            text = (
                found.get("surname") if item.kind == "contact" else found.get("title", found.get("subject"))
            )
            if text and str(text).split(" ")[0] == item.key:
                return str(found["id"])
        return None

    def create(self, box_index: int, side: str, kind: str) -> None:
        box = self.boxes[box_index]
        self.next_key += 1
        item = Item(f"K{self.next_key:05d}", kind, side, box_index, "")
        if kind == "mail":
            message = {
                "subject": item.text(),
                "categories": [TRACKED],
                "internetMessageId": f"<{item.key}@x.example>",
            }
            seeded = self.control(
                "POST",
                f"{self.graph_control}/users/{box.mailbox_id}/seed",
                {"messages": {"inbox": [message]}},
            )
            item.native_id = seeded["messages"]["inbox"][0]
        elif side == "outlook":
            collection = {"contact": "contacts", "event": "events", "task": self._tasks(box)}[kind]
            body = self._outlook_body(item, create=True)
            for _ in range(30):
                response = self.outlook("POST", box, collection, body)
                if response.status_code < 300:
                    item.native_id = str(response.json()["id"])
                    break
                found = self._find_outlook(item) if response.status_code >= 500 else None
                if found:
                    item.native_id = found
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"the driver could not create an Outlook {kind}")
        else:
            # The driver's token is not the connector's: the Dataverse faults never answer it.
            body = self._crm_body(item, box, create=True)
            response = self.dynamics("POST", box, ENTITY_SETS[CRM_TABLE[kind]], body)
            response.raise_for_status()
            row = response.json()
            item.native_id = str(row.get("contactid") or row["activityid"])
        self.items.append(item)

    def update(self, item: Item) -> None:
        item.version += 1
        box = self.boxes[item.mailbox]
        if item.side == "outlook":
            response = self._retry(
                lambda: self.outlook(
                    "PATCH", box, self._outlook_path(item), self._outlook_body(item, create=False)
                )
            )
        else:
            response = self._retry(
                lambda: self.dynamics(
                    "PATCH", box, self._crm_path(item), self._crm_body(item, box, create=False)
                )
            )
        response.raise_for_status()

    def delete(self, item: Item) -> None:
        box = self.boxes[item.mailbox]
        if item.side == "outlook":
            response = self._retry(lambda: self.outlook("DELETE", box, self._outlook_path(item)))
        else:
            response = self._retry(lambda: self.dynamics("DELETE", box, self._crm_path(item)))
        if response.status_code != 404:
            response.raise_for_status()
        item.in_outlook = False
        item.in_crm = False

    def operation(self) -> None:
        box_index = self.rng.randrange(len(self.boxes))
        side = self.rng.choice(("outlook", "crm"))
        kinds = KINDS if side == "outlook" else KINDS[:3]
        kind = self.rng.choice(kinds)
        live = [
            i
            for i in self.items
            if i.mailbox == box_index
            and i.side == side
            and i.kind == kind
            and i.in_outlook
            and kind != "mail"
        ]
        roll = self.rng.random()
        # Contacts are not deleted: by Dynamics' rules a delete on either side leaves the other side's
        # copy untracked (an Outlook delete may even come back from the user's sync filter at the next
        # full read), so there is no one right state to compare.
        deletable = [i for i in live if kind != "contact"]
        if roll < 0.15 and deletable:
            self.delete(self.rng.choice(deletable))
        elif roll < 0.55 and live:
            self.update(self.rng.choice(live))
        else:
            self.create(box_index, side, kind)
        self.report.operations += 1

    # -- faults --------------------------------------------------------------------------------

    def pick_fault(self) -> str:
        while True:
            kind = self.rng.choice(FAULTS)
            if self.rng.random() < SLOW_FAULTS.get(kind, 1.0):
                return kind

    def inject(self, kind: str) -> None:
        box = self.rng.choice(self.boxes)
        graph = f"{self.graph_control}/faults"
        dataverse = f"{self.dataverse_control}/faults"
        connector = {"token": CONNECTOR_TOKEN}
        match kind:
            case "graph_429":
                self.control(
                    "POST", graph, {"kind": "throttle", "user": box.mailbox_id, "count": 3, "retry_after": 1}
                )
            case "graph_503":
                self.control(
                    "POST", graph, {"kind": "status", "status": 503, "user": box.mailbox_id, "count": 3}
                )
            case "graph_slow":
                self.control(
                    "POST", graph, {"kind": "latency", "seconds": 2.0, "user": box.mailbox_id, "count": 2}
                )
            case "graph_lost_answer":
                self.control("POST", graph, {"kind": "lost_answer", "user": box.mailbox_id, "count": 1})
            case "dataverse_outage":
                self.control("POST", dataverse, {"kind": "outage", **connector, "count": 6})
            case "dataverse_429":
                self.control(
                    "POST", dataverse, {"kind": "throttle", **connector, "count": 3, "retry_after": 1}
                )
            case "dataverse_hang_after_commit":
                self.control(
                    "POST", dataverse, {"kind": "hang_after_commit", **connector, "count": 1, "seconds": 3}
                )
            case "notifications_dropped" | "notifications_duplicated" | "notifications_reordered":
                fault = {
                    "notifications_dropped": "drop_notifications",
                    "notifications_duplicated": "duplicate_notifications",
                    "notifications_reordered": "reorder_notifications",
                }[kind]
                self.control("POST", graph, {"kind": fault, "user": box.mailbox_id, "count": 2})
            case "notification_replayed":
                self.replay(box)
            case "delta_tokens_expired":
                self.control("POST", f"{self.graph_control}/users/{box.mailbox_id}/expire-delta-tokens", {})
            case "change_tokens_expired":
                self.control("POST", f"{self.dataverse_control}/change-tokens/expire", {})
            case "subscription_removed":
                subscriptions = self.control(
                    "GET", f"{self.graph_control}/subscriptions?user={box.mailbox_id}"
                )
                if subscriptions:
                    sub = self.rng.choice(sorted(subscriptions, key=lambda s: str(s["id"])))
                    self.control(
                        "POST",
                        f"{self.graph_control}/subscriptions/{sub['id']}/lifecycle",
                        {"event": "subscriptionRemoved"},
                    )
            case "worker_killed":
                self.restart_runner()
            case "lease_expired":
                # One Dataverse answer slower than the lease: the run holding it outlasts its lease.
                slow = {"kind": "latency", "latency_ms": (LEASE_SECONDS + 2) * 1000, **connector, "count": 1}
                self.control("POST", dataverse, slow)
            case "azurite_frozen":
                process = self.sandbox.azurite.process
                assert process is not None
                process.send_signal(signal.SIGSTOP)
                time.sleep(self.rng.uniform(1.0, 4.0))
                process.send_signal(signal.SIGCONT)
        self.report.faults[kind] += 1

    def replay(self, box: Box) -> None:
        """Post one of the mailbox's earlier notifications again, as an attacker or a confused
        proxy would replay it (its clientState is valid)."""
        delivered = [
            d
            for d in self.control("GET", f"{self.graph_control}/deliveries?user={box.mailbox_id}")
            if d["kind"] == "notification"
        ]
        if delivered:
            payload = self.rng.choice(delivered)["payload"]
            body = payload if isinstance(payload, dict) and "value" in payload else {"value": [payload]}
            with contextlib.suppress(httpx.HTTPError):
                self.http.post(f"{self.sandbox.functions_url}/api/notifications", json=body)

    def restart_runner(self) -> None:
        """SIGKILL the Functions runner (no clean-up, whatever it was doing) and start a new one."""
        self.sandbox.restart_runner()

    def count_requests(self) -> None:
        """Add crmsync's Dataverse requests logged since the last count, then clear the log (it keeps
        the last 20,000 requests; the driver counts every ``REQUESTS_EVERY`` operations)."""
        logged = self.control("GET", f"{self.dataverse_control}/requests?token={CONNECTOR_TOKEN}")["value"]
        if self.dump:
            dataverse_log = self.control("GET", f"{self.dataverse_control}/requests")["value"]
            chaos_dump.append_requests(self.dump, "dataverse", dataverse_log)
            chaos_dump.append_requests(
                self.dump, "graph", self.control("GET", f"{self.graph_control}/requests")
            )
            self.control("DELETE", f"{self.graph_control}/requests")
        self.control("DELETE", f"{self.dataverse_control}/requests")
        self.report.dataverse_requests += len(logged)
        self.report.dataverse_throttled += sum(1 for entry in logged if entry["status"] == 429)

    def clear_faults(self) -> None:
        self.control("DELETE", f"{self.graph_control}/faults")
        self.control("DELETE", f"{self.dataverse_control}/faults")

    # -- comparison ----------------------------------------------------------------------------

    def outlook_items(self, box: Box, collection: str) -> list[dict[str, Any]]:
        url: str | None = f"{self.sandbox.graph_url}/users/{box.mailbox_id}/{collection}?$top=999"
        items: list[dict[str, Any]] = []
        while url:
            response = self._retry(lambda: self.http.get(url, headers={"Authorization": "Bearer chaos"}))  # noqa: B023
            response.raise_for_status()
            page = response.json()
            items.extend(page["value"])
            url = page.get("@odata.nextLink")
        return items

    def crm_rows(self, box: Box, table: str, select: str) -> list[dict[str, Any]]:
        url: str | None = f"{self.sandbox.dataverse_api_url}/{ENTITY_SETS[table]}"
        params: dict[str, str] | None = {"$filter": f"_ownerid_value eq {box.systemuserid}"} | (
            {"$select": select} if select else {}
        )
        rows: list[dict[str, Any]] = []
        while url:
            response = self.http.get(
                url, params=params, headers={"Authorization": f"Bearer {OBSERVER_TOKEN}"}
            )
            response.raise_for_status()
            page = response.json()
            rows.extend(page["value"])
            url, params = page.get("@odata.nextLink"), None
        return rows

    def sides(self, box: Box) -> dict[tuple[str, str], list[str]]:
        """(kind, side) -> the texts ("K00001 v3") found there, one per item found."""
        found: dict[tuple[str, str], list[str]] = {}
        contacts = self.outlook_items(box, "contacts")
        found["contact", "outlook"] = [f"{c.get('surname')} {c.get('givenName')}" for c in contacts]
        found["event", "outlook"] = [str(e.get("subject")) for e in self.outlook_items(box, "events")]
        found["task", "outlook"] = [str(t.get("title")) for t in self.outlook_items(box, self._tasks(box))]
        rows = self.crm_rows(box, "contact", "firstname,lastname")
        found["contact", "crm"] = [f"{r.get('lastname')} {r.get('firstname')}" for r in rows]
        for kind in ("event", "task", "mail"):
            found[kind, "crm"] = [
                str(r.get("subject")) for r in self.crm_rows(box, CRM_TABLE[kind], "subject")
            ]
        return {where: [t for t in texts if t.startswith("K")] for where, texts in found.items()}

    def compare(self) -> tuple[list[str], list[str], list[str]]:
        lost: list[str] = []
        duplicated: list[str] = []
        diverged: list[str] = []
        for index, box in enumerate(self.boxes):
            found = self.sides(box)
            by_key: dict[tuple[str, str], list[str]] = {}
            for (_kind, side), texts in found.items():
                for text in texts:
                    by_key.setdefault((side, text.split(" ")[0]), []).append(text)
            known = set()
            for item in (i for i in self.items if i.mailbox == index):
                sides = {"crm": item.in_crm} | ({} if item.kind == "mail" else {"outlook": item.in_outlook})
                for side, expected in sides.items():
                    known.add((side, item.key))
                    texts = by_key.get((side, item.key), [])
                    where = f"{item.kind} {item.key} ({item.side}-made) in {side}"
                    if len(texts) > 1:
                        duplicated.append(f"{where}: {texts}")
                    elif expected and not texts:
                        lost.append(where)
                    elif not expected and texts:
                        diverged.append(f"{where}: deleted, still there as {texts[0]!r}")
                    elif texts and texts[0] != item.text():
                        diverged.append(f"{where}: {texts[0]!r}, expected {item.text()!r}")
            duplicated += [
                f"unknown item in {side}: {texts}"
                for (side, key), texts in by_key.items()
                if (side, key) not in known
            ]
        return lost, duplicated, diverged

    def queued(self) -> dict[str, int]:
        """Messages on the CRM -> Outlook queue and the poison queues (waiting or hidden for a retry):
        the status backlog counts the mailboxes' dirty resources, not these."""
        job_queue = self.sandbox.app_settings()["CRMSYNC_JOB_QUEUE"]
        counts: dict[str, int] = {}
        for name in (f"{job_queue}-crm", f"{job_queue}-crm-poison", f"{job_queue}-poison"):
            with QueueClient.from_connection_string(self.sandbox.azurite.connection_string, name) as queue:
                try:
                    counts[name] = queue.get_queue_properties().approximate_message_count or 0
                except ResourceNotFoundError:
                    counts[name] = 0
        return counts

    def waiting(self) -> int:
        """Jobs waiting across the mailboxes and CRM -> Outlook work queued (poisoned messages wait
        for nothing), plus the mailboxes not ``active``."""
        statuses: list[dict[str, Any]] = json.loads(self.cli("status", "--json"))
        crm_work = self.queued()[f"{self.sandbox.app_settings()['CRMSYNC_JOB_QUEUE']}-crm"]
        backlog = sum(int(s.get("backlog") or 0) for s in statuses) + crm_work
        return backlog + sum(1 for s in statuses if s.get("state") != "active")

    def quiet(self, timeout: float) -> None:
        """Faults off; the timers run as their schedules would, until both sides match and nothing is
        waiting (twice in a row), or ``timeout`` passes."""
        self.clear_faults()
        started = time.monotonic()
        settled = 0
        while True:
            self.run_timer("crm_changes")
            self.run_timer("delta_sweep")
            time.sleep(3)
            lost, duplicated, diverged = self.compare()
            clean = not (lost or duplicated or diverged)
            waiting = self.waiting() if clean else -1
            settled = settled + 1 if waiting == 0 else 0
            if settled >= 2 or time.monotonic() - started > timeout:
                break
        self.report.lost, self.report.duplicated, self.report.diverged = lost, duplicated, diverged
        self.report.items = len(self.items)
        self.report.waiting = waiting
        self.report.queued = self.queued()
        if not self.report.clean or waiting:  # what the status says about mailboxes not converged
            for status in json.loads(self.cli("status", "--json")):
                keys = ("state", "backlog", "parked", "crm_to_outlook_stopped", "brake_holds", "notes")
                self.report.notes.append(json.dumps({key: status.get(key) for key in keys}))
        self.report.quiet_seconds = time.monotonic() - started
        self.count_requests()
        if self.dump:
            self.write_dump()

    def write_dump(self) -> None:
        """The end state for a post-mortem: tables, both sides' items with their ids, the driver's items."""
        assert self.dump is not None
        chaos_dump.write_tables(self.dump, self.sandbox.azurite.connection_string)
        for index, box in enumerate(self.boxes):
            sides = {
                collection: self.outlook_items(box, path)
                for collection, path in (
                    ("contacts", "contacts"),
                    ("events", "events"),
                    ("tasks", self._tasks(box)),
                )
            }
            sides |= {
                table: self.crm_rows(box, table, "") for table in ("contact", "appointment", "task", "email")
            }
            chaos_dump.write_json(self.dump, f"mailbox-{index}.json", {"box": box.__dict__, **sides})
        chaos_dump.write_json(self.dump, "items.json", [item.__dict__ for item in self.items])
        chaos_dump.write_json(
            self.dump, "graph-deliveries.json", self.control("GET", f"{self.graph_control}/deliveries")
        )
        report = self.report
        chaos_dump.write_json(
            self.dump,
            "report.json",
            {"lost": report.lost, "duplicated": report.duplicated, "diverged": report.diverged},
        )


def run(
    seed: int, ops: int, *, fault_every: int = 8, quiet_seconds: float = 300.0, dump: Path | None = None
) -> Report:
    """Start a sandbox, run ``ops`` operations with a fault about every ``fault_every``, quiet, compare."""
    with Sandbox(extra_settings=APP_SETTINGS) as sandbox:
        chaos = Chaos(sandbox, seed)
        chaos.dump = dump
        if dump:
            dump.mkdir(parents=True, exist_ok=True)
        chaos.set_up()
        started = time.monotonic()
        for n in range(ops):
            if n % CRM_READ_EVERY == CRM_READ_EVERY - 1:
                chaos.run_timer("crm_changes")
            if chaos.rng.randrange(fault_every) == 0:
                chaos.inject(chaos.pick_fault())
            chaos.operation()
            if (n + 1) % REQUESTS_EVERY == 0:
                chaos.count_requests()
            if (n + 1) % 500 == 0:
                print(f"{n + 1} operations, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        chaos.report.ops_seconds = time.monotonic() - started
        chaos.quiet(quiet_seconds)
        chaos.http.close()
        return chaos.report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument(
        "--fault-every", type=int, default=8, help="one fault per this many operations, on average"
    )
    parser.add_argument("--quiet-seconds", type=float, default=300.0)
    parser.add_argument(
        "--dump", type=Path, default=None, help="a folder for the post-mortem files (bench/chaos_dump.py)"
    )
    args = parser.parse_args()
    report = run(
        args.seed, args.ops, fault_every=args.fault_every, quiet_seconds=args.quiet_seconds, dump=args.dump
    )
    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(report.faults.items()))
    print_results(
        f"chaos: seed {args.seed}, {report.operations} operations on {MAILBOXES} mailboxes",
        [
            ("operations", str(report.operations), ">= 10,000"),
            ("items compared", str(report.items), ""),
            ("faults injected", f"{sum(report.faults.values())} ({faults})", ""),
            ("lost", str(len(report.lost)), "0"),
            ("duplicated", str(len(report.duplicated)), "0"),
            ("diverged", str(len(report.diverged)), "0"),
            ("operations phase", f"{report.ops_seconds:.0f} s", ""),
            ("jobs waiting / mailboxes not active at the end", str(report.waiting), "0"),
            ("messages queued at the end", ", ".join(f"{q} {n}" for q, n in report.queued.items()), "0"),
            ("quiet until converged", f"{report.quiet_seconds:.0f} s", ""),
            ("elapsed", f"{report.ops_seconds + report.quiet_seconds:.0f} s", "<= 30 min"),
            (
                "crmsync's Dataverse requests (answered 429)",
                f"{report.dataverse_requests:,} ({report.dataverse_throttled:,})",
                "6,000 per 5 min",
            ),
        ],
    )
    for title, problems in (
        ("lost", report.lost),
        ("duplicated", report.duplicated),
        ("diverged", report.diverged),
    ):
        # "contact K00001 (crm-made) in outlook: ..." -> counted by kind, maker and side.
        shapes = Counter(re.sub(r" K\d+", "", p.split(":")[0]) for p in problems)
        for shape, count in sorted(shapes.items()):
            print(f"{title}: {count} x {shape}")
        for problem in problems[:20]:
            print(f"{title}: {problem}")
    for note in report.notes:
        print(f"status: {note}")
    raise SystemExit(0 if report.clean else 1)


if __name__ == "__main__":
    main()
