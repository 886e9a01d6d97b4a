"""Offline validation of bicep/: it parses, checkov finds nothing, and it matches shared/config.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.config import setting_names
from shared.deploy import HOST_SETTINGS, LOCAL_ONLY_SETTINGS, expected_app_settings
from shared.store.azure.service import TABLES
from tests.deploy.conftest import BICEP_DIR, REPO_ROOT, bicep_app_settings, tool

BICEP_FILES = sorted(BICEP_DIR.rglob("*.bicep"))


def test_there_is_a_main_template_and_local_modules() -> None:
    names = {path.relative_to(BICEP_DIR).as_posix() for path in BICEP_FILES}
    assert {"main.bicep", "modules/functionapp.bicep", "modules/rbac.bicep", "modules/storage.bicep"} <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda path: path.relative_to(BICEP_DIR).as_posix())
def test_every_bicep_file_parses(bicep_parser: BicepParser, path: Path) -> None:
    parsed = bicep_parser.parse(file_path=path)
    assert parsed.get("resources") or parsed.get("modules"), f"{path.name} declares nothing"


def test_modules_are_local_files_only(main_bicep: dict[str, Any]) -> None:
    """Registry modules would hide resources from offline scanners."""
    for name, module in main_bicep["modules"].items():
        assert module["type"] == "local", name
        assert (BICEP_DIR / module["detail"]["path"]).is_file(), name


def test_bicep_sets_exactly_the_settings_the_app_and_host_read(
    main_bicep: dict[str, Any], functionapp_bicep: dict[str, Any]
) -> None:
    names = bicep_app_settings(main_bicep, functionapp_bicep)
    assert len(names) == len(set(names)), "an app setting is set twice"
    missing = expected_app_settings() - set(names)
    unknown = set(names) - expected_app_settings()
    assert not missing, f"shared/config.py reads these but Bicep does not set them: {sorted(missing)}"
    assert not unknown, (
        f"Bicep sets these but neither shared/config.py nor the host reads them: {sorted(unknown)}"
    )


def test_host_and_local_only_settings_are_not_crmsync_settings() -> None:
    """The explicit lists stay honest: host settings are not in config.py; local-only ones are."""
    assert not HOST_SETTINGS & setting_names()
    assert setting_names() >= LOCAL_ONLY_SETTINGS


def test_storage_holds_the_tables_the_store_creates(main_bicep: dict[str, Any]) -> None:
    assert tuple(main_bicep["variables"]["tableSuffixes"]["value"]) == TABLES


def test_outputs_are_the_two_webhook_urls(main_bicep: dict[str, Any]) -> None:
    variables = main_bicep["variables"]
    assert main_bicep["outputs"]["notificationUrl"]["value"] == "notificationUrl"
    assert main_bicep["outputs"]["lifecycleUrl"]["value"] == "lifecycleUrl"
    assert variables["notificationUrl"]["value"] == "https://${appHostName}/api/notifications"
    assert variables["lifecycleUrl"]["value"] == "https://${appHostName}/api/lifecycle"


def _resource_body(resource: dict[str, Any]) -> dict[str, Any]:
    """The declared body of a resource, under any ``for`` loop or ``if`` condition pycep wraps it in."""
    body: dict[str, Any] = resource["config"]
    while "loop_type" in body or "condition" in body:
        body = body["config"]
    return body


def test_role_assignments_live_in_rbac_and_are_named_by_scope_principal_role(
    bicep_parser: BicepParser,
) -> None:
    grants = 0
    for path in BICEP_FILES:
        for name, resource in bicep_parser.parse(file_path=path).get("resources", {}).items():
            if resource["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            assert path.name == "rbac.bicep", f"{path.name}: role assignment {name} outside rbac.bicep"
            body = _resource_body(resource)
            guid = body["name"]["function"]
            assert guid["type"] == "guid", name
            scope, principal, role = guid["parameters"].values()
            assert scope["operator"]["operands"] == {"operand_1": body["scope"], "operand_2": "id"}, name
            assert principal == body["properties"]["principalId"], name
            assert (
                role == body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
            ), name
            grants += 1
    assert grants >= 4


def test_parameter_file_sets_only_declared_parameters(main_bicep: dict[str, Any]) -> None:
    text = (BICEP_DIR / "main.bicepparam").read_text()
    assert re.search(r"^using 'main\.bicep'$", text, re.MULTILINE)
    assigned = re.findall(r"^param (\w+) =", text, re.MULTILINE)
    declared = set(main_bicep["parameters"])
    assert set(assigned) <= declared, sorted(set(assigned) - declared)
    required = {name for name, spec in main_bicep["parameters"].items() if "default" not in spec}
    assert required <= set(assigned), (
        f"main.bicepparam must set the required {sorted(required - set(assigned))}"
    )


def test_checkov_finds_no_failed_check() -> None:
    """Zero failed checks; every skip carries an inline justification in the Bicep file."""
    checkov = tool(".venv-tools/bin/checkov")
    result = subprocess.run(  # noqa: S603 - fixed argv
        [str(checkov), "--directory", str(BICEP_DIR), "--framework", "bicep",
         "--skip-download", "--output", "json"],
        capture_output=True, text=True, check=False, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in report["results"]["failed_checks"]
    ]
    assert summary["failed"] == 0, "checkov failed:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0
    for skipped in report["results"]["skipped_checks"]:
        reason = skipped.get("check_result", {}).get("suppress_comment", "")
        assert len(reason) > 20, f"{skipped['check_id']} skipped without a justification"
