"""`make demo`: the connector end to end on a seeded demo tenant, then a summary of what reached the CRM.

Starts the sandbox (Azurite, both simulators, the local Functions runner), creates two users in
both simulators (Salespeople: they hold "Sync to Outlook"), seeds a few hundred items of every type
(contacts; events with a recurring series and an all-day event; To Do tasks; tracked and untracked
mail), onboards both mailboxes with ``crmsync mailbox add`` (the progress bar), then makes live edits
in Outlook while the runner syncs them and measures change-to-CRM latency: from the Graph write to
the record being visible in the Dataverse Web API. Then it registers the Dataverse webhook
(``crmsync crm connect``) and makes live edits in Dynamics as each user (a new contact, a meeting
and a task renamed), timed from the Web API write to the item being visible in Outlook. Exits 0
only if every item that should sync is in the CRM and every Dynamics edit reached Outlook.

Everything goes over HTTP (simulators/ never imports shared/); onboarding runs the ``crmsync`` CLI
as a subprocess, as an administrator would.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.table import Table

from simulators.sandbox import SANDBOX_TENANT, Sandbox

TRACKED = "Tracked to Dynamics 365"
PER_TYPE = 100  # seeded items of each type per mailbox
LIVE_EDITS = 5  # live changes per mailbox and type
SERIES_OCCURRENCES = 8  # one weekly series among the appointments
CRM_TABLES = {"contact": "contacts", "appointment": "appointments", "task": "tasks", "email": "emails"}
FULL_ACCESS = dict.fromkeys(("create", "read", "write", "delete", "append", "appendto"), "organization")
console = Console()


def _when(days: int, hour: int) -> dict[str, str]:
    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)
    return {"dateTime": f"{day.isoformat()}T{hour:02d}:00:00", "timeZone": "UTC"}


@dataclass
class DemoUser:
    name: str
    mailbox_id: str
    crm_user_id: str
    todo_list: str
    expected: dict[str, int] = field(default_factory=dict)  # items that should be in the CRM, per type
    latencies: dict[str, list[float]] = field(default_factory=dict)  # Outlook -> CRM, per type
    crm_latencies: dict[str, list[float]] = field(default_factory=dict)  # CRM -> Outlook, per type

    @property
    def crm_token(self) -> str:
        """The user's own Dataverse token (bound to the user in the simulator, as in the browser)."""
        return f"demo-{self.crm_user_id}"


