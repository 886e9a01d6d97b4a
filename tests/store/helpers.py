"""Small helpers for the store tests."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable
from typing import TypeVar

import pytest

T = TypeVar("T")


class ManualClock:
    """A clock the test moves by hand, so lease expiry needs no sleeping."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


async def race(*attempts: Awaitable[T]) -> tuple[list[T], list[BaseException]]:
    """Run ``attempts`` concurrently; return the winners' results and the losers' exceptions."""
    outcomes = await asyncio.gather(*attempts, return_exceptions=True)
    won = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    lost = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    return won, lost


#: azure-core's HTTP logging policy: one "Response status: N" record per storage round trip.
HTTP_LOG = "azure.core.pipeline.policies.http_logging_policy"


def response_statuses(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The status of every storage response the SDK logged since the last ``caplog.clear()``
    (one per round trip), sorted."""
    return sorted(
        record.getMessage().split()[2]
        for record in caplog.records
        if record.name == HTTP_LOG and record.getMessage().startswith("Response status:")
    )
