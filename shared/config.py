"""Typed settings, read once from app settings (environment variables).

Azure Functions exposes app settings as environment variables, and the local
runner does the same from ``local.settings.json``. Every setting crmsync reads
is declared here, so Bicep, ``local.settings.json.example`` and the docs can be
checked against :func:`setting_names` instead of drifting.

A misconfigured app must fail at start-up with *one* message that names every
missing or invalid setting, not with the first ``KeyError`` deep in a sync job.
Every rule is therefore a per-field check (rules that depend on another setting
read it from ``ValidationInfo.data``), so pydantic collects all problems in one
pass; each problem is reported with what to do about it (:data:`REMEDIES`).
"""

from __future__ import annotations

import enum
import functools
import re
from typing import Any

from pydantic import Field, HttpUrl, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GRAPH_PUBLIC_CLOUD = "https://graph.microsoft.com/v1.0"


class CredentialKind(enum.StrEnum):
    """How crmsync authenticates as its Entra application.

    - ``federated``: the app's user-assigned managed identity is a federated
      credential of the Entra app (no secret anywhere; the recommended choice).
    - ``certificate``: a PEM certificate (with key) held in Key Vault and handed
      over by a Key Vault reference in ``CRMSYNC_CLIENT_CERTIFICATE``.
    - ``sandbox``: the local simulators; a fixed dummy bearer token. Refused
      unless both service URLs point at loopback.
    """

    FEDERATED = "federated"
    CERTIFICATE = "certificate"
    SANDBOX = "sandbox"


_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# --- NCRONTAB ---------------------------------------------------------------------------------
# Azure Functions timers: six fields "{second} {minute} {hour} {day} {month} {day-of-week}"; each
# a value, "*", a range "a-b", a list "a,b" or a step "*/n" / "a-b/n"; months and days of the week
# also by (three-letter) name, Sunday = 0 ("Timer trigger for Azure Functions", NCRONTAB
# expressions, learn.microsoft.com/azure/azure-functions/functions-bindings-timer). The TimeSpan
# form ("00:05:00") works only on a Dedicated plan, not on Flex Consumption, so it is refused.
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...], int], ...] = (
    # name, low, high, names, value of the first name
    ("second", 0, 59, (), 0),
    ("minute", 0, 59, (), 0),
    ("hour", 0, 23, (), 0),
    ("day", 1, 31, (), 1),
    ("month", 1, 12, _MONTHS, 1),
    ("day-of-week", 0, 6, _DAYS, 0),
)
NCRONTAB_EXAMPLE = '"0 */15 * * * *" (second 0 of every 15th minute)'


