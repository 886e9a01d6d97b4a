"""The Dataverse webhook's logic: check the key, read the few fields routing needs, queue work.

"Use WebHooks to create external handlers for server events" (learn.microsoft.com/power-apps/
developer/data-platform/use-webhooks): Dataverse POSTs the RemoteExecutionContext JSON of an
asynchronous step; with authentication WebhookKey the key arrives as the query parameter ``code``
("Register a WebHook"). A response outside 2xx fails the system job, so the answer must be quick;
the heavy work happens in the queue worker.

A call says "this table changed": it marks the table's change read due and only the call that set
the mark queues a ``changes_due`` message; the worker reads the table's change tracking and routes
every change it lists (:meth:`shared.sync.crm_changes.ChangeFeed.read_due`). A burst of changes is
one queued message, not one per change.

Only ``MessageName``, ``PrimaryEntityName``, ``PrimaryEntityId`` and the owner (a Create's Target
``ownerid`` attribute, or an Assign's ``Assignee``) are read - never column values. Anything else
about the record is read later, as the application (routing) and as the user (the run).
"""

from __future__ import annotations

import hmac
import uuid
from typing import Any, TypeVar

from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared import telemetry
from shared.outlook.notifications import NotificationRejected, PayloadTooLarge, check_declared_length
from shared.store.crm_jobs import CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.ports import Store
from shared.sync.crm_changes import CHANGES_PARTITION, changes_resource
from shared.sync.intake import mark_then_enqueue

MAX_BODY_BYTES = 256 * 1024  # Dataverse trims a larger context before it sends it
MESSAGES = frozenset({"Create", "Update", "Delete", "Assign", "SetState", "SetStateDynamicEntity"})
TABLES = frozenset({"contact", "appointment", "task"})
_T = TypeVar("_T")


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


class _Shaped(BaseModel):
    # Dataverse's contexts carry many more members (Depth, OrganizationId, images...): ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _EntityReference(_Shaped):
    id: uuid.UUID = Field(alias="Id")


class _KeyValue(_Shaped):
    key: str
    value: Any = None


class _Entity(_Shaped):
    attributes: list[_KeyValue] = Field(default_factory=list, alias="Attributes")


class _Context(_Shaped):
    message: str = Field(alias="MessageName")
    table: str = Field(alias="PrimaryEntityName")
    record_id: uuid.UUID = Field(alias="PrimaryEntityId")
    parameters: list[_KeyValue] = Field(default_factory=list, alias="InputParameters")


_CONTEXT = TypeAdapter(_Context)
_REFERENCE = TypeAdapter(_EntityReference)
_ENTITY = TypeAdapter(_Entity)


def _validated(adapter: TypeAdapter[_T], value: Any, where: str) -> _T:
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        raise WebhookRejected(_describe(error, where)) from None


def _describe(error: ValidationError, where: str) -> str:
    """The failing fields, never their values (a context carries column values)."""
    fields = [".".join(str(part) for part in item["loc"]) for item in error.errors(include_input=False)[:3]]
    return f"{where}: {', '.join(f or 'body' for f in fields)} not as Dataverse sends it"


def _owner(context: _Context) -> uuid.UUID | None:
    """The new owner: an Assign's ``Assignee``, or the ``ownerid`` a Create or Update sets."""
    for parameter in context.parameters:
        if parameter.key == "Assignee":
            return _validated(_REFERENCE, parameter.value, "Assignee").id
        if parameter.key == "Target" and context.message in {"Create", "Update"}:
            target = _validated(_ENTITY, parameter.value, "Target")
            for attribute in target.attributes:
                if attribute.key == "ownerid":
                    return _validated(_REFERENCE, attribute.value, "ownerid").id
    return None


def parse_context(body: bytes) -> CrmWork:
    """Routing work from a RemoteExecutionContext; :class:`WebhookRejected` for anything else."""
    if len(body) > MAX_BODY_BYTES:
        raise WebhookRejected("body too large", 413)
    try:
        context = _CONTEXT.validate_json(body.removeprefix(b"\xef\xbb\xbf"))  # a BOM, as json.loads allows
    except ValidationError as error:
        if any(item["type"] == "json_invalid" for item in error.errors()):
            raise WebhookRejected("body is not JSON") from None
        raise WebhookRejected(_describe(error, "RemoteExecutionContext")) from None
    if context.message not in MESSAGES:
        raise WebhookRejected("MessageName is not a message crmsync registers")
    if context.table not in TABLES:
        raise WebhookRejected("PrimaryEntityName is not a table crmsync synchronizes")
    owner = _owner(context) if context.message != "Delete" else None
    ids = (
        {"deleted": [context.record_id]} if context.message == "Delete" else {"changed": [context.record_id]}
    )
    return CrmWork.model_validate(
        {"table": context.table, **ids, "owner": owner, "source": CrmWorkSource.WEBHOOK}
    )


async def accept_webhook(
    body: bytes,
    *,
    code: str | None,
    expected_key: str | None,
    store: Store,
    queue: CrmWorkQueue,
    declared_length: str | None = None,
) -> CrmWork:
    """Check the key (403), the declared length (413, before the body is read), parse (4xx), mark
    the table's change read due (queueing ``changes_due`` work if the mark is new); the parsed call."""
    if not key_matches(code, expected_key):
        raise WebhookRejected("missing or wrong webhook key", 403)
    try:
        check_declared_length(declared_length, max_bytes=MAX_BODY_BYTES)
    except PayloadTooLarge:
        raise WebhookRejected("body too large", 413) from None
    except NotificationRejected as error:
        raise WebhookRejected(error.reason) from None
    work = parse_context(body)
    with telemetry.span("crm_notification", kind=SpanKind.SERVER, table=work.table):
        due = CrmWork(table=work.table, source=CrmWorkSource.CHANGES_DUE, traceparent=telemetry.traceparent())
        await mark_then_enqueue(
            store, CHANGES_PARTITION, changes_resource(work.table), lambda: queue.enqueue(due)
        )
    return work
