"""Fixtures for the offline deployment checks: the repository, parsed Bicep, the tools venv."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

REPO_ROOT = Path(__file__).resolve().parents[2]
BICEP_DIR = REPO_ROOT / "bicep"
TOOLS_HINT = "run `make tools` (or `make test`, which does it first)"


def tool(relative: str) -> Path:
    """A tool installed by `make tools`; fail (never skip) with the fix when it is missing."""
    path = REPO_ROOT / relative
    if not path.exists():
        pytest.fail(f"{relative} is missing: {TOOLS_HINT}")
    return path


def bicep_app_settings(main_bicep: dict[str, Any], functionapp_bicep: dict[str, Any]) -> list[str]:
    """Every app-setting name the deployment sets: the host's list plus main.bicep's crmsync object."""
    app_settings = functionapp_bicep["resources"]["app"]["config"]["properties"]["siteConfig"]["appSettings"]
    # If someone adds a third list to concat(), this test must be taught about it.
    assert app_settings == {
        "function": {"type": "concat", "parameters": {"arg_1": "hostSettings", "arg_2": "crmsyncSettingList"}}
    }
    host = [entry["name"] for entry in functionapp_bicep["variables"]["hostSettings"]["value"]]
    crmsync = list(main_bicep["modules"]["functionApp"]["config"]["params"]["crmsyncSettings"])
    return host + crmsync


@pytest.fixture(scope="session")
def bicep_parser() -> BicepParser:
    return BicepParser()


@pytest.fixture(scope="session")
def main_bicep(bicep_parser: BicepParser) -> dict[str, Any]:
    parsed: dict[str, Any] = bicep_parser.parse(file_path=BICEP_DIR / "main.bicep")
    return parsed


@pytest.fixture(scope="session")
def functionapp_bicep(bicep_parser: BicepParser) -> dict[str, Any]:
    parsed: dict[str, Any] = bicep_parser.parse(file_path=BICEP_DIR / "modules" / "functionapp.bicep")
    return parsed


@pytest.fixture
def app_tree(tmp_path: Path) -> Path:
    """A minimal function-app checkout with the real .funcignore and a dev folder."""
    root = tmp_path / "repo"
    (root / "shared").mkdir(parents=True)
    (root / "tests").mkdir()
    shutil.copy(REPO_ROOT / ".funcignore", root / ".funcignore")
    (root / ".gitignore").write_text("local.settings.json\n__pycache__/\n")
    (root / "function_app.py").write_text("app = None\n")
    (root / "host.json").write_text('{"version": "2.0"}\n')
    (root / "requirements.txt").write_text("azure-functions\n")
    (root / "shared" / "logic.py").write_text("VALUE = 1\n")
    (root / "tests" / "test_logic.py").write_text("def test_it() -> None: ...\n")
    (root / "local.settings.json").write_text('{"Values": {"CRMSYNC_CLIENT_ID": "x"}}\n')
    (root / "README.md").write_text("# docs\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)  # noqa: S603, S607
    return root
