"""The local sandbox: Azurite, the Graph and Dataverse simulators and the Functions runner.

``crmsync sandbox up`` (or ``python -m simulators.sandbox``) starts all four on
free loopback ports, prints ONE JSON line with their endpoints, and keeps them
running until interrupted, so any HTTP client can drive the sandbox from
another shell. Tests and ``make demo`` use :class:`Sandbox` directly.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from simulators.azurite import ROOT, Azurite
from simulators.ports import free_port, wait_for_port

HOST = "127.0.0.1"
SANDBOX_TENANT = "00000000-0000-4000-8000-000000000001"
SANDBOX_CLIENT = "00000000-0000-4000-8000-000000000002"
# The bearer token crmsync sends with CRMSYNC_CREDENTIAL_KIND=sandbox (StaticTokenCredential in
# shared/outlook/credentials.py) and the Graph application permissions README step 2 ("Register the
# Entra app and consent to its Graph permissions") grants the app: the Graph simulator gives that
# token exactly these roles, so a call the deployed app may not make fails here as it would in a tenant.
CONNECTOR_TOKEN = "crmsync-sandbox-token"
CONNECTOR_GRAPH_ROLES = (
    "Mail.ReadWrite",
    "Contacts.ReadWrite",
    "Calendars.ReadWrite",
    "Tasks.ReadWrite.All",
    "MailboxSettings.ReadWrite",
    "User.Read.All",
)


def grant_connector_roles(graph_root: str) -> None:
    """Issue the connector's token with its app's roles on a running Graph simulator (/_sim/tokens)."""
    body = {"token": CONNECTOR_TOKEN, "appId": SANDBOX_CLIENT, "roles": list(CONNECTOR_GRAPH_ROLES)}
    httpx.post(f"{graph_root}/_sim/tokens", json=body, timeout=30, trust_env=False).raise_for_status()


def _spawn(
    module: str, port: int, *, env: dict[str, str] | None = None, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python -m <module> --host 127.0.0.1 --port <port>`` and wait until it listens."""
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, "-m", module, "--host", HOST, "--port", str(port), *(extra or [])],
        cwd=ROOT,
        env=env or dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("CRMSYNC_SANDBOX_VERBOSE") else subprocess.DEVNULL,
    )
    try:
        wait_for_port(HOST, port, timeout=60)
    except TimeoutError:
        process.kill()
        raise
    if process.poll() is not None:
        raise RuntimeError(f"{module} exited with {process.returncode} during start-up")
    return process


