"""10,000 mailboxes: what the timers cost per mailbox and hour, on simulated time.

    python -m bench.scale [--mailboxes 10000] [--hours 24] [--changes-per-day 50]
                          [--onboarded-over-hours 8] [--graph-ms 150] [--storage-ms 10]

Registers ``--mailboxes`` mailboxes straight into the store the way onboarding leaves them (a
registry row, one subscription and one delta link per resource: inbox, contacts, calendar, To Do;
onboarding 10,000 through Graph would take hours here), onboarded evenly over
``--onboarded-over-hours``. Then it drives the real timer code - ``dispatch.sweep``,
``Maintenance.renew_subscriptions``, ``Maintenance.retry_parked`` - minute by minute on the default
NCRONTAB schedules with an injected clock, on the in-memory store, through two periods of
``--hours``: at rest, then with ``--changes-per-day`` Outlook changes per mailbox (1 % of their
notifications dropped). The first period starts when the first To Do renewals fall due.

Modelled, not run: the queue worker (a job reads the resource's state, clears its dirty flag and
reads one delta page - 1 Graph request, the GET of the stored delta link; its lease and delta-link
writes are not counted), the sweep's safety read (one Graph ``$batch`` of the mailbox's delta links,
answering "changed" where a notification was dropped), Graph's answer to a renewal (the real expiry
rule), and the CRM
change-tracking timer (one Dataverse page per table, 3 per run every 5 minutes, whatever the number
of mailboxes). Counted, per mailbox and hour:

- Graph requests of the timers and of the jobs they enqueue;
- storage requests, a lower bound: 1 per point operation or queue message, 1 per 1,000 entities a
  query returns; and
  the entities that queries filtering on a property, not a key, make Table Storage scan;
- queue depth: the jobs one sweep run enqueues at once;
- a dropped notification: minutes from the change to the next delta read of its resource;
- each timer's busiest run: its requests and its time at ``--graph-ms`` / ``--storage-ms`` each.

Targets: <= 2 Graph requests per mailbox per hour at rest; a dropped notification caught within
60 minutes; no timer run longer than its schedule's period (nor the host's 10-minute function
timeout, host.json).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import inspect
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from bench._common import print_results
from shared.config import Settings
from shared.outlook.subscriptions import ResourceKind, SubscriptionManager, resource_path
from shared.store.jobs import JobReason, SyncJob
from shared.store.memory.store import open_memory_store
from shared.store.ports import Store
from shared.store.records import SubscriptionRecord, hash_client_state
from shared.sync.concurrency import DEFAULT_LIMIT
from shared.sync.dispatch import renewal_horizon, sweep
from shared.sync.intake import request_resync
from shared.sync.maintenance import RENEWAL_CONCURRENCY, Maintenance
from simulators.functions_host import NCrontab

#: The CRM change-tracking timer: one page per table (3) every 5 minutes, whatever the mailbox count.
CRM_CHANGES_PER_HOUR = 3 * 12
#: Each timer's period on the default schedules, in seconds: a run must end within it.
PERIODS = {"sweep": 15 * 60, "renewal": 30 * 60, "parked retry": 60 * 60}
FUNCTION_TIMEOUT_S = 600  # host.json functionTimeout
PAGE = 1000  # Table Storage returns at most 1,000 entities per response
MINUTE = dt.timedelta(minutes=1)
START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
# The queries that filter on a property, not a key: Table Storage scans the whole table for them.
SCANS = {
    "subscriptions.list_for_mailbox": "subscriptions",
    "subscriptions.list_expiring": "subscriptions",
    "subscriptions.list_all": "subscriptions",
    "sync_state.list_dirty": "syncstate",
    "parked.list_parked": "parked",
}


class Clock:
    now = START

    def __call__(self) -> dt.datetime:
        return self.now


class Counter:
    def __init__(self) -> None:
        self.requests = 0
        self.scanned = 0
        self.table_rows: dict[str, int] = collections.Counter()


class Counted:
    """A repository whose calls are counted as Table Storage requests (see the module docstring)."""

    def __init__(self, inner: Any, name: str, counter: Counter) -> None:
        self._inner, self._name, self._counter = inner, name, counter

    def __getattr__(self, attribute: str) -> Any:
        wrapped = self._wrap(attribute)
        setattr(self, attribute, wrapped)  # built once per method
        return wrapped

    def _wrap(self, attribute: str) -> Any:
        target = getattr(self._inner, attribute)
        key = f"{self._name}.{attribute}"
        counter = self._counter
        if inspect.isasyncgenfunction(target):

            async def listing(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                returned = 0
                async for value in target(*args, **kwargs):
                    returned += 1
                    yield value
                counter.requests += max(1, math.ceil(returned / PAGE))
                if key in SCANS and not (key == "parked.list_parked" and args):
                    counter.scanned += counter.table_rows[SCANS[key]]

            return listing
        if inspect.iscoroutinefunction(target):

            async def call(*args: Any, **kwargs: Any) -> Any:
                counter.requests += 1
                return await target(*args, **kwargs)

            return call
        return target


class GraphSubscriptions(SubscriptionManager):
    """Renewal as Graph answers it (the new expiry, capped by the real ``expiry``), counted."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(None, notification_url="https://x", lifecycle_url="https://x", clock=clock)  # type: ignore[arg-type]
        self.requests = 0

    async def renew(
        self, subscription_id: str, kind: ResourceKind, expiration: dt.datetime | None = None
    ) -> dt.datetime:
        self.requests += 1
        return self.expiry(kind, expiration)


