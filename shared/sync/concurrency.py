"""Bounded concurrency for a page's independent round trips (storage point reads and writes)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Round trips in flight at once: enough to hide Table Storage latency, few enough to stay far from
#: its per-partition target (2,000 entities/s) and from the connection pool's size.
DEFAULT_LIMIT = 16


async def bounded_gather(steps: Iterable[Awaitable[T]], limit: int = DEFAULT_LIMIT) -> list[T]:
    """Await ``steps`` with at most ``limit`` running at once; results in order, first error raised."""
    gate = asyncio.Semaphore(limit)

    async def one(step: Awaitable[T]) -> T:
        async with gate:
            return await step

    return list(await asyncio.gather(*(one(step) for step in steps)))


_END = object()


async def read_ahead(pages: AsyncIterator[T], *, ahead: bool = True) -> AsyncGenerator[T, None]:
    """``pages`` in order, the next one already being read while the caller works on this one (so
    a delta read overlaps the page's writes); an error reading it is raised when the caller asks for
    it, as without read-ahead. Closing stops the read in flight and closes ``pages``. With
    ``ahead=False``, just ``pages``."""

    async def following() -> object:
        try:
            return await anext(pages)
        except StopAsyncIteration:
            return _END

    pending: asyncio.Future[object] | None = None
    try:
        while True:
            page = await (pending if pending is not None else following())
            if page is _END:
                return
            pending = asyncio.ensure_future(following()) if ahead else None
            yield page  # type: ignore[misc]
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):  # the caller stopped: its outcome is moot
                await pending
        closing = getattr(pages, "aclose", None)
        if closing is not None:
            await closing()


K = TypeVar("K")


class Memo(Generic[K, T]):
    """A per-run cache of lookups that concurrent callers share: the first caller of a key loads it,
    the others await the same load (no duplicate round trips); a failed load is forgotten."""

    def __init__(self) -> None:
        self._loads: dict[K, asyncio.Future[T]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[T]]) -> T:
        pending = self._loads.get(key)
        if pending is None:
            pending = self._loads[key] = asyncio.ensure_future(load())
            pending.add_done_callback(functools.partial(self._forget_failed, key))
        return await asyncio.shield(pending)

    def _forget_failed(self, key: K, load: asyncio.Future[T]) -> None:
        if (load.cancelled() or load.exception() is not None) and self._loads.get(key) is load:
            del self._loads[key]

    def put(self, key: K, value: T) -> None:
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        done.set_result(value)
        self._loads[key] = done

    def peek(self, key: K) -> T | None:
        """The loaded value, if a load of ``key`` finished successfully."""
        pending = self._loads.get(key)
        if pending is None or not pending.done() or pending.cancelled() or pending.exception() is not None:
            return None
        return pending.result()


class _Entry(Generic[T]):
    __slots__ = ("expires", "lock", "value")

    def __init__(self) -> None:
        self.value: T | None = None
        self.expires = float("-inf")
        self.lock = asyncio.Lock()


class TtlCache(Generic[K, T]):
    """A worker's cache of settings read from a service, each kept for ``ttl`` seconds: concurrent
    callers of an expired key wait for one read; a failed read keeps nothing."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[K, _Entry[T]] = {}

    async def get(self, key: K, read: Callable[[], Awaitable[T]]) -> T:
        entry = self._entries.setdefault(key, _Entry())
        if entry.expires <= self._clock():
            async with entry.lock:
                if entry.expires <= self._clock():
                    entry.value = await read()
                    entry.expires = self._clock() + self._ttl
        return entry.value  # type: ignore[return-value]  # set by the read above
