"""The Dataverse webhook's logic: check the key, read the few fields routing needs, queue work.

"Use WebHooks to create external handlers for server events" (learn.microsoft.com/power-apps/
developer/data-platform/use-webhooks): Dataverse POSTs the RemoteExecutionContext JSON of an
asynchronous step; with authentication WebhookKey the key arrives as the query parameter ``code``
("Register a WebHook"). A response outside 2xx fails the system job, so the answer must be quick;
the heavy work happens in the queue worker.

Only ``MessageName``, ``PrimaryEntityName``, ``PrimaryEntityId`` and the owner (a Create's Target
``ownerid`` attribute, or an Assign's ``Assignee``) are read - never column values. Anything else
about the record is read later, as the application (routing) and as the user (the run).
"""

from __future__ import annotations

import hmac
import json
import uuid
from typing import Any

from opentelemetry.trace import SpanKind

from shared import telemetry
from shared.store.crm_jobs import CrmWork, CrmWorkQueue, CrmWorkSource

MAX_BODY_BYTES = 256 * 1024  # Dataverse trims a larger context before it sends it
MESSAGES = frozenset({"Create", "Update", "Delete", "Assign", "SetState", "SetStateDynamicEntity"})
TABLES = frozenset({"contact", "appointment", "task"})


class WebhookRejected(ValueError):
    """Bad or forged input: ``status`` is the 4xx to answer; the message names no content."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def key_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of the ``code`` query parameter with the configured key."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _guid(value: Any, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise WebhookRejected(f"{what} is not a Guid") from None


def _owner(context: dict[str, Any]) -> uuid.UUID | None:
    parameters = context.get("InputParameters")
    if not isinstance(parameters, list):
        return None
    for parameter in parameters:
        if not isinstance(parameter, dict):
            continue
        value = parameter.get("value")
        if parameter.get("key") == "Assignee" and isinstance(value, dict) and value.get("Id"):
            return _guid(value["Id"], "Assignee")
        if parameter.get("key") == "Target" and isinstance(value, dict):
            for attribute in value.get("Attributes") or []:
                ref = attribute.get("value") if isinstance(attribute, dict) else None
                if attribute.get("key") == "ownerid" and isinstance(ref, dict) and ref.get("Id"):
                    return _guid(ref["Id"], "ownerid")
    return None


def parse_context(body: bytes) -> CrmWork:
    """Routing work from a RemoteExecutionContext; :class:`WebhookRejected` for anything else."""
    if len(body) > MAX_BODY_BYTES:
        raise WebhookRejected("body too large", 413)
    try:
        context = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("body is not JSON") from None
    if not isinstance(context, dict):
        raise WebhookRejected("body is not a RemoteExecutionContext")
    message, table = context.get("MessageName"), context.get("PrimaryEntityName")
    if message not in MESSAGES:
        raise WebhookRejected("MessageName is not a message crmsync registers")
    if table not in TABLES:
        raise WebhookRejected("PrimaryEntityName is not a table crmsync synchronizes")
    record_id = _guid(context.get("PrimaryEntityId"), "PrimaryEntityId")
    owner = _owner(context) if message != "Delete" else None
    ids: dict[str, Any] = {"deleted": [record_id]} if message == "Delete" else {"changed": [record_id]}
    return CrmWork.model_validate({"table": table, **ids, "owner": owner, "source": CrmWorkSource.WEBHOOK})


async def accept_webhook(
    body: bytes, *, code: str | None, expected_key: str | None, queue: CrmWorkQueue
) -> CrmWork:
    """Check the key (403), parse (4xx), queue routing work; the work queued."""
    if not key_matches(code, expected_key):
        raise WebhookRejected("missing or wrong webhook key", 403)
    work = parse_context(body)
    with telemetry.span("crm_notification", kind=SpanKind.SERVER, table=work.table):
        work = work.model_copy(update={"traceparent": telemetry.traceparent()})
        await queue.enqueue(work)
    return work
