"""Parsing of Graph change and lifecycle notification payloads (msgraph-sdk has no model for them).

Shapes follow "Receive change notifications through webhooks" (learn.microsoft.com/graph/
change-notifications-delivery-webhooks), the ``changeNotification`` resource type
(learn.microsoft.com/graph/api/resources/changenotification) and "Reduce missing subscriptions and
change notifications" (learn.microsoft.com/graph/change-notifications-lifecycle-events):
a ``{"value": [...]}`` collection; ``changeType`` and ``lifecycleEvent`` are mutually exclusive;
``clientState`` is at most 255 characters. Subscription validation sends ``?validationToken=``,
which must be echoed as text/plain within 10 seconds.

``subscriptionId`` and ``tenantId`` are documented as Guid: a payload with anything else there
(an id over the Table key limit, a non-ASCII tenant) is not from Graph and is rejected (400) before
any storage key is built from it.

Everything here is pure and allocation-light: the webhook calls it on Graph's clock.
Bad input raises :class:`NotificationRejected` with a reason and changes nothing; the reason never
echoes the payload (it may hold client states). A body over the size cap raises
:class:`PayloadTooLarge` (413), checked on the declared ``Content-Length`` before the body is read.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

MAX_VALIDATION_TOKEN_CHARS = 1024
MAX_NOTIFICATIONS_PER_PAYLOAD = 1000

_Text = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
# Graph's Guid text form (changeNotification: subscriptionId and tenantId are Guid).
_Guid = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
    ),
]
# What a validation token may hold: printable ASCII (Graph's tokens are text such as "Validation:
# Testing client application reachability for subscription Request-Id: <guid>").
_TOKEN = re.compile(r"[\x20-\x7e]+")


class NotificationRejected(ValueError):
    """The payload is not a notification collection crmsync accepts; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PayloadTooLarge(NotificationRejected):
    """The body (declared or read) is over the configured cap: 413, the body is not parsed."""


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
    subscription_id: _Guid = Field(alias="subscriptionId")
    subscription_expiration: dt.datetime = Field(alias="subscriptionExpirationDateTime")
    client_state: Annotated[str, StringConstraints(max_length=255)] | None = Field(
        default=None, alias="clientState"
    )
    tenant_id: _Guid = Field(alias="tenantId")
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


def _describe(error: ValidationError, *, within: tuple[str, ...] = ()) -> str:
    """Name the failing fields without echoing their values (they may hold client states)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(part) for part in (*within, *item["loc"])) or "payload"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def _parse(body: bytes, *, max_bytes: int, items: TypeAdapter[list[_N]], discriminator: str) -> list[_N]:
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"payload of {len(body)} bytes exceeds the {max_bytes}-byte limit")
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
        raise NotificationRejected(f"invalid notification: {_describe(exc, within=('value',))}") from None


def parse_notifications(body: bytes, *, max_bytes: int) -> list[ChangeNotification]:
    """Parse a change-notification POST body; every item must be a ``changeType`` notification."""
    return _parse(body, max_bytes=max_bytes, items=_CHANGE_ITEMS, discriminator="changeType")


def parse_lifecycle_notifications(body: bytes, *, max_bytes: int) -> list[LifecycleNotification]:
    """Parse a lifecycle-notification POST body; every item must carry a ``lifecycleEvent``."""
    return _parse(body, max_bytes=max_bytes, items=_LIFECYCLE_ITEMS, discriminator="lifecycleEvent")


def check_declared_length(content_length: str | None, *, max_bytes: int) -> None:
    """Refuse a body by its ``Content-Length`` header before anything reads it.

    :class:`PayloadTooLarge` over ``max_bytes``; :class:`NotificationRejected` for a header that is
    not a decimal number (RFC 9110 section 8.6). No header (chunked) passes: the read body is
    measured again by the parser.
    """
    if content_length is None:
        return
    text = content_length.strip()
    if not text.isascii() or not text.isdigit():
        raise NotificationRejected("Content-Length is not a number")
    if int(text) > max_bytes:
        raise PayloadTooLarge(f"payload of {int(text)} bytes exceeds the {max_bytes}-byte limit")


def validation_token(query: Mapping[str, str]) -> str | None:
    """The ``validationToken`` of a subscription-validation request, or ``None`` for a notification.

    Graph sends the token URL-encoded in the query (the host decodes it) and expects it back
    verbatim as ``text/plain`` with 200 within 10 seconds ("Receive change notifications through
    webhooks", notification endpoint validation). Since the echo reflects attacker-chosen text,
    only a sane token is echoed: 1 to :data:`MAX_VALIDATION_TOKEN_CHARS` printable ASCII characters
    (no control characters, no line breaks); anything else is rejected without being reflected.
    The caller also sends ``X-Content-Type-Options: nosniff`` so no browser renders it as HTML.
    """
    token = query.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_VALIDATION_TOKEN_CHARS or not _TOKEN.fullmatch(token):
        raise NotificationRejected("validationToken is empty, too long or not printable ASCII")
    return token
