"""The job queue against Azurite's queue service, read back the way the Functions trigger reads it."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from azure.storage.queue.aio import QueueClient

from shared.store.jobs import InvalidJob, JobQueue, JobReason, SyncJob, open_job_queue

JOB = SyncJob(
    mailbox_id="5f0b1c1e-0000-4000-8000-00000000000a",
    resource="users/5f0b1c1e-0000-4000-8000-00000000000a/messages",
    reason=JobReason.NOTIFICATION,
    enqueued_at=dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC),
)


async def test_enqueued_jobs_arrive_base64_encoded(
    job_queue: JobQueue, storage_connection_string: str
) -> None:
    await job_queue.enqueue(JOB)
    await job_queue.enqueue(JOB.model_copy(update={"reason": JobReason.SWEEP}))

    # Read raw, without a decode policy, as the Functions queue trigger does (it decodes Base64 itself).
    async with QueueClient.from_connection_string(
        storage_connection_string, job_queue.client.queue_name
    ) as raw:
        messages = [message async for message in raw.receive_messages(max_messages=10)]
    bodies = [SyncJob.parse(base64.b64decode(message.content)) for message in messages]
    assert sorted(job.reason for job in bodies) == [JobReason.NOTIFICATION, JobReason.SWEEP]
    assert bodies[0].mailbox_id == JOB.mailbox_id


async def test_a_delayed_job_stays_hidden(job_queue: JobQueue) -> None:
    await job_queue.enqueue(JOB, delay_seconds=60)
    assert [message async for message in job_queue.client.receive_messages()] == []
    properties = await job_queue.client.get_queue_properties()
    assert properties.approximate_message_count == 1


async def test_opening_an_existing_queue_is_fine(job_queue: JobQueue, storage_connection_string: str) -> None:
    again = await open_job_queue(
        queue_name=job_queue.client.queue_name, connection_string=storage_connection_string
    )
    await again.enqueue(JOB)
    received = [message async for message in job_queue.client.receive_messages()]
    await again.close()
    assert [SyncJob.parse(message.content) for message in received] == [JOB]


def test_serialize_parse_round_trip() -> None:
    assert SyncJob.parse(JOB.serialize()) == JOB
    assert SyncJob.parse(JOB.serialize().encode()) == JOB


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"mailbox_id": "m", "resource": "r"}',
        '{"mailbox_id": "a@b.example", "resource": "r", "reason": "sweep"}',
    ],
)
def test_bad_messages_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(InvalidJob) as refused:
        SyncJob.parse(text)
    assert "a@b.example" not in str(refused.value)
