"""The ``crmsync`` admin command (typer). Subcommands grow with each feature.

``mailbox add|remove`` call :class:`shared.sync.onboarding.Onboarding`; ``mailbox list`` and ``status``
read the store directly; all on a :class:`shared.runtime.Runtime` built from the environment's app
settings (not the admin HTTP API): a big mailbox's initial sync shows a progress bar
and has no HTTP time limit.

Exit codes: 0 done; 2 bad input or settings (nothing was tried); 1 refused or failed (the message
says what to do). ``--json`` prints the typed report as one JSON document for scripts.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from shared import __version__
from shared.admin_api import to_jsonable
from shared.config import Settings, SettingsError, load_settings
from shared.crm.errors import CrmError
from shared.deploy import deploy_app
from shared.domain.mailbox_settings import MailboxSettings
from shared.runtime import Runtime
from shared.store.errors import MailboxNotFound
from shared.store.records import Mailbox
from shared.sync.onboarding import OnboardingProgress, OnboardingRefused, OnboardingReport
from shared.sync.status import MailboxStatus, mailbox_statuses

app = typer.Typer(help="crmsync: Microsoft 365 mailboxes <-> Dynamics 365 / Dataverse.", no_args_is_help=True)
console = Console()
app.add_typer(deploy_app, name="deploy")

T = TypeVar("T")
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")]
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


@app.command()
def version() -> None:
    """Print the crmsync version."""
    console.print(__version__)


def _settings() -> Settings:
    """The app settings, or exit 2 naming every problem (values are never echoed)."""
    try:
        return load_settings()
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(code=EXIT_BAD_INPUT) from None


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    console.print(f"[red]{message}[/red]", highlight=False)
    return typer.Exit(code=code)


@app.command("check-settings")
def check_settings() -> None:
    """Validate the app settings in the environment: every problem at once, each with what to do.

    One line per problem (never the value), exit 2 if there is any; plain text, so nothing wraps.
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(f"{len(exc.problems)} problem(s) in the app settings (README 'Configure'):")
        for problem in exc.problems:
            typer.echo(f"  - {problem}")
        raise typer.Exit(code=EXIT_BAD_INPUT) from None
    console.print(f"settings ok (credential: {settings.credential_kind.value})")


def _with_runtime(work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run ``work`` on a runtime opened from the environment, then close every client.

    Failures the administrator can act on become exit 1 with the remedy; a refusal keeps its reason.
    """
    settings = _settings()

    async def run() -> T:
        runtime = Runtime(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    try:
        return asyncio.run(run())
    except OnboardingRefused as exc:
        raise _fail(f"refused: {exc}") from None
    except MailboxNotFound:
        raise _fail(
            "no such mailbox is registered; `crmsync mailbox list` shows the registered ones"
        ) from None
    except CrmError as exc:
        raise _fail(f"Dataverse failed: {exc.message}. {exc.remedy}") from None
    except OSError as exc:
        raise _fail(
            f"a service is unreachable ({type(exc).__name__}); check the URLs in the settings"
        ) from None


def _print_json(value: Any) -> None:
    """Plain stdout (no rich wrapping), so scripts can parse it."""
    typer.echo(json.dumps(to_jsonable(value), indent=2))


def _when(value: Any) -> str:
    return "-" if value is None else str(to_jsonable(value))


# -- crmsync mailbox ------------------------------------------------------------------------------

mailbox_app = typer.Typer(help="Onboard, offboard and list synchronised mailboxes.", no_args_is_help=True)
app.add_typer(mailbox_app, name="mailbox")


class _OnboardingBar:
    """A rich progress bar fed by onboarding's progress callback: one line per step / resource."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, step: OnboardingProgress) -> None:
        key = f"{step.step}:{step.resource or ''}"
        label = step.step if step.resource is None else f"{step.step} {step.resource.rsplit('/', 1)[-1]}"
        if key not in self._tasks:
            for task in self._tasks.values():  # a new step means the previous ones are done
                self._progress.update(task, total=self._progress.tasks[task].completed)
            self._tasks[key] = self._progress.add_task(label, total=None)
        self._progress.update(self._tasks[key], completed=step.items_synced)

    def finish(self) -> None:
        """Onboarding returned: the last step is done too."""
        for task in self._tasks.values():
            self._progress.update(task, total=self._progress.tasks[task].completed)


def _read_mailbox_settings(path: Path) -> MailboxSettings:
    """Mailbox settings from a JSON file; a clear error naming each bad field otherwise."""
    try:
        return MailboxSettings.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}", EXIT_BAD_INPUT) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise _fail(f"invalid mailbox settings in {path}: {problems}", EXIT_BAD_INPUT) from None


