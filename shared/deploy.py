"""``crmsync deploy``: provision the Bicep templates, package the app and zip-deploy it.

One code path for people and pipelines: ``.github/workflows/deploy.yml`` calls the same
commands an administrator runs from the README, so what CI tests is what ships.

- The package is the committed (or at least not git-ignored) files minus ``.funcignore``,
  matched with git's own ignore rules, so ``func azure functionapp publish``, this module
  and the pipeline agree on what is deployed. It is checked before it leaves the machine:
  no tests, simulators, local settings or key material.
- Azure is driven through exact ``az`` command lines (built here, unit-tested offline).
  Every step is idempotent: ``az group create`` on an existing group, an incremental
  deployment and a zip deploy that replaces the previous package can all run again.
- ``--dry-run`` prints every command and runs only read-only ones (``az group exists`` and
  ``az deployment group what-if``).

Docs: learn.microsoft.com/azure/azure-functions/flex-consumption-how-to (deploy a zip with
remote build), learn.microsoft.com/azure/azure-resource-manager/bicep/deploy-what-if.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer

from shared import __version__
from shared.config import setting_names

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = Path("bicep/main.bicep")
DEFAULT_PARAMETERS = Path("bicep/main.bicepparam")
DEFAULT_PACKAGE = Path("dist/crmsync.zip")
DEPLOYMENT_NAME = "crmsync"

#: App settings the Functions host reads itself (shared/config.py does not), set in Bicep.
#: Flex Consumption takes the runtime from ``functionAppConfig`` and rejects
#: FUNCTIONS_EXTENSION_VERSION / FUNCTIONS_WORKER_RUNTIME as app settings, so they are absent.
#: Docs: learn.microsoft.com/azure/azure-functions/functions-app-settings (Flex deprecations),
#: learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication.
HOST_SETTINGS = frozenset(
    {
        "AzureWebJobsStorage__credential",  # "managedidentity": identity-based host storage
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",  # Entra auth for telemetry (local auth off)
        # The body size the host reads before any function sees a request (default 100 MB; host.json
        # has no such setting): the webhooks' cap, so an anonymous POST cannot make it buffer more.
        "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT",
    }
)

#: Settings shared/config.py accepts that only make sense off Azure: the storage connection
#: string (Azurite). In Azure storage is identity-based (AzureWebJobsStorage__accountName).
LOCAL_ONLY_SETTINGS = frozenset({"AzureWebJobsStorage"})

#: Files the Functions host needs at the package root; a package without them cannot start.
REQUIRED_PACKAGE_FILES = ("function_app.py", "host.json", "requirements.txt")

#: Top-level folders that must never ship (development only).
FORBIDDEN_PACKAGE_DIRS = ("tests", "simulators", "bench", "bicep", "scripts", ".github", ".venv")

#: File names that hold local settings or key material.
FORBIDDEN_PACKAGE_NAMES = (
    "local.settings.json",
    ".env",
    ".env.*",
    "*.pem",
    "*.pfx",
    "*.p12",
    "*.key",
    "*.publishsettings",
)

#: Content that is a secret wherever it appears (a private key, a literal storage account key).
_SECRET_CONTENT = re.compile(
    rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----\s+[A-Za-z0-9+/]|AccountKey=[A-Za-z0-9+/]{40,}={0,2}",
)

# Zip entries get a fixed timestamp so the same tree always yields the same bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class DeployError(RuntimeError):
    """A deployment step cannot go on; the message says which and why."""


class PackageError(DeployError):
    """The package would be incomplete or would ship something it must not."""


def expected_app_settings() -> frozenset[str]:
    """The exact app-setting names Bicep must set: crmsync's own plus the host's, minus local-only."""
    return (setting_names() - LOCAL_ONLY_SETTINGS) | HOST_SETTINGS


# --- packaging -------------------------------------------------------------------------------


def _git(repo_root: Path, *arguments: str, stdin: bytes = b"", ok: tuple[int, ...] = (0,)) -> list[str]:
    """Run one git query in ``repo_root``; return the NUL-separated paths it prints."""
    git = shutil.which("git")
    if git is None:
        raise PackageError("packaging needs git (it applies .gitignore and .funcignore exactly as git does)")
    result = subprocess.run(  # noqa: S603 - argv built here, no shell
        [git, "-C", str(repo_root), *arguments], input=stdin, capture_output=True, check=False
    )
    if result.returncode not in ok:
        raise PackageError(f"{repo_root} is not a git checkout: {result.stderr.decode(errors='replace')}")
    return [path for path in result.stdout.decode().split("\0") if path]


def package_files(repo_root: Path) -> list[str]:
    """Repository-relative paths that go into the deployment package, sorted.

    Candidates are the files git knows about or would add (``.gitignore`` applied); git's own
    matcher then drops every candidate ``.funcignore`` matches (``check-ignore`` exits 1 when
    none does). Deleted-but-tracked files are left out.
    """
    funcignore = repo_root / ".funcignore"
    if not funcignore.is_file():
        raise PackageError(f"{funcignore} is missing: without it tests and tools would be deployed")
    candidates = _git(repo_root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    excluded = _git(
        repo_root,
        *("-c", f"core.excludesFile={funcignore}", "check-ignore", "--no-index", "--stdin", "-z"),
        stdin="\0".join(candidates).encode(),
        ok=(0, 1),
    )
    return sorted(path for path in set(candidates) - set(excluded) if (repo_root / path).is_file())


def package_problems(entries: Iterable[tuple[str, bytes]]) -> list[str]:
    """Every reason a package with these (name, content) entries must not be deployed."""
    problems: list[str] = []
    names: set[str] = set()
    for name, content in entries:
        names.add(name)
        path = PurePosixPath(name)
        if path.parts[0] in FORBIDDEN_PACKAGE_DIRS or path.parts[0].startswith(".venv"):
            problems.append(f"{name}: development-only folder {path.parts[0]}/")
        elif any(fnmatch.fnmatch(path.name, pattern) for pattern in FORBIDDEN_PACKAGE_NAMES):
            problems.append(f"{name}: local settings or key material")
        elif _SECRET_CONTENT.search(content):
            problems.append(f"{name}: contains a private key or storage account key")
    problems.extend(f"{required}: missing" for required in REQUIRED_PACKAGE_FILES if required not in names)
    return problems


def build_package(repo_root: Path, destination: Path) -> Path:
    """Write the deployment zip (deterministic bytes) and refuse it if it fails the checks.

    A refused package is deleted, so a failing check can never be followed by an upload.
    """
    paths = package_files(repo_root)
    entries = [(path, (repo_root / path).read_bytes()) for path in paths]
    problems = package_problems(entries)
    if problems:
        raise PackageError("refusing to build the deployment package:\n  - " + "\n  - ".join(problems))
    destination.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return destination


def check_package(package: Path) -> list[str]:
    """Problems of an existing zip (the same rules :func:`build_package` applies before writing)."""
    with zipfile.ZipFile(package) as archive:
        return package_problems((name, archive.read(name)) for name in archive.namelist())


# --- az command lines --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployTarget:
    """Where and with what crmsync is deployed."""

    resource_group: str
    location: str
    parameters: Path = DEFAULT_PARAMETERS
    template: Path = DEFAULT_TEMPLATE
    subscription: str | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def scope(self) -> list[str]:
        """``--subscription`` when one was given (az uses the logged-in default otherwise)."""
        return ["--subscription", self.subscription] if self.subscription else []


def group_create_command(target: DeployTarget) -> list[str]:
    """Create the resource group, or leave an existing one as it is."""
    return [
        "az", "group", "create",
        "--name", target.resource_group,
        "--location", target.location,
        *target.scope(),
        "--output", "none",
    ]  # fmt: skip


def group_exists_command(target: DeployTarget) -> list[str]:
    """Ask whether the resource group exists (prints ``true`` or ``false``); changes nothing."""
    return ["az", "group", "exists", "--name", target.resource_group, *target.scope()]


def _deployment_arguments(target: DeployTarget) -> list[str]:
    """Template, parameter file and ``key=value`` overrides shared by create and what-if."""
    arguments = [
        "--resource-group", target.resource_group,
        "--name", DEPLOYMENT_NAME,
        "--template-file", str(target.template),
        "--parameters", str(target.parameters),
    ]  # fmt: skip
    for override in target.overrides:
        arguments += ["--parameters", override]
    return arguments + target.scope()


def what_if_command(target: DeployTarget) -> list[str]:
    """Show what the deployment would change, changing nothing."""
    return ["az", "deployment", "group", "what-if", *_deployment_arguments(target)]


def deployment_create_command(target: DeployTarget) -> list[str]:
    """Deploy the Bicep templates (incremental, idempotent) and print the outputs as JSON."""
    return [
        "az", "deployment", "group", "create",
        *_deployment_arguments(target),
        "--query", "properties.outputs",
        "--output", "json",
    ]  # fmt: skip


def zip_deploy_command(target: DeployTarget, app_name: str, package: Path) -> list[str]:
    """Upload the package; Flex Consumption installs requirements.txt by a remote build."""
    return [
        "az", "functionapp", "deployment", "source", "config-zip",
        "--resource-group", target.resource_group,
        "--name", app_name,
        "--src", str(package),
        "--build-remote", "true",
        *target.scope(),
        "--output", "none",
    ]  # fmt: skip


def deployment_outputs(az_json: str) -> dict[str, str]:
    """Flatten ``properties.outputs`` JSON (``{"name": {"type": ..., "value": ...}}``) to name -> value."""
    try:
        raw: Any = json.loads(az_json)
        return {name: str(entry["value"]) for name, entry in raw.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DeployError("could not read the deployment outputs that az printed") from exc


def shell_line(command: Sequence[str]) -> str:
    """A command as a copy-pasteable shell line."""
    return shlex.join(command)


Runner = Callable[[Sequence[str]], str]


def run_az(command: Sequence[str]) -> str:
    """Run one az command, echoing it; return its stdout or raise naming the failed step."""
    executable = shutil.which(command[0])
    if executable is None:
        raise DeployError(f"`{command[0]}` not found: install the Azure CLI and run `az login` first")
    typer.echo(f"$ {shell_line(command)}", err=True)
    result = subprocess.run(  # noqa: S603 - argv built by this module, no shell
        [executable, *command[1:]], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise DeployError(f"`{' '.join(command[:4])}` failed with exit code {result.returncode}")
    return result.stdout


def deploy(
    target: DeployTarget, *, repo_root: Path, package: Path, dry_run: bool, run: Runner = run_az
) -> dict[str, str]:
    """Provision, package and zip-deploy; return the deployment outputs (empty for a dry run).

    The package is built and checked before anything in Azure changes, so a bad tree
    never reaches the cloud; a dry run also builds it, to show it would pass.
    """
    build_package(repo_root, package)
    if dry_run:
        for command in (
            group_create_command(target),
            deployment_create_command(target),
            zip_deploy_command(target, "<functionAppName output>", package),
        ):
            typer.echo(f"would run: {shell_line(command)}")
        if run(group_exists_command(target)).strip() == "true":
            run(what_if_command(target))
        else:
            # what-if needs the group; on a first deployment everything in bicep/ would be created.
            typer.echo(
                f"resource group {target.resource_group} does not exist yet: every resource would be created"
            )
        return {}
    run(group_create_command(target))
    outputs = deployment_outputs(run(deployment_create_command(target)))
    app_name = outputs.get("functionAppName")
    if not app_name:
        raise DeployError("the deployment has no functionAppName output; is the template bicep/main.bicep?")
    run(zip_deploy_command(target, app_name, package))
    return outputs


# --- the `crmsync deploy` command ---------------------------------------------------------------

deploy_app = typer.Typer(
    help="Deploy crmsync to Azure (Bicep + zip deploy to Flex Consumption).", no_args_is_help=True
)


def _in_repo(path: Path) -> Path:
    """Relative paths are relative to the repository, wherever the command runs from."""
    return path if path.is_absolute() else REPO_ROOT / path


@deploy_app.command("package")
def package_command(
    output: Annotated[Path, typer.Option(help="Where to write the zip.")] = DEFAULT_PACKAGE,
) -> None:
    """Build and check the deployment package only (what the pipeline uploads)."""
    try:
        built = build_package(REPO_ROOT, _in_repo(output))
    except PackageError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    with zipfile.ZipFile(built) as archive:
        typer.echo(f"{built} ({len(archive.namelist())} files, crmsync {__version__})")


@deploy_app.command("run")
def run_command(
    *,
    resource_group: Annotated[str, typer.Option("--resource-group", "-g", help="Resource group.")],
    location: Annotated[str, typer.Option("--location", "-l", help="Azure region with Flex Consumption.")],
    parameters: Annotated[
        Path, typer.Option(help="Bicep parameter file (copy and edit bicep/main.bicepparam).")
    ] = DEFAULT_PARAMETERS,
    subscription: Annotated[str | None, typer.Option(help="Subscription id or name.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override one parameter: name=value (repeatable).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the commands; run only what-if (changes nothing).")
    ] = False,
    package: Annotated[Path, typer.Option(help="Where to write the zip.")] = DEFAULT_PACKAGE,
) -> None:
    """Create the resource group, deploy bicep/, build the package and zip-deploy it (idempotent)."""
    target = DeployTarget(
        resource_group=resource_group,
        location=location,
        parameters=parameters,
        template=REPO_ROOT / DEFAULT_TEMPLATE,
        subscription=subscription,
        overrides=tuple(set_ or ()),
    )
    try:
        outputs = deploy(target, repo_root=REPO_ROOT, package=_in_repo(package), dry_run=dry_run)
    except DeployError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    for name in ("functionAppName", "notificationUrl", "lifecycleUrl", "identityPrincipalId"):
        if name in outputs:
            typer.echo(f"{name}: {outputs[name]}")