class Demo:
    """The demo tenant, driven over the simulators' HTTP APIs."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.http = httpx.Client(timeout=60, trust_env=False)
        self.endpoints = sandbox.endpoints()

    def _call(self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        response = self.http.request(method, url, json=body, headers=headers)
        response.raise_for_status()
        return response.json() if response.content else None

    def graph_control(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"{self.endpoints['graph_control']}/{path}", body)

    def outlook(self, method: str, user: DemoUser, path: str, body: Any = None) -> Any:
        url = f"{self.sandbox.graph_url}/users/{user.mailbox_id}/{path}"
        return self._call(method, url, body, {"Authorization": "Bearer demo"})

    def crm_count(self, table: str, owner: str, odata_filter: str | None = None) -> int:
        """Rows of ``table`` the CRM user owns (crmsync writes as the user), optionally filtered."""
        query = f"_ownerid_value eq {owner}" + (f" and {odata_filter}" if odata_filter else "")
        return len(self._query(table, query))

    def _query(self, table: str, odata_filter: str) -> list[dict[str, Any]]:
        response = self.http.get(
            f"{self.sandbox.dataverse_api_url}/{CRM_TABLES[table]}",
            params={"$filter": odata_filter, "$select": "createdon"},
            headers={"Authorization": "Bearer demo-observer"},
        )
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()["value"]
        return rows

    # -- set-up ------------------------------------------------------------------------------------

    def setup(self) -> None:
        self.graph_control("PATCH", "config", {"tenant_id": SANDBOX_TENANT})
        # Parties (organizer, attendees, sender) link to users, accounts and leads: Append To on them.
        party = {"read": "organization", "appendto": "organization"}
        tables = dict.fromkeys(("systemuser", "account", "lead"), party)
        tables |= dict.fromkeys(CRM_TABLES, FULL_ACCESS)
        self._call(
            "POST", f"{self.endpoints['dataverse_control']}/roles", {"name": "demo sales", "tables": tables}
        )

    def add_user(self, name: str) -> DemoUser:
        mailbox_id = str(uuid.uuid4())
        upn = f"{name.lower()}@contoso.example"
        self.graph_control("POST", "users", {"id": mailbox_id, "userPrincipalName": upn, "displayName": name})
        crm = self._call(
            "POST",
            f"{self.endpoints['dataverse_control']}/users",
            {
                "systemuserid": str(uuid.uuid4()),
                "azureactivedirectoryobjectid": mailbox_id,  # the mailbox owner's Entra object id
                "internalemailaddress": upn,
                "fullname": name,
                "roles": ["demo sales", "Salesperson"],  # Salesperson: "Sync to Outlook"
            },
        )
        info = self.graph_control("GET", f"users/{mailbox_id}")
        user = DemoUser(name, mailbox_id, crm["systemuserid"], info["defaultTodoList"])
        self._call(
            "POST",
            f"{self.endpoints['dataverse_control']}/tokens",
            {"token": user.crm_token, "systemuserid": user.crm_user_id},
        )
        return user

    def seed(self, user: DemoUser) -> None:
        """A few hundred items of every type; the CRM should get all but the untracked mail and the
        plain occurrences of the series (its master stands for them)."""
        events: list[dict[str, Any]] = [
            {
                "subject": f"Meeting {n}",
                "start": _when(1 + n % 200, 9 + n % 8),
                "end": _when(1 + n % 200, 10 + n % 8),
            }
            for n in range(PER_TYPE - 2)
        ]
        events.append({"subject": "Offsite", "isAllDay": True, "start": _when(20, 0), "end": _when(21, 0)})
        start = _when(3, 8)
        events.append(
            {
                "subject": "Weekly pipeline review",
                "start": start,
                "end": _when(3, 9),
                "recurrence": {
                    "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [_weekday(start)]},
                    "range": {
                        "type": "numbered",
                        "startDate": start["dateTime"][:10],
                        "numberOfOccurrences": SERIES_OCCURRENCES,
                    },
                },
            }
        )
        messages = [
            {
                "subject": f"Proposal {n}",
                "categories": [TRACKED] if n % 4 else [],
                "internetMessageId": f"<{user.name.lower()}-{n}@fabrikam.example>",
                "from": {"emailAddress": {"address": f"buyer{n % 17}@fabrikam.example"}},
            }
            for n in range(PER_TYPE)
        ]
        self.graph_control(
            "POST",
            f"users/{user.mailbox_id}/seed",
            {
                "contacts": [{"givenName": f"Customer{n}", "surname": user.name} for n in range(PER_TYPE)],
                "events": events,
                "todo": {"defaultList": [{"title": f"Follow up {n}"} for n in range(PER_TYPE)]},
                "messages": {"inbox": messages},
            },
        )
        user.expected = {
            "contact": PER_TYPE,
            # The series reaches the CRM as its occurrences in the calendar window, one each.
            "appointment": PER_TYPE - 1 + SERIES_OCCURRENCES,
            "task": PER_TYPE,
            "email": sum(1 for m in messages if m["categories"]),
        }

    def onboard(self, user: DemoUser) -> None:
        """``crmsync mailbox add`` with the sandbox's app settings (it shows its progress bar)."""
        self.sandbox.onboard_with_cli(user.mailbox_id, user.crm_user_id)

    # -- live edits --------------------------------------------------------------------------------

    def timed(
        self, user: DemoUser, kind: str, change: Callable[[], None], visible: Callable[[], bool]
    ) -> None:
        """Make ``change`` in Outlook and record how long until ``visible`` holds in the CRM."""
        started = time.monotonic()
        change()
        deadline = started + 20
        while not visible():
            if time.monotonic() > deadline:
                console.print(f"[red]{user.name}: a {kind} change did not reach the CRM in 20 s[/]")
                return
            time.sleep(0.05)
        user.latencies.setdefault(kind, []).append(time.monotonic() - started)
        console.print(f"{user.name}: {kind} change in the CRM after {time.monotonic() - started:.2f} s")

    def live_edits(self, user: DemoUser) -> None:
        for n in range(LIVE_EDITS):
            self._live_edit(user, n)

    def _live_edit(self, user: DemoUser, n: int) -> None:
        """One change of each type: create a contact, rename an event, delete a task, track a new email."""
        owner = user.crm_user_id
        tag = uuid.uuid4().hex[:8]
        self.timed(
            user,
            "contact",
            lambda: self.graph_control(
                "POST",
                f"users/{user.mailbox_id}/seed",
                {"contacts": [{"givenName": tag, "surname": user.name}]},
            ),
            lambda: self.crm_count("contact", owner, f"firstname eq '{tag}'") == 1,
        )
        user.expected["contact"] += 1
        event = self.outlook("GET", user, f"events?$filter=subject eq 'Meeting {n}'")["value"][0]
        self.timed(
            user,
            "appointment",
            lambda: self.outlook(
                "PATCH", user, f"events/{quote(event['id'], safe='')}", {"subject": f"Meeting {tag}"}
            ),
            lambda: self.crm_count("appointment", owner, f"subject eq 'Meeting {tag}'") == 1,
        )
        task = self.outlook(
            "GET",
            user,
            f"todo/lists/{quote(user.todo_list, safe='')}/tasks?$filter=title eq 'Follow up {n}'",
        )["value"][0]
        self.timed(
            user,
            "task",
            lambda: self.outlook(
                "DELETE",
                user,
                f"todo/lists/{quote(user.todo_list, safe='')}/tasks/{quote(task['id'], safe='')}",
            ),
            lambda: self.crm_count("task", owner, f"subject eq 'Follow up {n}'") == 0,
        )
        user.expected["task"] -= 1
        self.timed(
            user,
            "email",
            lambda: self.graph_control(
                "POST",
                f"users/{user.mailbox_id}/seed",
                {
                    "messages": {
                        "inbox": [
                            {
                                "subject": f"Order {tag}",
                                "categories": [TRACKED],
                                "internetMessageId": f"<order-{tag}@fabrikam.example>",
                                "from": {"emailAddress": {"address": "buyer@fabrikam.example"}},
                            }
                        ]
                    }
                },
            ),
            lambda: self.crm_count("email", owner, f"subject eq 'Order {tag}'") == 1,
        )
        user.expected["email"] += 1

    # -- live edits in Dynamics ---------------------------------------------------------------------

    def connect_crm(self) -> None:
        """``crmsync crm connect``: the Dataverse webhook that brings Dynamics' changes at once."""
        self.sandbox.run_cli("crm", "connect")

    def dynamics(self, method: str, user: DemoUser, path: str, body: Any = None) -> Any:
        """The Dataverse Web API as the user (the user's own token, as in the browser)."""
        url = f"{self.sandbox.dataverse_api_url}/{path}"
        return self._call(method, url, body, {"Authorization": f"Bearer {user.crm_token}"})

    def in_outlook(self, user: DemoUser, path: str) -> int:
        return len(self.outlook("GET", user, path)["value"])

    def timed_in_outlook(
        self, user: DemoUser, kind: str, change: Callable[[], None], visible: Callable[[], bool]
    ) -> None:
        """Make ``change`` in Dynamics and record how long until ``visible`` holds in Outlook."""
        started = time.monotonic()
        change()
        while not visible():
            if time.monotonic() > started + 20:
                console.print(
                    f"[red]{user.name}: a {kind} change in Dynamics did not reach Outlook in 20 s[/]"
                )
                return
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        user.crm_latencies.setdefault(kind, []).append(elapsed)
        console.print(f"{user.name}: {kind} change in Outlook after {elapsed:.2f} s")

    def dynamics_edits(self, user: DemoUser) -> None:
        for n in range(LIVE_EDITS):
            self._dynamics_edit(user, LIVE_EDITS + n)

    def _dynamics_edit(self, user: DemoUser, n: int) -> None:
        """One change of each type made in Dynamics: a new contact, a meeting and a task renamed."""
        tag = uuid.uuid4().hex[:8]
        self.timed_in_outlook(
            user,
            "contact",
            lambda: self.dynamics("POST", user, "contacts", {"firstname": tag, "lastname": "Dynamics"}),
            lambda: self.in_outlook(user, f"contacts?$filter=givenName eq '{tag}'") == 1,
        )
        user.expected["contact"] += 1
        for kind, table, outlook_path, field_name in (
            ("appointment", "appointments", "events", "subject"),
            ("task", "tasks", f"todo/lists/{quote(user.todo_list, safe='')}/tasks", "title"),
        ):
            old = "Meeting" if kind == "appointment" else "Follow up"
            query = (
                f"$select=activityid&$filter=subject eq '{old} {n}' and _ownerid_value eq {user.crm_user_id}"
            )
            [row] = self.dynamics("GET", user, f"{table}?{query}")["value"]
            renamed = f"{old} {tag}"
            self.timed_in_outlook(
                user,
                kind,
                lambda table=table, row=row, renamed=renamed: self.dynamics(
                    "PATCH", user, f"{table}({row['activityid']})", {"subject": renamed}
                ),
                lambda path=outlook_path, name=field_name, renamed=renamed: (
                    self.in_outlook(user, f"{path}?$filter={name} eq '{renamed}'") == 1
                ),
            )

    # -- the summary -------------------------------------------------------------------------------

    def summary(self, users: list[DemoUser]) -> list[str]:
        """Print the table; return what is missing (empty when everything synced)."""
        table = Table(title="crmsync demo: Outlook -> Dataverse")
        for column in ("user", "type", "should sync", "in CRM", "live edits", "latency p50", "latency p95"):
            table.add_column(column, justify="right" if column not in ("user", "type") else "left")
        missing = []
        for user in users:
            for kind, expected in user.expected.items():
                in_crm = self.crm_count(kind, user.crm_user_id)
                latencies = sorted(user.latencies.get(kind, []))
                p50 = f"{statistics.median(latencies) * 1000:.0f} ms" if latencies else "-"
                p95 = f"{_percentile(latencies, 0.95) * 1000:.0f} ms" if latencies else "-"
                style = "" if in_crm == expected else "[red]"
                table.add_row(
                    user.name, kind, str(expected), f"{style}{in_crm}", str(len(latencies)), p50, p95
                )
                if in_crm != expected:
                    missing.append(f"{user.name} {kind}: {in_crm} of {expected} in the CRM")
                if len(latencies) != LIVE_EDITS:
                    missing.append(
                        f"{user.name} {kind}: {LIVE_EDITS - len(latencies)} live edit(s) never arrived"
                    )
        console.print(table)
        return missing + self._dynamics_summary(users)

    def _dynamics_summary(self, users: list[DemoUser]) -> list[str]:
        table = Table(title="crmsync demo: Dataverse -> Outlook (live edits made in Dynamics)")
        for column in ("user", "type", "edits", "in Outlook", "latency p50", "latency p95"):
            table.add_column(column, justify="right" if column not in ("user", "type") else "left")
        missing = []
        for user in users:
            for kind in ("contact", "appointment", "task"):
                latencies = sorted(user.crm_latencies.get(kind, []))
                p50 = f"{statistics.median(latencies) * 1000:.0f} ms" if latencies else "-"
                p95 = f"{_percentile(latencies, 0.95) * 1000:.0f} ms" if latencies else "-"
                style = "" if len(latencies) == LIVE_EDITS else "[red]"
                table.add_row(user.name, kind, str(LIVE_EDITS), f"{style}{len(latencies)}", p50, p95)
                if len(latencies) != LIVE_EDITS:
                    lost = LIVE_EDITS - len(latencies)
                    missing.append(
                        f"{user.name} {kind}: {lost} edit(s) made in Dynamics never reached Outlook"
                    )
        console.print(table)
        return missing


