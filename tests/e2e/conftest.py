"""One sandbox for the whole end-to-end package: Azurite, both simulators and the local Functions
runner as subprocesses, driven only over HTTP (and the ``crmsync`` CLI, which is the product's own
admin surface). Each test makes its own mailbox and CRM user, so tests stay independent."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
from typer.testing import CliRunner

from shared.cli import app as crmsync
from simulators.sandbox import SANDBOX_TENANT, Sandbox

T = TypeVar("T")
TRACKED = "Tracked to Dynamics 365"
CRM_TABLES = ("contact", "email", "appointment", "task")
FULL_ACCESS = dict.fromkeys(("create", "read", "write", "delete", "append", "appendto"), "organization")
# Graph's real timings are a 3 s answer limit and retries from a minute on; a loaded test machine
# needs a little more time per answer, and tests cannot wait minutes for a retry.
NOTIFICATION_TIMINGS = {
    "notification_timeout_seconds": 5.0,
    "retry_initial_seconds": 0.3,
    "retry_max_seconds": 2.0,
    "retry_max_attempts": 12,
}
WAIT_SECONDS = 60.0


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = WAIT_SECONDS) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.4)


def when(days: int, hour: int, zone: str = "UTC") -> dict[str, str]:
    """A Graph dateTimeTimeZone ``days`` from today at ``hour``:00 (inside the calendar window)."""
    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)
    return {"dateTime": f"{day.isoformat()}T{hour:02d}:00:00", "timeZone": zone}


@dataclass(frozen=True)
class CrmUser:
    systemuserid: str
    object_id: str


@dataclass
class Mailbox:
    """A Graph mailbox with its folder ids (``inbox``, ``archive``, ``defaultTodoList``...)."""

    id: str
    folders: dict[str, str]
    todo_list: str
    seeded: dict[str, Any] = field(default_factory=dict)  # the seed's immutable ids, by the seed's keys


@dataclass
class E2E:
    """The sandbox, driven as a user (Graph), an administrator (CLI, admin API) and an observer (CRM)."""

    sandbox: Sandbox
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30, trust_env=False))
    crm_token: str = field(default_factory=lambda: f"e2e-{uuid.uuid4().hex}")
    role: str = field(default_factory=lambda: f"e2e-{uuid.uuid4().hex[:8]}")

    # -- raw HTTP ------------------------------------------------------------------------------

    def _json(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise AssertionError(
                f"{response.request.method} {response.request.url.path}: {response.status_code}"
            )
        return response.json() if response.content else None

    def graph_control(self, method: str, path: str, body: Any = None) -> Any:
        return self._json(
            self.http.request(method, f"{self.sandbox.endpoints()['graph_control']}/{path}", json=body)
        )

    def dataverse_control(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.sandbox.endpoints()['dataverse_control']}/{path}"
        return self._json(self.http.request(method, url, json=body))

    def outlook(self, method: str, mailbox: Mailbox, path: str, body: Any = None) -> Any:
        """A change the mailbox's user makes in Outlook (Graph v1.0 as the Graph API documents it)."""
        url = f"{self.sandbox.graph_url}/users/{mailbox.id}/{path}"
        return self._json(self.http.request(method, url, json=body, headers={"Authorization": "Bearer e2e"}))

    def crm(self, entity_set: str, odata_filter: str, select: str) -> list[dict[str, Any]]:
        """Rows the CRM holds, read over the Dataverse Web API as the application user."""
        response = self.http.get(
            f"{self.sandbox.dataverse_api_url}/{entity_set}",
            params={"$filter": odata_filter, "$select": select},
            headers={"Authorization": f"Bearer {self.crm_token}"},
        )
        rows: list[dict[str, Any]] = self._json(response)["value"]
        return rows

    def admin(self, method: str, path: str) -> httpx.Response:
        """The runner's admin API with the function key."""
        return self.http.request(
            method,
            f"{self.sandbox.functions_url}/api/{path}",
            headers={"x-functions-key": self.sandbox.function_key},
        )

    def admin_post(self, path: str, body: Any) -> httpx.Response:
        """POST a JSON body to the runner's admin API with the function key."""
        return self.http.post(
            f"{self.sandbox.functions_url}/api/{path}",
            json=body,
            headers={"x-functions-key": self.sandbox.function_key},
        )

    def run_timer(self, name: str) -> None:
        """Run a timer function now (the host's ``POST /admin/functions/<name>`` with the master key)."""
        response = self.http.post(
            f"{self.sandbox.functions_url}/admin/functions/{name}",
            json={"input": ""},
            headers={"x-functions-key": self.sandbox.master_key},
        )
        assert response.status_code == 202, response.status_code

    def deliveries(self, mailbox: Mailbox) -> list[dict[str, Any]]:
        return list(self.graph_control("GET", f"deliveries?user={mailbox.id}"))

    # -- set-up --------------------------------------------------------------------------------

    def new_mailbox(self, **seed: Any) -> Mailbox:
        user_id = str(uuid.uuid4())
        upn = f"e2e-{user_id[:8]}@contoso.example"
        self.graph_control("POST", "users", {"id": user_id, "userPrincipalName": upn, "displayName": "E2E"})
        info = self.graph_control("GET", f"users/{user_id}")
        seeded = self.graph_control("POST", f"users/{user_id}/seed", seed) if seed else {}
        return Mailbox(user_id, info["mailFolders"], info["defaultTodoList"], seeded)

    def new_crm_user(self, mailbox: Mailbox | None = None) -> CrmUser:
        """A CRM user; of ``mailbox``'s owner (its Entra object id) when given, else of nobody's."""
        row = self.dataverse_control(
            "POST",
            "users",
            {
                "systemuserid": str(uuid.uuid4()),
                "azureactivedirectoryobjectid": mailbox.id if mailbox else str(uuid.uuid4()),
                "internalemailaddress": f"crm-{uuid.uuid4().hex[:8]}@contoso.example",
                "fullname": "E2E CRM user",
                "roles": [self.role],
            },
        )
        return CrmUser(row["systemuserid"], row["azureactivedirectoryobjectid"])

    def seed(self, mailbox: Mailbox, **items: Any) -> dict[str, Any]:
        """Items appearing in the mailbox (a real change: delta and notifications follow)."""
        seeded: dict[str, Any] = self.graph_control("POST", f"users/{mailbox.id}/seed", items)
        return seeded

    def cli(self, *args: str, **setting_overrides: str | None) -> tuple[int, str]:
        """``crmsync <args>`` in-process with the sandbox's app settings; (exit code, stdout).

        An override of ``None`` removes that setting from the environment. A failure's stderr is
        printed, so pytest shows why a command failed."""
        env: dict[str, str | None] = {**self.sandbox.app_settings(), **setting_overrides}
        result = CliRunner().invoke(crmsync, list(args), env=env)
        if result.exit_code:
            print(f"crmsync {' '.join(args)} -> {result.exit_code}\n{result.stderr}{result.exception!r}")
        return result.exit_code, result.stdout

    def onboard(self, mailbox: Mailbox, user: CrmUser | None = None) -> dict[str, Any]:
        code, out = self.cli(
            "mailbox",
            "add",
            mailbox.id,
            "--crm-user",
            (user or self.new_crm_user(mailbox)).systemuserid,
            "--json",
        )
        assert code == 0, out
        report: dict[str, Any] = json.loads(out)
        return report

    def warm_up(self) -> None:
        """Carry one change through a fresh runner, so no test pays its cold start.

        A fresh runner's first change takes ~10 s to reach the CRM (its first Dataverse call stalls
        until the 10 s connect timeout, then the retry succeeds); later ones take well under 1 s."""
        mailbox = self.new_mailbox()
        self.onboard(mailbox)
        name = f"warm-{uuid.uuid4().hex[:8]}"
        self.seed(mailbox, contacts=[{"surname": name}])
        wait_for(lambda: self.crm("contacts", f"lastname eq '{name}'", "contactid"), "the first change", 90)

    # -- the runner process --------------------------------------------------------------------

    def restart_runner(self, **setting_overrides: str) -> None:
        """Kill the Functions runner (SIGKILL: no clean-up, like a crashed worker) and start a new one
        on the same port, optionally with different app settings."""
        self.sandbox.restart_runner(**setting_overrides)


