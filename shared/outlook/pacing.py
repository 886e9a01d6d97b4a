"""Pacing Graph requests per mailbox under Outlook's request budget, so a big fill meets no 429s.

Outlook allows an application 10,000 requests per mailbox in 10 minutes, each request of a JSON
batch counted ("Microsoft Graph service-specific throttling limits", Outlook service limits,
learn.microsoft.com/graph/throttling-limits). A token bucket per mailbox refilling at ``share`` of
that rate, holding at most the rest of the budget, can never send more than the budget in any
window of that length (burst + rate x window = budget), yet runs at ``share`` of it when busy.
The bucket is per process: instances that write one mailbox at the same time share Graph's budget
between them (the mailbox lease makes that rare).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from kiota_http.middleware.middleware import BaseMiddleware

_USER = re.compile(r"/users/([^/?]+)", re.IGNORECASE)


@dataclass
class _Bucket:
    tokens: float
    at: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MailboxPacer:
    """Token buckets keyed by mailbox (see the module docstring)."""

    def __init__(
        self,
        *,
        budget: int = 10_000,
        window_seconds: float = 600.0,
        share: float = 0.95,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget < 2 or window_seconds <= 0 or not 0 < share < 1:
            raise ValueError("a budget of at least 2 requests, a window and a share in (0, 1)")
        self.rate = share * budget / window_seconds
        # One request of margin for the boundaries of Graph's sliding window.
        self.capacity = max(1.0, budget - self.rate * window_seconds - 1)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    async def acquire(self, mailbox: str, requests: int = 1) -> None:
        """Wait until ``requests`` more requests to ``mailbox`` stay within the budget."""
        key = mailbox.lower()
        bucket = self._buckets.setdefault(key, _Bucket(self.capacity, self._clock()))
        async with bucket.lock:  # first come, first served per mailbox
            while True:
                now = self._clock()
                bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
                bucket.at = now
                need = min(requests, self.capacity)
                if bucket.tokens >= need - 1e-9:  # rounding must not keep a caller waiting forever
                    bucket.tokens -= requests
                    return
                await asyncio.sleep((need - bucket.tokens) / self.rate)


def mailboxes_of(request: httpx.Request) -> dict[str, int]:
    """The mailboxes a Graph request counts against, and how many requests for each (a JSON batch
    counts each of its requests against the mailbox in its URL)."""
    if request.url.path.rstrip("/").endswith("/$batch"):
        try:
            inner = json.loads(request.content or b"{}").get("requests", [])
        except (ValueError, AttributeError):
            return {}
        counts: dict[str, int] = {}
        for item in inner if isinstance(inner, list) else []:
            match = _USER.search(str(item.get("url", ""))) if isinstance(item, dict) else None
            if match:
                counts[match.group(1).lower()] = counts.get(match.group(1).lower(), 0) + 1
        return counts
    match = _USER.search(request.url.path)
    return {match.group(1).lower(): 1} if match else {}


class PacingHandler(BaseMiddleware):
    """Holds each request to a mailbox until the mailbox's bucket lets it go (retries included)."""

    def __init__(self, pacer: MailboxPacer) -> None:
        super().__init__()
        self.pacer = pacer

    async def send(self, request: httpx.Request, transport: httpx.AsyncBaseTransport) -> httpx.Response:
        for mailbox, count in mailboxes_of(request).items():
            await self.pacer.acquire(mailbox, count)
        return await super().send(request, transport)
