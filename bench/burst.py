"""A burst of change notifications through the local Functions runner, end to end.

    python -m bench.burst [--changes 1000] [--cold]

Onboards an empty mailbox, carries one change through the runner (so the burst meets an instance
in service, whose process has already imported the sync engine; ``--cold`` skips it, and the
burst's first job pays those deferred imports, about 0.4 s of CPU: bench.cold_start), then creates
``--changes`` contacts in the Graph simulator as fast as
its control API takes them (each one a change notification to the runner's webhook), while a
watcher thread polls the Dataverse simulator until all are in the CRM: change-to-CRM latency per
item (from the start of the Graph write that created it to the first poll that sees the record, so
at most one poll late), how long after the last write the last one arrived, Graph and Dataverse
requests per item, how many notification POSTs the runner had answered by then (Graph sends the
notifications that wait together in one POST) and the runner's peak RSS. The webhook handler's own
latency is bench.webhook's (same handler, in-process on real Azurite). Targets (issue 14): p95
change-to-CRM <= 2 s, all in the CRM within 10 s of the last write, <= 150 MB.
"""

from __future__ import annotations

import argparse
import copy
import threading
import time

import httpx

from bench._common import (
    BenchTenant,
    BenchUser,
    cpu_rows,
    cpu_seconds,
    percentile,
    print_results,
    process_peak_rss,
    service_pids,
)
from simulators.sandbox import Sandbox

BATCH = 10  # contacts per seed call: a burst, not one huge change
POLL_SECONDS = 0.1
DEADLINE_SECONDS = 300.0


def _watch(tenant: BenchTenant, user: BenchUser, seen: dict[str, float], expected: int) -> None:
    """Note when each record first shows in the CRM (its own HTTP client: it runs on a thread
    while the main thread writes)."""
    observer = copy.copy(tenant)
    observer.http = httpx.Client(timeout=120, trust_env=False)
    deadline = time.perf_counter() + DEADLINE_SECONDS
    with observer.http:
        while len(seen) < expected and time.perf_counter() < deadline:
            now = time.perf_counter()
            for row in observer.crm_rows("contact", user, "lastname"):
                if row["lastname"].startswith("Burst "):
                    seen.setdefault(row["lastname"], now)
            time.sleep(POLL_SECONDS)


def _warm_up(tenant: BenchTenant, user: BenchUser) -> None:
    """One contact through the runner, waited for in the CRM."""
    tenant.seed(user, {"contacts": [{"givenName": "Bench", "surname": "Warm-up"}]})
    deadline = time.perf_counter() + 60
    while not any(row["lastname"] == "Warm-up" for row in tenant.crm_rows("contact", user, "lastname")):
        if time.perf_counter() > deadline:
            raise SystemExit("the warm-up change did not reach the CRM within 60 s")
        time.sleep(POLL_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--cold", action="store_true", help="no warm-up change before the burst")
    args = parser.parse_args()
    with Sandbox() as sandbox:
        tenant = BenchTenant(sandbox)
        user = tenant.add_user()
        tenant.onboard(user)
        if not args.cold:
            _warm_up(tenant, user)
        tenant.clear_request_logs()
        written: dict[str, float] = {}
        seen: dict[str, float] = {}
        watcher = threading.Thread(target=_watch, args=(tenant, user, seen, args.changes))
        pids = service_pids(sandbox)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"bench": time.process_time()}
        started = time.perf_counter()
        watcher.start()
        for first in range(0, args.changes, BATCH):
            names = [f"Burst {n}" for n in range(first, min(first + BATCH, args.changes))]
            at = time.perf_counter()
            tenant.seed(user, {"contacts": [{"givenName": "Bench", "surname": name} for name in names]})
            written |= dict.fromkeys(names, at)
        last_write = time.perf_counter()
        watcher.join()
        finished = time.perf_counter()
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        cpu["bench"] = time.process_time() - cpu_before["bench"]
        graph, dataverse = tenant.graph_requests(user), tenant.dataverse_requests()
        posts, notified = tenant.notification_posts(user)
        runner_rss = process_peak_rss(sandbox.processes[-1].pid)
    latencies = [seen[name] - at for name, at in written.items() if name in seen]
    drained = max(seen.values(), default=float("nan")) - last_write
    print_results(
        f"burst of {args.changes} changes ({'cold' if args.cold else 'warm'} runner) written in "
        f"{last_write - started:.1f} s: "
        f"{len(seen)} in the CRM after {max(seen.values(), default=started) - started:.1f} s",
        [
            ("change-to-CRM p50", f"{percentile(latencies, 0.5):.2f} s", ""),
            ("change-to-CRM p95", f"{percentile(latencies, 0.95):.2f} s", "<= 2 s"),
            ("change-to-CRM max", f"{max(latencies, default=float('nan')):.2f} s", ""),
            ("all in the CRM after the last write", f"{drained:.2f} s", "<= 10 s"),
            ("Graph requests per item", f"{graph / max(len(seen), 1):.3f}", ""),
            ("Dataverse requests per item", f"{dataverse / max(len(seen), 1):.3f}", ""),
            ("notification POSTs by then (notifications in them)", f"{posts} ({notified})", ""),
            ("peak RSS (Functions runner)", f"{runner_rss / 2**20:.0f} MB", "<= 150 MB"),
        ],
    )
    # What bounds the latency: the services and the runner share this machine's cores.
    wall = finished - started
    print_results(f"CPU time used during the burst ({wall:.1f} s)", cpu_rows(cpu, wall))


if __name__ == "__main__":
    main()
