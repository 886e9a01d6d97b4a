"""Throttling as Outlook documents it, injected faults, and the request log.

learn.microsoft.com/graph/throttling-limits, "Outlook service limits": per app and mailbox,
10,000 API requests in a 10 minute period and 4 concurrent requests; over a limit the answer
is 429 with a Retry-After header in seconds.

The ``hang`` fault is the simulator's own: a Graph that accepts the connection and does not answer,
so a test can show that the client's timeout, not Graph, decides how long a run waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from simulators.graph.core import GraphError, Json, bad_request, iso_z, utcnow


@dataclass
class Config:
    """Knobs the control API may change (PATCH /_sim/config); defaults are Graph's documented values."""

    tenant_id: str = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    notification_timeout_seconds: float = 3.0
    validation_timeout_seconds: float = 10.0
    retry_initial_seconds: float = 60.0
    retry_max_seconds: float = 3600.0
    retry_max_attempts: int = 10
    mailbox_concurrency: int = 4
    mailbox_budget: int = 10_000
    budget_window_seconds: float = 600.0

    def update(self, changes: Json) -> None:
        for name, value in changes.items():
            current = getattr(self, name, None)
            if current is None or name.startswith("_"):
                raise bad_request(f"Unknown setting '{name}'.")
            if not isinstance(value, type(current)) and not (
                isinstance(current, float) and isinstance(value, int)
            ):
                raise bad_request(f"Setting '{name}' needs a {type(current).__name__}.")
            setattr(self, name, type(current)(value))

    def as_json(self) -> Json:
        return dict(self.__dict__)


@dataclass
class MailboxLimits:
    budget: int | None = None
    window_seconds: float | None = None
    in_flight: int = 0
    recent: deque[float] = field(default_factory=deque)


