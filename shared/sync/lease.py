"""The mailbox lease while a run holds it: renewed in the background, checked before every write.

One synchronizing instance per mailbox (docs/ARCHITECTURE.md) holds only if a run never writes
after its lease could have passed to another worker. Renewing between pages is not enough: one
throttled ``$batch`` (several retries of up to 60 s each) or a message's attachment copies can
outlast the lease. So :class:`LeaseKeeper` renews it from an asyncio task at half the lease period
while the run works, and the run calls :meth:`LeaseKeeper.check` before each page's writes: once a
renewal was refused (``LeaseLost``: taken over after expiry) or the lease ran out unrenewed
(storage unreachable), the run stops before its next write. The delta link, the one write that
moves a resource forward, is stored in one conditional write with the lease
(:meth:`LeaseKeeper.save_delta_link`), so a run that lost its lease can never store it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

from shared.store.errors import LeaseHeld, LeaseLost
from shared.store.fingerprint import short_fingerprint
from shared.store.ports import SyncStateStore
from shared.store.records import Lease

logger = logging.getLogger(__name__)

# After a failed renewal (storage briefly away) try again this soon, while the lease still runs.
_RETRY_SECONDS = 1.0
LEASE_POLL_SECONDS = 0.25


async def acquire(states: SyncStateStore, mailbox_id: str, owner: str, seconds: int, *, wait: float) -> Lease:
    """The mailbox lease, asked again every ``LEASE_POLL_SECONDS`` for up to ``wait`` seconds while
    another run holds it (then ``LeaseHeld``). Both directions wait alike: a run that gave up at once
    while the other direction's runs waited lost the lease to them every time it came free."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return await states.try_acquire(mailbox_id, owner, seconds)
        except LeaseHeld:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(LEASE_POLL_SECONDS)


class LeaseWaiters:
    """Per worker: the runs of a mailbox take turns (first come, first served) before one of them
    asks storage for the lease, and which mailboxes a CRM -> Outlook run is waiting for.

    Turns: runs of one worker met each other's lease in storage; an Outlook -> CRM job that found it
    held went back on the queue and came round again two seconds later, each time a queue message
    written and deleted, the mailbox and the lease read (chaos seed 4 at 800 operations: 1,648 such
    requeues for 148 runs, most of what Azurite did). Now they wait in the worker, without a
    storage request, and storage's lease is contended only between workers.

    ``waiting``: an Outlook -> CRM job that holds the lease takes the rounds notified meanwhile and
    the mailbox's other dirty resources under it; while a CRM -> Outlook run waits, it leaves them to
    their own queued jobs and gives the lease up, so a busy Outlook does not keep the lease from the
    other direction (chaos at 10,000 operations: the Outlook -> CRM jobs held the leases 92 % of the
    time)."""

    def __init__(self) -> None:
        self._waiting: dict[str, int] = {}
        self._turns: dict[str, _Turn] = {}
        self._read: dict[tuple[str, str], float] = {}  # the latest start of a completed round

    def note_read(self, mailbox_id: str, resource: str, started: float) -> None:
        """An Outlook -> CRM round of this worker that began at ``started`` (``time.monotonic()``)
        read the resource's delta to its end and applied it."""
        key = (mailbox_id, resource)
        self._read[key] = max(started, self._read.get(key, started))

    def read_since(self, mailbox_id: str, resource: str, since: float) -> bool:
        """Whether a round of this worker that began at or after ``since`` completed for the resource."""
        return self._read.get((mailbox_id, resource), -1.0) >= since

    def waiting(self, mailbox_id: str) -> bool:
        return self._waiting.get(mailbox_id, 0) > 0

    @contextlib.contextmanager
    def wait(self, mailbox_id: str) -> Iterator[None]:
        self._waiting[mailbox_id] = self._waiting.get(mailbox_id, 0) + 1
        try:
            yield
        finally:
            self._waiting[mailbox_id] -= 1
            if not self._waiting[mailbox_id]:
                del self._waiting[mailbox_id]

    @contextlib.asynccontextmanager
    async def turn(self, mailbox_id: str, *, wait: float, to_outlook: bool = False) -> AsyncIterator[bool]:
        """The mailbox's turn in this worker, after the runs that asked first; ``LeaseHeld`` after
        ``wait`` seconds. Yields whether it waited for another run. ``to_outlook``: a CRM -> Outlook
        run, counted by :meth:`waiting` until its turn comes."""
        turn = self._turns.setdefault(mailbox_id, _Turn())
        turn.users += 1
        try:
            waited = turn.lock.locked()
            with self.wait(mailbox_id) if to_outlook else contextlib.nullcontext():
                try:
                    async with asyncio.timeout(wait):
                        await turn.lock.acquire()
                except TimeoutError:
                    raise LeaseHeld(None, None) from None
            try:
                yield waited
            finally:
                turn.lock.release()
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[mailbox_id]


