"""``crmsync mailbox resync|enable|disable|settings``, ``crmsync audit`` and ``crmsync sandbox env``.

The same operations as the admin HTTP API (shared.admin_api), run from the environment's app
settings; the audit's actor is ``cli:<OS user>``. shared/cli.py registers these commands.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from shlex import quote
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from shared.admin_api import (
    audited_mailbox_id,
    change_mailbox_settings,
    enqueue_mailbox_resync,
    mailbox_summary,
    parse_since,
    read_audit,
    resolve_mailbox,
    set_mailbox_enabled,
    to_jsonable,
)
from shared.cli_common import (
    EXIT_BAD_INPUT,
    JsonOption,
    cli_actor,
    console,
    fail,
    print_json,
)
from shared.cli_common import (
    with_runtime as run_with_runtime,
)
from shared.domain.mailbox_settings import MailboxSettings
from shared.runtime import Runtime
from shared.store.errors import MailboxNotFound
from shared.store.records import AuditAction, AuditRecord, Mailbox
from shared.sync.crm_fill import CrmFill, FillReport
from shared.sync.tracking.policy import rules_in_force

MailboxArgument = Annotated[str, typer.Argument(help="The mailbox's UPN or id.")]


def read_mailbox_settings(path: Path) -> MailboxSettings:
    """Mailbox settings from a JSON file; a clear error naming each bad field otherwise."""
    try:
        return MailboxSettings.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}", EXIT_BAD_INPUT) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise fail(f"invalid mailbox settings in {path}: {problems}", EXIT_BAD_INPUT) from None


def mailbox_resync(mailbox: MailboxArgument, as_json: JsonOption = False) -> None:
    """Forget the delta links and enqueue a full resync of every resource (the worker runs it), then
    fill Outlook from the CRM: every record in the user's filter the mailbox does not hold."""

    async def resync(runtime: Runtime) -> tuple[str, int, list[FillReport]]:
        found = await resolve_mailbox(await runtime.store(), mailbox)
        enqueued = await enqueue_mailbox_resync(
            await runtime.store(), await runtime.jobs(), found.mailbox_id, actor=cli_actor()
        )
        fill = CrmFill(
            store=await runtime.store(), graph=await runtime.graph(), runner=await runtime.crm_run()
        )
        return found.mailbox_id, enqueued, await fill.fill(found.mailbox_id)

    mailbox_id, enqueued, fills = run_with_runtime(resync)
    if as_json:
        print_json({"mailbox_id": mailbox_id, "enqueued": enqueued, "fill": to_jsonable(fills)})
        return
    console.print(
        f"resync of {mailbox_id} enqueued ({enqueued} resource(s)); `crmsync status {mailbox_id}` "
        "shows the backlog drain"
    )
    for report in fills:
        console.print(
            f"CRM -> Outlook fill of {report.table}: {report.in_filter} in the filter, "
            f"{report.outlook_writes} written to Outlook, {report.relinked} relinked ({report.outcome.value})"
        )


def mailbox_release_brake(
    mailbox: MailboxArgument,
    confirm_deletes: Annotated[
        int,
        typer.Option("--confirm-deletes", help="The number of deletes the brake refused (status shows it)."),
    ],
    as_json: JsonOption = False,
) -> None:
    """Let the deletes the mass-delete brake refused through: a full resync that allows them, once
    you confirm their number (a wrong number changes nothing)."""

    async def release(runtime: Runtime) -> tuple[str, int]:
        found = await resolve_mailbox(await runtime.store(), mailbox)
        reports = await (await runtime.maintenance()).release_brake(
            found.mailbox_id, confirm_deletes=confirm_deletes
        )
        return found.mailbox_id, sum(report.crm_writes for report in reports)

    mailbox_id, writes = run_with_runtime(release)
    if as_json:
        print_json({"mailbox_id": mailbox_id, "crm_writes": writes})
        return
    console.print(f"brake released for {mailbox_id}: {writes} CRM write(s), deletes included")


def _switch(mailbox: str, enabled: bool, as_json: bool) -> None:
    async def switch(runtime: Runtime) -> Mailbox:
        store = await runtime.store()
        found = await resolve_mailbox(store, mailbox)
        return await set_mailbox_enabled(
            store, await runtime.jobs(), found.mailbox_id, enabled, actor=cli_actor()
        )

    updated = run_with_runtime(switch)
    if as_json:
        print_json(mailbox_summary(updated))
        return
    console.print(f"{updated.upn} ({updated.mailbox_id}) is {'enabled' if updated.enabled else 'disabled'}")


