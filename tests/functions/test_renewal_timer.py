"""The renewal timer: a subscription whose renewal fails is logged as an error the alert keys on
('renewal failed'), with the mailbox fingerprinted, and the others are still tried."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import pytest
from azure.functions.timer import TimerRequest

from shared.runtime import Runtime
from shared.store.fingerprint import short_fingerprint
from shared.store.records import SubscriptionRecord, hash_client_state
from tests.fixtures.app import registered_function


async def test_failed_renewals_log_an_error_line_per_subscription_and_in_sum(
    app_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Graph is unreachable in this runtime (its URL points at a closed port): every renewal fails."""
    store = await app_runtime.store()
    mailboxes = [str(uuid.uuid4()) for _ in range(2)]
    for mailbox in mailboxes:
        await store.subscriptions.put(
            SubscriptionRecord(
                subscription_id=str(uuid.uuid4()),
                mailbox_id=mailbox,
                resource=f"users/{mailbox}/contacts",
                client_state_hash=hash_client_state("secret"),
                expiration=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            )
        )
    timer = TimerRequest()

    with caplog.at_level(logging.ERROR):
        await registered_function("renew_subscriptions")(timer)

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    per_subscription = [m for m in errors if "renewal failed for mailbox" in m]
    assert len(per_subscription) == 2
    assert {short_fingerprint(m) for m in mailboxes} == {
        m.split("renewal failed for mailbox ", 1)[1].split(":", 1)[0] for m in per_subscription
    }
    assert any("renewal failed for 2 subscription(s)" in m for m in errors)
    assert not any(mailbox in m for m in errors for mailbox in mailboxes)  # ids are fingerprinted