@mailbox_app.command("add")
def mailbox_add(
    mailbox: Annotated[str, typer.Argument(help="The mailbox's UPN or Entra object id.")],
    crm_user: Annotated[str, typer.Option("--crm-user", help="The CRM user's systemuserid (GUID).")],
    settings_file: Annotated[
        Path | None,
        typer.Option("--settings", help="A JSON file of mailbox settings (README 'Onboard mailboxes')."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check, register and subscribe a mailbox, then run its initial sync into the CRM."""
    try:
        crm_user_id = str(uuid.UUID(crm_user))
    except ValueError:
        raise _fail("--crm-user must be the CRM user's systemuserid (a GUID)", EXIT_BAD_INPUT) from None
    mailbox_settings = _read_mailbox_settings(settings_file) if settings_file else None
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=as_json,
    ) as progress:
        bar = _OnboardingBar(progress)

        async def add(runtime: Runtime) -> OnboardingReport:
            onboarding = await runtime.onboarding()
            return await onboarding.onboard(mailbox, crm_user_id, settings=mailbox_settings, progress=bar)

        report = _with_runtime(add)
        bar.finish()
    if as_json:
        _print_json({**to_jsonable(report), "items_synced": report.items_synced, "parked": report.parked})
        return
    table = Table(title=f"onboarded {report.upn}")
    for column in ("resource", "outcome", "items seen", "synced", "parked"):
        table.add_column(column)
    for run in report.baseline:
        table.add_row(
            run.resource, run.outcome.value, str(run.items_seen), str(run.items_synced), str(run.parked)
        )
    console.print(table)
    for subscription in report.subscriptions:
        console.print(f"subscription {subscription.subscription_id} expires {_when(subscription.expiration)}")
    if report.parked:
        console.print(
            f"[yellow]{report.parked} item(s) parked; `crmsync status {report.mailbox_id}` says why[/]"
        )


async def _resolve(runtime: Runtime, mailbox: str) -> Mailbox:
    """A registered mailbox by its id or (case-insensitively) its UPN."""
    async for registered in (await runtime.store()).registry.list_mailboxes():
        if mailbox == registered.mailbox_id or mailbox.lower() == registered.upn.lower():
            return registered
    raise MailboxNotFound(mailbox)


@mailbox_app.command("remove")
def mailbox_remove(
    mailbox: Annotated[str, typer.Argument(help="The mailbox's UPN or id.")],
    as_json: JsonOption = False,
) -> None:
    """Delete the mailbox's subscriptions and unregister it; its CRM records stay."""

    async def remove(runtime: Runtime) -> Any:
        mailbox_id = (await _resolve(runtime, mailbox)).mailbox_id
        return await (await runtime.onboarding()).offboard(mailbox_id)

    report = _with_runtime(remove)
    if as_json:
        _print_json(report)
        return
    console.print(
        f"removed {report.mailbox_id}: {report.subscriptions_deleted} subscription(s) deleted; "
        f"CRM records and {report.links_kept} link(s) kept"
    )


@mailbox_app.command("list")
def mailbox_list(as_json: JsonOption = False) -> None:
    """The registered mailboxes, their CRM users and state."""

    async def listed(runtime: Runtime) -> list[Mailbox]:
        return [found async for found in (await runtime.store()).registry.list_mailboxes()]

    mailboxes = _with_runtime(listed)
    if as_json:
        _print_json(mailboxes)
        return
    table = Table(title=f"{len(mailboxes)} mailbox(es)")
    for column in ("mailbox", "upn", "CRM user", "enabled", "state"):
        table.add_column(column)
    for mailbox in mailboxes:
        table.add_row(
            mailbox.mailbox_id, mailbox.upn, mailbox.crm_user_id, str(mailbox.enabled), mailbox.state
        )
    console.print(table)


# -- crmsync status -------------------------------------------------------------------------------


@app.command("status")
def status(
    mailbox: Annotated[str | None, typer.Argument(help="One mailbox (UPN or id); default: all.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Per mailbox: state, subscriptions and expiry, last sync, backlog, parked items with reasons."""

    async def read(runtime: Runtime) -> list[MailboxStatus]:
        mailbox_id = None if mailbox is None else (await _resolve(runtime, mailbox)).mailbox_id
        return await mailbox_statuses(await runtime.store(), mailbox_id)

    reports = _with_runtime(read)
    if as_json:
        _print_json(
            [{**to_jsonable(r), "backlog": r.backlog, "last_sync_at": r.last_sync_at} for r in reports]
        )
        return
    if not reports:
        console.print("no mailbox is registered; add one with `crmsync mailbox add <upn> --crm-user <id>`")
    for report in reports:
        _print_status(report)


def _print_status(report: MailboxStatus) -> None:
    linked = ", ".join(f"{kind.value} {count}" for kind, count in report.links.items())
    console.print(
        f"[bold]{report.upn}[/] ({report.mailbox_id}) state {report.state.value}, "
        f"{'enabled' if report.enabled else 'disabled'}; last sync {_when(report.last_sync_at)}; "
        f"backlog {report.backlog}; linked: {linked}",
        highlight=False,
    )
    subscriptions = Table("subscription", "resource", "expires", "expired")
    for sub in report.subscriptions:
        subscriptions.add_row(sub.subscription_id, sub.resource, _when(sub.expiration), str(sub.expired))
    console.print(subscriptions)
    resources = Table("resource", "last sync", "dirty", "baselined", "last error")
    for res in report.resources:
        resources.add_row(
            res.resource, _when(res.last_sync_at), str(res.dirty), str(res.baselined), res.last_error or "-"
        )
    console.print(resources)
    if report.parked:
        parked = Table("parked kind", "reason", "what to do", "attempts", "last failed")
        for item in report.parked:
            parked.add_row(
                item.kind.value,
                item.reason_code,
                item.message,
                str(item.attempts),
                _when(item.last_failed_at),
            )
        console.print(parked)


# -- crmsync sandbox ------------------------------------------------------------------------------

sandbox_app = typer.Typer(help="Local sandbox: Azurite, Graph and Dataverse simulators, Functions runner.")
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("up")
def sandbox_up() -> None:
    """Start the sandbox, print its endpoints as one JSON line, and run until Ctrl-C.

    A development tool: it needs a source checkout (the simulators are never deployed).
    """
    try:
        from simulators.sandbox import up  # noqa: PLC0415 - dev-only package, absent when deployed
    except ImportError:
        console.print("[red]the sandbox needs a crmsync source checkout (`make setup`)[/red]")
        raise typer.Exit(code=EXIT_BAD_INPUT) from None
    raise typer.Exit(code=up())


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