class ModelledProbe:
    """The sweep's safety read as Graph answers it: one ``$batch`` per mailbox (1 HTTP request; each
    resource's delta read in it counts against the mailbox's throttling budget), reporting a change
    exactly where a notification was dropped (delivered ones were synced already)."""

    def __init__(self, dropped: dict[tuple[str, str], dt.datetime]) -> None:
        self.requests = 0
        self.budget_units = 0
        self._dropped = dropped

    async def changed(self, delta_links: Mapping[str, str]) -> set[str]:
        self.requests += 1
        self.budget_units += len(delta_links)
        missed = {resource for _, resource in self._dropped}
        return {resource for resource in delta_links if resource in missed}


class Queue:
    """The job queue: each message put is a Queue Storage request (taking it off is the worker's)."""

    def __init__(self, counter: Counter) -> None:
        self.jobs: list[SyncJob] = []
        self._counter = counter

    async def enqueue(self, job: SyncJob, *, delay_seconds: int = 0) -> None:
        self._counter.requests += 1
        self.jobs.append(job)


class Day:
    """One simulated day's counts."""

    def __init__(self) -> None:
        self.graph = 0
        self.storage = 0
        self.scanned = 0
        self.depth: collections.Counter[str] = collections.Counter()  # timer -> the largest run
        self.renewals_per_run: list[int] = []
        self.busiest: dict[str, tuple[int, int]] = {}  # timer -> (storage, Graph) requests of its largest run
        self.caught_minutes: list[float] = []
        self.notification_jobs = 0
        self.graph_budget = 0  # Graph requests as the mailbox's throttling budget counts them


async def _register(
    store: Store, clock: Clock, mailboxes: int, spread: dt.timedelta, counter: Counter
) -> None:
    """What onboarding leaves in the store, per mailbox (the subscriptions a default mailbox has)."""
    for n in range(mailboxes):
        clock.now = START - spread + spread * n / max(mailboxes - 1, 1)
        mailbox = str(uuid.UUID(int=n + 1))
        await store.registry.register(
            mailbox_id=mailbox,
            upn=f"u{n}@contoso.example",
            crm_user_id=str(uuid.uuid4()),
            crm_caller_object_id=mailbox,
        )
        for kind, extra in (
            (ResourceKind.MESSAGES, {}),
            (ResourceKind.CONTACTS, {}),
            (ResourceKind.EVENTS, {}),
            (ResourceKind.TASKS, {"task_list_id": f"list-{n}"}),
        ):
            resource = resource_path(kind, mailbox, **extra)
            expires = SubscriptionManager(None, notification_url="", lifecycle_url="", clock=clock).expiry(
                kind
            )  # type: ignore[arg-type]
            await store.subscriptions.put(
                SubscriptionRecord(
                    subscription_id=str(uuid.uuid4()),
                    mailbox_id=mailbox,
                    resource=resource,
                    client_state_hash=hash_client_state("x"),
                    expiration=expires,
                )
            )
            await store.sync_state.save_delta_link(mailbox, resource, f"https://graph/delta/{n}")
    counter.table_rows["registry"] = 2 * mailboxes
    counter.table_rows["subscriptions"] = 4 * mailboxes
    counter.table_rows["syncstate"] = 4 * mailboxes  # state rows; dirty rows come and go


