"""Settings: one clear error naming every problem, and no secret values echoed."""

from __future__ import annotations

import pytest

from shared.config import CredentialKind, SettingsError, load_settings, setting_names

VALID = {
    "CRMSYNC_TENANT_ID": "00000000-0000-0000-0000-000000000001",
    "CRMSYNC_CLIENT_ID": "00000000-0000-0000-0000-000000000002",
    "CRMSYNC_CREDENTIAL_KIND": "federated",
    "CRMSYNC_MANAGED_IDENTITY_CLIENT_ID": "00000000-0000-0000-0000-000000000003",
    "CRMSYNC_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
    "CRMSYNC_NOTIFICATION_URL": "https://crmsync.azurewebsites.net/api/notifications",
    "CRMSYNC_LIFECYCLE_URL": "https://crmsync.azurewebsites.net/api/lifecycle",
    "AzureWebJobsStorage__accountName": "crmsyncstore",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_valid_settings_load(env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        env.setenv(key, value)
    settings = load_settings()
    assert settings.credential_kind is CredentialKind.FEDERATED
    assert settings.dataverse_api_url == "https://contoso.crm.dynamics.com/api/data/v9.2"
    assert settings.dataverse_scope == "https://contoso.crm.dynamics.com/.default"


def test_every_missing_setting_is_named_at_once(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    for required in (
        "CRMSYNC_TENANT_ID",
        "CRMSYNC_CLIENT_ID",
        "CRMSYNC_DATAVERSE_URL",
        "CRMSYNC_NOTIFICATION_URL",
        "CRMSYNC_LIFECYCLE_URL",
    ):
        assert required in message


def test_invalid_values_are_named_but_not_echoed(env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        env.setenv(key, value)
    env.setenv("CRMSYNC_DATAVERSE_URL", "not a url with secret-ish-value")
    env.setenv("CRMSYNC_LEASE_SECONDS", "1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "CRMSYNC_DATAVERSE_URL" in message
    assert "CRMSYNC_LEASE_SECONDS" in message
    assert "secret-ish-value" not in message


def test_sandbox_credentials_refuse_real_endpoints(env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        env.setenv(key, value)
    env.setenv("CRMSYNC_CREDENTIAL_KIND", "sandbox")
    with pytest.raises(SettingsError, match="loopback"):
        load_settings()


def test_storage_is_required(env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        if key != "AzureWebJobsStorage__accountName":
            env.setenv(key, value)
    with pytest.raises(SettingsError, match="AzureWebJobsStorage"):
        load_settings()
