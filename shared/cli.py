"""The ``crmsync`` admin command (typer). Subcommands grow with each feature."""

from __future__ import annotations

import typer
from rich.console import Console

from shared import __version__
from shared.config import SettingsError, load_settings
from shared.deploy import deploy_app

app = typer.Typer(help="crmsync: Microsoft 365 mailboxes <-> Dynamics 365 / Dataverse.", no_args_is_help=True)
console = Console()
app.add_typer(deploy_app, name="deploy")


@app.command()
def version() -> None:
    """Print the crmsync version."""
    console.print(__version__)


@app.command("check-settings")
def check_settings() -> None:
    """Validate the app settings in the environment and name every problem."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    console.print(f"settings ok (credential: {settings.credential_kind.value})")


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
        raise typer.Exit(code=2) from None
    raise typer.Exit(code=up())


def main() -> None:
    """Console-script entry point."""
    app()
