"""The ``crmsync`` admin command (typer). Subcommands grow with each feature.

``mailbox add|remove`` call :class:`shared.sync.onboarding.Onboarding`; ``mailbox list`` and ``status``
read the store directly; all on a :class:`shared.runtime.Runtime` built from the environment's app
settings (not the admin HTTP API): a big mailbox's initial sync shows a progress bar
and has no HTTP time limit.

Exit codes: 0 done; 2 bad input or settings (nothing was tried); 1 refused or failed (the message
says what to do). ``--json`` prints the typed report as one JSON document for scripts.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
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

from shared import __version__, cli_admin, cli_crm
from shared.admin_api import resolve_mailbox, to_jsonable
from shared.cli_common import (
    EXIT_BAD_INPUT,
    JsonOption,
    cli_actor,
    console,
    fail,
    print_json,
    when,
    with_runtime,
)
from shared.config import SettingsError, load_settings
from shared.deploy import deploy_app
from shared.runtime import Runtime
from shared.store.records import Mailbox
from shared.sync.onboarding import OnboardingProgress, OnboardingReport
from shared.sync.status import MailboxStatus, mailbox_statuses

app = typer.Typer(help="crmsync: Microsoft 365 mailboxes <-> Dynamics 365 / Dataverse.", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")
app.command("audit")(cli_admin.audit)
app.add_typer(cli_crm.crm_app, name="crm")


@app.command()
def version() -> None:
    """Print the crmsync version."""
    console.print(__version__)


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


# -- crmsync mailbox ------------------------------------------------------------------------------

mailbox_app = typer.Typer(
    help="Onboard, offboard, list, resync, enable, disable and tune mailboxes.", no_args_is_help=True
)
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


@mailbox_app.command("add")
def mailbox_add(
    mailbox: Annotated[str, typer.Argument(help="The mailbox's UPN or Entra object id.")],
    crm_user: Annotated[str, typer.Option("--crm-user", help="The CRM user's systemuserid (GUID).")],
    settings_file: Annotated[
        Path | None,
        typer.Option("--settings", help="A JSON file of mailbox settings (README 'Onboard mailboxes')."),
    ] = None,
    take_over: Annotated[
        bool,
        typer.Option(
            "--take-over",
            help="Sync a mailbox another crmsync deployment synchronizes; that one stops writing to it.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check, register and subscribe a mailbox, then run its initial sync into the CRM."""
    try:
        crm_user_id = str(uuid.UUID(crm_user))
    except ValueError:
        raise fail("--crm-user must be the CRM user's systemuserid (a GUID)", EXIT_BAD_INPUT) from None
    mailbox_settings = cli_admin.read_mailbox_settings(settings_file) if settings_file else None
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
            return await onboarding.onboard(
                mailbox,
                crm_user_id,
                settings=mailbox_settings,
                progress=bar,
                actor=cli_actor(),
                take_over=take_over,
            )

        report = with_runtime(add)
        bar.finish()
    if as_json:
        print_json({**to_jsonable(report), "items_synced": report.items_synced, "parked": report.parked})
        return
    table = Table(title=f"onboarded {report.upn}")
    for column in ("resource", "outcome", "items seen", "synced", "parked"):
        table.add_column(column)
    for run in report.baseline:
        table.add_row(
            run.resource, run.outcome.value, str(run.items_seen), str(run.items_synced), str(run.parked)
        )
    console.print(table)
    for fill in report.fill:
        console.print(
            f"CRM -> Outlook fill of {fill.table}: {fill.in_filter} in the filter, "
            f"{fill.outlook_writes} written to Outlook ({fill.outcome.value})"
        )
    for subscription in report.subscriptions:
        console.print(f"subscription {subscription.subscription_id} expires {when(subscription.expiration)}")
    if report.parked:
        console.print(
            f"[yellow]{report.parked} item(s) parked; `crmsync status {report.mailbox_id}` says why[/]"
        )


async def _resolve(runtime: Runtime, mailbox: str) -> Mailbox:
    """A registered mailbox by its id or (case-insensitively) its UPN."""
    return await resolve_mailbox(await runtime.store(), mailbox)


