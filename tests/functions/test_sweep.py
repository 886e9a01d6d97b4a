"""The sweep timer and the admin resync on real Azurite: a dirty resource whose job is gone gets one.

A job can be lost while its resource stays dirty (poisoned before the run cleared the flag, a webhook
whose un-mark failed, a run that lost every race to clear the flag, a job that found its mailbox
disabled). Marking dirty enqueues only for the call that creates the mark, so the sweep and the
admin resync must enqueue for such a mark themselves, without flooding the queue.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import pytest

from shared.admin_api import enqueue_mailbox_resync
from shared.config import get_settings
from shared.runtime import Runtime
from shared.store.jobs import JobQueue
from shared.store.ports import Store
from shared.sync.dispatch import STALE_AFTER, sweep
from tests.functions.test_webhooks import queued_jobs, subscribe


async def _lost_job(runtime: Runtime) -> tuple[Store, JobQueue, str, str]:
    """A registered mailbox whose contacts are dirty and whose job is gone."""
    store, jobs = await runtime.store(), await runtime.jobs()
    mailbox = str(uuid.uuid4())
    resource = f"users/{mailbox}/contacts"
    await store.registry.register(
        mailbox_id=mailbox,
        upn="u@sim.crmsync.test",
        crm_user_id=str(uuid.uuid4()),
        crm_caller_object_id=mailbox,
    )
    await subscribe(runtime, mailbox, resource)
    assert await store.sync_state.mark_dirty(mailbox, resource)  # its job was poisoned, say
    return store, jobs, mailbox, resource


async def test_the_sweep_enqueues_a_stale_dirty_resource_again_without_flooding(app_runtime: Runtime) -> None:
    store, jobs, mailbox, resource = await _lost_job(app_runtime)
    start = dt.datetime.now(dt.UTC)

    assert await sweep(store, jobs, now=start) == 0  # freshly dirty: its job may still be queued
    assert await queued_jobs(app_runtime) == []

    later = start + STALE_AFTER + dt.timedelta(minutes=1)
    assert await sweep(store, jobs, now=later) == 1
    assert [(j["mailbox_id"], j["resource"], j["reason"]) for j in await queued_jobs(app_runtime)] == [
        (mailbox, resource, "sweep")
    ]
    # The next sweeps wait before asking again (the job may still be in a long queue) ...
    assert await sweep(store, jobs, now=later + dt.timedelta(minutes=5)) == 0
    # ... but a mark that stays dirty gets a job again later.
    assert await sweep(store, jobs, now=later + 2 * STALE_AFTER) == 1
    assert len(await queued_jobs(app_runtime)) == 2


async def test_the_sweep_leaves_the_stale_mark_of_a_disabled_mailbox_alone(app_runtime: Runtime) -> None:
    store, jobs, mailbox, _ = await _lost_job(app_runtime)
    await store.registry.set_enabled(mailbox, False)

    assert await sweep(store, jobs, now=dt.datetime.now(dt.UTC) + 2 * STALE_AFTER) == 0
    await store.registry.set_enabled(mailbox, True)  # re-enabled: the mark that waited gets its job
    assert await sweep(store, jobs, now=dt.datetime.now(dt.UTC) + 2 * STALE_AFTER) == 1


async def test_the_admin_resync_enqueues_for_an_already_dirty_resource(app_runtime: Runtime) -> None:
    store, jobs, mailbox, resource = await _lost_job(app_runtime)

    assert await enqueue_mailbox_resync(store, jobs, mailbox) == 1

    assert [(j["resource"], j["reason"]) for j in await queued_jobs(app_runtime)] == [(resource, "resync")]
    assert (await store.sync_state.get_state(mailbox, resource)).dirty


async def test_the_sweep_lists_the_subscriptions_once_whatever_the_number_of_mailboxes(
    app_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscriptions table is keyed by subscription id: a listing per mailbox scans all of it each
    time, so 10,000 mailboxes cost 10,000 scans per sweep. One listing serves every mailbox."""
    store, jobs = await app_runtime.store(), await app_runtime.jobs()
    for _ in range(3):
        await _lost_job(app_runtime)
    table = f"/{get_settings().table_prefix}subscriptions()"
    sent: list[str] = []

    class Requests(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Request URL:") and table in record.getMessage():
                sent.append(record.getMessage())

    http_log = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")  # the SDK's request log
    monkeypatch.setattr(http_log, "disabled", False)
    level, handler = http_log.level, Requests()
    http_log.setLevel(logging.INFO)
    http_log.addHandler(handler)
    try:
        await sweep(store, jobs)
    finally:
        http_log.removeHandler(handler)
        http_log.setLevel(level)

    assert len(sent) == 1
