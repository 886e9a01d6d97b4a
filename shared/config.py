"""Typed settings, read once from app settings (environment variables).

Azure Functions exposes app settings as environment variables, and the local
runner does the same from ``local.settings.json``. Every setting crmsync reads
is declared here, so Bicep, ``local.settings.json.example`` and the docs can be
checked against :func:`setting_names` instead of drifting.

A misconfigured app must fail at start-up with *one* message that names every
missing or invalid setting, not with the first ``KeyError`` deep in a sync job.
"""

from __future__ import annotations

import enum
import functools
from typing import Any

from pydantic import Field, HttpUrl, ValidationError, model_validator
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
        default=None, validation_alias="CRMSYNC_MANAGED_IDENTITY_CLIENT_ID"
    )
    client_certificate: str | None = Field(default=None, validation_alias="CRMSYNC_CLIENT_CERTIFICATE")
    # --- services -----------------------------------------------------------
    graph_url: HttpUrl = Field(default=HttpUrl(GRAPH_PUBLIC_CLOUD), validation_alias="CRMSYNC_GRAPH_URL")
    dataverse_url: HttpUrl = Field(validation_alias="CRMSYNC_DATAVERSE_URL")
    dataverse_api_path: str = Field(default="/api/data/v9.2", validation_alias="CRMSYNC_DATAVERSE_API_PATH")
    # --- webhooks (public URLs Graph calls) ---------------------------------
    notification_url: HttpUrl = Field(validation_alias="CRMSYNC_NOTIFICATION_URL")
    lifecycle_url: HttpUrl = Field(validation_alias="CRMSYNC_LIFECYCLE_URL")
    max_notification_bytes: int = Field(
        default=1_000_000, validation_alias="CRMSYNC_MAX_NOTIFICATION_BYTES", gt=0
    )

    # --- storage (Azurite locally; identity-based in Azure) -----------------
    storage_connection_string: str | None = Field(default=None, validation_alias="AzureWebJobsStorage")
    storage_account_name: str | None = Field(
        default=None, validation_alias="AzureWebJobsStorage__accountName"
    )
    storage_client_id: str | None = Field(default=None, validation_alias="AzureWebJobsStorage__clientId")
    table_prefix: str = Field(
        default="crmsync", validation_alias="CRMSYNC_TABLE_PREFIX", pattern=r"^[A-Za-z][A-Za-z0-9]{2,40}$"
    )
    job_queue: str = Field(
        default="crmsync-jobs", validation_alias="CRMSYNC_JOB_QUEUE", pattern=r"^[a-z0-9](-?[a-z0-9]){2,62}$"
    )

    # --- schedules (NCRONTAB, read by the timer triggers as %NAME%) --------
    renew_schedule: str = Field(default="0 */30 * * * *", validation_alias="CRMSYNC_RENEW_SCHEDULE")
    sweep_schedule: str = Field(default="0 */15 * * * *", validation_alias="CRMSYNC_SWEEP_SCHEDULE")
    parked_retry_schedule: str = Field(
        default="0 5 * * * *", validation_alias="CRMSYNC_PARKED_RETRY_SCHEDULE"
    )
    # --- sync behaviour -----------------------------------------------------
    lease_seconds: int = Field(default=120, validation_alias="CRMSYNC_LEASE_SECONDS", ge=15, le=3600)
    mass_delete_ratio: float = Field(default=0.5, validation_alias="CRMSYNC_MASS_DELETE_RATIO", gt=0, le=1)

    # --- telemetry ----------------------------------------------------------
    applicationinsights_connection_string: str | None = Field(
        default=None, validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        problems: list[str] = []
        if not (self.storage_connection_string or self.storage_account_name):
            problems.append(
                "AzureWebJobsStorage: set a connection string (local) or "
                "AzureWebJobsStorage__accountName (managed identity in Azure)"
            )
        if self.credential_kind is CredentialKind.CERTIFICATE and not self.client_certificate:
            problems.append(
                "CRMSYNC_CLIENT_CERTIFICATE: required when CRMSYNC_CREDENTIAL_KIND=certificate "
                "(a Key Vault reference to the Entra app's certificate)"
            )
        if self.credential_kind is CredentialKind.FEDERATED and not self.managed_identity_client_id:
            problems.append(
                "CRMSYNC_MANAGED_IDENTITY_CLIENT_ID: required when CRMSYNC_CREDENTIAL_KIND=federated "
                "(client id of the function app's user-assigned identity)"
            )
        if self.credential_kind is CredentialKind.SANDBOX:
            for name, url in (
                ("CRMSYNC_GRAPH_URL", self.graph_url),
                ("CRMSYNC_DATAVERSE_URL", self.dataverse_url),
            ):
                if url.host not in _LOOPBACK_HOSTS:
                    problems.append(
                        f"{name}: CRMSYNC_CREDENTIAL_KIND=sandbox only talks to loopback simulators"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def dataverse_api_url(self) -> str:
        """Base of the Dataverse Web API, e.g. ``https://org.crm.dynamics.com/api/data/v9.2``."""
        return str(self.dataverse_url).rstrip("/") + "/" + self.dataverse_api_path.strip("/")

    @property
    def dataverse_scope(self) -> str:
        """OAuth scope for Dataverse: ``<org url>/.default``."""
        return str(self.dataverse_url).rstrip("/") + "/.default"


class SettingsError(RuntimeError):
    """Raised once at start-up with every missing or invalid setting named."""


def setting_names() -> frozenset[str]:
    """Every app-setting key crmsync reads (used to check Bicep and examples)."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        if isinstance(field.validation_alias, str):
            names.add(field.validation_alias)
    return frozenset(names)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; raise :class:`SettingsError` naming all problems.

    Values are never echoed back: a bad connection string must not land in a log.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            lines.append(f"  - {where}: {error['msg']}")
        raise SettingsError(
            "crmsync cannot start; fix these app settings "
            "(see local.settings.json.example and README 'Configure'):\n" + "\n".join(lines)
        ) from None


@functools.cache
def get_settings() -> Settings:
    """Process-wide settings, read on first use (the Functions host sets env first)."""
    return load_settings()
