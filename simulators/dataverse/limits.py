"""Service protection limits, fault injection and the request log.

"Service protection API limits" (power-apps/developer/data-platform/api-limits): per user, over a
sliding 300-second window, 6000 requests (0x80072322) and 1,200,000 ms of combined execution time
(0x80072321); 52 concurrent requests (0x80072326); each answered with 429 Too Many Requests and a
Retry-After header in seconds. A client is told apart by its bearer token (only a hash is kept),
so tests sharing one simulator can set limits and faults for their own token.

The ``hang_after_commit`` fault is the simulator's own: it lets a test kill a client at the one
moment a crash-safe sync must survive, after Dataverse committed a write and before the client
heard of it (docs/ARCHITECTURE.md, data flow step 3: "a crash at any point re-runs the page").
So is ``hang``: a Dataverse that accepts the request and does not answer, so a test can show that
the client's timeout, not Dataverse, decides how long a run waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from simulators.dataverse import errors

ANY_CLIENT = "*"
LOG_CAPACITY = 20_000
LATENCY = "latency"
HANG_AFTER_COMMIT = "hang_after_commit"
HANG = "hang"
ANSWERING_KINDS = frozenset({"status", "throttle", "outage"})
FAULT_KINDS = ANSWERING_KINDS | {LATENCY, HANG_AFTER_COMMIT, HANG}
#: How long a ``hang`` holds a request when the fault names no ``seconds``: longer than any client waits.
HANG_SECONDS = 3600.0
#: How often a held request looks whether its client closed the connection.
_GONE_POLL_SECONDS = 0.1


def client_id(token: str) -> str:
    """A stable, non-reversible name for a bearer token."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass
class LimitSettings:
    requests: int = 6000
    window_seconds: float = 300.0
    concurrent: int = 52
    execution_ms: float = 1_200_000.0


@dataclass
class ClientUsage:
    started: deque[float] = field(default_factory=deque)
    durations: deque[tuple[float, float]] = field(default_factory=deque)
    in_flight: int = 0


@dataclass(frozen=True)
class CommittedWrite:
    """A write (POST/PATCH/PUT/DELETE) that took effect: its table, path and request body."""

    table: str
    path: str
    body: bytes


