"""``crmsync crm``: the Dataverse side of the CRM -> Outlook direction (the webhook registration)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shared.cli_common import (
    EXIT_BAD_INPUT,
    JsonOption,
    console,
    fail,
    print_json,
    settings_or_exit,
    with_runtime,
)
from shared.runtime import Runtime

crm_app = typer.Typer(help="The Dataverse side: the CRM -> Outlook webhook.", no_args_is_help=True)


@crm_app.command("connect")
def crm_connect(
    url: Annotated[
        str | None,
        typer.Option("--url", help="The webhook URL (default: /api/crm/webhook beside the Graph one)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Register crmsync's Dataverse webhook (service endpoint + steps) with CRMSYNC_CRM_WEBHOOK_KEY."""
    settings = settings_or_exit()
    if settings.crm_webhook_key is None:
        raise fail("set CRMSYNC_CRM_WEBHOOK_KEY first (the key Dataverse will send)", EXIT_BAD_INPUT)
    key = settings.crm_webhook_key.get_secret_value()
    target = url or str(settings.notification_url).rsplit("/api/", 1)[0] + "/api/crm/webhook"

    async def connect(runtime: Runtime) -> Any:
        return await (await runtime.crm()).register_webhook(url=target, key=key)

    done = with_runtime(connect)
    if as_json:
        print_json(done)
        return
    console.print(f"webhook registered: {done.steps_created} step(s) added, {done.steps_kept} kept")
