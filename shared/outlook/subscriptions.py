"""Graph change-notification subscriptions: create, renew, reauthorize, delete, recreate.

Maximum lifetimes come from the ``subscription`` resource type (learn.microsoft.com/graph/api/
resources/subscription, "Subscription lifetime"): Outlook message, event and personal contact
10080 minutes (under 7 days), To Do task 4230 minutes (under 3 days). Every subscription carries a
``lifecycleNotificationUrl`` ("Reduce missing subscriptions and change notifications",
learn.microsoft.com/graph/change-notifications-lifecycle-events) so ``reauthorizationRequired``,
``subscriptionRemoved`` and ``missed`` reach crmsync; a lifecycle URL cannot be added later, only
by recreating the subscription.

``clientState`` is a fresh ``secrets.token_urlsafe(32)`` per subscription, returned once to the
caller, which stores only a hash of it and compares in constant time.
"""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from msgraph.generated.models.subscription import Subscription
from msgraph.graph_service_client import GraphServiceClient

from shared.outlook.errors import gone_is_done, graph_errors

# Expire a little before Graph's maximum, so clock skew never makes a request exceed it.
_SAFETY_MARGIN = dt.timedelta(minutes=5)
DEFAULT_CHANGE_TYPES = ("created", "updated", "deleted")


class ResourceKind(enum.StrEnum):
    """The four Outlook resources crmsync subscribes to, one subscription each per mailbox."""

    MESSAGES = "messages"
    CONTACTS = "contacts"
    EVENTS = "events"
    TASKS = "tasks"


MAX_LIFETIME: dict[ResourceKind, dt.timedelta] = {
    ResourceKind.MESSAGES: dt.timedelta(minutes=10080),
    ResourceKind.CONTACTS: dt.timedelta(minutes=10080),
    ResourceKind.EVENTS: dt.timedelta(minutes=10080),
    ResourceKind.TASKS: dt.timedelta(minutes=4230),
}


def resource_path(
    kind: ResourceKind, mailbox: str, *, mail_folder: str = "inbox", task_list_id: str | None = None
) -> str:
    """The subscription ``resource`` string for a mailbox, e.g. ``users/{id}/contacts``."""
    if kind is ResourceKind.MESSAGES:
        return f"users/{mailbox}/mailFolders('{mail_folder}')/messages"
    if kind is ResourceKind.TASKS:
        if not task_list_id:
            raise ValueError("a To Do subscription needs task_list_id")
        return f"users/{mailbox}/todo/lists/{task_list_id}/tasks"
    return f"users/{mailbox}/{kind.value}"


@dataclass(frozen=True)
class CreatedSubscription:
    """A new subscription. ``client_state`` is the secret to hash and store; it is not kept here."""

    id: str
    resource: str
    expires: dt.datetime
    client_state: str


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SubscriptionManager:
    """Manages one app's subscriptions; notification URLs come from settings."""

    def __init__(
        self,
        client: GraphServiceClient,
        *,
        notification_url: str,
        lifecycle_url: str,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._client = client
        self._notification_url = notification_url
        self._lifecycle_url = lifecycle_url
        self._clock = clock

    def expiry(self, kind: ResourceKind, requested: dt.datetime | None = None) -> dt.datetime:
        """``requested`` capped at the resource's maximum lifetime (the maximum if ``None``)."""
        latest = self._clock() + MAX_LIFETIME[kind] - _SAFETY_MARGIN
        if requested is None:
            return latest
        if requested.tzinfo is None:
            raise ValueError("expiration must be timezone-aware")
        return min(requested.astimezone(dt.UTC), latest)

    async def create(
        self,
        mailbox: str,
        kind: ResourceKind,
        change_types: Sequence[str] = DEFAULT_CHANGE_TYPES,
        expiration: dt.datetime | None = None,
        *,
        task_list_id: str | None = None,
        mail_folder: str = "inbox",
    ) -> CreatedSubscription:
        """Subscribe to ``kind`` in ``mailbox``; Graph first validates both URLs (validationToken).

        Message subscriptions are per mail folder (``mail_folder``: a well-known name or an id)."""
        client_state = secrets.token_urlsafe(32)
        resource = resource_path(kind, mailbox, task_list_id=task_list_id, mail_folder=mail_folder)
        body = Subscription(
            change_type=",".join(change_types),
            notification_url=self._notification_url,
            lifecycle_notification_url=self._lifecycle_url,
            resource=resource,
            expiration_date_time=self.expiry(kind, expiration),
            client_state=client_state,
        )
        with graph_errors():
            created = await self._client.subscriptions.post(body)
        if created is None or not created.id or created.expiration_date_time is None:
            raise ValueError("Graph created a subscription without id or expiry")
        return CreatedSubscription(created.id, resource, created.expiration_date_time, client_state)

    async def renew(
        self, subscription_id: str, kind: ResourceKind, expiration: dt.datetime | None = None
    ) -> dt.datetime:
        """Extend a subscription; returns the expiry Graph accepted."""
        body = Subscription(expiration_date_time=self.expiry(kind, expiration))
        with graph_errors():
            renewed = await self._client.subscriptions.by_subscription_id(subscription_id).patch(body)
        if renewed is None or renewed.expiration_date_time is None:
            raise ValueError("Graph renewed a subscription without an expiry")
        return renewed.expiration_date_time

    async def reauthorize(self, subscription_id: str) -> None:
        """Answer a ``reauthorizationRequired`` lifecycle notification."""
        with graph_errors():
            await self._client.subscriptions.by_subscription_id(subscription_id).reauthorize.post()

    async def delete(self, subscription_id: str) -> None:
        """Delete a subscription; one that is already gone (404) counts as deleted."""
        with gone_is_done():
            await self._client.subscriptions.by_subscription_id(subscription_id).delete()

    async def recreate(
        self,
        subscription_id: str,
        mailbox: str,
        kind: ResourceKind,
        change_types: Sequence[str] = DEFAULT_CHANGE_TYPES,
        *,
        task_list_id: str | None = None,
    ) -> CreatedSubscription:
        """Replace a removed or broken subscription (e.g. after ``subscriptionRemoved``)."""
        await self.delete(subscription_id)
        return await self.create(mailbox, kind, change_types, task_list_id=task_list_id)
