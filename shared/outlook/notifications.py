"""Parsing of Graph change and lifecycle notification payloads (msgraph-sdk has no model for them).

Shapes follow "Receive change notifications through webhooks" (learn.microsoft.com/graph/
change-notifications-delivery-webhooks), the ``changeNotification`` resource type
(learn.microsoft.com/graph/api/resources/changenotification) and "Reduce missing subscriptions and
change notifications" (learn.microsoft.com/graph/change-notifications-lifecycle-events):
a ``{"value": [...]}`` collection; ``changeType`` and ``lifecycleEvent`` are mutually exclusive;
``clientState`` is at most 255 characters. Subscription validation sends ``?validationToken=``,
which must be echoed as text/plain within 10 seconds.

Everything here is pure and allocation-light: the webhook calls it on Graph's clock.
Bad input raises :class:`NotificationRejected` with a reason and changes nothing; the reason never
echoes the payload (it may hold client states).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

MAX_VALIDATION_TOKEN_CHARS = 4096
MAX_NOTIFICATIONS_PER_PAYLOAD = 1000

_Text = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class NotificationRejected(ValueError):
    """The payload is not a notification collection crmsync accepts; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChangeType(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


class LifecycleEvent(enum.StrEnum):
    REAUTHORIZATION_REQUIRED = "reauthorizationRequired"
    SUBSCRIPTION_REMOVED = "subscriptionRemoved"
    MISSED = "missed"


class _GraphShaped(BaseModel):
    # Graph adds properties over time (@odata.type, encryptedContent, ...): ignore the unknown ones.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class ResourceData(_GraphShaped):
    """The changed item's identity as Graph sends it for Outlook resources (no content)."""

    id: _Text | None = None
    odata_type: str | None = Field(default=None, alias="@odata.type")
    odata_id: str | None = Field(default=None, alias="@odata.id")
    odata_etag: str | None = Field(default=None, alias="@odata.etag")


class _Notification(_GraphShaped):
    subscription_id: _Text = Field(alias="subscriptionId")
    subscription_expiration: dt.datetime = Field(alias="subscriptionExpirationDateTime")
    client_state: Annotated[str, StringConstraints(max_length=255)] | None = Field(
        default=None, alias="clientState"
    )
    tenant_id: _Text = Field(alias="tenantId")
    id: str | None = None


class ChangeNotification(_Notification):
    """One "something changed" notification: look with a delta query, it carries no content."""

    resource: _Text
    change_type: ChangeType = Field(alias="changeType")
    resource_data: ResourceData | None = Field(default=None, alias="resourceData")


class LifecycleNotification(_Notification):
    """A lifecycle notification: reauthorize, recreate the subscription, or resync after ``missed``.

    The documented lifecycle payload carries no ``resource``; the subscription id identifies it.
    """

    lifecycle_event: LifecycleEvent = Field(alias="lifecycleEvent")


_N = TypeVar("_N", ChangeNotification, LifecycleNotification)


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")
    value: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_NOTIFICATIONS_PER_PAYLOAD)


_ENVELOPE = TypeAdapter(_Envelope)
_CHANGE_ITEMS = TypeAdapter(list[ChangeNotification])
_LIFECYCLE_ITEMS = TypeAdapter(list[LifecycleNotification])


def _describe(error: ValidationError) -> str:
    """Name the failing fields without echoing their values (they may hold client states)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "payload"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def _parse(body: bytes, *, max_bytes: int, items: TypeAdapter[list[_N]], discriminator: str) -> list[_N]:
    if len(body) > max_bytes:
        raise NotificationRejected(f"payload of {len(body)} bytes exceeds the {max_bytes}-byte limit")
    try:
        envelope = _ENVELOPE.validate_json(body)
    except ValidationError as exc:
        if any(item["type"] == "json_invalid" for item in exc.errors()):
            raise NotificationRejected("payload is not valid JSON") from None
        raise NotificationRejected(f"not a notification collection: {_describe(exc)}") from None
    for index, raw in enumerate(envelope.value):
        if discriminator not in raw:
            raise NotificationRejected(f"value.{index}: {discriminator} is missing")
    try:
        return items.validate_python(envelope.value)
    except ValidationError as exc:
        raise NotificationRejected(f"invalid notification: {_describe(exc)}") from None


def parse_notifications(body: bytes, *, max_bytes: int) -> list[ChangeNotification]:
    """Parse a change-notification POST body; every item must be a ``changeType`` notification."""
    return _parse(body, max_bytes=max_bytes, items=_CHANGE_ITEMS, discriminator="changeType")


def parse_lifecycle_notifications(body: bytes, *, max_bytes: int) -> list[LifecycleNotification]:
    """Parse a lifecycle-notification POST body; every item must carry a ``lifecycleEvent``."""
    return _parse(body, max_bytes=max_bytes, items=_LIFECYCLE_ITEMS, discriminator="lifecycleEvent")


def validation_token(query: Mapping[str, str]) -> str | None:
    """The ``validationToken`` of a subscription-validation request, or ``None`` for a notification.

    The caller echoes it verbatim as ``text/plain``; an absurdly long token is rejected rather than
    reflected.
    """
    token = query.get("validationToken")
    if token is None:
        return None
    if not token or len(token) > MAX_VALIDATION_TOKEN_CHARS:
        raise NotificationRejected("validationToken is empty or too long")
    return token
