"""A worker's runs of one mailbox take turns in the worker before one asks storage for the lease."""

from __future__ import annotations

import asyncio

import pytest

from shared.store.errors import LeaseHeld
from shared.sync.lease import LeaseWaiters


async def test_runs_take_turns_first_come_first_served_and_know_whether_they_waited() -> None:
    waiters = LeaseWaiters()
    order: list[tuple[str, bool]] = []

    async def run(name: str) -> None:
        async with waiters.turn("mailbox", wait=5) as waited:
            order.append((name, waited))
            await asyncio.sleep(0.01)

    await asyncio.gather(run("first"), run("second"), run("third"))

    assert order == [("first", False), ("second", True), ("third", True)]


async def test_a_turn_not_come_within_the_wait_is_lease_held_and_counts_crm_runs_while_waiting() -> None:
    waiters = LeaseWaiters()
    holding = asyncio.Event()
    done = asyncio.Event()

    async def hold() -> None:
        async with waiters.turn("mailbox", wait=1):
            holding.set()
            await done.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    crm_run = asyncio.create_task(_turn(waiters, wait=0.2, to_outlook=True))
    await asyncio.sleep(0.05)
    assert waiters.waiting("mailbox")  # the holder stops taking more rounds
    with pytest.raises(LeaseHeld):
        await crm_run
    assert not waiters.waiting("mailbox")
    with pytest.raises(LeaseHeld):
        await _turn(waiters, wait=0.05)  # an Outlook -> CRM job: not counted
    done.set()
    await holder

    await _turn(waiters, wait=0.05)  # free again; nothing kept per mailbox once all are gone
    assert waiters._turns == {}


async def _turn(waiters: LeaseWaiters, *, wait: float, to_outlook: bool = False) -> None:
    async with waiters.turn("mailbox", wait=wait, to_outlook=to_outlook):
        pass