def _cron_value(text: str, field: tuple[str, int, int, tuple[str, ...], int]) -> int:
    name, low, high, names, first = field
    upper = text.upper()
    for index, known in enumerate(names):
        if upper in (known, _full_name(known)):
            return first + index
    if not text.isdigit():
        raise ValueError(f"{name} field: {text!r} is not a number" + (" or a name" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name} field: {value} is outside {low}-{high}")
    return value


def _full_name(abbreviation: str) -> str:
    full = {
        "JAN": "JANUARY", "FEB": "FEBRUARY", "MAR": "MARCH", "APR": "APRIL", "JUN": "JUNE",
        "JUL": "JULY", "AUG": "AUGUST", "SEP": "SEPTEMBER", "OCT": "OCTOBER", "NOV": "NOVEMBER",
        "DEC": "DECEMBER", "SUN": "SUNDAY", "MON": "MONDAY", "TUE": "TUESDAY", "WED": "WEDNESDAY",
        "THU": "THURSDAY", "FRI": "FRIDAY", "SAT": "SATURDAY",
    }  # fmt: skip
    return full.get(abbreviation, abbreviation)


def ncrontab_problem(expression: str) -> str | None:
    """Why ``expression`` is not a six-field NCRONTAB schedule the Functions host accepts, or None."""
    parts = expression.split()
    if len(parts) != len(_CRON_FIELDS):
        kind = "a TimeSpan (Dedicated plans only)" if ":" in expression else f"{len(parts)} field(s)"
        return f"needs six NCRONTAB fields, second first, got {kind}"
    for part, field in zip(parts, _CRON_FIELDS, strict=True):
        for item in part.split(","):
            base, slash, step = item.partition("/")
            try:
                if slash and not (step.isdigit() and int(step) > 0):
                    raise ValueError(f"{field[0]} field: step {step!r} must be a positive number")
                if base == "*":
                    continue
                start, dash, end = base.partition("-")
                low = _cron_value(start, field)
                if dash and _cron_value(end, field) < low:
                    raise ValueError(f"{field[0]} field: range {base!r} runs backwards")
            except ValueError as exc:
                return str(exc)
    return None


#: What to do about a problem with each setting (appended to every message check-settings prints).
REMEDIES: dict[str, str] = {
    "CRMSYNC_TENANT_ID": "use the Directory (tenant) ID from Entra ID > App registrations > "
    "crmsync > Overview",
    "CRMSYNC_CLIENT_ID": "use the Application (client) ID from Entra ID > App registrations > "
    "crmsync > Overview",
    "CRMSYNC_CREDENTIAL_KIND": "set federated (Azure, recommended), certificate (Key Vault) "
    "or sandbox (local)",
    "CRMSYNC_MANAGED_IDENTITY_CLIENT_ID": "use the client id of the function app's user-assigned identity "
    "(deployment output identityClientId)",
    "CRMSYNC_CLIENT_CERTIFICATE": "set a Key Vault reference, "
    "@Microsoft.KeyVault(VaultName=<vault>;SecretName=<certificate>)",
    "CRMSYNC_GRAPH_URL": "leave it unset for https://graph.microsoft.com/v1.0 (national clouds differ)",
    "CRMSYNC_DATAVERSE_URL": "use the environment URL from the Power Platform admin center, "
    "e.g. https://contoso.crm.dynamics.com",
    "CRMSYNC_NOTIFICATION_URL": "use the deployment output notificationUrl "
    "(https://<app>.azurewebsites.net/api/notifications)",
    "CRMSYNC_LIFECYCLE_URL": "use the deployment output lifecycleUrl "
    "(https://<app>.azurewebsites.net/api/lifecycle)",
    "AzureWebJobsStorage": "set a connection string locally (UseDevelopmentStorage=true for Azurite) "
    "or AzureWebJobsStorage__accountName in Azure",
    "AzureWebJobsStorage__accountName": "set the storage account name (managed identity, Azure) "
    "or AzureWebJobsStorage (a connection string, local)",
    "CRMSYNC_TABLE_PREFIX": "use 3-41 letters and digits starting with a letter, e.g. crmsync",
    "CRMSYNC_JOB_QUEUE": (
        "use 3-46 lowercase letters, digits and single hyphens, e.g. crmsync-jobs (the lifecycle queue "
        "adds -lifecycle and the host's poison queue -poison, within Azure's 63)"
    ),
    "CRMSYNC_RENEW_SCHEDULE": f"use six NCRONTAB fields, e.g. {NCRONTAB_EXAMPLE}",
    "CRMSYNC_SWEEP_SCHEDULE": f"use six NCRONTAB fields, e.g. {NCRONTAB_EXAMPLE}",
    "CRMSYNC_PARKED_RETRY_SCHEDULE": f"use six NCRONTAB fields, e.g. {NCRONTAB_EXAMPLE}",
    "CRMSYNC_CRM_CHANGES_SCHEDULE": f"use six NCRONTAB fields, e.g. {NCRONTAB_EXAMPLE}",
    "CRMSYNC_CRM_WEBHOOK_KEY": "use a random key of 32 to 256 characters (a Key Vault reference in Azure)",
    "CRMSYNC_LEASE_SECONDS": "use a whole number of seconds from 15 to 3600 (default 120)",
    "CRMSYNC_MASS_DELETE_RATIO": "use a share above 0 and at most 1 (default 0.5)",
    "CRMSYNC_MAX_NOTIFICATION_BYTES": "use a positive number of bytes (default 1000000)",
}


def _is_loopback(url: HttpUrl) -> bool:
    return url.host in _LOOPBACK_HOSTS


class Settings(BaseSettings):
    """All of crmsync's app settings. Names are the exact app-setting keys."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        populate_by_name=False,
        frozen=True,
    )

    # --- identity -----------------------------------------------------------
    tenant_id: str = Field(validation_alias="CRMSYNC_TENANT_ID")
    client_id: str = Field(validation_alias="CRMSYNC_CLIENT_ID")
    credential_kind: CredentialKind = Field(
        default=CredentialKind.FEDERATED, validation_alias="CRMSYNC_CREDENTIAL_KIND"
    )
    managed_identity_client_id: str | None = Field(
        default=None, validation_alias="CRMSYNC_MANAGED_IDENTITY_CLIENT_ID", validate_default=True
    )
    client_certificate: str | None = Field(
        default=None, validation_alias="CRMSYNC_CLIENT_CERTIFICATE", validate_default=True
    )
    # --- services -----------------------------------------------------------
    graph_url: HttpUrl = Field(
        default=HttpUrl(GRAPH_PUBLIC_CLOUD), validation_alias="CRMSYNC_GRAPH_URL", validate_default=True
    )
    dataverse_url: HttpUrl = Field(validation_alias="CRMSYNC_DATAVERSE_URL")
    dataverse_api_path: str = Field(default="/api/data/v9.2", validation_alias="CRMSYNC_DATAVERSE_API_PATH")
    # --- webhooks (public URLs Graph calls) ---------------------------------
    notification_url: HttpUrl = Field(validation_alias="CRMSYNC_NOTIFICATION_URL")
    lifecycle_url: HttpUrl = Field(validation_alias="CRMSYNC_LIFECYCLE_URL")
    # The key Dataverse sends as ?code= to the CRM webhook (unset: the CRM webhook refuses every call).
    crm_webhook_key: SecretStr | None = Field(
        default=None, validation_alias="CRMSYNC_CRM_WEBHOOK_KEY", min_length=32, max_length=256
    )
    max_notification_bytes: int = Field(
        default=1_000_000, validation_alias="CRMSYNC_MAX_NOTIFICATION_BYTES", gt=0
    )

    # --- storage (Azurite locally; identity-based in Azure) -----------------
    storage_connection_string: str | None = Field(default=None, validation_alias="AzureWebJobsStorage")
    storage_account_name: str | None = Field(
        default=None, validation_alias="AzureWebJobsStorage__accountName", validate_default=True
    )
    storage_client_id: str | None = Field(default=None, validation_alias="AzureWebJobsStorage__clientId")
    table_prefix: str = Field(
        default="crmsync", validation_alias="CRMSYNC_TABLE_PREFIX", pattern=r"^[A-Za-z][A-Za-z0-9]{2,40}$"
    )
    job_queue: str = Field(
        default="crmsync-jobs",
        validation_alias="CRMSYNC_JOB_QUEUE",
        pattern=r"^[a-z0-9](-?[a-z0-9])+$",
        min_length=3,
        max_length=46,
    )

    # --- schedules (NCRONTAB, read by the timer triggers as %NAME%) --------
    renew_schedule: str = Field(
        default="0 */30 * * * *", validation_alias="CRMSYNC_RENEW_SCHEDULE", validate_default=True
    )
    sweep_schedule: str = Field(
        default="0 */15 * * * *", validation_alias="CRMSYNC_SWEEP_SCHEDULE", validate_default=True
    )
    parked_retry_schedule: str = Field(
        default="0 5 * * * *", validation_alias="CRMSYNC_PARKED_RETRY_SCHEDULE", validate_default=True
    )
    crm_changes_schedule: str = Field(
        default="0 */5 * * * *", validation_alias="CRMSYNC_CRM_CHANGES_SCHEDULE", validate_default=True
    )
    # --- sync behaviour -----------------------------------------------------
    lease_seconds: int = Field(default=120, validation_alias="CRMSYNC_LEASE_SECONDS", ge=15, le=3600)
    mass_delete_ratio: float = Field(default=0.5, validation_alias="CRMSYNC_MASS_DELETE_RATIO", gt=0, le=1)
    parked_max_attempts: int = Field(default=10, validation_alias="CRMSYNC_PARKED_MAX_ATTEMPTS", ge=1, le=100)
    #: How long a worker trusts the mailbox's deployment claim it read (one Graph read per period).
    claim_check_seconds: int = Field(
        default=300, validation_alias="CRMSYNC_CLAIM_CHECK_SECONDS", ge=0, le=3600
    )
    #: Outlook's request budget per mailbox (learn.microsoft.com/graph/throttling-limits): crmsync
    #: paces each mailbox's Graph requests at CRMSYNC_GRAPH_BUDGET_SHARE of it.
    graph_mailbox_budget: int = Field(
        default=10_000, validation_alias="CRMSYNC_GRAPH_MAILBOX_BUDGET", ge=2, le=1_000_000
    )
    graph_budget_window_seconds: float = Field(
        default=600.0, validation_alias="CRMSYNC_GRAPH_BUDGET_WINDOW_SECONDS", gt=0, le=86400
    )
    graph_budget_share: float = Field(default=0.95, validation_alias="CRMSYNC_GRAPH_BUDGET_SHARE", gt=0, lt=1)
    #: How long a worker waits for one answer before giving up on it (the request fails, the job with it,
    #: and the queue retries the job): a Graph or Dataverse that accepts the connection and never
    #: answers must not hold the mailbox's lease for good.
    graph_timeout_seconds: float = Field(
        default=60.0, validation_alias="CRMSYNC_GRAPH_TIMEOUT_SECONDS", gt=0, le=600
    )
    dataverse_timeout_seconds: float = Field(
        default=120.0, validation_alias="CRMSYNC_DATAVERSE_TIMEOUT_SECONDS", gt=0, le=600
    )
    #: How long a worker keeps the organization's field directions and column security, and each CRM
    #: user's Outlook filters, Sync to Outlook privilege and time zone (one read per period).
    field_settings_ttl_seconds: int = Field(
        default=300, validation_alias="CRMSYNC_FIELD_SETTINGS_TTL_SECONDS", ge=0, le=86400
    )

    # --- telemetry ----------------------------------------------------------
    applicationinsights_connection_string: str | None = Field(
        default=None, validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )

    # Each rule is a field validator, so one pass reports every problem. A rule that depends on
    # another setting reads it from info.data (fields validate in declaration order; a setting
    # that was itself invalid is absent there and reported on its own).

    @field_validator("tenant_id", "client_id")
    @classmethod
    def _guid(cls, value: str) -> str:
        if not _GUID.fullmatch(value.strip()):
            raise ValueError("must be a GUID like 00000000-0000-0000-0000-000000000000")
        return value.strip()

    @field_validator("managed_identity_client_id")
    @classmethod
    def _identity_for_federated(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("credential_kind") is CredentialKind.FEDERATED and not value:
            raise ValueError("required when CRMSYNC_CREDENTIAL_KIND=federated")
        return value

    @field_validator("client_certificate")
    @classmethod
    def _certificate_for_certificate(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("credential_kind") is CredentialKind.CERTIFICATE and not value:
            raise ValueError("required when CRMSYNC_CREDENTIAL_KIND=certificate")
        return value

    @field_validator("graph_url", "dataverse_url")
    @classmethod
    def _service_url(cls, value: HttpUrl, info: ValidationInfo) -> HttpUrl:
        if info.data.get("credential_kind") is CredentialKind.SANDBOX and not _is_loopback(value):
            raise ValueError(
                "CRMSYNC_CREDENTIAL_KIND=sandbox only talks to loopback simulators (127.0.0.1 or localhost)"
            )
        return _https_unless_loopback(value)

    @field_validator("notification_url", "lifecycle_url")
    @classmethod
    def _webhook_url(cls, value: HttpUrl) -> HttpUrl:
        # Graph refuses a subscription whose notificationUrl / lifecycleNotificationUrl is not https.
        return _https_unless_loopback(value)

    @field_validator("storage_account_name")
    @classmethod
    def _some_storage(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not (value or info.data.get("storage_connection_string")):
            raise ValueError("no storage configured (neither this nor AzureWebJobsStorage is set)")
        return value

    @field_validator("crm_webhook_key", mode="before")
    @classmethod
    def _unset_if_empty(cls, value: Any) -> Any:
        return None if value == "" else value  # Bicep's default: no key, the CRM webhook refuses all

    @field_validator("renew_schedule", "sweep_schedule", "parked_retry_schedule", "crm_changes_schedule")
    @classmethod
    def _ncrontab(cls, value: str) -> str:
        problem = ncrontab_problem(value)
        if problem:
            raise ValueError(f"not a schedule the Functions host accepts: {problem}")
        return value

    @property
    def dataverse_api_url(self) -> str:
        """Base of the Dataverse Web API, e.g. ``https://org.crm.dynamics.com/api/data/v9.2``."""
        return str(self.dataverse_url).rstrip("/") + "/" + self.dataverse_api_path.strip("/")

    @property
    def deployment(self) -> str:
        """Names this deployment in a mailbox's claim (shared/outlook/claim.py): its storage account
        (where its leases live) and table prefix. No secret: the account name only."""
        account = self.storage_account_name
        if account is None and self.storage_connection_string:
            parts = dict(
                part.split("=", 1) for part in self.storage_connection_string.split(";") if "=" in part
            )
            account = parts.get("AccountName")
        return f"{account or 'storage'}/{self.table_prefix}"

    @property
    def dataverse_scope(self) -> str:
        """OAuth scope for Dataverse: ``<org url>/.default``."""
        return str(self.dataverse_url).rstrip("/") + "/.default"


def _https_unless_loopback(url: HttpUrl) -> HttpUrl:
    if url.scheme != "https" and not _is_loopback(url):
        raise ValueError(
            "must be an https:// URL (http:// only for the local sandbox on 127.0.0.1/localhost)"
        )
    return url


class SettingsError(RuntimeError):
    """Raised once at start-up with every missing or invalid setting named.

    ``problems`` holds one line per problem: the setting, what is wrong, and what to do.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "crmsync cannot start; fix these app settings "
            "(see local.settings.json.example and README 'Configure'):\n"
            + "\n".join(f"  - {problem}" for problem in problems)
        )


def setting_names() -> frozenset[str]:
    """Every app-setting key crmsync reads (used to check Bicep and examples)."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        if isinstance(field.validation_alias, str):
            names.add(field.validation_alias)
    return frozenset(names)


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "settings"
    field = Settings.model_fields.get(where)  # a defaulted field's error carries its Python name
    if field is not None and isinstance(field.validation_alias, str):
        where = field.validation_alias
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "missing"
    remedy = REMEDIES.get(where)
    return f"{where}: {message}" + (f"; {remedy}" if remedy else "")


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; raise :class:`SettingsError` naming all problems.

    Values are never echoed back: a bad connection string must not land in a log.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors(include_input=False, include_url=False)]
        raise SettingsError(problems) from None


@functools.cache
def get_settings() -> Settings:
    """Process-wide settings, read on first use (the Functions host sets env first)."""
    return load_settings()
