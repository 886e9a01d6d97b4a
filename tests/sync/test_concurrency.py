"""Bounded gather and the shared per-run lookup cache."""

from __future__ import annotations

import asyncio

import pytest

from shared.sync.concurrency import Memo, bounded_gather


async def test_bounded_gather_keeps_order_and_the_limit() -> None:
    running = peak = 0

    async def step(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (5 - n % 5))
        running -= 1
        return n

    assert await bounded_gather((step(n) for n in range(40)), limit=4) == list(range(40))
    assert peak == 4


async def test_concurrent_callers_share_one_load() -> None:
    memo: Memo[str, int] = Memo()
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.01)
        return 7

    assert await asyncio.gather(*(memo.get("a", load) for _ in range(10))) == [7] * 10
    assert loads == 1
    assert memo.peek("a") == 7


async def test_a_failed_load_is_forgotten_so_the_next_caller_retries() -> None:
    memo: Memo[str, int] = Memo()

    async def failing() -> int:
        raise ConnectionError("down")

    async def working() -> int:
        return 3

    with pytest.raises(ConnectionError):
        await memo.get("a", failing)
    assert memo.peek("a") is None
    assert await memo.get("a", working) == 3
    memo.put("b", 5)
    assert await memo.get("b", failing) == 5
