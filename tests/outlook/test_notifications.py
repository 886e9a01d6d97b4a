"""Notification payload parsing: Graph's documented shapes in, typed models or a clear rejection out."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest

from shared.outlook.notifications import (
    ChangeType,
    LifecycleEvent,
    NotificationRejected,
    parse_lifecycle_notifications,
    parse_notifications,
    validation_token,
)

LIMIT = 1_000_000
SECRET_STATE = "s3cr3t-client-state-value"


def change(**overrides: Any) -> dict[str, Any]:
    """One change notification shaped like the example in Graph's webhook delivery docs."""
    notification: dict[str, Any] = {
        "subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
        "subscriptionExpirationDateTime": "2026-11-25T18:23:45.9356913Z",
        "changeType": "created",
        "resource": "Users/7c1b1c3b-0000-4000-8000-000000000001/Messages/AAMkAGUAAAwTW09AAA=",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": "Users/7c1b1c3b-0000-4000-8000-000000000001/Messages/AAMkAGUAAAwTW09AAA=",
            "@odata.etag": 'W/"CQAAABYAAACQ2fKdhq8oSKEDSVrdi3lRAAAAAFnm"',
            "id": "AAMkAGUAAAwTW09AAA=",
        },
        "clientState": SECRET_STATE,
        "tenantId": "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f",
    }
    notification.update(overrides)
    return notification


def payload(*items: dict[str, Any]) -> bytes:
    return json.dumps({"value": list(items)}).encode()


def test_change_notifications_parse_into_typed_models() -> None:
    parsed = parse_notifications(payload(change(), change(changeType="deleted")), max_bytes=LIMIT)

    assert [item.change_type for item in parsed] == [ChangeType.CREATED, ChangeType.DELETED]
    first = parsed[0]
    assert first.subscription_id == "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
    assert first.client_state == SECRET_STATE
    assert first.resource_data is not None
    assert first.resource_data.id == "AAMkAGUAAAwTW09AAA="
    assert first.subscription_expiration == dt.datetime(2026, 11, 25, 18, 23, 45, 935691, tzinfo=dt.UTC)


def test_unknown_properties_from_newer_graph_versions_are_ignored() -> None:
    parsed = parse_notifications(payload(change(encryptedContent={"data": "x"}, newField=1)), max_bytes=LIMIT)
    assert parsed[0].change_type is ChangeType.CREATED


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "not a notification collection"),
        (b'{"value": []}', "not a notification collection"),
        (payload({k: v for k, v in change().items() if k != "changeType"}), "changeType is missing"),
        (payload(change(changeType="renamed")), "changeType"),
        (payload(change(clientState="x" * 256)), "clientState"),
        (payload(change(subscriptionExpirationDateTime="tomorrow")), "subscriptionExpirationDateTime"),
        (payload({k: v for k, v in change().items() if k != "tenantId"}), "tenantId"),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(NotificationRejected, match=reason) as caught:
        parse_notifications(body, max_bytes=LIMIT)
    assert SECRET_STATE not in caught.value.reason


def test_oversized_payload_is_rejected_before_parsing() -> None:
    body = payload(*[change() for _ in range(10)])
    with pytest.raises(NotificationRejected, match="exceeds the 100-byte limit"):
        parse_notifications(body, max_bytes=100)


def test_lifecycle_notifications_parse_and_are_not_accepted_as_changes() -> None:
    lifecycle = {k: v for k, v in change().items() if k not in ("changeType", "resourceData")}
    body = payload(
        lifecycle | {"lifecycleEvent": "reauthorizationRequired"}, lifecycle | {"lifecycleEvent": "missed"}
    )

    parsed = parse_lifecycle_notifications(body, max_bytes=LIMIT)

    assert [item.lifecycle_event for item in parsed] == [
        LifecycleEvent.REAUTHORIZATION_REQUIRED,
        LifecycleEvent.MISSED,
    ]
    with pytest.raises(NotificationRejected, match="changeType is missing"):
        parse_notifications(body, max_bytes=LIMIT)
    with pytest.raises(NotificationRejected, match="lifecycleEvent is missing"):
        parse_lifecycle_notifications(payload(change()), max_bytes=LIMIT)


def test_validation_token_is_detected_and_bounded() -> None:
    assert validation_token({"validationToken": "Validation: Testing client application reachability"}) == (
        "Validation: Testing client application reachability"
    )
    assert validation_token({"other": "1"}) is None
    with pytest.raises(NotificationRejected):
        validation_token({"validationToken": "x" * 5000})
    with pytest.raises(NotificationRejected):
        validation_token({"validationToken": ""})


def test_ten_notifications_parse_well_under_a_millisecond() -> None:
    body = payload(*[change(resource=f"Users/u/Messages/{index}") for index in range(10)])
    parse_notifications(body, max_bytes=LIMIT)  # warm up
    best = min(_timed(body) for _ in range(200))
    assert best < 0.001, f"fastest of 200 parses took {best * 1000:.3f} ms"


def _timed(body: bytes) -> float:
    started = time.perf_counter()
    parse_notifications(body, max_bytes=LIMIT)
    return time.perf_counter() - started