class Throttle:
    """Per-mailbox concurrency counter and sliding-window request budget."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.mailboxes: dict[str, MailboxLimits] = {}

    def limits(self, user_id: str) -> MailboxLimits:
        return self.mailboxes.setdefault(user_id, MailboxLimits())

    def enter(self, user_id: str) -> None:
        """Admit a request or raise 429; every admitted request must be paired with leave()."""
        state = self.limits(user_id)
        if state.in_flight >= self.config.mailbox_concurrency:
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                retry_after=1,
            )
        budget = state.budget if state.budget is not None else self.config.mailbox_budget
        window = (
            state.window_seconds if state.window_seconds is not None else self.config.budget_window_seconds
        )
        now = time.monotonic()
        while state.recent and state.recent[0] <= now - window:
            state.recent.popleft()
        if len(state.recent) >= budget:
            wait = max(1, math.ceil(state.recent[0] + window - now))
            raise GraphError(
                429, "ApplicationThrottled", "Application is over its resource limit.", retry_after=wait
            )
        state.recent.append(now)
        state.in_flight += 1

    def leave(self, user_id: str) -> None:
        self.limits(user_id).in_flight -= 1


REQUEST_FAULTS = ("latency", "status", "throttle", "lost_answer", "hang")
#: How long a ``hang`` holds a request when the fault names no ``seconds``: longer than any client waits.
HANG_SECONDS = 3600.0
#: How often a held request looks whether its client closed the connection.
_GONE_POLL_SECONDS = 0.1


class ClientGone(Exception):
    """The client closed the connection while its request was held: there is no one to answer."""


NOTIFICATION_FAULTS = ("drop_notifications", "duplicate_notifications", "reorder_notifications")


@dataclass
class Fault:
    id: int
    kind: str
    user: str | None
    remaining: int | None
    seconds: float = 0.0
    status: int = 503
    retry_after: int | None = None
    path_contains: str | None = None
    method: str | None = None
    after: int = 0  # matching requests let through before the fault starts (an outage mid-run)
    held: list[Any] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def as_json(self) -> Json:
        return {k: v for k, v in self.__dict__.items() if k not in ("held", "released")}

    async def hang(self, gone: Callable[[], Awaitable[bool]]) -> None:
        """Hold a request unanswered for ``seconds`` or until the fault is cleared, then let it go on
        (an answer that comes late); raise :class:`ClientGone` once its client stops waiting."""
        deadline = time.monotonic() + self.seconds
        while not self.released.is_set() and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), min(left, _GONE_POLL_SECONDS))
            if await gone():
                raise ClientGone


STATUS_CODES = {
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


class Faults:
    """Injected faults, matched per mailbox so parallel tests don't see each other's."""

    def __init__(self) -> None:
        self.rules: list[Fault] = []
        self.hangs: list[Fault] = []  # every hang fault until cleared, used up or not: it may hold requests
        self.ids = itertools.count(1)

    def add(self, spec: Json) -> Fault:
        kind = spec.get("kind")
        if kind not in REQUEST_FAULTS + NOTIFICATION_FAULTS:
            raise bad_request(
                f"Unknown fault kind {kind!r}; use one of {REQUEST_FAULTS + NOTIFICATION_FAULTS}."
            )
        count = spec.get("count", 1)
        fault = Fault(
            id=next(self.ids),
            kind=str(kind),
            user=spec.get("user"),
            remaining=None if count is None else int(count),
            seconds=float(spec.get("seconds", HANG_SECONDS if kind == "hang" else 0.0)),
            status=int(spec.get("status", 503)),
            retry_after=spec.get("retry_after"),
            path_contains=spec.get("path_contains"),
            method=(spec.get("method") or None),
            after=int(spec.get("after", 0)),
        )
        if kind == "throttle" and fault.retry_after is None:
            fault.retry_after = 1
        if kind == "hang":
            self.hangs.append(fault)
        self.rules.append(fault)
        return fault

    def clear(self, user: str | None) -> int:
        """Forget the faults (of one mailbox, or all); requests a hang holds go on."""

        def kept(fault: Fault) -> bool:
            return user is not None and fault.user != user

        for fault in self.hangs:
            if not kept(fault):
                fault.released.set()
        self.hangs = [f for f in self.hangs if kept(f)]
        before = len(self.rules)
        self.rules = [f for f in self.rules if kept(f)]
        return before - len(self.rules)

    def take(
        self, kinds: tuple[str, ...], user: str | None, method: str = "", path: str = ""
    ) -> Fault | None:
        """The first live fault of these kinds matching the request; consumes one use."""
        for fault in self.rules:
            if fault.kind not in kinds or (fault.user is not None and fault.user != user):
                continue
            if fault.method and fault.method.upper() != method:
                continue
            if fault.path_contains and fault.path_contains.lower() not in path.lower():
                continue
            if fault.after > 0:
                fault.after -= 1
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.rules.remove(fault)
            return fault
        return None

    async def apply(
        self, user: str | None, method: str, path: str, gone: Callable[[], Awaitable[bool]]
    ) -> None:
        """Request faults: a hang, then latency (both inside the concurrency slot), then an error
        answer. ``gone`` tells whether the client closed the connection (it stops a hang)."""
        hang = self.take(("hang",), user, method, path)
        if hang is not None:
            await hang.hang(gone)
        latency = self.take(("latency",), user, method, path)
        if latency is not None:
            await asyncio.sleep(latency.seconds)
        failure = self.take(("status", "throttle"), user, method, path)
        if failure is None:
            return
        if failure.kind == "throttle":
            raise GraphError(
                429, "TooManyRequests", "Too many requests (injected).", retry_after=failure.retry_after or 1
            )
        code = STATUS_CODES.get(failure.status, "InternalServerError")
        raise GraphError(failure.status, code, "Injected failure.", retry_after=failure.retry_after)

    def lose_answer(self, user: str | None, method: str, path: str) -> None:
        """A ``lost_answer`` fault: the request was carried out (committed), then its answer is
        replaced by an error (503 by default), as when a gateway times out after the mailbox
        server committed - the client cannot tell whether its write happened."""
        lost = self.take(("lost_answer",), user, method, path)
        if lost is not None:
            status = lost.status if lost.status in STATUS_CODES else 503
            raise GraphError(status, STATUS_CODES[status], "The answer was lost (injected).")


class RequestLog:
    """What tests inspect: method, path, query, $select, user, status and Prefer of each Graph request."""

    def __init__(self, size: int = 50_000) -> None:
        self.entries: deque[Json] = deque(maxlen=size)

    def add(self, entry: Json) -> None:
        entry["time"] = iso_z(utcnow())
        self.entries.append(entry)

    def list(self, user: str | None) -> list[Json]:
        return [e for e in self.entries if user is None or e.get("user") == user]

    def clear(self, user: str | None) -> None:
        if user is None:
            self.entries.clear()
        else:
            kept = [e for e in self.entries if e.get("user") != user]
            self.entries.clear()
            self.entries.extend(kept)