#: The shortest lease the settings allow, so a run killed mid-page is retried within seconds.
E2E_SETTINGS = {"CRMSYNC_LEASE_SECONDS": "15"}


@contextlib.contextmanager
def driving(sandbox: Sandbox) -> Iterator[E2E]:
    """Drive a started sandbox: test timings, a CRM role, one change carried through (warm)."""
    driver = E2E(sandbox)
    try:
        driver.graph_control("PATCH", "config", {"tenant_id": SANDBOX_TENANT, **NOTIFICATION_TIMINGS})
        tables = {table: {"read": "organization"} for table in ("systemuser", "account", "lead")}
        tables |= dict.fromkeys(CRM_TABLES, FULL_ACCESS)
        driver.dataverse_control("POST", "roles", {"name": driver.role, "tables": tables})
        driver.warm_up()
        yield driver
    finally:
        driver.http.close()


@pytest.fixture(scope="session")
def e2e() -> Iterator[E2E]:
    with Sandbox(extra_settings=E2E_SETTINGS) as sandbox, driving(sandbox) as driver:
        yield driver


def item_path(collection: str, item_id: str) -> str:
    """Graph ids hold ``/``, ``+`` and ``=``: percent-encode them in paths."""
    return f"{collection}/{quote(item_id, safe='')}"
