"""Store fixtures: every contract test runs once against Azurite and once against the in-memory fake."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from shared.store import Store, open_memory_store, open_store
from shared.store.jobs import JobQueue, open_job_queue
from tests.store.helpers import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC))


@pytest.fixture(params=["azurite", "memory"])
async def store(
    request: pytest.FixtureRequest, table_prefix: str, clock: ManualClock
) -> AsyncIterator[Store]:
    if request.param == "azurite":
        connection_string: str = request.getfixturevalue("storage_connection_string")
        opened = await open_store(connection_string=connection_string, prefix=table_prefix, clock=clock)
    else:
        opened = open_memory_store(clock=clock)
    yield opened
    await opened.close()


@pytest.fixture
async def job_queue(storage_connection_string: str, table_prefix: str) -> AsyncIterator[JobQueue]:
    queue = await open_job_queue(
        queue_name=f"jobs-{table_prefix}", connection_string=storage_connection_string
    )
    yield queue
    await queue.client.delete_queue()
    await queue.close()
