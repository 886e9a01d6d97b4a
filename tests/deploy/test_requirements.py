"""What Azure installs is a hashed lock of the whole dependency tree, and the package ships it.

requirements.in holds the direct pins people edit; requirements.txt is pip-compile's
``--generate-hashes`` output from it (the command is in CONTRIBUTING.md). Flex Consumption's
remote build runs ``pip install -r requirements.txt``; a requirement with a hash puts pip in
hash-checking mode for every line, so a package that is missing from the lock, or a file whose
bytes differ from the locked ones, fails the build instead of being installed.
"""

from __future__ import annotations

import importlib.metadata
import re
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

from shared.cli import app
from tests.deploy.conftest import REPO_ROOT

LOCK = REPO_ROOT / "requirements.txt"
DIRECT = REPO_ROOT / "requirements.in"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[\w,-]+\])?==(?P<version>[^\s\\;]+)(?P<rest>.*)$")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def _logical_lines(text: str) -> list[str]:
    """Requirement lines with their backslash continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    return [
        line.split(" #", 1)[0].strip() for line in joined.splitlines() if line.strip()[:1] not in ("", "#")
    ]


def _pins(path: Path) -> dict[str, tuple[str, str]]:
    """canonical name -> (version, the rest of the line) of every ``name==version`` requirement."""
    pins: dict[str, tuple[str, str]] = {}
    for line in _logical_lines(path.read_text()):
        match = PIN.match(line)
        assert match, f"{path.name}: not an exact pin: {line[:80]}"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = (match["version"], match["rest"])
    return pins


def test_every_locked_requirement_is_an_exact_pin_with_hashes() -> None:
    locked = _pins(LOCK)
    assert len(locked) > len(_pins(DIRECT)), "the lock holds only the direct dependencies"
    unhashed = sorted(name for name, (_, rest) in locked.items() if not HASH.search(rest))
    assert not unhashed, f"requirements.txt: no --hash for {unhashed}"


def test_lock_pins_each_direct_dependency_at_the_version_requirements_in_names() -> None:
    locked = _pins(LOCK)
    for name, (version, rest) in _pins(DIRECT).items():
        assert not HASH.search(rest), f"requirements.in: {name} carries a hash; only the lock does"
        assert name in locked, f"{name} is in requirements.in but not in the lock: re-run pip-compile"
        assert locked[name][0] == version, (
            f"{name}: requirements.in says {version}, the lock {locked[name][0]}"
        )


def test_lock_is_closed_over_the_dependency_tree() -> None:
    """Every dependency of every locked distribution (as installed from the lock) is locked too."""
    locked = _pins(LOCK)
    missing: list[str] = []
    for name, (version, _) in locked.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name} is locked but not installed: run `make setup` (it installs the lock)")
        assert installed == version, f"{name}: the venv holds {installed}, the lock {version}: `make setup`"
        for spec in importlib.metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(requirement.name) not in locked:
                missing.append(f"{requirement.name} (needed by {name})")
    assert not missing, f"the lock misses: {sorted(set(missing))}"


def test_the_deployment_package_ships_the_lock(tmp_path: Path) -> None:
    destination = tmp_path / "crmsync.zip"
    result = CliRunner().invoke(app, ["deploy", "package", "--output", str(destination)])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(destination) as archive:
        names = set(archive.namelist())
        assert archive.read("requirements.txt") == LOCK.read_bytes()
    assert "requirements.in" not in names, "the package carries one requirements file: the lock"


def test_pipelines_install_the_lock_in_hash_checking_mode() -> None:
    deploy = (REPO_ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert "pip install --require-hashes" in deploy
    assert re.search(r"--require-hashes[^\n]*-r requirements\.txt", deploy)
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"pip install [^\n]*--require-hashes -r requirements\.txt", makefile)
