"""The composition root registers every blueprint and the handlers answer real requests."""

from __future__ import annotations

import json

import azure.functions as func

from function_app import app


def _function(name: str) -> func.FunctionBuilder:
    for builder in app.get_functions():
        if builder.get_function_name() == name:
            return builder
    raise AssertionError(f"{name} is not registered")


def test_health_answers_with_version() -> None:
    handler = _function("health").get_user_function()
    response = handler(func.HttpRequest(method="GET", url="/api/health", body=b""))
    assert response.status_code == 200
    assert json.loads(response.get_body())["status"] == "ok"
