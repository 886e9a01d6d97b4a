"""Start the Dataverse simulator as a subprocess and drive its control API (used by tests and bench)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from simulators.dataverse.security import APP_USER_ID, APP_USER_OBJECT_ID
from simulators.ports import free_port, stop_process, wait_for_port

API_PATH = "/api/data/v9.2"


@dataclass
class DataverseSimulator:
    """A running simulator on a free loopback port; ``stop()`` (or the context manager) ends it."""

    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _control: httpx.Client | None = field(default=None, repr=False)
    app_user_id: str = APP_USER_ID
    app_user_object_id: str = APP_USER_OBJECT_ID

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.root_url}{API_PATH}"

    def start(self) -> DataverseSimulator:
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed module, no shell
            [sys.executable, "-m", "simulators.dataverse", "--host", self.host, "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.host, self.port)
        self._control = httpx.Client(base_url=f"{self.root_url}/_sim", timeout=30)
        return self

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        stop_process(self.process)
        self.process = None

    def __enter__(self) -> DataverseSimulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- helpers for callers of the Web API ----------------------------------------------------
    @staticmethod
    def new_token() -> str:
        """A fresh bearer token: limits, faults and the request log can be scoped to it."""
        return f"sim-{uuid.uuid4().hex}"

    @staticmethod
    def headers(token: str, *, caller_object_id: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "OData-Version": "4.0"}
        if caller_object_id:
            headers["CallerObjectId"] = caller_object_id
        return headers

    # -- control API ---------------------------------------------------------------------------
    @property
    def control(self) -> httpx.Client:
        """One keep-alive client for the control API (cheaper than a client per call)."""
        if self._control is None:
            raise RuntimeError("the simulator is not running: call start() first")
        return self._control

    def _call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        response = self.control.request(method, path, json=body, params=params)
        response.raise_for_status()
        return response.json() if response.content else None

    def add_user(
        self,
        *,
        systemuserid: str | None = None,
        azureactivedirectoryobjectid: str | None = None,
        internalemailaddress: str | None = None,
        fullname: str | None = None,
        roles: list[str] | tuple[str, ...] = (),
        fieldsecurityprofiles: list[str] | tuple[str, ...] = (),
        isdisabled: bool = False,
    ) -> dict[str, Any]:
        """Add a CRM user (systemuser row + its roles and field security profiles)."""
        result: dict[str, Any] = self._call(
            "POST",
            "/users",
            {
                "systemuserid": systemuserid or str(uuid.uuid4()),
                "azureactivedirectoryobjectid": azureactivedirectoryobjectid or str(uuid.uuid4()),
                "internalemailaddress": internalemailaddress,
                "fullname": fullname,
                "roles": list(roles),
                "fieldsecurityprofiles": list(fieldsecurityprofiles),
                "isdisabled": isdisabled,
            },
        )
        return result

    def add_role(
        self,
        name: str,
        *,
        tables: dict[str, dict[str, str]] | None = None,
        privileges: dict[str, str] | None = None,
        system_administrator: bool = False,
    ) -> None:
        """tables: {"contact": {"create": "user", "read": "organization"}}; privileges: {"prv...": depth}."""
        self._call(
            "POST",
            "/roles",
            {
                "name": name,
                "tables": tables or {},
                "privileges": privileges or {},
                "system_administrator": system_administrator,
            },
        )

    def add_field_security_profile(self, name: str, permissions: list[dict[str, Any]]) -> None:
        """permissions: [{"table", "column", "read", "update", "create"}]; listed columns become secured."""
        self._call("POST", "/fieldsecurityprofiles", {"name": name, "permissions": permissions})

    def add_team(self, name: str, *, members: list[str], fieldsecurityprofiles: list[str]) -> str:
        """A team of ``members`` (systemuserids) holding the named field security profiles; its teamid."""
        body = {"name": name, "members": members, "fieldsecurityprofiles": fieldsecurityprofiles}
        return str(self._call("POST", "/teams", body)["teamid"])

    def bind_token(self, token: str, systemuserid: str) -> None:
        """Requests with this bearer token call as ``systemuserid`` (another application user)."""
        self._call("POST", "/tokens", {"token": token, "systemuserid": systemuserid})

    def define_key(self, table: str, name: str, columns: list[str]) -> None:
        self._call("POST", "/keys", {"table": table, "name": name, "columns": columns})

    def seed(self, table: str, records: list[dict[str, Any]]) -> list[str]:
        """Insert rows as the system (Web API payload shape, @odata.bind allowed); returns their ids."""
        result: dict[str, list[str]] = self._call("POST", "/seed", {"table": table, "records": records})
        return result["ids"]

    def fault(self, kind: str, *, token: str | None = None, count: int | None = None, **options: Any) -> str:
        """kind: latency (latency_ms), status (status, code, message), throttle (retry_after), outage,
        hang_after_commit (table, seconds), hang (seconds); any kind: token, path_contains,
        body_contains, after, count. Returns the fault's id."""
        result: dict[str, str] = self._call(
            "POST", "/faults", {"kind": kind, "token": token, "count": count, **options}
        )
        return result["id"]

    def fault_state(self, fault_id: str) -> dict[str, Any]:
        """{"id", "kind", "table", "remaining", "fired", "holding"} until the faults are cleared."""
        result: dict[str, Any] = self._call("GET", f"/faults/{fault_id}")
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def set_limits(self, *, token: str | None = None, **limits: float) -> dict[str, Any]:
        """requests, window_seconds, concurrent, execution_ms; for one token or (None) every client."""
        result: dict[str, Any] = self._call("POST", "/limits", {"token": token, **limits})
        return result

    def clear_limits(self) -> None:
        self._call("DELETE", "/limits")

    def requests(self, token: str | None = None) -> list[dict[str, Any]]:
        result: dict[str, list[dict[str, Any]]] = self._call(
            "GET", "/requests", params={"token": token} if token else None
        )
        return result["value"]

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    def expire_change_tokens(self, table: str | None = None) -> None:
        self._call("POST", "/change-tokens/expire", {"table": table})

    def record(self, table: str, record_id: str) -> dict[str, Any] | None:
        """A row as the system sees it (every column), or None."""
        response = self.control.get(f"/records/{table}/{record_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """The webhook delivery log (step, url without query, message, entity, id, statuses, outcome)."""
        result: dict[str, list[dict[str, Any]]] = self._call("GET", "/webhooks")
        return result["value"]

    def clear_webhook_deliveries(self) -> None:
        self._call("DELETE", "/webhooks")

    def reset(self) -> None:
        self._call("POST", "/reset")
