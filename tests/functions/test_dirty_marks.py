"""The webhook's dirty marks on real Azurite, across function instances.

docs/ARCHITECTURE.md data flow step 1: the mark is durable before 202, a storage outage answers 5xx, and a
dirty resource gets at most one job. The store remembers which pairs this process left dirty to
pick its first write (one round trip in a burst); these tests show that a stale memory (a worker
on another instance cleared the flag) costs a round trip, never a job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import AsyncIterator

import pytest

from shared.runtime import Runtime
from shared.store.azure.service import open_store
from shared.store.ports import Store
from shared.sync.dispatch import STALE_DIRTY_AFTER, sweep
from shared.sync.intake import SharedMarks, SubscriptionCache, accept_change_notifications
from simulators.azurite import Azurite
from tests.fixtures.app import sandbox_settings, use_settings
from tests.functions.test_webhooks import handler, payload, post, queued_jobs, subscribe
from tests.store.helpers import HTTP_LOG, response_statuses

MAILBOX, RESOURCE = "mbx-dirty", "users/mbx-dirty/contacts"


@pytest.fixture
async def other_instance(app_runtime: Runtime) -> AsyncIterator[Store]:
    """The same tables opened by a second client, as another function instance opens them."""
    settings = app_runtime.settings
    assert settings.storage_connection_string
    store = await open_store(
        connection_string=settings.storage_connection_string, prefix=settings.table_prefix
    )
    yield store
    await store.close()


async def clear_as_worker(store: Store) -> None:
    """What the worker does before its delta query: read the state, clear the flag."""
    assert await store.sync_state.clear_dirty(await store.sync_state.get_state(MAILBOX, RESOURCE))


async def test_a_notification_for_a_dirty_resource_costs_one_round_trip(
    app_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    subscription_id, secret = await subscribe(app_runtime, MAILBOX, RESOURCE)
    await app_runtime.jobs()  # a running app has created its queue
    notify = handler("notifications")
    with caplog.at_level(logging.INFO, logger=HTTP_LOG):
        assert (await notify(post(payload(subscription_id, secret)))).status_code == 202
        # subscription read (then cached), dirty row inserted, job sent
        assert response_statuses(caplog) == ["200", "201", "201"]
        caplog.clear()
        assert (await notify(post(payload(subscription_id, secret)))).status_code == 202
        assert response_statuses(caplog) == ["204"]  # the dirty row touched, nothing else
    assert len(await queued_jobs(app_runtime)) == 1


@pytest.mark.parametrize("worker_on", ["this instance", "another instance"])
async def test_after_a_worker_cleared_the_flag_the_next_notification_enqueues_once(
    app_runtime: Runtime, other_instance: Store, worker_on: str
) -> None:
    subscription_id, secret = await subscribe(app_runtime, MAILBOX, RESOURCE)
    notify = handler("notifications")
    assert (await notify(post(payload(subscription_id, secret)))).status_code == 202
    await clear_as_worker(await app_runtime.store() if worker_on == "this instance" else other_instance)

    answers = [(await notify(post(payload(subscription_id, secret)))).status_code for _ in range(3)]

    assert answers == [202, 202, 202]
    assert len(await queued_jobs(app_runtime)) == 2
    assert (await other_instance.sync_state.get_state(MAILBOX, RESOURCE)).dirty


async def test_instances_racing_on_a_cleared_flag_enqueue_one_job(
    app_runtime: Runtime, other_instance: Store
) -> None:
    subscription_id, secret = await subscribe(app_runtime, MAILBOX, RESOURCE)
    assert (await handler("notifications")(post(payload(subscription_id, secret)))).status_code == 202
    await clear_as_worker(other_instance)  # this instance still remembers the flag as set
    this_instance, jobs = await app_runtime.store(), await app_runtime.jobs()

    results = await asyncio.gather(
        *(
            accept_change_notifications(
                payload(subscription_id, secret),
                store=store,
                jobs=jobs,
                tenant_id=app_runtime.settings.tenant_id,
                max_bytes=app_runtime.settings.max_notification_bytes,
                cache=SubscriptionCache(),
            )
            for store in (this_instance, other_instance) * 3
        )
    )

    assert sum(result.enqueued for result in results) == 1
    assert len(await queued_jobs(app_runtime)) == 2


async def test_a_cached_subscription_does_not_hide_a_storage_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """The subscription and the dirty flag are both remembered in memory, yet the mark must reach
    storage before 202: with storage gone the answer is 503, so Graph retries."""
    with Azurite() as storage:
        url = "http://127.0.0.1:9"
        runtime = await use_settings(
            monkeypatch,
            sandbox_settings(
                storage.connection_string, graph_url=url + "/v1.0", dataverse_url=url, functions_url=url
            ),
        )
        try:
            subscription_id, secret = await subscribe(runtime, MAILBOX, RESOURCE)
            notify = handler("notifications")
            assert (await notify(post(payload(subscription_id, secret)))).status_code == 202
            storage.stop()
            assert (await notify(post(payload(subscription_id, secret)))).status_code == 503
        finally:
            await runtime.close()


async def test_the_sweep_gives_a_resource_dirty_for_too_long_a_job_again(app_runtime: Runtime) -> None:
    """A dirty mark whose job was lost (poisoned before the flag was cleared, an un-mark that
    failed) must not block its resource for good: the sweep enqueues again once the mark is stale,
    and only then (a fresh mark's job is still on its way)."""
    store, jobs = await app_runtime.store(), await app_runtime.jobs()
    await store.registry.register(
        mailbox_id=MAILBOX, upn="dirty@contoso.example", crm_user_id="u-dirty", crm_caller_object_id="o-dirty"
    )
    await subscribe(app_runtime, MAILBOX, RESOURCE)
    assert await store.sync_state.mark_dirty(MAILBOX, RESOURCE)  # its job is lost: nothing queued
    now = dt.datetime.now(dt.UTC)

    assert await sweep(store, jobs, now=now) == 0
    assert await queued_jobs(app_runtime) == []
    assert await sweep(store, jobs, now=now + STALE_DIRTY_AFTER + dt.timedelta(seconds=1)) == 1
    [job] = await queued_jobs(app_runtime)
    assert (job["mailbox_id"], job["resource"], job["reason"]) == (MAILBOX, RESOURCE, "sweep")


async def test_concurrent_notifications_of_a_resource_share_their_storage_writes(
    app_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Graph posts a burst's notifications dozens at a time: each waits for a mark that started
    after it arrived, and those waiting together share one write instead of one write each."""
    subscription_id, secret = await subscribe(app_runtime, MAILBOX, RESOURCE)
    notify = handler("notifications")
    assert (await notify(post(payload(subscription_id, secret)))).status_code == 202  # cached, dirty
    with caplog.at_level(logging.INFO, logger=HTTP_LOG):
        answers = await asyncio.gather(*(notify(post(payload(subscription_id, secret))) for _ in range(40)))
        assert [answer.status_code for answer in answers] == [202] * 40
        assert 1 <= len(response_statuses(caplog)) <= 2  # touches of the dirty row; 40 without sharing
    assert len(await queued_jobs(app_runtime)) == 1


TARGET = (MAILBOX, RESOURCE)


async def test_a_mark_in_flight_answers_only_the_notifications_that_arrived_before_it_started() -> None:
    """A write already under way may land before a worker's clear and delta read that miss a later
    change: a notification arriving meanwhile waits for the next mark, which all such share."""
    marks, gate, started = SharedMarks(), asyncio.Event(), []

    async def mark(n: int) -> int:
        started.append(n)
        await gate.wait()
        return 1

    first = asyncio.ensure_future(marks.share(TARGET, lambda: mark(1)))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(marks.share(TARGET, functools.partial(mark, n))) for n in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert started == [1]
    gate.set()

    assert await asyncio.gather(first, *later) == [1, 1, 0, 0]  # the job counts for its mark's caller
    assert started == [1, 2]


async def test_a_failed_shared_mark_fails_every_call_waiting_for_it() -> None:
    marks, gate = SharedMarks(), asyncio.Event()

    async def failing() -> int:
        await gate.wait()
        raise ConnectionError("storage went away")

    calls = [asyncio.ensure_future(marks.share(TARGET, failing)) for _ in range(3)]
    await asyncio.sleep(0.01)
    gate.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [ConnectionError] * 3

    async def succeeding() -> int:
        return 1

    assert await marks.share(TARGET, succeeding) == 1  # the next mark starts afresh


async def test_a_caller_that_stops_waiting_leaves_the_shared_mark_to_the_others() -> None:
    marks, gate, done = SharedMarks(), asyncio.Event(), []

    async def mark() -> int:
        await gate.wait()
        done.append(True)
        return 1

    impatient = asyncio.ensure_future(marks.share(TARGET, mark))
    patient = asyncio.ensure_future(marks.share(TARGET, mark))
    await asyncio.sleep(0.01)
    impatient.cancel()  # the webhook's deadline
    gate.set()

    assert await patient == 0
    assert done == [True]
    assert impatient.cancelled()


async def test_the_last_caller_that_stops_waiting_cancels_the_mark_and_waits_for_its_clean_up() -> None:
    """Storage hangs: the webhook's deadline ends the only call, whose mark is taken back before it
    answers 503, and the next notification (Graph's retry) starts a mark of its own at once."""
    marks, cleaned = SharedMarks(), []

    async def hanging() -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # the un-mark's round trip
            cleaned.append(True)
            raise
        return 1

    call = asyncio.ensure_future(marks.share(TARGET, hanging))
    await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert cleaned == [True]

    async def answering() -> int:
        return 1

    assert await asyncio.wait_for(marks.share(TARGET, answering), timeout=1) == 1
