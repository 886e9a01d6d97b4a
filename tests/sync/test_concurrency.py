"""Bounded gather, the shared per-run lookup cache and reading delta pages ahead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.sync.concurrency import Memo, bounded_gather, read_ahead


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


class _Pages:
    """Three pages, each taking 20 ms to read; the third read fails when ``fail`` is set."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.started: list[int] = []
        self.closed = False

    async def pages(self) -> AsyncIterator[int]:
        try:
            for n in range(3):
                self.started.append(n)
                await asyncio.sleep(0.02)
                if self.fail and n == 2:
                    raise LookupError("delta token expired")
                yield n
        finally:
            self.closed = True


async def test_the_next_page_is_read_while_the_caller_works_on_this_one() -> None:
    source = _Pages()
    reads_when_working: list[list[int]] = []
    async for _page in read_ahead(source.pages()):
        await asyncio.sleep(0)
        reads_when_working.append(list(source.started))
        await asyncio.sleep(0.03)  # applying the page
    assert reads_when_working == [[0, 1], [0, 1, 2], [0, 1, 2]]
    assert source.closed


async def test_without_read_ahead_a_page_is_read_only_when_asked_for() -> None:
    source = _Pages()
    reads_when_working = [list(source.started) async for _ in read_ahead(source.pages(), ahead=False)]
    assert reads_when_working == [[0], [0, 1], [0, 1, 2]]


async def test_an_error_reading_ahead_is_raised_when_its_page_is_asked_for() -> None:
    source = _Pages(fail=True)
    applied: list[int] = []

    async def apply_all() -> None:
        async for page in read_ahead(source.pages()):
            await asyncio.sleep(0.03)
            applied.append(page)

    with pytest.raises(LookupError):
        await apply_all()
    assert applied == [0, 1]  # the pages before the failed read were all applied


async def test_stopping_early_cancels_the_read_in_flight_and_closes_the_pages() -> None:
    source = _Pages()
    ahead = read_ahead(source.pages())
    assert await anext(ahead) == 0
    await asyncio.sleep(0.005)  # the second page's read has started
    await ahead.aclose()
    assert source.started == [0, 1]
    assert source.closed
