"""CRM -> Outlook work queue messages: routing work and per-mailbox runs.

One queue (``<job queue>-crm``), three shapes of :class:`CrmWork`:

- source ``changes_due``: the Dataverse webhook reported changes of a table; the worker reads the
  table's change tracking and routes what it lists (one message per burst of changes, not per
  change: :mod:`shared.sync.crm_intake`);
- ``mailbox_id`` unset: *routing* work - records of one table changed or were deleted in the CRM
  (from the change-tracking timer); the worker finds the mailboxes they concern and enqueues one
  run per mailbox;
- ``mailbox_id`` set: a *run* - sync these records of this table into this mailbox's Outlook.

Messages hold ids only (never content); Base64 text like the sync job queue.
"""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.domain.model import UtcDatetime
from shared.store.jobs import InvalidJob, JobQueue, Traceparent
from shared.store.records import utc_now

MAX_IDS = 200  # a message stays far below the queue's 64 KB
CrmTable = Literal["contact", "appointment", "task"]


def crm_queue_name(job_queue: str) -> str:
    """The CRM -> Outlook queue, named after the job queue (shorter than its -lifecycle sibling)."""
    return f"{job_queue}-crm"


class CrmWorkSource(enum.StrEnum):
    CHANGES_DUE = "changes_due"
    WEBHOOK = "webhook"
    CHANGE_TRACKING = "change_tracking"
    RECONCILIATION = "reconciliation"
    FILL = "fill"
    ROUTED = "routed"


class CrmWork(BaseModel):
    """Records of one table that changed (``changed``) or were deleted (``deleted``) in the CRM."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    table: CrmTable
    changed: tuple[uuid.UUID, ...] = Field(default=(), max_length=MAX_IDS)
    deleted: tuple[uuid.UUID, ...] = Field(default=(), max_length=MAX_IDS)
    owner: uuid.UUID | None = None  # a routing hint the webhook read (the owner's mailbox)
    mailbox_id: Annotated[str, StringConstraints(pattern=r"^[^@\s]{1,128}$")] | None = None
    source: CrmWorkSource
    enqueued_at: UtcDatetime = Field(default_factory=utc_now)
    # The W3C traceparent of the Dataverse webhook call's span: routing and the run continue its trace.
    traceparent: Traceparent | None = None

    def serialize(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def parse(cls, text: str | bytes) -> CrmWork:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) or "message" for e in exc.errors()})
            raise InvalidJob(f"not CRM work: bad {', '.join(fields)}") from None


class CrmWorkQueue:
    """Sends :class:`CrmWork` messages on the CRM -> Outlook queue."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue = queue

    async def enqueue(self, work: CrmWork, *, delay_seconds: int = 0) -> None:
        await self._queue.client.send_message(work.serialize(), visibility_timeout=delay_seconds or None)

    async def close(self) -> None:
        await self._queue.close()