@dataclasses.dataclass
class _Turn:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0  # the runs holding or waiting for the turn: the entry goes with the last


class LeaseKeeper:
    """Holds one mailbox lease for a run (``start`` after acquiring, ``release`` when done)."""

    def __init__(
        self,
        states: SyncStateStore,
        lease: Lease,
        seconds: int,
        *,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._states = states
        self._lease = lease
        self._seconds = seconds
        self._clock = clock
        self._lock = asyncio.Lock()  # one write of the lease row at a time (each changes its ETag)
        self._lost: LeaseLost | None = None
        self._deadline = time.monotonic() + seconds  # the lease runs out then unless renewed
        self._task: asyncio.Task[None] | None = None

    @property
    def lease(self) -> Lease:
        return self._lease

    def start(self) -> None:
        """Renew in the background at half the lease period until :meth:`release`."""
        self._task = asyncio.create_task(self._keep_renewing())

    def check(self) -> None:
        """Raise ``LeaseLost`` if the lease was taken over or may have run out: stop writing."""
        if self._lost is not None:
            raise LeaseLost from self._lost
        if time.monotonic() >= self._deadline:
            raise LeaseLost

    async def renew_if_half_used(self) -> None:
        """Between pages: renew now if half the lease is used by the run's clock (the background
        task does it by wall time; this keeps a run driven by a test clock within its lease)."""
        self.check()
        if self._lease.expires_at - self._clock() < dt.timedelta(seconds=self._seconds / 2):
            await self._renew()

    async def save_delta_link(
        self, mailbox_id: str, resource: str, link: str, *, window_start: dt.datetime | None = None
    ) -> None:
        """Store the link in one conditional write with the lease (renewing it); ``LeaseLost`` if
        the lease is no longer this run's, and nothing is stored."""
        self.check()
        async with self._lock:
            started = time.monotonic()
            try:
                self._lease = await self._states.save_delta_link_fenced(
                    mailbox_id,
                    resource,
                    link,
                    lease=self._lease,
                    seconds=self._seconds,
                    window_start=window_start,
                )
            except LeaseLost as lost:
                self._lost = lost
                raise
            self._deadline = started + self._seconds

    async def release(self) -> None:
        """Stop renewing and give the lease up (a lease lost meanwhile is not ours to delete)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._states.release(self._lease)

    async def _renew(self) -> None:
        async with self._lock:
            if self._lost is not None:
                raise LeaseLost from self._lost
            started = time.monotonic()
            try:
                self._lease = await self._states.renew(self._lease, self._seconds)
            except LeaseLost as lost:
                self._lost = lost
                logger.error(
                    "lost the lease of mailbox %s: the run stops before its next write",
                    short_fingerprint(self._lease.mailbox_id),
                )
                raise
            self._deadline = started + self._seconds

    async def _keep_renewing(self) -> None:
        pause = self._seconds / 2
        while True:
            await asyncio.sleep(pause)
            try:
                await self._renew()
            except LeaseLost:
                return
            except Exception as error:  # storage away for a moment: retry while the lease runs
                logger.warning("lease renewal failed (%s); retrying", type(error).__name__)
                pause = _RETRY_SECONDS
            else:
                pause = self._seconds / 2
