"""``crmsync sandbox up`` then ``eval "$(crmsync sandbox env)"`` in another shell, as a new user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from simulators.sandbox import ROOT, SETTINGS_FILE

CLI = f"{sys.executable} -m shared.cli"


def _shell(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI in bash; callers check returncode
        ["/bin/bash", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_sandbox_env_exports_what_the_cli_needs_and_goes_with_the_sandbox() -> None:
    # A shell of a new user: none of crmsync's settings in its environment.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CRMSYNC_", "AzureWebJobs"))}
    up = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "sandbox", "up"],
        cwd=ROOT,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        endpoints = json.loads(up.stdout.readline())
        deadline = time.monotonic() + 30
        while not SETTINGS_FILE.exists() and time.monotonic() < deadline:
            time.sleep(0.2)

        printed = _shell(f"{CLI} sandbox env", clean)
        used = _shell(f'eval "$({CLI} sandbox env)" && {CLI} check-settings && {CLI} status --json', clean)

        assert printed.returncode == 0, printed.stderr
        lines = printed.stdout.splitlines()
        assert all(line.startswith("export ") for line in lines)
        names = {line.split()[1].split("=", 1)[0] for line in lines}
        assert {
            "AzureWebJobsStorage",
            "CRMSYNC_TENANT_ID",
            "CRMSYNC_CLIENT_ID",
            "CRMSYNC_CREDENTIAL_KIND",
            "CRMSYNC_GRAPH_URL",
            "CRMSYNC_DATAVERSE_URL",
            "CRMSYNC_JOB_QUEUE",
            "CRMSYNC_SWEEP_SCHEDULE",
        } <= names
        assert f"CRMSYNC_GRAPH_URL={endpoints['graph']}" in printed.stdout
        assert used.returncode == 0, used.stdout + used.stderr
        assert "settings ok (credential: sandbox)" in used.stdout
        assert used.stdout.rstrip().endswith("[]")  # a fresh sandbox: no mailbox yet
        assert oct(SETTINGS_FILE.stat().st_mode & 0o777) == oct(0o600)  # it holds the keys
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)

    assert not SETTINGS_FILE.exists()
    gone = _shell(f"{CLI} sandbox env", clean)
    assert gone.returncode == 2
    assert "crmsync sandbox up" in gone.stdout + gone.stderr
