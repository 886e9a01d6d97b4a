"""The admin surface shared by the ``crmsync`` CLI and the admin HTTP API: requests and reports.

Both render the same typed reports (shared.sync.onboarding / status); this module turns them into
JSON and validates what an administrator sends, with errors that name the field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.domain.mailbox_settings import MailboxSettings
from shared.store.jobs import JobQueue, JobReason
from shared.store.ports import Store
from shared.sync.intake import request_resync


class OnboardRequest(BaseModel):
    """``POST /api/admin/mailboxes``: which mailbox, which CRM user, optional settings."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    mailbox: Annotated[str, StringConstraints(min_length=1, max_length=320, strip_whitespace=True)]
    crm_user: uuid.UUID = Field(alias="crmUser")
    settings: MailboxSettings | None = None


def to_jsonable(value: Any) -> Any:
    """Reports (dataclasses, enums, datetimes, UUIDs) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


async def enqueue_mailbox_resync(store: Store, jobs: JobQueue, mailbox_id: str) -> int:
    """Recovery: forget every delta link of the mailbox and enqueue a full resync of each resource.

    The full resync compares against the link map, so unchanged linked items are not rewritten
    and nothing is duplicated; it repairs whatever a lost notification or a bad run left behind.
    """
    await store.registry.get_mailbox(mailbox_id)  # MailboxNotFound for an unknown mailbox
    resources = [r.resource async for r in store.subscriptions.list_for_mailbox(mailbox_id)]
    for resource in resources:
        await store.sync_state.reset(mailbox_id, resource)
    return await request_resync(
        [(mailbox_id, resource) for resource in resources], store=store, jobs=jobs, reason=JobReason.RESYNC
    )
