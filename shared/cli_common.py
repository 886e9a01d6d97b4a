"""What every ``crmsync`` subcommand shares: the console, exit codes, settings, the runtime, output."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from shared.admin_api import SettingsChangeRefused, actor_name, to_jsonable
from shared.config import Settings, SettingsError, load_settings
from shared.crm.errors import CrmError
from shared.runtime import Runtime
from shared.store.errors import MailboxNotFound
from shared.sync.maintenance import BrakeReleaseRefused
from shared.sync.onboarding import OnboardingRefused

console = Console()
T = TypeVar("T")
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")]
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def settings_or_exit() -> Settings:
    """The app settings, or exit 2 naming every problem (values are never echoed)."""
    try:
        return load_settings()
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(code=EXIT_BAD_INPUT) from None


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    console.print(f"[red]{message}[/red]", highlight=False)
    return typer.Exit(code=code)


def with_runtime(work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run ``work`` on a runtime opened from the environment, then close every client.

    Failures the administrator can act on become exit 1 with the remedy; a refusal keeps its reason.
    """
    settings = settings_or_exit()

    async def run() -> T:
        runtime = Runtime(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    try:
        return asyncio.run(run())
    except (OnboardingRefused, SettingsChangeRefused, BrakeReleaseRefused) as exc:
        raise fail(f"refused: {exc}") from None
    except MailboxNotFound:
        raise fail(
            "no such mailbox is registered; `crmsync mailbox list` shows the registered ones"
        ) from None
    except CrmError as exc:
        raise fail(f"Dataverse failed: {exc.message}. {exc.remedy}") from None
    except OSError as exc:
        raise fail(
            f"a service is unreachable ({type(exc).__name__}); check the URLs in the settings"
        ) from None


def print_json(value: Any) -> None:
    """Plain stdout (no rich wrapping), so scripts can parse it."""
    typer.echo(json.dumps(to_jsonable(value), indent=2))


def when(value: Any) -> str:
    return "-" if value is None else str(to_jsonable(value))


def cli_actor() -> str:
    """The audit actor of a CLI command: ``cli:<OS user>``, or ``cli`` when there is none."""
    try:
        return actor_name("cli", getpass.getuser())
    except (OSError, KeyError):
        return "cli"