@dataclass
class Sandbox:
    """Every local service crmsync needs, started together and stopped together."""

    azurite: Azurite = field(default_factory=Azurite)
    graph_port: int = field(default_factory=free_port)
    dataverse_port: int = field(default_factory=free_port)
    functions_port: int = field(default_factory=free_port)
    master_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    function_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    crm_webhook_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    extra_settings: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def graph_url(self) -> str:
        return f"http://{HOST}:{self.graph_port}/v1.0"

    @property
    def dataverse_url(self) -> str:
        return f"http://{HOST}:{self.dataverse_port}"

    @property
    def dataverse_api_url(self) -> str:
        return f"{self.dataverse_url}/api/data/v9.2"

    @property
    def functions_url(self) -> str:
        return f"http://{HOST}:{self.functions_port}"

    def app_settings(self) -> dict[str, str]:
        """The app settings the function app runs with inside the sandbox."""
        return {
            "AzureWebJobsStorage": self.azurite.connection_string,
            "CRMSYNC_TENANT_ID": SANDBOX_TENANT,
            "CRMSYNC_CLIENT_ID": SANDBOX_CLIENT,
            "CRMSYNC_CREDENTIAL_KIND": "sandbox",
            "CRMSYNC_GRAPH_URL": self.graph_url,
            "CRMSYNC_DATAVERSE_URL": self.dataverse_url,
            "CRMSYNC_NOTIFICATION_URL": f"{self.functions_url}/api/notifications",
            "CRMSYNC_LIFECYCLE_URL": f"{self.functions_url}/api/lifecycle",
            # Binding expressions (%NAME%) are resolved by the host from app settings, so the
            # queue name and the timer schedules must be real settings, not code defaults.
            "CRMSYNC_JOB_QUEUE": "crmsync-jobs",
            "CRMSYNC_RENEW_SCHEDULE": "0 */30 * * * *",
            "CRMSYNC_SWEEP_SCHEDULE": "0 */15 * * * *",
            "CRMSYNC_PARKED_RETRY_SCHEDULE": "0 5 * * * *",
            "CRMSYNC_CRM_CHANGES_SCHEDULE": "0 */5 * * * *",
            "CRMSYNC_CRM_WEBHOOK_KEY": self.crm_webhook_key,
            # The local runner's hold on a running message (the host's: 10 minutes, renewed), short
            # here so a runner killed by a test gives its messages back within seconds.
            "CRMSYNC_RUNNER_MESSAGE_LEASE_SECONDS": "10",
            **self.extra_settings,
        }

    def endpoints(self) -> dict[str, Any]:
        """What another shell needs to drive the sandbox (printed as one JSON line)."""
        return {
            "graph": self.graph_url,
            "graph_control": f"http://{HOST}:{self.graph_port}/_sim",
            "dataverse": self.dataverse_api_url,
            "dataverse_control": f"{self.dataverse_url}/_sim",
            "storage": self.azurite.connection_string,
            "functions": f"{self.functions_url}/api",
            "admin_key": self.function_key,
            "master_key": self.master_key,
        }

    def start(self) -> Sandbox:
        try:
            self.azurite.start()
            self.processes.append(_spawn("simulators.graph", self.graph_port))
            # Graph stamps its tenant on every notification; the app checks it against its own.
            httpx.patch(
                f"http://{HOST}:{self.graph_port}/_sim/config", json={"tenant_id": SANDBOX_TENANT}, timeout=30
            ).raise_for_status()
            grant_connector_roles(f"http://{HOST}:{self.graph_port}")
            self.processes.append(_spawn("simulators.dataverse", self.dataverse_port))
            self.processes.append(self._spawn_runner({}))
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn_runner(self, setting_overrides: dict[str, str]) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.app_settings(),
            **setting_overrides,
            "CRMSYNC_LOCAL_MASTER_KEY": self.master_key,
            "CRMSYNC_LOCAL_FUNCTION_KEY": self.function_key,
        }
        return _spawn("simulators.functions_host", self.functions_port, env=env)

    def restart_runner(self, **setting_overrides: str) -> None:
        """Kill the Functions runner (SIGKILL: no clean-up, like a crashed worker) and start a new one
        on the same port, optionally with different app settings. The runner is the last process."""
        runner = self.processes[-1]
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        self.processes[-1] = self._spawn_runner(setting_overrides)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        self.azurite.stop()

    def onboard_with_cli(
        self,
        mailbox_id: str,
        crm_user_id: str,
        *,
        quiet: bool = False,
        settings: Path | None = None,
        profile: Path | None = None,
    ) -> None:
        """``crmsync mailbox add`` against this sandbox, as an administrator would run it (under
        cProfile, writing ``profile``, when asked)."""
        self.run_cli(
            "mailbox",
            "add",
            mailbox_id,
            "--crm-user",
            crm_user_id,
            *(["--settings", str(settings)] if settings else []),
            quiet=quiet,
            profile=profile,
        )

    def run_cli(self, *args: str, quiet: bool = False, profile: Path | None = None) -> None:
        """``crmsync <args>`` against this sandbox, as a subprocess with its app settings."""
        # CPU time, not wall time: bench/_profiled.py (only with the repository's bench package).
        command = [
            sys.executable,
            *(["-m", "bench._profiled", str(profile)] if profile else ["-m"]),
            "shared.cli",
            *args,
        ]
        subprocess.run(  # noqa: S603 - our own CLI, no shell
            command,
            env={**os.environ, **self.app_settings()},
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL if quiet else None,
        )

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


#: Where ``up`` writes the running sandbox's app settings for ``crmsync sandbox env`` (gitignored).
SETTINGS_FILE = ROOT / ".sandbox" / "settings.json"


def write_settings_file(sandbox: Sandbox, path: Path = SETTINGS_FILE) -> None:
    """The app settings the CLI needs against ``sandbox`` (owner-only: it holds the keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "pid": os.getpid(),
        "settings": sandbox.app_settings(),
        "status_page": f"{sandbox.functions_url}/api/admin/ui?code={sandbox.function_key}",
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(document, indent=2))


def read_settings_file(path: Path = SETTINGS_FILE) -> dict[str, str]:
    """The running sandbox's app settings; ``FileNotFoundError`` when no sandbox is running."""
    document = json.loads(path.read_text())
    try:
        os.kill(int(document["pid"]), 0)
    except ProcessLookupError:
        raise FileNotFoundError("the sandbox that wrote its settings has stopped") from None
    except PermissionError:
        pass  # alive, another user's
    return {str(k): str(v) for k, v in document["settings"].items()}


def up() -> int:
    """Start the sandbox, print its endpoints as one JSON line, run until Ctrl-C.

    Also writes the settings file ``crmsync sandbox env`` prints as ``export`` lines, and says so
    on stderr (stdout stays the one JSON line scripts read). SIGTERM stops it like Ctrl-C (a
    background ``sandbox up`` ignores SIGINT), so the services stop and the settings file goes."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    with Sandbox() as sandbox:
        print(json.dumps(sandbox.endpoints()), flush=True)
        write_settings_file(sandbox)
        print(
            'sandbox running; in another shell: eval "$(crmsync sandbox env)" then crmsync status\n'
            f"status page: {sandbox.functions_url}/api/admin/ui?code={sandbox.function_key}",
            file=sys.stderr,
            flush=True,
        )
        try:
            while all(p.poll() is None for p in sandbox.processes):
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        finally:
            SETTINGS_FILE.unlink(missing_ok=True)
        failed = [p.args for p in sandbox.processes if p.poll() is not None]
        print(json.dumps({"error": "a sandbox service stopped", "services": str(failed)}), file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(up())
