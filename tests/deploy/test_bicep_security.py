"""bicep/: private networking by default, Entra authentication in front of the admin API, and alerts.

Offline, on pycep's parse of the templates (no Azure here): each test reads what the templates
declare and checks it against the app (its anonymous routes, the log records its code emits) and
the README, so the three cannot drift apart silently.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pycep import BicepParser

from shared.telemetry import signals
from shared.telemetry.signals import CHANGE_TO_CRM_LATENCY, ITEMS_PARKED
from tests.deploy.conftest import BICEP_DIR, REPO_ROOT
from tests.deploy.test_app_contract import _bindings

MODULES = BICEP_DIR / "modules"


def _parse(parser: BicepParser, name: str) -> dict[str, Any]:
    parsed: dict[str, Any] = parser.parse(file_path=MODULES / name)
    return parsed


def _conditional(value: Any) -> dict[str, Any]:
    assert isinstance(value, dict), f"expected a condition, got {value!r}"
    operator = value["operator"]
    assert operator["type"] == "conditional", value
    operands: dict[str, Any] = operator["operands"]
    return operands


def _readme_section(title: str) -> str:
    """The README text under ``title`` up to the next heading of the same or a higher level."""
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(rf"^(#+) {re.escape(title)}\n", text, re.MULTILINE)
    assert match, f"README has no section {title!r}"
    end = re.compile(rf"^#{{1,{len(match.group(1))}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


# --- private networking ------------------------------------------------------------------------


def test_private_networking_is_the_default(main_bicep: dict[str, Any]) -> None:
    parameter = main_bicep["parameters"]["privateNetworking"]
    assert parameter["type"] == "bool"
    assert parameter["default"] is True
    param_file = (BICEP_DIR / "main.bicepparam").read_text()
    assert re.search(r"^param privateNetworking = true$", param_file, re.MULTILINE)


@pytest.mark.parametrize(("module", "resource"), [("storage.bicep", "storage"), ("keyvault.bicep", "vault")])
def test_storage_and_key_vault_refuse_public_access_when_private(
    bicep_parser: BicepParser, main_bicep: dict[str, Any], module: str, resource: str
) -> None:
    properties = _parse(bicep_parser, module)["resources"][resource]["config"]["properties"]
    public = _conditional(properties["publicNetworkAccess"])
    firewall = _conditional(properties["networkAcls"]["defaultAction"])
    assert public == {"condition": "privateNetworking", "true_value": "Disabled", "false_value": "Enabled"}
    assert firewall == {"condition": "privateNetworking", "true_value": "Deny", "false_value": "Allow"}
    callers = {
        name: m for name, m in main_bicep["modules"].items() if m["detail"]["path"] == f"modules/{module}"
    }
    assert len(callers) == 1
    (caller,) = callers.values()
    config = caller["config"]
    while "condition" in config:
        config = config["config"]
    assert config["params"]["privateNetworking"] == "privateNetworking"


def test_private_endpoints_cover_every_storage_service_the_app_uses_and_the_vault(
    bicep_parser: BicepParser, main_bicep: dict[str, Any]
) -> None:
    network = _parse(bicep_parser, "network.bicep")
    # The host and crmsync use blob (deployment package, host leases), queue (jobs) and table (state).
    assert network["variables"]["storageServices"]["value"] == ["blob", "queue", "table"]
    storage_endpoint = network["resources"]["storageEndpoints"]["config"]
    assert storage_endpoint["loop_type"]["detail"] == {
        "item_name": "service",
        "array_name": "storageServices",
    }
    connection = storage_endpoint["config"]["properties"]["privateLinkServiceConnections"][0]["properties"]
    assert connection["groupIds"] == ["service"]
    vault_endpoint = network["resources"]["vaultEndpoint"]["config"]["config"]["properties"]
    assert vault_endpoint["privateLinkServiceConnections"][0]["properties"]["groupIds"] == ["vault"]
    assert {"storageEndpointDns", "vaultEndpointDns", "storageZoneLinks", "vaultZoneLink"} <= set(
        network["resources"]
    ), "private endpoints without DNS zones resolve to the public addresses"
    assert main_bicep["modules"]["network"]["config"]["condition"] == "privateNetworking"


def test_the_app_joins_the_vnet_through_a_flex_delegated_subnet(
    bicep_parser: BicepParser, main_bicep: dict[str, Any], functionapp_bicep: dict[str, Any]
) -> None:
    network = _parse(bicep_parser, "network.bicep")
    subnets = {
        s["name"]: s["properties"] for s in network["resources"]["vnet"]["config"]["properties"]["subnets"]
    }
    assert [d["properties"]["serviceName"] for d in subnets["app"]["delegations"]] == [
        "Microsoft.App/environments"
    ]
    assert network["outputs"]["appSubnetId"]["value"] == "${vnet.id}/subnets/app"
    subnet_param = _conditional(main_bicep["modules"]["functionApp"]["config"]["params"]["appSubnetId"])
    assert subnet_param["condition"] == "privateNetworking"
    assert subnet_param["false_value"] == ""
    site = functionapp_bicep["resources"]["app"]["config"]["properties"]
    assert _conditional(site["virtualNetworkSubnetId"])["false_value"] == "appSubnetId"


# --- Entra authentication for the admin API ---------------------------------------------------


def _anonymous_routes() -> set[str]:
    host = json.loads((REPO_ROOT / "host.json").read_text())
    prefix = host["extensions"]["http"]["routePrefix"]
    return {
        f"/{prefix}/{binding['route']}"
        for _, binding in _bindings()
        if binding.get("type") == "httpTrigger" and str(binding.get("authLevel")).endswith("ANONYMOUS")
    }


def test_app_service_authentication_guards_every_route_but_the_anonymous_ones(
    main_bicep: dict[str, Any], functionapp_bicep: dict[str, Any]
) -> None:
    auth = functionapp_bicep["resources"]["auth"]
    assert auth["type"] == "Microsoft.Web/sites/config"
    config = auth["config"]
    assert "condition" not in config, "authentication must not be optional"
    assert config["name"] == "authsettingsV2"
    validation = config["properties"]["globalValidation"]
    assert validation["requireAuthentication"] is True
    # A browser (the status page) is sent to Entra's sign-in; API clients present a bearer token.
    assert validation["unauthenticatedClientAction"] == "RedirectToLoginPage"
    assert validation["redirectToProvider"] == "azureactivedirectory"
    assert config["properties"]["login"]["tokenStore"]["enabled"] is False  # no token kept
    excluded = main_bicep["variables"]["anonymousPaths"]["value"]
    assert main_bicep["modules"]["functionApp"]["config"]["params"]["anonymousPaths"] == "anonymousPaths"
    assert validation["excludedPaths"] == "anonymousPaths"
    # Graph's webhooks and the health probe stay reachable; nothing else, the admin routes least of all.
    assert set(excluded) == _anonymous_routes(), sorted(_anonymous_routes())
    assert not [path for path in excluded if path.startswith("/api/admin")]


def test_entra_is_the_identity_provider_of_the_admin_api(functionapp_bicep: dict[str, Any]) -> None:
    entra = functionapp_bicep["resources"]["auth"]["config"]["properties"]["identityProviders"]
    provider = entra["azureActiveDirectory"]
    assert provider["enabled"] is True
    assert provider["registration"]["clientId"] == "adminApiClientId"
    assert (
        provider["registration"]["openIdIssuer"]
        == "${environment().authentication.loginEndpoint}${tenantId}/v2.0"
    )
    assert provider["validation"]["allowedAudiences"] == ["adminApiClientId", "api://${adminApiClientId}"]


def test_the_admin_role_is_one_declared_app_role_and_the_readme_says_how_to_assign_it(
    main_bicep: dict[str, Any],
) -> None:
    roles = json.loads((BICEP_DIR / "entra" / "admin-api-app-roles.json").read_text())
    role = main_bicep["variables"]["adminRole"]["value"]
    assert [r["value"] for r in roles] == [role] == ["crmsync.Admin"]
    assert roles[0]["isEnabled"] is True
    assert set(roles[0]["allowedMemberTypes"]) == {"User", "Application"}
    deploy = _readme_section("Deploy")
    assert "bicep/entra/admin-api-app-roles.json" in deploy
    assert "appRoleAssignmentRequired" in deploy
    assert f"--role {role}" in deploy or role in deploy


# --- alerts -----------------------------------------------------------------------------------

ALERT_KEYS = {
    "mailbox-degraded",
    "poison-queue-growing",
    "subscription-renewal-failed",
    "parked-items-growing",
    "change-to-crm-latency",
}


@pytest.fixture(scope="module")
def alerts_bicep(bicep_parser: BicepParser) -> dict[str, Any]:
    return _parse(bicep_parser, "alerts.bicep")


def _rules(alerts_bicep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["key"]: rule for rule in alerts_bicep["variables"]["rules"]["value"]}


def _query(alerts_bicep: dict[str, Any], rule: dict[str, Any]) -> str:
    value = alerts_bicep["variables"][rule["query"]]["value"]
    if isinstance(value, dict):  # format('...', args): the template text
        return str(value["function"]["parameters"]["format_string"])
    return str(value)


def test_every_alert_mails_the_operators(alerts_bicep: dict[str, Any], main_bicep: dict[str, Any]) -> None:
    group = alerts_bicep["resources"]["operators"]["config"]["properties"]
    assert group["emailReceivers"][0]["emailAddress"] == "alertEmail"
    assert main_bicep["parameters"]["alertEmail"].get("default") is None, (
        "alerts nobody receives are no alerts"
    )
    assert main_bicep["modules"]["alerts"]["config"]["params"]["alertEmail"] == "alertEmail"
    rule = alerts_bicep["resources"]["alertRules"]["config"]
    assert rule["loop_type"]["detail"]["array_name"] == "rules"
    properties = rule["config"]["properties"]
    assert properties["enabled"] is True
    (group_ref,) = properties["actions"]["actionGroups"]
    assert group_ref["operator"]["operands"] == {"operand_1": "operators", "operand_2": "id"}
    assert set(_rules(alerts_bicep)) == ALERT_KEYS


def _source() -> str:
    """Every Python source file of the deployed app (shared/ and functions/)."""
    files = sorted([*(REPO_ROOT / "shared").rglob("*.py"), *(REPO_ROOT / "functions").rglob("*.py")])
    return "\n".join(path.read_text() for path in files)


def test_alert_queries_match_what_the_code_logs(alerts_bicep: dict[str, Any]) -> None:
    """Each literal an alert searches for is in the code that emits it (a reworded log breaks this)."""
    rules = _rules(alerts_bicep)
    source = _source()
    degraded = _query(alerts_bicep, rules["mailbox-degraded"])
    assert 'message has "degraded: its sync job failed"' in degraded
    assert '"mailbox %s degraded: its sync job failed %d times"' in source
    parked = _query(alerts_bicep, rules["parked-items-growing"])
    assert 'message startswith "parked a "' in parked
    assert re.search(r'log(ger)?\.warning\("parked a %s item: ', source)
    renewal = _query(alerts_bicep, rules["subscription-renewal-failed"])
    timer_functions = {name for name, binding in _bindings() if binding.get("type") == "timerTrigger"}
    assert 'operation_Name == "renew_subscriptions"' in renewal
    assert "renew_subscriptions" in timer_functions
    poison = _query(alerts_bicep, rules["poison-queue-growing"])
    assert 'Uri contains "/{0}-poison/messages"' in poison
    assert alerts_bicep["variables"]["poisonQuery"]["value"]["function"]["parameters"]["arg_1"] == "jobQueue"


def test_metric_alerts_read_the_metrics_the_app_emits(alerts_bicep: dict[str, Any]) -> None:
    """The names are the instruments' own (Azure Monitor stores an OpenTelemetry metric under its
    instrument name), the latency histogram's seconds made milliseconds for the threshold."""
    rules = _rules(alerts_bicep)
    instruments = signals.UNITS
    latency = _query(alerts_bicep, rules["change-to-crm-latency"])
    assert f'name == "{CHANGE_TO_CRM_LATENCY}"' in latency
    assert instruments[CHANGE_TO_CRM_LATENCY] == "s"
    assert "p95 = 1000 * percentilew(" in latency
    assert f'name == "{ITEMS_PARKED}"' in _query(alerts_bicep, rules["parked-items-growing"])
    metric_names = set(re.findall(r'customMetrics \| where name == "([^"]+)"', json.dumps(alerts_bicep)))
    assert metric_names <= set(instruments), metric_names - set(instruments)
    assert rules["change-to-crm-latency"]["threshold"] == "changeToCrmP95Ms"
    assert rules["parked-items-growing"]["threshold"] == "parkedItemsPerHour"
    for key in ("change-to-crm-latency", "parked-items-growing", "poison-queue-growing"):
        measure = rules[key]["measure"]
        assert re.search(rf"\b{measure} = ", _query(alerts_bicep, rules[key])), (key, measure)


def test_every_alert_has_a_runbook_paragraph(alerts_bicep: dict[str, Any]) -> None:
    runbooks = _readme_section("Alerts")
    for rule in _rules(alerts_bicep).values():
        heading = rule["description"].split('Runbook: README "Alerts", ')[1].rstrip(".")
        assert re.search(rf"^\*\*{re.escape(heading)}\*\*", runbooks, re.MULTILINE | re.IGNORECASE), heading
        assert f"`{rule['key']}`" in runbooks, rule["key"]


def test_the_parameter_file_sets_the_alert_email(main_bicep: dict[str, Any]) -> None:
    text = (BICEP_DIR / "main.bicepparam").read_text()
    assert re.search(r"^param alertEmail = '[^']+@[^']+'$", text, re.MULTILINE)
