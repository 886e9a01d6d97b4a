"""The composition root registers every blueprint and the handlers answer real requests."""

from __future__ import annotations

import json

import azure.functions as func

from tests.fixtures.app import registered_function


def test_every_trigger_family_is_registered() -> None:
    for name in ("health", "notifications"):
        assert callable(registered_function(name))


def test_health_answers_with_version() -> None:
    response = registered_function("health")(func.HttpRequest(method="GET", url="/api/health", body=b""))
    assert response.status_code == 200
    assert json.loads(response.get_body())["status"] == "ok"
