"""Long admin operations over HTTP (onboarding, releasing the mass-delete brake): enqueued, run by a
queue-triggered function, polled by id.

The front end of a function app answers 230 s at most, whatever the function's timeout (learn.
microsoft.com, "Azure Functions HTTP trigger", section "Limits"), and a big mailbox's initial sync
takes longer. So ``POST /api/admin/mailboxes`` writes an operation record (``queued``), puts an
:class:`AdminJob` on the admin queue (``<CRMSYNC_JOB_QUEUE>-admin``) and answers 202 with the
operation's URL; the admin worker runs the onboarding and records ``running``, then ``succeeded``
(the mailbox id and the baseline's counts) or ``failed`` (the refusal, which says what to do).
A failure retrying may fix (an outage) re-raises, so the queue retries the job. Releasing the brake
(``POST /api/admin/mailboxes/{mailbox}/release-brake``) is a full resync of the mailbox: it takes the
same path, its operation ``succeeded`` with the items synced once the confirmed deletes are applied.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import uuid
from typing import Annotated, Any, Literal

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables.aio import TableClient
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.admin_api import OnboardRequest
from shared.config import Settings
from shared.domain.mailbox_settings import MailboxSettings
from shared.store.azure.common import as_utc
from shared.store.azure.service import PIPELINE_OPTIONS, table_service
from shared.store.factory import storage_account_url
from shared.store.records import utc_now
from shared.sync.brake import BrakeNotHeld, BrakeReleaseRefused
from shared.sync.maintenance import Maintenance
from shared.sync.onboarding import Onboarding, OnboardingRefused

_PARTITION = "op"


class OperationNotFound(KeyError):
    """No admin operation has this id."""


class OperationStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


OperationKind = Literal["onboard", "release_brake"]


class Operation(BaseModel):
    """What ``GET /api/admin/operations/{id}`` answers; no body, address or secret in it."""

    operation_id: str
    kind: OperationKind
    status: OperationStatus
    actor: str
    mailbox_id: str | None = None
    message: str | None = None  # the refusal (what to do), or the last transient failure's type
    items_synced: int | None = None
    parked: int | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class AdminJob(BaseModel):
    """One admin queue message: onboard ``mailbox`` as ``crm_user``, or release the brake of ``mailbox``
    (its id) confirming ``confirm_deletes``, for ``actor``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    kind: OperationKind = "onboard"
    mailbox: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    crm_user: uuid.UUID | None = None
    confirm_deletes: Annotated[int, Field(ge=0)] | None = None
    take_over: bool = False
    settings: MailboxSettings | None = None
    actor: str
    enqueued_at: dt.datetime = Field(default_factory=utc_now)


def admin_queue_name(settings: Settings) -> str:
    """The job queue's name + ``-admin`` (the trigger binds ``%CRMSYNC_JOB_QUEUE%-admin``)."""
    return f"{settings.job_queue}-admin"


