"""Service protection, outages, concurrency and tokens against the simulator: powerapps-docs "Service
protection API limits" (429 + Retry-After: wait, then retry) and "Use OAuth authentication with
Microsoft Dataverse" (a bearer token for <org url>/.default)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest

from shared.config import load_settings
from shared.crm.dataverse import DataverseClient
from shared.crm.errors import AuthenticationFailed, CrmUnavailable, ServiceProtectionLimit
from shared.crm.port import Upsert
from simulators.dataverse.launcher import DataverseSimulator
from simulators.ports import free_port
from tests.crm.conftest import SCOPE, FixedTokenCredential, ReadAsSystem, UserFactory


def _statuses(dataverse_sim: DataverseSimulator, token: str, method: str) -> list[int]:
    return [r["status"] for r in dataverse_sim.requests(token) if r["method"] == method]


async def test_429_storm_is_ridden_out_honouring_retry_after(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    """Two 429s with Retry-After: 1 -> the create lands after >= 2 s, exactly once (a replayed create
    would have failed as a duplicate)."""
    dataverse_sim.fault("throttle", token=dataverse_token, count=2, retry_after=1)
    contact_id = uuid.uuid4()
    started = time.monotonic()
    await crm.create("contact", {"lastname": "Throttled"}, id=contact_id, caller=None)
    assert 2.0 <= time.monotonic() - started < 4.0
    assert _statuses(dataverse_sim, dataverse_token, "POST") == [429, 429, 201]
    assert (dataverse_sim.record("contact", str(contact_id)) or {})["lastname"] == "Throttled"


async def test_throttled_batch_is_resent_without_lost_or_doubled_writes(
    crm: DataverseClient,
    dataverse_sim: DataverseSimulator,
    dataverse_token: str,
    read_as_system: ReadAsSystem,
) -> None:
    dataverse_sim.fault("throttle", token=dataverse_token, count=1, retry_after=1, path_contains="$batch")
    prefix = f"storm-{uuid.uuid4().hex[:8]}"
    ops = [
        Upsert("task", {"subject": f"{prefix} {n}"}, id=uuid.uuid4(), if_none_match=True) for n in range(50)
    ]
    results = await crm.apply_batch(ops, caller=None)
    assert all(r.ok and r.created for r in results)  # create-only: a second apply would be a duplicate
    assert _statuses(dataverse_sim, dataverse_token, "POST") == [429, 200]
    stored = read_as_system(f"tasks?$select=subject&$filter=startswith(subject,'{prefix}')")["value"]
    assert sorted((row["activityid"], row["subject"]) for row in stored) == sorted(
        (str(op.id), op.fields["subject"]) for op in ops
    )


async def test_request_limit_is_waited_out(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    """The real limit, not a fault: 3 requests per 1 s window; 5 reads all succeed, the 429s waited out."""
    contact = await crm.create("contact", {"lastname": "Popular"}, caller=None)
    dataverse_sim.set_limits(token=dataverse_token, requests=3, window_seconds=1)
    try:
        rows = [await crm.get("contact", contact.id, caller=None) for _ in range(5)]
    finally:
        dataverse_sim.clear_limits()
    assert all(row is not None for row in rows)
    statuses = _statuses(dataverse_sim, dataverse_token, "GET")
    assert statuses.count(200) == 5
    assert 429 in statuses


async def test_gives_up_after_bounded_attempts(
    dataverse_sim: DataverseSimulator, credential: FixedTokenCredential, dataverse_token: str
) -> None:
    dataverse_sim.fault("throttle", token=dataverse_token, count=2, retry_after=1)
    async with DataverseClient(
        dataverse_sim.api_url, credential, application_writes=True, scope=SCOPE, max_attempts=2
    ) as crm:
        with pytest.raises(ServiceProtectionLimit) as raised:
            await crm.whoami(caller=None)
    assert raised.value.retryable
    assert raised.value.code == "0x80072322"
    assert raised.value.retry_after == 1.0
    assert _statuses(dataverse_sim, dataverse_token, "GET") == [429, 429]


async def test_long_retry_after_fails_fast_instead_of_retrying_early(
    dataverse_sim: DataverseSimulator, credential: FixedTokenCredential, dataverse_token: str
) -> None:
    """A Retry-After longer than this client may wait is not shortened: the call fails at once
    (transient), so the job is retried later by the queue."""
    dataverse_sim.fault("throttle", token=dataverse_token, count=1, retry_after=1)
    async with DataverseClient(
        dataverse_sim.api_url, credential, application_writes=True, scope=SCOPE, max_retry_wait=0.5
    ) as crm:
        started = time.monotonic()
        with pytest.raises(ServiceProtectionLimit) as raised:
            await crm.whoami(caller=None)
    assert time.monotonic() - started < 0.5
    assert raised.value.retryable
    assert _statuses(dataverse_sim, dataverse_token, "GET") == [429]


async def test_outage_is_retried_only_when_a_replay_cannot_double_a_write(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    dataverse_sim.fault("outage", token=dataverse_token, count=1)
    assert (await crm.whoami(caller=None)).user_id == uuid.UUID(dataverse_sim.app_user_id)
    assert _statuses(dataverse_sim, dataverse_token, "GET") == [503, 200]

    dataverse_sim.fault("outage", token=dataverse_token, count=1)
    with pytest.raises(CrmUnavailable) as raised:
        await crm.create("account", {"name": "Server-chosen id"}, caller=None)
    assert raised.value.retryable  # the job may be retried; this call did not guess
    assert _statuses(dataverse_sim, dataverse_token, "POST") == [503]


async def test_unreachable_dataverse_is_unavailable(credential: FixedTokenCredential) -> None:
    closed = f"http://127.0.0.1:{free_port()}/api/data/v9.2"
    async with DataverseClient(
        closed, credential, application_writes=True, scope=SCOPE, max_attempts=2, max_retry_wait=0.2
    ) as crm:
        with pytest.raises(CrmUnavailable, match="connect"):
            await crm.get("contact", uuid.uuid4(), caller=None)


async def test_concurrency_is_capped_per_user(
    dataverse_sim: DataverseSimulator,
    credential: FixedTokenCredential,
    dataverse_token: str,
    make_user: UserFactory,
) -> None:
    """52 concurrent requests per user is a service protection limit; the adapter stays under its own cap."""
    user = make_user({"contact": {"read": "organization"}})
    dataverse_sim.set_limits(token=dataverse_token, concurrent=2)
    dataverse_sim.fault("latency", token=dataverse_token, latency_ms=150)
    try:
        async with DataverseClient(
            dataverse_sim.api_url, credential, scope=SCOPE, max_concurrency_per_user=2
        ) as crm:
            started = time.monotonic()
            await asyncio.gather(*(crm.whoami(caller=user.object_id) for _ in range(6)))
            elapsed = time.monotonic() - started
    finally:
        dataverse_sim.clear_faults()
        dataverse_sim.clear_limits()
    assert _statuses(dataverse_sim, dataverse_token, "GET") == [200] * 6
    assert elapsed >= 0.4  # three waves of two


async def test_token_is_cached_until_near_expiry(
    dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    """One token for <org url>/.default serves every call until five minutes before it expires."""
    long_lived = FixedTokenCredential(dataverse_token)
    async with DataverseClient(
        dataverse_sim.api_url, long_lived, application_writes=True, scope=SCOPE
    ) as crm:
        for _ in range(3):
            await crm.whoami(caller=None)
    assert long_lived.requested_scopes == [(SCOPE,)]
    short_lived = FixedTokenCredential(dataverse_token, lifetime_s=60)
    async with DataverseClient(
        dataverse_sim.api_url, short_lived, application_writes=True, scope=SCOPE
    ) as crm:
        for _ in range(3):
            await crm.whoami(caller=None)
    assert len(short_lived.requested_scopes) == 3
    assert all("Bearer" not in str(entry["headers"]) for entry in dataverse_sim.requests(dataverse_token))


async def test_retries_are_logged_without_urls_or_addresses(
    crm: DataverseClient,
    dataverse_sim: DataverseSimulator,
    dataverse_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dataverse_sim.fault("throttle", token=dataverse_token, count=1, retry_after=1)
    with caplog.at_level(logging.DEBUG):
        await crm.find_by_email("private.person@contoso.example", tables=("contact",), caller=None)
    assert "Dataverse call failed with 429 (code 0x80072322); retry 1 in 1.0 s" in caplog.messages
    assert "private.person" not in caplog.text
    assert dataverse_token not in caplog.text


async def test_client_from_settings(dataverse_sim: DataverseSimulator, dataverse_token: str) -> None:
    """The scope is <org url>/.default (Settings.dataverse_scope) and the base the configured Web API."""
    settings = load_settings(
        CRMSYNC_TENANT_ID="00000000-0000-0000-0000-000000000001",
        CRMSYNC_CLIENT_ID="00000000-0000-0000-0000-000000000002",
        CRMSYNC_CREDENTIAL_KIND="sandbox",
        CRMSYNC_GRAPH_URL="http://127.0.0.1:1/v1.0",
        CRMSYNC_DATAVERSE_URL=dataverse_sim.root_url,
        CRMSYNC_NOTIFICATION_URL="https://example.test/api/notifications",
        CRMSYNC_LIFECYCLE_URL="https://example.test/api/lifecycle",
        AzureWebJobsStorage="UseDevelopmentStorage=true",
    )
    credential = FixedTokenCredential(dataverse_token)
    async with DataverseClient.from_settings(settings, credential) as crm:
        assert (await crm.whoami(caller=None)).user_id == uuid.UUID(dataverse_sim.app_user_id)
    assert credential.requested_scopes == [(f"{dataverse_sim.root_url}/.default",)]


async def test_refused_token_is_replaced_once(
    dataverse_sim: DataverseSimulator, credential: FixedTokenCredential, dataverse_token: str
) -> None:
    """A 401 (a token revoked before its expiry) drops the cached token and retries once with a new one."""
    async with DataverseClient(
        dataverse_sim.api_url, credential, application_writes=True, scope=SCOPE
    ) as crm:
        await crm.whoami(caller=None)
        dataverse_sim.fault("status", token=dataverse_token, count=1, status=401, code="0x8005f101")
        assert (await crm.whoami(caller=None)).user_id == uuid.UUID(dataverse_sim.app_user_id)
        assert len(credential.requested_scopes) == 2

        dataverse_sim.fault("status", token=dataverse_token, count=2, status=401, code="0x8005f101")
        with pytest.raises(AuthenticationFailed) as raised:
            await crm.whoami(caller=None)
    assert len(credential.requested_scopes) == 3
    assert "application user" in raised.value.remedy
    assert _statuses(dataverse_sim, dataverse_token, "GET") == [200, 401, 200, 401, 401]
