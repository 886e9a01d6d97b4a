"""The deployment package: built as the pipeline builds it, complete, and free of dev files and secrets."""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.deploy import PackageError, build_package, check_package, package_files
from tests.deploy.conftest import REPO_ROOT

DEV_ONLY_DIRS = {"tests", "simulators", "bench", "bicep", "scripts", ".github", ".venv", ".venv-tools"}
SECRET_OR_LOCAL_NAMES = {"local.settings.json", "local.settings.json.example", ".env"}
SECRET_SUFFIXES = {".pem", ".pfx", ".p12", ".key", ".publishsettings"}
PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+[A-Za-z0-9+/]")
PRIVATE_KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"


@pytest.fixture(scope="module")
def pipeline_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package `crmsync deploy package` writes: the command deploy.yml's `deploy run` uses too."""
    destination = tmp_path_factory.mktemp("package") / "crmsync.zip"
    result = CliRunner().invoke(app, ["deploy", "package", "--output", str(destination)])
    assert result.exit_code == 0, result.output
    return destination


def test_package_holds_no_dev_files_local_settings_or_secrets(pipeline_package: Path) -> None:
    with zipfile.ZipFile(pipeline_package) as archive:
        names = archive.namelist()
        for name in names:
            path = PurePosixPath(name)
            assert path.parts[0] not in DEV_ONLY_DIRS, name
            assert path.name not in SECRET_OR_LOCAL_NAMES, name
            assert path.suffix not in SECRET_SUFFIXES, name
            assert path.suffix != ".md", name
            assert "__pycache__" not in path.parts, name
            assert not PEM_PRIVATE_KEY.search(archive.read(name)), name


def test_package_holds_the_app_and_every_source_file(pipeline_package: Path) -> None:
    tracked = subprocess.run(  # noqa: S603 - fixed argv
        ["git", "-C", str(REPO_ROOT), "ls-files", "shared", "functions"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    sources = {path for path in tracked if path.endswith(".py") and (REPO_ROOT / path).is_file()}
    with zipfile.ZipFile(pipeline_package) as archive:
        names = set(archive.namelist())
        assert {"function_app.py", "host.json", "requirements.txt"} <= names
        assert sources <= names, sorted(sources - names)
        assert archive.read("host.json") == (REPO_ROOT / "host.json").read_bytes()
    assert check_package(pipeline_package) == []


# --- the rules on a small repository of our own --------------------------------------------


def test_funcignore_and_gitignore_decide_the_files(app_tree: Path) -> None:
    assert package_files(app_tree) == [
        ".funcignore",
        "function_app.py",
        "host.json",
        "requirements.txt",
        "shared/logic.py",
    ]


def test_package_bytes_are_reproducible(app_tree: Path, tmp_path: Path) -> None:
    """Same tree, same bytes: a redeploy of unchanged code uploads an identical package."""
    first = build_package(app_tree, tmp_path / "first.zip").read_bytes()
    (app_tree / "shared" / "logic.py").touch()
    assert build_package(app_tree, tmp_path / "second.zip").read_bytes() == first


def test_a_private_key_in_the_source_stops_the_build(app_tree: Path, tmp_path: Path) -> None:
    (app_tree / "shared" / "settings.py").write_text(f'KEY = """{PRIVATE_KEY_PEM}"""\n')
    destination = tmp_path / "out.zip"
    with pytest.raises(PackageError, match=r"shared/settings\.py: contains a private key"):
        build_package(app_tree, destination)
    assert not destination.exists()


def test_a_certificate_file_the_ignore_files_miss_stops_the_build(app_tree: Path, tmp_path: Path) -> None:
    (app_tree / "shared" / "app.pfx").write_bytes(b"\x30\x82")
    with pytest.raises(PackageError, match=r"shared/app\.pfx: local settings or key material"):
        build_package(app_tree, tmp_path / "out.zip")


def test_a_storage_account_key_stops_the_build(app_tree: Path, tmp_path: Path) -> None:
    key = "A" * 86 + "=="
    (app_tree / "shared" / "conn.py").write_text(f'CONN = "AccountName=x;AccountKey={key};"\n')
    with pytest.raises(PackageError, match=r"shared/conn\.py: contains a private key or storage account key"):
        build_package(app_tree, tmp_path / "out.zip")


def test_a_package_without_host_json_is_refused(app_tree: Path, tmp_path: Path) -> None:
    (app_tree / "host.json").unlink()
    with pytest.raises(PackageError, match=r"host\.json: missing"):
        build_package(app_tree, tmp_path / "out.zip")


def test_without_funcignore_nothing_is_packaged(app_tree: Path, tmp_path: Path) -> None:
    (app_tree / ".funcignore").unlink()
    with pytest.raises(PackageError, match=r"\.funcignore is missing"):
        build_package(app_tree, tmp_path / "out.zip")


def test_outside_a_git_checkout_packaging_refuses(tmp_path: Path) -> None:
    (tmp_path / ".funcignore").write_text("tests/\n")
    with pytest.raises(PackageError, match="not a git checkout"):
        package_files(tmp_path)
