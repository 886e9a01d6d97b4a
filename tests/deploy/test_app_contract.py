"""The deployed app and the Bicep agree: webhook routes, %SETTING% bindings, identity connections."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import azure.functions as func
import pytest

import function_app
from functions import BLUEPRINTS
from tests.deploy.conftest import REPO_ROOT, bicep_app_settings

SETTING_REFERENCE = re.compile(r"%([A-Za-z0-9_]+)%")


@functools.cache
def _bindings() -> list[tuple[str, dict[str, Any]]]:
    """(function name, binding) of every trigger, from an app composed like function_app.py.

    A private FunctionApp, because FunctionApp.get_functions() may run only once per app and
    tests/fixtures/app.py already calls it on function_app.app.
    """
    app = func.FunctionApp(http_auth_level=function_app.app.auth_level)
    for blueprint in BLUEPRINTS:
        app.register_functions(blueprint)
    return [
        (function.get_function_name(), binding.get_dict_repr())
        for function in app.get_functions()
        for binding in function.get_bindings()
    ]


@pytest.fixture(scope="module")
def settings_in_bicep(main_bicep: dict[str, Any], functionapp_bicep: dict[str, Any]) -> set[str]:
    return set(bicep_app_settings(main_bicep, functionapp_bicep))


def test_webhook_urls_in_bicep_are_anonymous_routes_of_the_app(main_bicep: dict[str, Any]) -> None:
    """Graph cannot send a function key, so the two webhooks must be anonymous routes under /api."""
    host = json.loads((REPO_ROOT / "host.json").read_text())
    prefix = host["extensions"]["http"]["routePrefix"]
    anonymous = {
        f"/{prefix}/{binding['route']}"
        for _, binding in _bindings()
        if binding.get("type") == "httpTrigger" and str(binding.get("authLevel")).endswith("ANONYMOUS")
    }
    for variable in ("notificationUrl", "lifecycleUrl"):
        url = main_bicep["variables"][variable]["value"]
        path = url.removeprefix("https://${appHostName}")
        assert path in anonymous, f"{variable} points at {path}, not an anonymous route: {sorted(anonymous)}"


def test_every_percent_setting_a_trigger_reads_is_deployed(settings_in_bicep: set[str]) -> None:
    referenced = {
        (name, match)
        for name, binding in _bindings()
        for value in binding.values()
        if isinstance(value, str)
        for match in SETTING_REFERENCE.findall(value)
    }
    assert referenced, "no trigger reads a %SETTING%: this test lost its subject"
    missing = sorted(f"{name}: {setting}" for name, setting in referenced if setting not in settings_in_bicep)
    assert not missing, missing


def test_every_trigger_connection_is_identity_based_in_azure(settings_in_bicep: set[str]) -> None:
    connections = {binding["connection"] for _, binding in _bindings() if binding.get("connection")}
    assert connections, "no trigger names a storage connection: this test lost its subject"
    for connection in connections:
        assert connection not in settings_in_bicep, f"{connection}: a connection string would need a key"
        assert {f"{connection}__accountName", f"{connection}__credential"} <= settings_in_bicep, connection
