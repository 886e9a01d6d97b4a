"""Subscriptions and change-notification delivery over webhooks.

- learn.microsoft.com/graph/api/subscription-post-subscriptions and
  learn.microsoft.com/graph/change-notifications-delivery-webhooks: creating a subscription
  POSTs ``?validationToken=...`` to notificationUrl (and lifecycleNotificationUrl); the endpoint
  must answer 200 text/plain with the token within 10 seconds, else the subscription is refused
  with 400. Notifications are POSTed as ``{"value": [...]}``; an answer that is not 2xx or takes
  longer than 3 seconds is retried with exponential backoff (at-least-once, unordered).
- learn.microsoft.com/graph/api/resources/changenotificationcollection: ``value`` is "the set of
  notifications being sent to the notification URL", several in one POST. The simulator sends a
  subscription's notifications that are waiting for a free connection together (up to
  ``MAX_PER_POST``), and a lone one on its own.
- learn.microsoft.com/graph/api/resources/subscription, "Subscription lifetime": at most 10,080
  minutes for Outlook messages, events and contacts, 4,230 minutes for To Do tasks; expirationDateTime:
  "Any value under 45 minutes after the time of the request is automatically set to 45 minutes after
  the request time" (a time already past is still refused).
- learn.microsoft.com/graph/change-notifications-lifecycle-events: reauthorizationRequired,
  subscriptionRemoved and missed, POSTed to lifecycleNotificationUrl.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httpx

from simulators.graph.core import GraphError, Json, bad_request, etag, iso_z, parse_iso, url_token, utcnow
from simulators.graph.store import Item, Kind, Mailbox, Store

if TYPE_CHECKING:
    from simulators.graph.limits import Config, Faults

LOG = logging.getLogger("simulators.graph.notify")
APPLICATION_ID = "24f3b0aa-1f8d-4a40-9c3b-3c5b5f0b5e1a"
MAX_LIFETIME_MINUTES = {Kind.MESSAGE: 10080, Kind.EVENT: 10080, Kind.CONTACT: 10080, Kind.TASK: 4230}
CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
MIN_LIFETIME = dt.timedelta(minutes=45)
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
RESOURCE_NAMES = {Kind.MESSAGE: "Messages", Kind.EVENT: "Events", Kind.CONTACT: "Contacts"}


@dataclass
class Subscription:
    id: str
    resource: str
    change_types: frozenset[str]
    change_type_text: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: dt.datetime
    user_id: str
    kind: Kind
    container: str | None
    immutable_ids: bool

    def as_json(self) -> Json:
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": APPLICATION_ID,
            "changeType": self.change_type_text,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": self.expiration.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
            "creatorId": APPLICATION_ID,
            "includeResourceData": False,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


@dataclass
class Delivery:
    """One attempt log row, for tests to see retries (GET /_sim/deliveries)."""

    subscription_id: str
    user_id: str
    url_kind: str
    attempt: int
    outcome: str
    payload: Json = field(default_factory=dict)
    at: str = field(default_factory=lambda: iso_z(utcnow()))


RESOURCE_PATTERNS = [
    (re.compile(r"users/([^/]+)/messages", re.IGNORECASE), Kind.MESSAGE, "mail"),
    (re.compile(r"users/([^/]+)/mailFolders/(.+)/messages", re.IGNORECASE), Kind.MESSAGE, "mail"),
    (re.compile(r"users/([^/]+)/contacts", re.IGNORECASE), Kind.CONTACT, "contacts"),
    (re.compile(r"users/([^/]+)/contactFolders/(.+)/contacts", re.IGNORECASE), Kind.CONTACT, "contacts"),
    (re.compile(r"users/([^/]+)/events", re.IGNORECASE), Kind.EVENT, "calendar"),
    (re.compile(r"users/([^/]+)/todo/lists/(.+)/tasks", re.IGNORECASE), Kind.TASK, "todo"),
]


def parse_resource(store: Store, resource: str) -> tuple[Mailbox, Kind, str | None]:
    """Map a subscription resource to (mailbox, item kind, folder or list id).

    Supported: users/{id}/messages, users/{id}/mailFolders/{id | well-known name}/messages,
    users/{id}/contacts, users/{id}/contactFolders/{id}/contacts, users/{id}/events,
    users/{id}/todo/lists/{id}/tasks (learn.microsoft.com/graph/api/resources/subscription,
    "Supported resources"); ``mailFolders('inbox')`` key syntax and percent-encoded ids work too.
    App-only access means no /me.
    """
    path = resource.split("?", 1)[0].strip().strip("/")
    path = re.sub(r"\('([^']*)'\)", r"/\1", path)
    for pattern, kind, area in RESOURCE_PATTERNS:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        box = store.user(unquote(match.group(1)))
        if match.lastindex == 1:
            return box, kind, None
        key = unquote(match.group(2))
        if area == "mail":
            return box, kind, box.mail_folder(key).id
        if area == "contacts":
            return box, kind, box.contact_folder(key).id
        return box, kind, box.todo_list(key).id
    raise bad_request(f"Resource '{resource}' is not supported for subscriptions.", "InvalidRequest")


MAX_IN_FLIGHT = 32  # below httpx's default pool of 100 connections
MAX_PER_POST = 100  # notifications waiting together in one POST (Graph names no limit)


class Notifier:
    """Owns subscriptions, validates endpoints and delivers notifications in background tasks."""

    def __init__(self, store: Store, config: Config, faults: Faults) -> None:
        self.store = store
        self.config = config
        self.faults = faults
        self.subscriptions: dict[str, Subscription] = {}
        self.deliveries: list[Delivery] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.client: httpx.AsyncClient | None = None
        # POSTs in flight at once. A burst spawns a delivery per change; unbounded, they queued in
        # httpx's pool, whose bookkeeping scans every waiting request on each step (the simulator
        # spent 80 % of a core on it in bench.burst) and counted the wait against the timeout.
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        # Change notifications waiting for a connection, by subscription: the next POST takes them all.
        self.waiting: dict[str, list[Json]] = {}
        store.listeners.append(self.on_change)

    def http(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(trust_env=False)
        return self.client

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def reset(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.waiting.clear()
        self.subscriptions.clear()
        self.deliveries.clear()

    # -- subscription CRUD ------------------------------------------------------------------------

    def live(self, subscription_id: str) -> Subscription:
        """A subscription that has not expired; expired ones are gone, as in Graph."""
        self.purge_expired()
        found = self.subscriptions.get(subscription_id)
        if found is None:
            raise GraphError(404, "ResourceNotFound", f"The object was not found: {subscription_id}.")
        return found

    def purge_expired(self) -> None:
        now = utcnow()
        for sub_id in [s.id for s in self.subscriptions.values() if s.expiration <= now]:
            del self.subscriptions[sub_id]

    def _expiration(self, kind: Kind, raw: object) -> dt.datetime:
        if not isinstance(raw, str):
            raise bad_request("expirationDateTime is required.", "InvalidRequest")
        expiration = parse_iso(raw)
        now = utcnow()
        if expiration <= now:
            raise bad_request("Subscription expiration date must be in the future.", "InvalidRequest")
        limit = MAX_LIFETIME_MINUTES[kind]
        if expiration > now + dt.timedelta(minutes=limit):
            raise bad_request(
                f"Subscription expiration can only be {limit} minutes in the future.", "InvalidRequest"
            )
        return max(expiration, now + MIN_LIFETIME)

    async def create(self, body: Json, immutable_ids: bool) -> Subscription:
        resource = body.get("resource")
        url = body.get("notificationUrl")
        change_text = body.get("changeType")
        if not isinstance(resource, str) or not isinstance(url, str) or not isinstance(change_text, str):
            raise bad_request("resource, notificationUrl and changeType are required.", "InvalidRequest")
        change_types = frozenset(c.strip() for c in change_text.split(",") if c.strip())
        if not change_types or not change_types <= CHANGE_TYPES:
            raise bad_request(f"Invalid changeType '{change_text}'.", "InvalidRequest")
        client_state = body.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
            raise bad_request("clientState must be a string of at most 128 characters.", "InvalidRequest")
        if body.get("includeResourceData") is True:
            # resources/subscription: encryptionCertificate is "required when includeResourceData is
            # true"; with one, rich notifications are still not simulated: refused, never ignored.
            if not body.get("encryptionCertificate"):
                raise bad_request("encryptionCertificate is required when includeResourceData is true.")
            raise bad_request("This simulator does not send change notifications with resource data.")
        lifecycle = body.get("lifecycleNotificationUrl")
        box, kind, container = parse_resource(self.store, resource)
        expiration = self._expiration(kind, body.get("expirationDateTime"))
        self.purge_expired()
        for other in self.subscriptions.values():
            if (other.user_id, other.kind, other.container, other.notification_url, other.change_types) == (
                box.id, kind, container, url, change_types
            ):  # fmt: skip
                raise GraphError(
                    409, "Conflict", "A subscription for this resource and notification URL exists."
                )
        for endpoint in (url, lifecycle):
            if isinstance(endpoint, str):
                await self.validate(endpoint)
        subscription = Subscription(
            str(uuid.uuid4()), resource, change_types, change_text, url,
            lifecycle if isinstance(lifecycle, str) else None,
            client_state, expiration, box.id, kind, container, immutable_ids,
        )  # fmt: skip
        self.subscriptions[subscription.id] = subscription
        return subscription

    async def validate(self, url: str) -> None:
        """The validation handshake: 200, text/plain, body == token, within the timeout."""
        token = (
            f"Validation: Testing client application reachability for subscription Request-Id: {url_token()}"
        )
        failure = (
            "Subscription validation request failed. Notification endpoint must respond with 200 OK "
            "to validation request."
        )
        try:
            answer = await self.http().post(
                url,
                params={"validationToken": token},
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=self.config.validation_timeout_seconds,
            )
        except httpx.HTTPError as exc:
            raise bad_request(f"{failure} ({type(exc).__name__})", "ValidationError") from exc
        content_type = answer.headers.get("content-type", "")
        if answer.status_code != 200 or answer.text != token or not content_type.startswith("text/plain"):
            raise bad_request(failure, "ValidationError")

    def renew(self, subscription_id: str, body: Json) -> Subscription:
        """PATCH: expirationDateTime and/or notificationUrl change (subscription-update: "Renew a
        subscription by extending its expiry time, or update its notificationUrl"), either alone."""
        subscription = self.live(subscription_id)
        url = body.get("notificationUrl")
        if "expirationDateTime" not in body and not isinstance(url, str):
            raise bad_request("expirationDateTime or notificationUrl is required.", "InvalidRequest")
        if "expirationDateTime" in body:
            subscription.expiration = self._expiration(subscription.kind, body["expirationDateTime"])
        if isinstance(url, str):
            subscription.notification_url = url
        return subscription

    def delete(self, subscription_id: str) -> None:
        self.live(subscription_id)
        del self.subscriptions[subscription_id]

    # -- notifications ----------------------------------------------------------------------------

    def on_change(self, box: Mailbox, item: Item, change_type: str, container: str) -> None:
        self.purge_expired()
        for sub in list(self.subscriptions.values()):
            if sub.user_id != box.id or sub.kind is not item.kind or change_type not in sub.change_types:
                continue
            if sub.container is not None and sub.container != container:
                continue
            self.send(sub, [self.notification(sub, box, item, change_type)], lifecycle=False)

    def notification(self, sub: Subscription, box: Mailbox, item: Item, change_type: str) -> Json:
        """The documented payload: resource "Users/{id}/Messages/{id}" and resourceData."""
        item_id = item.visible_id(sub.immutable_ids)
        if item.kind is Kind.TASK:
            resource = f"Users/{box.id}/todo/lists/{item.container}/tasks/{item_id}"
            odata_type = "#Microsoft.Graph.todoTask"
        else:
            resource = f"Users/{box.id}/{RESOURCE_NAMES[item.kind]}/{item_id}"
            odata_type = f"#Microsoft.Graph.{RESOURCE_NAMES[item.kind][:-1]}"
        return {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": sub.as_json()["expirationDateTime"],
            "changeType": change_type,
            "resource": resource,
            "resourceData": {
                "@odata.type": odata_type,
                "@odata.id": resource,
                "@odata.etag": etag(item.change_key),
                "id": item_id,
            },
            "clientState": sub.client_state,
            "tenantId": self.config.tenant_id,
        }

    def lifecycle(self, subscription_id: str, event: str) -> Subscription:
        """Send a lifecycle notification; subscriptionRemoved also deletes the subscription."""
        if event not in LIFECYCLE_EVENTS:
            raise bad_request(f"Unknown lifecycle event '{event}'; use one of {sorted(LIFECYCLE_EVENTS)}.")
        sub = self.live(subscription_id)
        if event == "subscriptionRemoved":
            del self.subscriptions[sub.id]
        self.send_lifecycle(sub, event)
        return sub

    def send_lifecycle(self, sub: Subscription, event: str) -> None:
        """The lifecycle payload: subscriptionId, expiration, tenantId, clientState, lifecycleEvent."""
        if sub.lifecycle_url is None:
            return
        payload = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": sub.as_json()["expirationDateTime"],
            "tenantId": self.config.tenant_id,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }
        self.send(sub, [payload], lifecycle=True)

    def send(self, sub: Subscription, values: list[Json], *, lifecycle: bool) -> None:
        """Apply notification faults (drop, duplicate, reorder), then deliver in the background."""
        user = sub.user_id
        if not lifecycle and self.faults.take(("drop_notifications",), user) is not None:
            self.deliveries.append(
                Delivery(sub.id, user, "notification", 0, "dropped (fault)", {"value": values})
            )
            return
        reorder = None if lifecycle else self.faults.take(("reorder_notifications",), user)
        batches: list[tuple[Subscription, list[Json]]] = [(sub, values)]
        if reorder is not None:
            reorder.held.append((sub, values))
            if reorder.remaining:  # still collecting
                return
            # Release what was held newest first, one POST per subscription: Graph may batch several
            # notifications in one value array, in no promised order.
            merged: dict[str, tuple[Subscription, list[Json]]] = {}
            for held_sub, held_values in reversed(reorder.held):
                merged.setdefault(held_sub.id, (held_sub, []))[1].extend(held_values)
            batches = list(merged.values())
        copies = (
            2 if not lifecycle and self.faults.take(("duplicate_notifications",), user) is not None else 1
        )
        if not lifecycle and reorder is None and copies == 1:  # faults aside: sent with those waiting
            self.waiting.setdefault(sub.id, []).extend(values)
            self.spawn(self.deliver(sub, None, lifecycle=False))
            return
        for target, batch in batches:
            for _ in range(copies):
                self.spawn(self.deliver(target, {"value": batch}, lifecycle=lifecycle))

    def spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def deliver(self, sub: Subscription, payload: Json | None, *, lifecycle: bool) -> None:
        """POST until a 2xx arrives in time, backing off exponentially between attempts. When Graph
        gives up on change notifications it says so with a ``missed`` lifecycle notification
        (change-notifications-lifecycle-events, "Missed notifications"). ``None``: the subscription's
        notifications waiting when a connection is free (none left: an earlier POST took them)."""
        url = sub.lifecycle_url if lifecycle else sub.notification_url
        if url is None:
            return
        url_kind = "lifecycle" if lifecycle else "notification"
        delay = self.config.retry_initial_seconds
        for attempt in range(1, self.config.retry_max_attempts + 1):
            try:
                async with self.in_flight:
                    if payload is None:
                        payload = self.take_waiting(sub.id)
                        if payload is None:
                            return
                    answer = await self.http().post(
                        url, json=payload, timeout=self.config.notification_timeout_seconds
                    )
                outcome = str(answer.status_code)
                delivered = 200 <= answer.status_code < 300
            except httpx.TimeoutException:
                outcome, delivered = "timeout", False
            except httpx.HTTPError as exc:
                outcome, delivered = type(exc).__name__, False
            self.deliveries.append(Delivery(sub.id, sub.user_id, url_kind, attempt, outcome, payload or {}))
            if delivered:
                return
            if attempt < self.config.retry_max_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_seconds)
        LOG.warning("gave up delivering to subscription %s", sub.id)
        if not lifecycle:
            self.send_lifecycle(sub, "missed")

    def take_waiting(self, subscription_id: str) -> Json | None:
        """Up to ``MAX_PER_POST`` of the subscription's waiting notifications, oldest first."""
        waiting = self.waiting.get(subscription_id)
        if not waiting:
            return None
        taken, self.waiting[subscription_id] = waiting[:MAX_PER_POST], waiting[MAX_PER_POST:]
        if not self.waiting[subscription_id]:
            del self.waiting[subscription_id]
        return {"value": taken}

    def delivery_log(self, user: str | None) -> list[Json]:
        return [
            {
                "subscriptionId": d.subscription_id,
                "user": d.user_id,
                "kind": d.url_kind,
                "attempt": d.attempt,
                "outcome": d.outcome,
                "payload": d.payload,
                "at": d.at,
            }
            for d in self.deliveries
            if user is None or d.user_id == user
        ]
