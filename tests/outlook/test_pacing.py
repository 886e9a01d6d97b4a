"""The per-mailbox pacer keeps every window of Graph's length within the budget, yet uses >= 90 %
of it when busy (a fake clock: no waiting)."""

from __future__ import annotations

import asyncio
import bisect

import httpx
import pytest

from shared.outlook.pacing import MailboxPacer, mailboxes_of


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("budget", "window"), [(10_000, 600.0), (20, 2.0), (100, 10.0)])
def test_no_window_exceeds_the_budget_and_a_busy_mailbox_uses_most_of_it(
    budget: int, window: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr("shared.outlook.pacing.asyncio.sleep", fake_sleep)
    pacer = MailboxPacer(budget=budget, window_seconds=window, clock=clock)
    sent: list[float] = []

    async def busy() -> None:
        for i in range(budget * 3):
            await pacer.acquire("Mailbox-A", 2 if i % 7 == 0 else 1)  # a small JSON batch now and then
            sent.extend([clock.now] * (2 if i % 7 == 0 else 1))

    asyncio.run(busy())
    worst = max(bisect.bisect_left(sent, t + window) - i for i, t in enumerate(sent))
    assert worst <= budget
    assert len(sent) / (sent[-1] / window) >= 0.9 * budget  # requests per window, long run


def test_a_batch_counts_each_request_against_its_mailbox() -> None:
    body = (
        b'{"requests": [{"id": "1", "url": "/users/A/contacts"}, {"id": "2", "url": "/users/a/events"},'
        b' {"id": "3", "url": "/users/B/contacts"}]}'
    )
    batch = httpx.Request("POST", "https://graph.microsoft.com/v1.0/$batch", content=body)
    assert mailboxes_of(batch) == {"a": 2, "b": 1}
    single = httpx.Request("GET", "https://graph.microsoft.com/v1.0/users/A/contacts?$top=1")
    assert mailboxes_of(single) == {"a": 1}
    assert mailboxes_of(httpx.Request("GET", "https://graph.microsoft.com/v1.0/subscriptions")) == {}