class AdminOperations:
    """The operations table (``<prefix>adminops``) and the admin queue."""

    def __init__(
        self, table: TableClient, queue: QueueClient, *, service: Any = None, clock: Any = utc_now
    ) -> None:
        self._service = service
        self._table = table
        self._queue = queue
        self._clock = clock

    @property
    def queue(self) -> QueueClient:
        return self._queue

    async def submit_onboarding(self, request: OnboardRequest, *, actor: str) -> Operation:
        """Record a queued onboarding and enqueue it; the worker runs it."""
        return await self._submit(
            "onboard",
            actor,
            mailbox=request.mailbox,
            crm_user=request.crm_user,
            settings=request.settings,
            take_over=request.take_over,
        )

    async def submit_brake_release(self, mailbox_id: str, confirm_deletes: int, *, actor: str) -> Operation:
        """Record a queued brake release (the number was checked by the caller) and enqueue it."""
        return await self._submit("release_brake", actor, mailbox=mailbox_id, confirm_deletes=confirm_deletes)

    async def _submit(self, kind: OperationKind, actor: str, **job: Any) -> Operation:
        now = self._clock()
        operation = Operation(
            operation_id=uuid.uuid4().hex,
            kind=kind,
            status=OperationStatus.QUEUED,
            actor=actor,
            mailbox_id=job["mailbox"] if kind == "release_brake" else None,
            created_at=now,
            updated_at=now,
        )
        await self._put(operation, create=True)
        message = AdminJob(operation_id=operation.operation_id, kind=kind, actor=actor, **job)
        await self._queue.send_message(message.model_dump_json())
        return operation

    async def get(self, operation_id: str) -> Operation:
        try:
            entity = await self._table.get_entity(_PARTITION, operation_id)
        except ResourceNotFoundError:
            raise OperationNotFound(operation_id) from None
        fields = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
        fields["created_at"] = as_utc(fields["created_at"])
        fields["updated_at"] = as_utc(fields["updated_at"])
        return Operation.model_validate(fields)

    async def _put(self, operation: Operation, *, create: bool = False) -> None:
        entity = {
            "PartitionKey": _PARTITION,
            "RowKey": operation.operation_id,
            **operation.model_dump(mode="json", exclude_none=True, exclude={"created_at", "updated_at"}),
            "created_at": operation.created_at,
            "updated_at": operation.updated_at,
        }
        if create:
            await self._table.create_entity(entity)
        else:
            await self._table.upsert_entity(entity)

    async def _update(self, operation: Operation, **changes: Any) -> Operation:
        updated = operation.model_copy(update={**changes, "updated_at": self._clock()})
        await self._put(updated)
        return updated

    async def run(
        self,
        body: str | bytes,
        onboarding: Onboarding,
        maintenance: Maintenance,
        *,
        last_attempt: bool = False,
    ) -> Operation:
        """Run one admin job (the queue trigger calls this). ``ValueError`` for a message that is
        not an admin job (retrying cannot fix it); transient failures propagate, so the queue retries.
        On the ``last_attempt`` before the host poisons the message, the operation is marked failed
        (onboarding rolled the registration back, so adding the mailbox again is safe)."""
        job = AdminJob.model_validate_json(body)
        operation = await self.get(job.operation_id)
        if operation.status in (OperationStatus.SUCCEEDED, OperationStatus.FAILED):
            return operation  # a redelivered message: done already
        started_before = operation.status is OperationStatus.RUNNING
        operation = await self._update(operation, status=OperationStatus.RUNNING)
        try:
            if job.kind == "release_brake":
                return await self._release_brake(job, operation, maintenance, started_before=started_before)
            report = await onboarding.onboard(
                job.mailbox,
                str(job.crm_user),
                settings=job.settings,
                actor=job.actor,
                take_over=job.take_over,
            )
        except OnboardingRefused as refused:
            return await self._update(operation, status=OperationStatus.FAILED, message=str(refused))
        except Exception as exc:
            if last_attempt:
                again = "add the mailbox again" if job.kind == "onboard" else "release the brake again"
                message = f"gave up after {type(exc).__name__}; {again} once the cause is fixed"
                await self._update(operation, status=OperationStatus.FAILED, message=message)
            else:
                await self._update(operation, message=f"retrying after {type(exc).__name__}")
            raise
        return await self._update(
            operation,
            status=OperationStatus.SUCCEEDED,
            mailbox_id=report.mailbox_id,
            message=None,
            items_synced=report.items_synced,
            parked=report.parked,
        )

    async def _release_brake(
        self, job: AdminJob, operation: Operation, maintenance: Maintenance, *, started_before: bool
    ) -> Operation:
        """The confirmed release's full resync. A refusal (the brake tripped again with another number,
        or was released meanwhile) fails the operation with what to do; a brake no longer held on a
        redelivered job means an earlier attempt released it."""
        try:
            reports = await maintenance.release_brake(job.mailbox, confirm_deletes=job.confirm_deletes or 0)
        except BrakeNotHeld as refused:
            if started_before:
                return await self._update(operation, status=OperationStatus.SUCCEEDED, message=None)
            return await self._update(operation, status=OperationStatus.FAILED, message=str(refused))
        except BrakeReleaseRefused as refused:
            return await self._update(operation, status=OperationStatus.FAILED, message=str(refused))
        return await self._update(
            operation,
            status=OperationStatus.SUCCEEDED,
            message=None,
            items_synced=sum(r.items_synced for r in reports),
            parked=sum(r.parked for r in reports),
        )

    async def close(self) -> None:
        await self._table.close()
        if self._service is not None:
            await self._service.close()
        await self._queue.close()


async def open_admin_operations(
    settings: Settings, *, credential: AsyncTokenCredential | None = None
) -> AdminOperations:
    """The operations table and the admin queue (both created if missing)."""
    queue_options: dict[str, Any] = {
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": TextBase64DecodePolicy(),
        **PIPELINE_OPTIONS,
    }
    name = admin_queue_name(settings)
    if settings.storage_connection_string:
        service = table_service(connection_string=settings.storage_connection_string)
        queue = QueueClient.from_connection_string(settings.storage_connection_string, name, **queue_options)
    else:
        service = table_service(account_url=storage_account_url(settings, "table"), credential=credential)
        queue = QueueClient(
            storage_account_url(settings, "queue"), name, credential=credential, **queue_options
        )
    try:
        table = await service.create_table_if_not_exists(settings.table_prefix + "adminops")
        with contextlib.suppress(ResourceExistsError):
            await queue.create_queue()
    except BaseException:
        await service.close()
        await queue.close()
        raise
    return AdminOperations(table, queue, service=service)
