"""Settings: one clear error naming every problem, and no secret values echoed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.config import (
    REMEDIES,
    CredentialKind,
    SettingsError,
    load_settings,
    ncrontab_problem,
    setting_names,
)

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


# --- what a new user gets wrong, reported all at once with what to do ---------------------------

NEW_USER_MISTAKES = {
    "CRMSYNC_TENANT_ID": "not-a-guid",
    "CRMSYNC_CLIENT_ID": "also-bad",
    "CRMSYNC_DATAVERSE_URL": "http://contoso.crm.dynamics.com",
    "CRMSYNC_NOTIFICATION_URL": "http://crmsync.azurewebsites.net/api/notifications",
    "CRMSYNC_SWEEP_SCHEDULE": "*/5 * * * *",  # classic five-field cron
}


def _new_user(env: pytest.MonkeyPatch) -> None:
    for key, value in {**VALID, **NEW_USER_MISTAKES}.items():
        env.setenv(key, value)
    env.delenv("CRMSYNC_MANAGED_IDENTITY_CLIENT_ID")  # a cross-field rule, reported in the same pass


def test_bad_ids_plain_http_and_a_bad_schedule_are_all_named_in_one_pass(env: pytest.MonkeyPatch) -> None:
    _new_user(env)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    problems = caught.value.problems
    named = {problem.split(":", 1)[0] for problem in problems}
    assert named == {*NEW_USER_MISTAKES, "CRMSYNC_MANAGED_IDENTITY_CLIENT_ID"}, problems
    text = "\n".join(problems)
    assert "must be a GUID" in text
    assert text.count("must be an https:// URL") == 2
    assert "needs six NCRONTAB fields, second first, got 5 field(s)" in text
    assert "required when CRMSYNC_CREDENTIAL_KIND=federated" in text
    for name in named:  # each problem says what to do
        assert REMEDIES[name] in text, name
    for value in NEW_USER_MISTAKES.values():
        assert value not in text


def test_check_settings_prints_every_problem_with_its_remedy(env: pytest.MonkeyPatch) -> None:
    _new_user(env)
    result = CliRunner().invoke(app, ["check-settings"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("  - ")]
    assert len(lines) == 6, result.output
    assert result.output.startswith("6 problem(s) in the app settings")
    for name in (*NEW_USER_MISTAKES, "CRMSYNC_MANAGED_IDENTITY_CLIENT_ID"):
        assert any(line.startswith(f"  - {name}: ") and REMEDIES[name] in line for line in lines), name
    assert "not-a-guid" not in result.output


def test_check_settings_accepts_a_good_configuration(env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        env.setenv(key, value)
    result = CliRunner().invoke(app, ["check-settings"])
    assert result.exit_code == 0, result.output
    assert "settings ok (credential: federated)" in result.output


@pytest.mark.parametrize("name", ["CRMSYNC_LIFECYCLE_URL", "CRMSYNC_GRAPH_URL"])
def test_every_public_url_must_be_https(env: pytest.MonkeyPatch, name: str) -> None:
    for key, value in VALID.items():
        env.setenv(key, value)
    env.setenv(name, "http://example.com/api/lifecycle")
    with pytest.raises(SettingsError, match=rf"{name}: must be an https:// URL"):
        load_settings()


@pytest.mark.parametrize("host", ["127.0.0.1:7071", "localhost:7071", "[::1]:7071"])
def test_the_sandbox_on_loopback_may_use_http(env: pytest.MonkeyPatch, host: str) -> None:
    for key, value in VALID.items():
        env.setenv(key, value)
    env.setenv("CRMSYNC_CREDENTIAL_KIND", "sandbox")
    for name in ("CRMSYNC_GRAPH_URL", "CRMSYNC_DATAVERSE_URL"):
        env.setenv(name, f"http://{host}")
    env.setenv("CRMSYNC_NOTIFICATION_URL", f"http://{host}/api/notifications")
    env.setenv("CRMSYNC_LIFECYCLE_URL", f"http://{host}/api/lifecycle")
    settings = load_settings()
    assert settings.notification_url.scheme == "http"


def test_guids_are_accepted_in_any_case_and_trimmed(env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        env.setenv(key, value)
    env.setenv("CRMSYNC_TENANT_ID", " 72F988BF-86F1-41AF-91AB-2D7CD011DB47 ")
    assert load_settings().tenant_id == "72F988BF-86F1-41AF-91AB-2D7CD011DB47"


@pytest.mark.parametrize(
    "schedule",
    ["0 */15 * * * *", "0 5 * * * *", "0 30 9 * Jan Mon", "0 0 9-17 * * 1-5", "*/5 * * * * *",
     "0 0,30 8-18/2 1-15 JAN-jun sun,sat", "0 0 0 31 12 6"],
)  # fmt: skip
def test_valid_ncrontab_schedules(schedule: str) -> None:
    assert ncrontab_problem(schedule) is None


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ("*/15 * * * *", "needs six NCRONTAB fields, second first, got 5 field(s)"),
        ("00:05:00", "needs six NCRONTAB fields, second first, got a TimeSpan (Dedicated plans only)"),
        ("0 60 * * * *", "minute field: 60 is outside 0-59"),
        ("0 0 24 * * *", "hour field: 24 is outside 0-23"),
        ("0 0 0 0 * *", "day field: 0 is outside 1-31"),
        ("0 0 0 * 13 *", "month field: 13 is outside 1-12"),
        ("0 0 0 * * 7", "day-of-week field: 7 is outside 0-6"),
        ("0 */0 * * * *", "minute field: step '0' must be a positive number"),
        ("0 30-10 * * * *", "minute field: range '30-10' runs backwards"),
        ("0 x * * * *", "minute field: 'x' is not a number"),
        ("0 0 0 * Foo *", "month field: 'Foo' is not a number or a name"),
        ("0 0 0 * * ,", "day-of-week field: '' is not a number or a name"),
    ],
)
def test_invalid_ncrontab_schedules_say_why(schedule: str, problem: str) -> None:
    assert ncrontab_problem(schedule) == problem


def test_a_bad_schedule_setting_is_named(env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        env.setenv(key, value)
    env.setenv("CRMSYNC_RENEW_SCHEDULE", "0 0 25 * * *")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.problems == [
        "CRMSYNC_RENEW_SCHEDULE: not a schedule the Functions host accepts: hour field: 25 is outside 0-23; "
        + REMEDIES["CRMSYNC_RENEW_SCHEDULE"]
    ]


def test_a_job_queue_name_leaves_room_for_the_lifecycle_and_poison_queues(env: pytest.MonkeyPatch) -> None:
    """``<name>-lifecycle-poison`` must stay within Azure's 63 characters."""
    for key, value in VALID.items():
        env.setenv(key, value)
    env.setenv("CRMSYNC_JOB_QUEUE", "q" * 47)
    with pytest.raises(SettingsError, match="CRMSYNC_JOB_QUEUE"):
        load_settings()
    env.setenv("CRMSYNC_JOB_QUEUE", "q" * 46)
    assert len(load_settings().job_queue + "-lifecycle-poison") == 63
