"""A burst of change notifications through the local Functions runner, end to end.

    python -m bench.burst [--changes 1000]

Onboards an empty mailbox, then creates ``--changes`` contacts in the Graph simulator as fast as
its control API takes them (each one a change notification to the runner's webhook), and watches
the Dataverse simulator until all are in the CRM: change-to-CRM latency per item (from the Graph
write to the first poll that sees the record), Graph and Dataverse requests per item and the
runner's peak RSS. The webhook handler's own latency is bench.webhook's (same handler, in-process
on real Azurite). Targets: p95 change-to-CRM <= 2 s; <= 150 MB.
"""

from __future__ import annotations

import argparse
import time

from bench._common import BenchTenant, percentile, print_results, process_peak_rss
from simulators.sandbox import Sandbox

BATCH = 10  # contacts per seed call: a burst, not one huge change
POLL_SECONDS = 0.1
DEADLINE_SECONDS = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=1000)
    args = parser.parse_args()
    with Sandbox() as sandbox:
        tenant = BenchTenant(sandbox)
        user = tenant.add_user()
        tenant.onboard(user)
        tenant.clear_request_logs()
        written: dict[str, float] = {}
        started = time.perf_counter()
        for first in range(0, args.changes, BATCH):
            names = [f"Burst {n}" for n in range(first, min(first + BATCH, args.changes))]
            tenant.seed(user, {"contacts": [{"givenName": "Bench", "surname": name} for name in names]})
            written |= dict.fromkeys(names, time.perf_counter())
        seen: dict[str, float] = {}
        while len(seen) < len(written) and time.perf_counter() - started < DEADLINE_SECONDS:
            now = time.perf_counter()
            for row in tenant.crm_rows("contact", user, "lastname"):
                seen.setdefault(row["lastname"], now)
            time.sleep(POLL_SECONDS)
        elapsed = time.perf_counter() - started
        graph, dataverse = tenant.graph_requests(user), tenant.dataverse_requests()
        runner_rss = process_peak_rss(sandbox.processes[-1].pid)
    latencies = [seen[name] - at for name, at in written.items() if name in seen]
    print_results(
        f"burst of {args.changes} changes: {len(seen)} in the CRM after {elapsed:.1f} s",
        [
            ("change-to-CRM p50", f"{percentile(latencies, 0.5):.2f} s", ""),
            ("change-to-CRM p95", f"{percentile(latencies, 0.95):.2f} s", "<= 2 s"),
            ("Graph requests per item", f"{graph / max(len(seen), 1):.3f}", ""),
            ("Dataverse requests per item", f"{dataverse / max(len(seen), 1):.3f}", ""),
            ("peak RSS (Functions runner)", f"{runner_rss / 2**20:.0f} MB", "<= 150 MB"),
        ],
    )


if __name__ == "__main__":
    main()