def _weekday(when: dict[str, str]) -> str:
    return dt.date.fromisoformat(when["dateTime"][:10]).strftime("%A").lower()


def _percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, round(share * (len(values) - 1)))]


def main() -> int:
    started = time.monotonic()
    console.print("starting the sandbox (Azurite, Graph and Dataverse simulators, Functions runner)...")
    with Sandbox() as sandbox:
        console.print(json.dumps(sandbox.endpoints()), highlight=False)
        demo = Demo(sandbox)
        demo.setup()
        users = [demo.add_user(name) for name in ("Adele", "Bruno")]
        for user in users:
            demo.seed(user)
            console.print(f"[bold]{user.name}[/]: seeded {PER_TYPE} items of each type; onboarding")
            demo.onboard(user)
        console.print(f"live edits: {LIVE_EDITS} per mailbox and type, timed from the Graph write to the CRM")
        for user in users:
            demo.live_edits(user)
        console.print(
            f"live edits in Dynamics: {LIVE_EDITS} per user and type, timed from the Web API write to Outlook"
        )
        demo.connect_crm()
        for user in users:
            demo.dynamics_edits(user)
        missing = demo.summary(users)
    console.print(f"demo took {time.monotonic() - started:.0f} s")
    if missing:
        console.print("[red]not everything synced:[/]\n  " + "\n  ".join(missing), highlight=False)
        return 1
    console.print("[green]everything synced[/]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
