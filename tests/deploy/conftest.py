"""Fixtures for the offline deployment checks: the repository, parsed Bicep, the tools venv."""

from __future__ import annotations

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
