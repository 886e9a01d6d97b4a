"""Shared set-up of the end-to-end benchmarks: a sandbox with a demo CRM role, users in both
simulators, onboarding through the ``crmsync`` CLI, request counts from the simulators' logs."""

from __future__ import annotations

import json
import os
import resource
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from simulators.sandbox import SANDBOX_TENANT, Sandbox

OBSERVER_TOKEN = "bench-observer"  # the bench reads the CRM with it; its requests are not crmsync's

TRACKED = "Tracked to Dynamics 365"
FULL_ACCESS = dict.fromkeys(("create", "read", "write", "delete", "append", "appendto"), "organization")
ENTITY_SETS = {"contact": "contacts", "appointment": "appointments", "task": "tasks", "email": "emails"}
console = Console()


@dataclass
class BenchUser:
    mailbox_id: str
    crm_user_id: str


class BenchTenant:
    """A sandbox tenant for benchmarks, driven over HTTP."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.endpoints = sandbox.endpoints()
        self.http = httpx.Client(timeout=120, trust_env=False)
        self._call("PATCH", f"{self.endpoints['graph_control']}/config", {"tenant_id": SANDBOX_TENANT})
        tables: dict[str, Any] = {key: {"read": "organization"} for key in ("systemuser", "account", "lead")}
        tables["account"]["appendto"] = "organization"  # a tracked folder's regarding
        tables |= dict.fromkeys(ENTITY_SETS, FULL_ACCESS)
        self._call(
            "POST", f"{self.endpoints['dataverse_control']}/roles", {"name": "bench", "tables": tables}
        )

    def _call(self, method: str, url: str, body: Any = None) -> Any:
        response = self.http.request(method, url, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def add_user(self) -> BenchUser:
        mailbox_id = str(uuid.uuid4())
        upn = f"bench-{mailbox_id[:8]}@contoso.example"
        self._call(
            "POST", f"{self.endpoints['graph_control']}/users", {"id": mailbox_id, "userPrincipalName": upn}
        )
        crm = self._call(
            "POST",
            f"{self.endpoints['dataverse_control']}/users",
            {
                "systemuserid": str(uuid.uuid4()),
                "azureactivedirectoryobjectid": mailbox_id,  # the mailbox owner's Entra object id
                "roles": ["bench"],
            },
        )
        return BenchUser(mailbox_id, crm["systemuserid"])

    def mail_folder(self, user: BenchUser, well_known: str) -> str:
        """The id of one of the mailbox's well-known mail folders."""
        folders = self._call("GET", f"{self.endpoints['graph_control']}/users/{user.mailbox_id}")[
            "mailFolders"
        ]
        return str(folders[well_known])

    def account(self, name: str) -> str:
        """A new account in the CRM (e.g. the regarding of a tracked folder)."""
        seeded = self._call(
            "POST",
            f"{self.endpoints['dataverse_control']}/seed",
            {"table": "account", "records": [{"name": name}]},
        )
        return str(seeded["ids"][0])

    def seed(self, user: BenchUser, items: dict[str, Any]) -> None:
        self._call("POST", f"{self.endpoints['graph_control']}/users/{user.mailbox_id}/seed", items)

    def onboard(
        self, user: BenchUser, settings: dict[str, Any] | None = None, *, profile: Path | None = None
    ) -> int:
        """``crmsync mailbox add`` (with these mailbox settings) as a subprocess, under cProfile when
        ``profile`` names a file; returns its peak RSS in bytes."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "settings.json" if settings else None
            if path is not None:
                path.write_text(json.dumps(settings))
            self.sandbox.onboard_with_cli(
                user.mailbox_id, user.crm_user_id, quiet=True, settings=path, profile=profile
            )
        # Only the CLI has exited among this process's children, so this is its peak (KiB on Linux).
        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    def graph_requests(self, user: BenchUser) -> int:
        """HTTP requests sent to Graph for the mailbox: a $batch counts once (its requests carry its id).

        Graph's throttling still counts each request of a batch against the mailbox's budget."""
        entries = self._call("GET", f"{self.endpoints['graph_control']}/requests?user={user.mailbox_id}")
        return len({entry["batch"] or entry["id"] for entry in entries})

    def notification_posts(self, user: BenchUser) -> tuple[int, int]:
        """Change-notification POSTs Graph has sent for the mailbox so far, and the notifications in
        them (Graph sends several in one POST's ``value`` when they wait together)."""
        log = self._call("GET", f"{self.endpoints['graph_control']}/deliveries?user={user.mailbox_id}")
        posts = [entry for entry in log if entry["kind"] == "notification"]
        return len(posts), sum(len(entry["payload"].get("value") or ()) for entry in posts)

    def dataverse_requests(self) -> int:
        """The connector's Web API requests in the Dataverse log (a $batch counts once, as service
        protection counts it); the bench's own polls, made with the observer token, are left out."""
        log = f"{self.endpoints['dataverse_control']}/requests"
        everything = len(self._call("GET", log)["value"])
        observer = len(self._call("GET", f"{log}?token={OBSERVER_TOKEN}")["value"])
        return everything - observer

    def clear_request_logs(self) -> None:
        self._call("DELETE", f"{self.endpoints['graph_control']}/requests")
        self._call("DELETE", f"{self.endpoints['dataverse_control']}/requests")

    def crm_rows(self, kind: str, user: BenchUser, select: str) -> list[dict[str, Any]]:
        """The user's rows of ``kind`` (crmsync writes as the user, so the user owns them)."""
        url: str | None = f"{self.sandbox.dataverse_api_url}/{ENTITY_SETS[kind]}"
        params: dict[str, str] | None = {
            "$filter": f"_ownerid_value eq {user.crm_user_id}",
            "$select": select,
        }
        rows: list[dict[str, Any]] = []
        while url:
            observer = {"Authorization": f"Bearer {OBSERVER_TOKEN}"}
            response = self.http.get(url, params=params, headers=observer)
            response.raise_for_status()
            page = response.json()
            rows.extend(page["value"])
            url, params = page.get("@odata.nextLink"), None
        return rows


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/<pid>/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_pids(sandbox: Sandbox) -> dict[str, int]:
    """The sandbox's long-running processes, by name: they share the machine's cores with crmsync."""
    return {
        "Azurite": sandbox.azurite.process.pid if sandbox.azurite.process else os.getpid(),
        "Graph simulator": sandbox.processes[0].pid,
        "Dataverse simulator": sandbox.processes[1].pid,
        "Functions runner": sandbox.processes[-1].pid,
    }


def cpu_rows(cpu: dict[str, float], wall: float) -> list[tuple[str, str, str]]:
    """Each process's CPU time as a share of one core over ``wall`` seconds, and all of them together."""
    cores = os.cpu_count() or 1
    rows = [(name, f"{seconds:.1f} s", f"{seconds / wall:.0%} of one core") for name, seconds in cpu.items()]
    total = sum(cpu.values())
    rows.append(("all of them", f"{total:.1f} s", f"{total / (wall * cores):.0%} of the {cores} cores"))
    return rows


def process_peak_rss(pid: int) -> int:
    """Peak resident set (VmHWM) of a running process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else float("nan")


def print_results(title: str, rows: list[tuple[str, str, str]]) -> None:
    """A table of (measure, value, target)."""
    table = Table(title=title)
    for column in ("measure", "value", "target"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
