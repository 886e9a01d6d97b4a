"""Composition root for the Azure Functions Python v2 host: blueprints only, no logic."""

import azure.functions as func

from functions import BLUEPRINTS
from shared import telemetry
from shared.runtime import close_runtime

telemetry.configure()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in BLUEPRINTS:
    app.register_functions(blueprint)


async def shutdown() -> None:
    """Close the process's clients (storage, Graph, Dataverse); the local runner calls it on exit."""
    await close_runtime()