@dataclass
class Fault:
    """``kind``: latency (ms), status (status/code/message), throttle (429 + retry_after), outage,
    hang_after_commit (hold the answer to a committed write of ``table`` for ``seconds``), or hang
    (hold the request itself, before anything is done, for ``seconds``)."""

    kind: str
    client: str = ANY_CLIENT
    remaining: int | None = None
    latency_ms: float = 0.0
    status: int = 503
    code: str = errors.SERVICE_UNAVAILABLE
    message: str = "The service is unavailable (simulated fault)."
    retry_after: int = 1
    path_contains: str | None = None
    table: str | None = None
    body_contains: str | None = None
    seconds: float = 30.0
    after: int = 0  # matching requests (or $batch parts) let through before it acts: an outage mid-batch
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    fired: int = 0
    holding: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def error(self) -> errors.DataverseError:
        """What an answering fault (status, throttle, outage) answers instead of the operation."""
        if self.kind == "throttle":
            return errors.DataverseError(429, self.code, self.message, {"Retry-After": str(self.retry_after)})
        return errors.DataverseError(self.status, self.code, self.message)

    def applies(self, client: str, path: str, body: bytes) -> bool:
        """Whether it acts on this request; each matching request before ``after`` ran out passes.
        ``body_contains`` narrows any fault to requests (or $batch parts) whose body holds the text,
        so a test's fault cannot be used up by other mailboxes' background traffic."""
        matches = (
            (self.remaining is None or self.remaining > 0)
            and self.client in {ANY_CLIENT, client}
            and (self.path_contains is None or self.path_contains in path)
            and (self.body_contains is None or self.body_contains.encode() in body)
        )
        if matches and self.after > 0:
            self.after -= 1
            return False
        return matches

    def catches(self, client: str, write: CommittedWrite) -> bool:
        """A hang_after_commit fault catches a committed write of its table (and body text)."""
        return (
            self.kind == HANG_AFTER_COMMIT
            and self.applies(client, write.path, write.body)
            and self.table in {None, write.table}
        )

    async def hold(self, gone: Callable[[], Awaitable[bool]] | None = None) -> bool:
        """Keep the answer (a hang: the request) back for ``seconds``, or until the faults are cleared;
        False as soon as ``gone`` says the client closed the connection (nobody waits any more)."""
        self.holding += 1
        deadline = time.monotonic() + self.seconds
        try:
            while not self.released.is_set() and (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    wait = left if gone is None else min(left, _GONE_POLL_SECONDS)
                    await asyncio.wait_for(self.released.wait(), wait)
                if gone is not None and await gone():
                    return False
            return True
        finally:
            self.holding -= 1

    def state(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "table": self.table,
            "remaining": self.remaining,
            "fired": self.fired,
            "holding": self.holding,
        }


class Governor:
    """Decides, per request, whether a fault or a service protection limit answers instead."""

    def __init__(self) -> None:
        self.settings: dict[str, LimitSettings] = {}
        self.usage: dict[str, ClientUsage] = {}
        self.faults: list[Fault] = []
        self.added: dict[str, Fault] = {}  # every fault since the last clear, used up or not

    def reset(self) -> None:
        self.settings.clear()
        self.usage.clear()
        self.clear_faults()

    def configure(self, client: str, spec: dict[str, Any]) -> LimitSettings:
        base = self.settings.get(client) or LimitSettings()
        settings = LimitSettings(
            requests=int(spec.get("requests", base.requests)),
            window_seconds=float(spec.get("window_seconds", base.window_seconds)),
            concurrent=int(spec.get("concurrent", base.concurrent)),
            execution_ms=float(spec.get("execution_ms", base.execution_ms)),
        )
        self.settings[client] = settings
        return settings

    def add_fault(self, fault: Fault) -> None:
        if fault.kind not in FAULT_KINDS:
            raise errors.bad_request(f"unknown fault kind {fault.kind!r}")
        self.faults.append(fault)
        self.added[fault.id] = fault

    def clear_faults(self) -> None:
        """Forget every fault and let every held answer go."""
        for fault in self.added.values():
            fault.released.set()
        self.faults.clear()
        self.added.clear()

    def _use(self, fault: Fault) -> Fault:
        """Count one use of ``fault``; a used-up fault leaves the active list (its state stays readable)."""
        fault.fired += 1
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.faults.remove(fault)
        return fault

    def matching_faults(self, client: str, path: str, body: bytes) -> list[Fault]:
        """The latency and hang faults for this request plus the first answering fault (in the order
        added); each one returned uses up one of its ``count``."""
        hits: list[Fault] = []
        answered = False
        for fault in list(self.faults):
            answering = fault.kind in ANSWERING_KINDS
            skipped = fault.kind == HANG_AFTER_COMMIT or (answered and answering)
            if skipped or not fault.applies(client, path, body):
                continue
            answered = answered or answering
            hits.append(self._use(fault))
        return hits

    def part_fault(self, client: str, path: str, body: bytes) -> Fault | None:
        """The first answering fault with a ``path_contains`` that names this $batch part, used once."""
        for fault in self.faults:
            if (
                fault.kind in ANSWERING_KINDS
                and fault.path_contains is not None
                and fault.applies(client, path, body)
            ):
                return self._use(fault)
        return None

    def hang_after_commit(self, client: str, writes: list[CommittedWrite]) -> Fault | None:
        """The first hang_after_commit fault that catches any of a request's committed writes, used once."""
        for fault in self.faults:
            if any(fault.catches(client, write) for write in writes):
                return self._use(fault)
        return None

    def admit(self, client: str) -> dict[str, str]:
        """Count a request in, or raise the documented 429. Returns the documented
        x-ms-ratelimit-*-remaining-xrm-requests headers for the response."""
        settings = self.settings.get(client) or self.settings.get(ANY_CLIENT) or LimitSettings()
        usage = self.usage.setdefault(client, ClientUsage())
        current = time.monotonic()
        horizon = current - settings.window_seconds
        while usage.started and usage.started[0] <= horizon:
            usage.started.popleft()
        while usage.durations and usage.durations[0][0] <= horizon:
            usage.durations.popleft()
        if usage.in_flight >= settings.concurrent:
            raise _throttled(
                errors.LIMIT_CONCURRENCY,
                f"Number of concurrent requests exceeded the limit of {settings.concurrent}.",
                1,
            )
        if len(usage.started) >= settings.requests:
            wait = usage.started[0] + settings.window_seconds - current
            raise _throttled(
                errors.LIMIT_REQUESTS,
                f"Number of requests exceeded the limit of {settings.requests} over time window of "
                f"{settings.window_seconds:g} seconds.",
                wait,
            )
        spent = sum(duration for _, duration in usage.durations)
        if spent >= settings.execution_ms:
            wait = usage.durations[0][0] + settings.window_seconds - current
            raise _throttled(
                errors.LIMIT_EXECUTION_TIME,
                "Combined execution time of incoming requests exceeded limit of "
                f"{settings.execution_ms:,.0f} milliseconds over time window of "
                f"{settings.window_seconds:g} seconds. Decrease number of "
                "concurrent requests or reduce the duration of requests and try again later.",
                wait,
            )
        usage.started.append(current)
        usage.in_flight += 1
        return {
            "x-ms-ratelimit-burst-remaining-xrm-requests": str(settings.requests - len(usage.started)),
            "x-ms-ratelimit-time-remaining-xrm-requests": f"{max(0.0, settings.execution_ms - spent):.2f}",
        }

    def done(self, client: str, started: float) -> None:
        usage = self.usage.get(client)
        if usage is None:
            return
        usage.in_flight = max(0, usage.in_flight - 1)
        finished = time.monotonic()
        usage.durations.append((finished, (finished - started) * 1000.0))


def _throttled(code: str, message: str, wait_seconds: float) -> errors.DataverseError:
    return errors.DataverseError(429, code, message, {"Retry-After": str(max(1, math.ceil(wait_seconds)))})


@dataclass
class RequestLog:
    entries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_CAPACITY))

    def add(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)

    def select(self, client: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.entries if client is None or e["client"] == client]