async def _work(
    store: Store, queue: Queue, day: Day, dropped: dict[tuple[str, str], dt.datetime], now: dt.datetime
) -> None:
    """The queue worker, modelled: clear the mark, read one delta page (which catches a dropped change)."""
    jobs, queue.jobs = queue.jobs, []
    for job in jobs:
        state = await store.sync_state.get_state(job.mailbox_id, job.resource)
        await store.sync_state.clear_dirty(state)
        day.graph += 1
        if (since := dropped.pop((job.mailbox_id, job.resource), None)) is not None:
            day.caught_minutes.append((now - since) / MINUTE)


async def _simulate_day(
    *,
    store: Store,
    clock: Clock,
    counter: Counter,
    maintenance: Maintenance,
    graph: GraphSubscriptions,
    resources: list[tuple[str, str]],
    changes_per_day: int,
    rng: random.Random,
    hours: float,
) -> Day:
    defaults = Settings.model_fields
    schedules = {
        "sweep": NCrontab.parse(str(defaults["sweep_schedule"].default)),
        "renewal": NCrontab.parse(str(defaults["renew_schedule"].default)),
        "parked retry": NCrontab.parse(str(defaults["parked_retry_schedule"].default)),
    }
    day, queue = Day(), Queue(counter)
    dropped: dict[tuple[str, str], dt.datetime] = {}
    probe = ModelledProbe(dropped)
    start_requests, start_scanned, start_graph = counter.requests, counter.scanned, graph.requests
    minutes = round(hours * 60)
    changes = sorted(
        (rng.random() * minutes for _ in range(round(changes_per_day * hours / 24))), reverse=True
    )
    day_start = clock.now
    for minute in range(minutes):
        clock.now = day_start + minute * MINUTE
        while changes and changes[-1] < minute + 1:
            changes.pop()
            target = rng.choice(resources)
            if rng.random() < 0.01:
                dropped.setdefault(target, clock.now)  # Graph never delivered it
            else:
                await request_resync([target], store=store, jobs=queue, reason=JobReason.NOTIFICATION)  # type: ignore[arg-type]
                day.notification_jobs += len(queue.jobs)
                await _work(store, queue, day, dropped, clock.now)
        for name, schedule in schedules.items():
            if not schedule.matches(clock.now):
                continue
            storage_before, renewals_before, probes_before = counter.requests, graph.requests, probe.requests
            if name == "sweep":
                await sweep(store, queue, probe=probe, now=clock.now)  # type: ignore[arg-type]
            elif name == "renewal":
                before = graph.requests
                await maintenance.renew_subscriptions(before=renewal_horizon(clock.now))
                day.renewals_per_run.append(graph.requests - before)
            else:
                await maintenance.retry_parked(now=clock.now)
            day.depth[name] = max(day.depth[name], len(queue.jobs))
            graph_run = graph.requests - renewals_before + probe.requests - probes_before
            run = (counter.requests - storage_before, graph_run)
            day.busiest[name] = max(day.busiest.get(name, (0, 0)), run)
            await _work(store, queue, day, dropped, clock.now)
    clock.now = day_start + minutes * MINUTE
    day.graph += graph.requests - start_graph + probe.requests
    day.graph_budget = day.graph - probe.requests + probe.budget_units
    day.storage = counter.requests - start_requests
    day.scanned = counter.scanned - start_scanned
    return day


