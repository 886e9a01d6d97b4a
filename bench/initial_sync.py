"""Initial sync of a big mailbox through ``crmsync mailbox add`` (Graph delta -> Dataverse).

    python -m bench.initial_sync [--items 10000] [--mail category|folder] [--profile FILE]

Seeds a quarter of ``--items`` each as contacts, events, To Do tasks and tracked messages in the
Graph simulator, onboards the mailbox with the CLI and prints items/s, Graph and Dataverse requests
per synced item (from the simulators' request logs), the CLI's peak RSS and the CPU time the CLI,
Azurite, the simulators and the runner used during the sync (they share the cores); then, in the
same sandbox, the raw write rates of its storage and of the Dataverse simulator (``bench.raw_writes``)
and the sync's rate as a share of the slower of the two (the goal beyond >= 300 items/s: 75 %).
Targets on a 2-core machine: >= 300 items/s; <= 0.01 Graph requests per item with the mail in a
tracked folder (1.05 with the category: each body is read) and <= 0.01 Dataverse requests per item;
<= 150 MB. ``--profile FILE`` runs the CLI under cProfile and prints where its CPU time went, by
package (cProfile slows the CLI about sevenfold and overstates call-heavy code; a sampling profiler
such as py-spy does not).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import pstats
import resource
import time
from pathlib import Path
from typing import Any

from bench._common import (
    ENTITY_SETS,
    TRACKED,
    BenchTenant,
    cpu_rows,
    cpu_seconds,
    print_results,
    service_pids,
)
from bench.raw_writes import dataverse_rate, storage_rate
from simulators.sandbox import ROOT, Sandbox

SEED_CHUNK = 500  # items per seed call, to keep each control request small


def _items(kind: str, start: int, count: int, folder: str | None) -> dict[str, Any]:
    """``count`` items of ``kind``; mail in ``folder`` (a tracked folder), else in the inbox with the
    tracked category."""
    today = dt.datetime.now(dt.UTC).date()

    def when(n: int, hour: int) -> dict[str, str]:
        return {"dateTime": f"{today + dt.timedelta(days=1 + n % 300)}T{hour:02d}:00:00", "timeZone": "UTC"}

    numbers = range(start, start + count)
    if kind == "contact":
        return {"contacts": [{"givenName": "Bench", "surname": f"Contact {n}"} for n in numbers]}
    if kind == "appointment":
        return {
            "events": [{"subject": f"Event {n}", "start": when(n, 9), "end": when(n, 10)} for n in numbers]
        }
    if kind == "task":
        return {"todo": {"defaultList": [{"title": f"Task {n}"} for n in numbers]}}
    messages = [
        {
            "subject": f"Mail {n}",
            "categories": [] if folder else [TRACKED],
            "internetMessageId": f"<bench-{n}@fabrikam.example>",
        }
        for n in numbers
    ]
    return {"messages": {folder or "inbox": messages}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument(
        "--mail",
        choices=("category", "folder"),
        default="category",
        help="mail tracked by the category in the inbox (its bodies read one by one, in JSON batches) "
        "or in a tracked folder (its delta brings the bodies)",
    )
    parser.add_argument("--profile", type=Path, help="run the CLI under cProfile, writing this file")
    args = parser.parse_args()
    per_kind = args.items // len(ENTITY_SETS)
    with Sandbox() as sandbox:
        tenant = BenchTenant(sandbox)
        user = tenant.add_user()
        folder, settings = None, None
        if args.mail == "folder":
            folder = tenant.mail_folder(user, "archive")
            settings = {"tracked_folders": {folder: {"table": "account", "id": tenant.account("Bench Ltd")}}}
        for kind in ENTITY_SETS:
            for start in range(0, per_kind, SEED_CHUNK):
                tenant.seed(user, _items(kind, start, min(SEED_CHUNK, per_kind - start), folder))
        tenant.clear_request_logs()
        pids = service_pids(sandbox)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"crmsync CLI": _children_cpu()}
        started = time.perf_counter()
        peak_rss = tenant.onboard(user, settings, profile=args.profile)
        elapsed = time.perf_counter() - started
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        cpu["crmsync CLI"] = _children_cpu() - cpu_before["crmsync CLI"]
        graph, dataverse = tenant.graph_requests(user), tenant.dataverse_requests()
        synced = sum(len(tenant.crm_rows(kind, user, "createdon")) for kind in ENTITY_SETS)
        # After the counts: the raw writes add contacts of the same user.
        storage, dataverse_raw = storage_rate(tenant), dataverse_rate(tenant, user)
    rate = synced / elapsed
    print_results(
        f"initial sync of {per_kind * len(ENTITY_SETS)} items, mail tracked by {args.mail} "
        f"({synced} in the CRM) in {elapsed:.1f} s",
        [
            ("items/s", f"{rate:.0f}", ">= 300"),
            ("raw storage writes/s (entity-group transactions of 100)", f"{storage:.0f}", "the limit"),
            ("raw Dataverse writes/s ($batch of 1,000)", f"{dataverse_raw:.0f}", "the limit"),
            (
                "items/s as a share of the slower limit",
                f"{rate / min(storage, dataverse_raw):.0%}",
                ">= 75 %",
            ),
            (
                "Graph requests per item",
                f"{graph / max(synced, 1):.3f}",
                "<= 0.01" if args.mail == "folder" else "<= 1.05",
            ),
            ("Dataverse requests per item", f"{dataverse / max(synced, 1):.3f}", "<= 0.01"),
            ("peak RSS (crmsync CLI)", f"{peak_rss / 2**20:.0f} MB", "<= 150 MB"),
        ],
    )
    print_results(f"CPU time used during the sync ({elapsed:.1f} s)", cpu_rows(cpu, elapsed))
    if args.profile:
        print_results(
            "where the CLI's CPU time went (cProfile, own time by package)", _by_package(args.profile)
        )


def _children_cpu() -> float:
    """User + system CPU time of this process's exited children: the CLI, once it has run."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _by_package(path: Path) -> list[tuple[str, str, str]]:
    """Own (not cumulative) CPU time per top-level package of the profiled process."""
    totals: collections.Counter[str] = collections.Counter()
    stats = pstats.Stats(str(path))
    for (filename, _, _), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        totals[_package(filename)] += own
    everything = sum(totals.values()) or 1.0
    return [
        (name, f"{seconds:.1f} s", f"{seconds / everything:.0%}") for name, seconds in totals.most_common(12)
    ]


def _package(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith(str(ROOT)):
        return "/".join(Path(filename).relative_to(ROOT).parts[:2])
    if filename.startswith("<") or filename == "~":
        return "interpreter (builtins, C calls)"
    return "standard library"


if __name__ == "__main__":
    main()
