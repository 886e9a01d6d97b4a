"""`crmsync deploy`: the exact az command lines, and the order the command runs them in.

There is no Azure CLI or network here, so the CLI is driven against a stand-in `az` on PATH that
records its argv and answers like az does; nothing claims a real deployment happened.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.deploy import (
    DEFAULT_TEMPLATE,
    REPO_ROOT,
    DeployError,
    DeployTarget,
    PackageError,
    deploy,
    deployment_create_command,
    deployment_outputs,
    group_create_command,
    shell_line,
    what_if_command,
    zip_deploy_command,
)

TARGET = DeployTarget(
    resource_group="rg-crmsync",
    location="westeurope",
    parameters=Path("bicep/prod.bicepparam"),
    subscription="sub-1",
    overrides=("namePrefix=crmtest",),
)

# What `az deployment group create --query properties.outputs -o json` prints.
AZ_OUTPUTS = {
    "functionAppName": {"type": "String", "value": "crmsync-abc123"},
    "notificationUrl": {
        "type": "String",
        "value": "https://crmsync-abc123.azurewebsites.net/api/notifications",
    },
    "lifecycleUrl": {"type": "String", "value": "https://crmsync-abc123.azurewebsites.net/api/lifecycle"},
    "identityPrincipalId": {"type": "String", "value": "11111111-2222-3333-4444-555555555555"},
}

FAKE_AZ = """#!{python}
import json, os, sys
with open(os.environ["FAKE_AZ_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
verb = " ".join(sys.argv[1:4])
if verb == os.environ.get("FAKE_AZ_FAIL"):
    sys.stderr.write("ERROR: simulated failure\\n")
    sys.exit(1)
if verb == "deployment group create":
    print(os.environ["FAKE_AZ_OUTPUTS"])
if verb.startswith("group exists"):
    print(os.environ.get("FAKE_AZ_GROUP_EXISTS", "true"))
"""


def test_group_create_is_idempotent_and_scoped() -> None:
    assert group_create_command(TARGET) == [
        "az", "group", "create", "--name", "rg-crmsync", "--location", "westeurope",
        "--subscription", "sub-1", "--output", "none",
    ]  # fmt: skip


def test_deployment_create_uses_template_parameters_and_overrides() -> None:
    assert deployment_create_command(TARGET) == [
        "az", "deployment", "group", "create",
        "--resource-group", "rg-crmsync", "--name", "crmsync",
        "--template-file", "bicep/main.bicep",
        "--parameters", "bicep/prod.bicepparam",
        "--parameters", "namePrefix=crmtest",
        "--subscription", "sub-1",
        "--query", "properties.outputs", "--output", "json",
    ]  # fmt: skip


def test_what_if_takes_the_same_arguments_as_create() -> None:
    create = deployment_create_command(TARGET)
    assert what_if_command(TARGET) == ["az", "deployment", "group", "what-if", *create[4:-4]]


def test_zip_deploy_uses_remote_build() -> None:
    assert zip_deploy_command(TARGET, "crmsync-abc123", Path("dist/crmsync.zip")) == [
        "az", "functionapp", "deployment", "source", "config-zip",
        "--resource-group", "rg-crmsync", "--name", "crmsync-abc123",
        "--src", "dist/crmsync.zip", "--build-remote", "true",
        "--subscription", "sub-1", "--output", "none",
    ]  # fmt: skip


def test_without_subscription_az_uses_the_logged_in_default() -> None:
    target = DeployTarget(resource_group="rg", location="westeurope")
    assert "--subscription" not in group_create_command(target)
    assert "--subscription" not in deployment_create_command(target)


def test_shell_line_quotes_what_the_shell_would_split() -> None:
    assert shell_line(["az", "group", "create", "--name", "my rg"]) == "az group create --name 'my rg'"


def test_deployment_outputs_are_flattened() -> None:
    outputs = deployment_outputs(json.dumps(AZ_OUTPUTS))
    assert outputs["functionAppName"] == "crmsync-abc123"
    assert outputs["lifecycleUrl"].endswith("/api/lifecycle")


@pytest.mark.parametrize("printed", ["", "not json", "[1, 2]", '{"functionAppName": "no value key"}'])
def test_unreadable_outputs_are_a_clear_error(printed: str) -> None:
    with pytest.raises(DeployError, match="deployment outputs"):
        deployment_outputs(printed)


# --- the command, end to end against the stand-in az ------------------------------------------


@pytest.fixture
def az_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the recording `az` first on PATH; return the file its calls are logged to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(FAKE_AZ.format(python=sys.executable))
    az.chmod(0o755)
    log = tmp_path / "az.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_AZ_LOG", str(log))
    monkeypatch.setenv("FAKE_AZ_OUTPUTS", json.dumps(AZ_OUTPUTS))
    return log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _run(*extra: str, package: Path) -> tuple[int, str]:
    args = ["deploy", "run", "-g", "rg-crmsync", "-l", "westeurope", "--package", str(package), *extra]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_deploy_provisions_then_uploads_the_checked_package(az_log: Path, tmp_path: Path) -> None:
    package = tmp_path / "crmsync.zip"
    code, output = _run("--set", "namePrefix=crmtest", package=package)
    assert code == 0, output
    template = str(REPO_ROOT / DEFAULT_TEMPLATE)
    assert _calls(az_log) == [
        ["group", "create", "--name", "rg-crmsync", "--location", "westeurope", "--output", "none"],
        ["deployment", "group", "create", "--resource-group", "rg-crmsync", "--name", "crmsync",
         "--template-file", template, "--parameters", "bicep/main.bicepparam",
         "--parameters", "namePrefix=crmtest", "--query", "properties.outputs", "--output", "json"],
        ["functionapp", "deployment", "source", "config-zip", "--resource-group", "rg-crmsync",
         "--name", "crmsync-abc123", "--src", str(package), "--build-remote", "true", "--output", "none"],
    ]  # fmt: skip
    with zipfile.ZipFile(package) as archive:
        assert "function_app.py" in archive.namelist()
    assert "notificationUrl: https://crmsync-abc123.azurewebsites.net/api/notifications" in output


def test_dry_run_changes_nothing_and_runs_only_what_if(az_log: Path, tmp_path: Path) -> None:
    code, output = _run("--dry-run", package=tmp_path / "crmsync.zip")
    assert code == 0, output
    assert [call[:3] for call in _calls(az_log)] == [
        ["group", "exists", "--name"],
        ["deployment", "group", "what-if"],
    ]
    assert "would run: az group create --name rg-crmsync" in output
    assert "would run: az functionapp deployment source config-zip" in output


def test_dry_run_before_the_first_deployment_says_everything_is_new(
    az_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """what-if needs an existing group; on an empty subscription there is nothing to compare."""
    monkeypatch.setenv("FAKE_AZ_GROUP_EXISTS", "false")
    code, output = _run("--dry-run", package=tmp_path / "crmsync.zip")
    assert code == 0, output
    assert [call[:2] for call in _calls(az_log)] == [["group", "exists"]]
    assert "does not exist yet: every resource would be created" in output


def test_a_failed_deployment_uploads_nothing(
    az_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AZ_FAIL", "deployment group create")
    code, output = _run(package=tmp_path / "crmsync.zip")
    assert code == 2
    assert "failed with exit code 1" in output
    assert [call[0] for call in _calls(az_log)] == ["group", "deployment"]


def test_missing_az_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    only_git = tmp_path / "bin"
    only_git.mkdir()
    git = shutil.which("git")
    assert git is not None
    (only_git / "git").symlink_to(git)
    monkeypatch.setenv("PATH", str(only_git))
    code, output = _run(package=tmp_path / "crmsync.zip")
    assert code == 2
    assert "install the Azure CLI" in output


def test_a_refused_package_stops_before_azure_changes(az_log: Path, app_tree: Path, tmp_path: Path) -> None:
    (app_tree / "shared" / "signing.key").write_text("not for Azure")
    with pytest.raises(PackageError, match=r"shared/signing\.key: local settings or key material"):
        deploy(TARGET, repo_root=app_tree, package=tmp_path / "crmsync.zip", dry_run=False)
    assert _calls(az_log) == []