def mailbox_enable(mailbox: MailboxArgument, as_json: JsonOption = False) -> None:
    """Switch sync back on; a delta run of every resource catches up on what changed meanwhile."""
    _switch(mailbox, True, as_json)


def mailbox_disable(mailbox: MailboxArgument, as_json: JsonOption = False) -> None:
    """Switch sync off (subscriptions and links stay; `mailbox enable` catches up later)."""
    _switch(mailbox, False, as_json)


def mailbox_settings(
    mailbox: MailboxArgument,
    settings_file: Annotated[
        Path, typer.Argument(help="A JSON file of mailbox settings, as `mailbox add --settings` takes.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Replace the mailbox's settings (directions, filters, tracking rule...); the next runs apply them."""
    settings = read_mailbox_settings(settings_file)

    async def change(runtime: Runtime) -> Mailbox:
        store = await runtime.store()
        found = await resolve_mailbox(store, mailbox)
        return await change_mailbox_settings(
            store, await runtime.jobs(), found.mailbox_id, settings, actor=cli_actor()
        )

    updated = run_with_runtime(change)
    if as_json:
        print_json({**mailbox_summary(updated), "settings": updated.settings})
        return
    console.print(f"settings of {updated.upn} ({updated.mailbox_id}) saved")


def audit(
    mailbox: MailboxArgument,
    since: Annotated[
        str | None, typer.Option("--since", help="Only entries at or after this ISO date/time (UTC).")
    ] = None,
    item: Annotated[
        str | None,
        typer.Option("--item", help="Only entries about this Outlook item id or CRM record id."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The mailbox's audit trail, newest first: who did what, when, by which rule (hashed ids only).

    A removed mailbox's trail stays readable by its id."""
    try:
        since_at: dt.datetime | None = parse_since(since) if since else None
    except ValueError:
        raise fail("--since must be an ISO 8601 date or date-time", EXIT_BAD_INPUT) from None

    async def read(runtime: Runtime) -> tuple[list[AuditRecord], MailboxSettings | None]:
        store = await runtime.store()
        mailbox_id = await audited_mailbox_id(store, mailbox)
        records = await read_audit(store, mailbox_id, since=since_at, item=item)
        try:
            settings: MailboxSettings | None = (await store.registry.get_mailbox(mailbox_id)).settings
        except MailboxNotFound:
            settings = None  # a removed mailbox: its trail only
        return records, settings

    records, settings = run_with_runtime(read)
    if as_json:
        print_json(records)
        return
    tracking = {AuditAction.TRACKED, AuditAction.UNTRACKED}
    if item is not None and settings is not None and not any(r.action in tracking for r in records):
        console.print(
            "no tracking decision is recorded for this item: crmsync audits a message when it becomes "
            "tracked (with the rule that tracked it) or stops being tracked, so a message without such "
            "an entry was never tracked. This mailbox tracks email by: "
            + "; ".join(rules_in_force(settings)),
            highlight=False,
        )
    if not records:
        console.print("no audit entry matches")
        return
    table = Table("when (UTC)", "actor", "action", "outcome", "kind", "reason", "item #")
    for record in records:
        table.add_row(
            record.at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            record.actor,
            record.action.value,
            record.outcome.value,
            record.item_kind.value if record.item_kind else "-",
            record.reason_code or "-",
            (record.outlook_id_hash or record.crm_id_hash or "-")[:8],
        )
    console.print(table)
    console.print("item #: the first digits of the item's hashed Outlook (else CRM) id; --json has both")


def sandbox_env() -> None:
    """Print `export NAME=value` lines of the running sandbox's settings: eval "$(crmsync sandbox env)"."""
    try:
        from simulators.sandbox import read_settings_file  # noqa: PLC0415 - dev-only package
    except ImportError:
        raise fail("the sandbox needs a crmsync source checkout (`make setup`)", EXIT_BAD_INPUT) from None
    try:
        settings = read_settings_file()
    except FileNotFoundError as exc:
        raise fail(
            f"no sandbox is running: start one with `crmsync sandbox up` ({exc})", EXIT_BAD_INPUT
        ) from None
    except (OSError, ValueError, json.JSONDecodeError):
        raise fail("the sandbox's settings file is unreadable: restart `crmsync sandbox up`") from None
    for name, value in sorted(settings.items()):
        typer.echo(f"export {name}={quote(value)}")
