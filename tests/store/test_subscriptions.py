"""Subscription contract: lookups by id for the webhook, scans for the renewal timer."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from shared.store import Store
from shared.store.errors import SubscriptionNotFound
from shared.store.records import SubscriptionRecord, hash_client_state, verify_client_state

EXPIRY = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
SECRET = "b64-client-state+/="


def _subscription(subscription_id: str, mailbox_id: str = "mbx-a", hours: int = 0) -> SubscriptionRecord:
    return SubscriptionRecord(
        subscription_id=subscription_id,
        mailbox_id=mailbox_id,
        resource=f"users/{mailbox_id}/contacts",
        client_state_hash=hash_client_state(SECRET),
        expiration=EXPIRY + dt.timedelta(hours=hours),
    )


async def _ids(records: AsyncIterator[SubscriptionRecord]) -> set[str]:
    return {record.subscription_id async for record in records}


class TestSubscriptionsContract:
    async def test_put_get_replace_delete(self, store: Store) -> None:
        record = _subscription("7f1e/sub+1=")
        await store.subscriptions.put(record)
        assert await store.subscriptions.get("7f1e/sub+1=") == record

        renewed = dataclasses.replace(record, expiration=EXPIRY + dt.timedelta(days=2), lifecycle=False)
        await store.subscriptions.put(renewed)
        assert await store.subscriptions.get("7f1e/sub+1=") == renewed

        await store.subscriptions.delete("7f1e/sub+1=")
        await store.subscriptions.delete("7f1e/sub+1=")  # already gone: fine
        with pytest.raises(SubscriptionNotFound):
            await store.subscriptions.get("7f1e/sub+1=")

    async def test_list_for_mailbox_expiring_and_all(self, store: Store) -> None:
        await store.subscriptions.put(_subscription("s1", "mbx-a", hours=1))
        await store.subscriptions.put(_subscription("s2", "mbx-a", hours=30))
        await store.subscriptions.put(_subscription("s3", "mbx-b", hours=2))

        assert await _ids(store.subscriptions.list_for_mailbox("mbx-a")) == {"s1", "s2"}
        assert await _ids(store.subscriptions.list_for_mailbox("mbx-c")) == set()
        before = EXPIRY + dt.timedelta(hours=3)
        assert await _ids(store.subscriptions.list_expiring(before)) == {"s1", "s3"}
        assert await _ids(store.subscriptions.list_all()) == {"s1", "s2", "s3"}


def test_client_state_is_kept_hashed_and_compared_exactly() -> None:
    record = _subscription("s1")
    assert SECRET not in repr(record)
    assert verify_client_state(record, SECRET)
    assert not verify_client_state(record, SECRET + "x")
    assert not verify_client_state(record, "")
    assert not verify_client_state(record, None)
