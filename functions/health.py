"""Liveness probe for deployments and the local runner: no storage or service calls."""

import json

import azure.functions as func

from shared import __version__

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Answer 200 with the running version; says nothing about tenants or mailboxes."""
    return func.HttpResponse(
        json.dumps({"status": "ok", "version": __version__}),
        status_code=200,
        mimetype="application/json",
    )
