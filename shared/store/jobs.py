"""The sync job queue: one message per (mailbox, resource) that needs a sync run.

The webhook enqueues a :class:`SyncJob` when ``mark_dirty`` reports a clean -> dirty change;
the queue-triggered worker parses it. Messages are Base64 text because that is what the
Functions queue trigger expects by default (learn.microsoft.com, "Azure Queue storage trigger
for Azure Functions", host.json ``messageEncoding``: base64), hence the SDK's
``TextBase64EncodePolicy`` / ``TextBase64DecodePolicy``.
"""

from __future__ import annotations

import contextlib
import enum
from typing import Annotated, Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.domain.model import UtcDatetime
from shared.store.azure.service import PIPELINE_OPTIONS
from shared.store.records import utc_now


class JobReason(enum.StrEnum):
    """Why a sync run was asked for (shown in logs and status; never changes what the run does)."""

    NOTIFICATION = "notification"
    SWEEP = "sweep"
    RESYNC = "resync"
    PARKED_RETRY = "parked_retry"
    MANUAL = "manual"


#: A W3C ``traceparent`` (version 00), the only trace context a queue message carries.
Traceparent = Annotated[str, StringConstraints(pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")]


class InvalidJob(ValueError):
    """A queue message that is not a SyncJob; the message names the problem, never the content."""


class SyncJob(BaseModel):
    """Sync (mailbox, resource) now; the run reads everything else from the store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mailbox_id: Annotated[str, StringConstraints(pattern=r"^[^@\s]{1,128}$")]
    resource: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    reason: JobReason
    enqueued_at: UtcDatetime = Field(default_factory=utc_now)
    # The W3C traceparent of the notification's span: the run continues its trace.
    traceparent: Traceparent | None = None

    def serialize(self) -> str:
        """The message text (JSON); the queue client Base64-encodes it."""
        return self.model_dump_json()

    @classmethod
    def parse(cls, text: str | bytes) -> SyncJob:
        """Parse a (decoded) message; :class:`InvalidJob` naming the bad fields otherwise."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'message'}: {error['msg']}"
                for error in exc.errors(include_input=False, include_url=False)
            )
            raise InvalidJob(f"not a sync job: {problems}") from None


class JobQueue:
    """Sends :class:`SyncJob` messages; receiving is the Functions queue trigger's job."""

    def __init__(self, client: QueueClient) -> None:
        self._client = client

    @property
    def client(self) -> QueueClient:
        """The underlying Base64-text queue client (for tests and the local runner)."""
        return self._client

    async def enqueue(self, job: SyncJob, *, delay_seconds: int = 0) -> None:
        """One round trip; ``delay_seconds`` hides the message that long (a back-off)."""
        await self._client.send_message(job.serialize(), visibility_timeout=delay_seconds or None)

    async def close(self) -> None:
        await self._client.close()


async def open_job_queue(
    *,
    queue_name: str,
    connection_string: str | None = None,
    account_url: str | None = None,
    credential: AsyncTokenCredential | None = None,
) -> JobQueue:
    """Connect (connection string locally; ``account_url`` + credential in Azure) and create the
    queue if missing."""
    policies: dict[str, Any] = {
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": TextBase64DecodePolicy(),
        **PIPELINE_OPTIONS,
    }
    if connection_string:
        client = QueueClient.from_connection_string(connection_string, queue_name, **policies)
    elif account_url and credential:
        client = QueueClient(account_url, queue_name, credential=credential, **policies)
    else:
        raise ValueError("open_job_queue needs a connection_string, or an account_url and a credential")
    try:
        with contextlib.suppress(ResourceExistsError):
            await client.create_queue()
    except BaseException:
        await client.close()
        raise
    return JobQueue(client)