async def run(args: argparse.Namespace) -> None:
    clock, counter = Clock(), Counter()
    memory = open_memory_store(clock=clock)
    store = Store(
        **{
            name: Counted(getattr(memory, name), name, counter)
            for name in ("registry", "links", "sync_state", "subscriptions", "parked", "audit")
        },
        closer=memory.closer,
    )
    started = time.perf_counter()
    await _register(memory, clock, args.mailboxes, dt.timedelta(hours=args.onboarded_over_hours), counter)
    resources = [
        (record.mailbox_id, record.resource)
        async for record in memory.subscriptions.list_expiring(START + dt.timedelta(days=30))
    ]
    # The first To Do renewals (70.5 h subscriptions, renewed 36 h ahead) fall due 26.5 h after onboarding.
    clock.now = START + dt.timedelta(hours=26)
    graph = GraphSubscriptions(clock)
    maintenance = Maintenance(store=store, subscriptions=graph, job=None)  # type: ignore[arg-type]
    rng = random.Random(14)
    days = {}
    for label, changes in (("at rest", 0), ("typical traffic", args.changes_per_day)):
        # Start each day on the day's sixth day, when the first renewals fall due.
        days[label] = await _simulate_day(
            store=store,
            clock=clock,
            counter=counter,
            maintenance=maintenance,
            graph=graph,
            resources=resources,
            changes_per_day=changes * args.mailboxes,
            rng=rng,
            hours=args.hours,
        )
    elapsed = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    hours = args.hours * args.mailboxes
    rows: list[tuple[str, str, str]] = []
    for label, day in days.items():
        rows += [
            (
                f"{label}: Graph requests / mailbox / h",
                f"{day.graph / hours:.2f}",
                "<= 2" if label == "at rest" else "",
            ),
            (
                f"{label}: of Graph's per-mailbox budget (a $batch counts each request in it) / h",
                f"{day.graph_budget / hours:.2f}",
                "of 60,000 / h",
            ),
            (f"{label}: storage requests / mailbox / h (lower bound)", f"{day.storage / hours:.1f}", ""),
            (
                f"{label}: entities scanned by property queries / mailbox / h",
                f"{day.scanned / hours:,.1f}",
                "",
            ),
            (
                f"{label}: Dataverse requests / mailbox / h (CRM change tracking)",
                f"{CRM_CHANGES_PER_HOUR / args.mailboxes:.4f}",
                "",
            ),
            (f"{label}: queue depth after a sweep run", f"{day.depth['sweep']:,}", ""),
        ]
        for timer, (storage, graph_requests) in day.busiest.items():
            seconds = (storage * args.storage_ms + graph_requests * args.graph_ms) / 1000
            # Renewal renews 8 subscriptions at a time; the sweep checks 16 mailboxes at a time.
            side_by_side = {"renewal": RENEWAL_CONCURRENCY, "sweep": DEFAULT_LIMIT}.get(timer, 1)
            rows.append(
                (
                    f"{label}: {timer}, busiest run: requests (storage + Graph), time"
                    + (
                        f" ({side_by_side} at a time)"
                        if side_by_side > 1
                        else " (one after another: a bound)"
                    ),
                    f"{storage:,} + {graph_requests:,}, {seconds / side_by_side:,.0f} s",
                    f"< {PERIODS[timer]:,} s (period), < {FUNCTION_TIMEOUT_S} s (timeout)",
                )
            )
        if day.caught_minutes:
            rows.append(
                (
                    f"{label}: a dropped notification caught after (max of {len(day.caught_minutes)})",
                    f"{max(day.caught_minutes):.0f} min + queue wait",
                    "<= 60 min",
                )
            )
        if day.notification_jobs:
            rows.append(
                (f"{label}: notification jobs / mailbox / h", f"{day.notification_jobs / hours:.2f}", "")
            )
    print_results(
        f"{args.mailboxes:,} mailboxes x 4 resources, 2 x {args.hours:g} simulated hours in {elapsed:.0f} s "
        f"(times at {args.storage_ms} ms per storage and {args.graph_ms} ms per Graph request)",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--changes-per-day", type=int, default=50)
    parser.add_argument("--onboarded-over-hours", type=float, default=8)
    parser.add_argument("--hours", type=float, default=24, help="length of each simulated period")
    parser.add_argument("--graph-ms", type=int, default=150, help="assumed latency of one Graph request")
    parser.add_argument("--storage-ms", type=int, default=10, help="assumed latency of one Table request")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