@mailbox_app.command("remove")
def mailbox_remove(
    mailbox: Annotated[str, typer.Argument(help="The mailbox's UPN or id.")],
    as_json: JsonOption = False,
) -> None:
    """Delete the mailbox's subscriptions and unregister it; its CRM records stay."""

    async def remove(runtime: Runtime) -> Any:
        mailbox_id = (await _resolve(runtime, mailbox)).mailbox_id
        return await (await runtime.onboarding()).offboard(mailbox_id, actor=cli_actor())

    report = with_runtime(remove)
    if as_json:
        print_json(report)
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

    mailboxes = with_runtime(listed)
    if as_json:
        print_json(mailboxes)
        return
    table = Table(title=f"{len(mailboxes)} mailbox(es)")
    for column in ("mailbox", "upn", "CRM user", "enabled", "state"):
        table.add_column(column)
    for mailbox in mailboxes:
        table.add_row(
            mailbox.mailbox_id, mailbox.upn, mailbox.crm_user_id, str(mailbox.enabled), mailbox.state
        )
    console.print(table)


mailbox_app.command("resync")(cli_admin.mailbox_resync)
mailbox_app.command("enable")(cli_admin.mailbox_enable)
mailbox_app.command("disable")(cli_admin.mailbox_disable)
mailbox_app.command("settings")(cli_admin.mailbox_settings)
mailbox_app.command("release-brake")(cli_admin.mailbox_release_brake)


# -- crmsync status -------------------------------------------------------------------------------


@app.command("status")
def status(
    mailbox: Annotated[str | None, typer.Argument(help="One mailbox (UPN or id); default: all.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Per mailbox: state, subscriptions and expiry, last sync, backlog, parked items with reasons."""

    async def read(runtime: Runtime) -> list[MailboxStatus]:
        mailbox_id = None if mailbox is None else (await _resolve(runtime, mailbox)).mailbox_id
        store, attempts = await runtime.store(), runtime.settings.parked_max_attempts
        return await mailbox_statuses(store, mailbox_id, max_attempts=attempts)

    reports = with_runtime(read)
    if as_json:
        print_json(
            [
                {**to_jsonable(r), "backlog": r.backlog, "last_sync_at": r.last_sync_at, "remedy": r.remedy}
                for r in reports
            ]
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
        f"{'enabled' if report.enabled else 'disabled'}; last sync {when(report.last_sync_at)}; "
        f"backlog {report.backlog}; linked: {linked}",
        highlight=False,
    )
    for direction, label in (("to_crm", "change to CRM"), ("to_outlook", "change to Outlook")):
        summary = report.latency.get(direction)
        if summary is not None:
            console.print(f"last hour, {label}: {summary.describe()}", highlight=False)
    if report.remedy:
        console.print(f"[red]degraded[/]: {report.remedy}", highlight=False)
    if report.refused_deletes:
        console.print(
            f"[red]the mass-delete brake holds {report.refused_deletes} refused deletes[/]; if intended: "
            f"crmsync mailbox release-brake {report.mailbox_id} --confirm-deletes {report.refused_deletes}",
            highlight=False,
        )
    subscriptions = Table("subscription", "resource", "expires", "expired")
    for sub in report.subscriptions:
        subscriptions.add_row(sub.subscription_id, sub.resource, when(sub.expiration), str(sub.expired))
    console.print(subscriptions)
    resources = Table("resource", "last sync", "dirty", "baselined", "last error")
    for res in report.resources:
        resources.add_row(
            res.resource, when(res.last_sync_at), str(res.dirty), str(res.baselined), res.last_error or "-"
        )
    console.print(resources)
    for table, reason in report.crm_to_outlook_stopped.items():
        console.print(f"CRM -> Outlook stopped for {table}: {reason}", highlight=False)
    for meaning in report.notes.values():
        console.print(f"note: {meaning}", highlight=False)
    if report.parked:
        parked = Table("parked kind", "reason", "what to do", "attempts", "last failed", "state")
        for item in report.parked:
            parked.add_row(
                item.kind.value,
                item.reason_code,
                item.message if item.remedy is None else f"{item.message}; {item.remedy}",
                str(item.attempts),
                when(item.last_failed_at),
                item.state if item.next_attempt_at is None else f"retry {when(item.next_attempt_at)}",
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


sandbox_app.command("env")(cli_admin.sandbox_env)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
