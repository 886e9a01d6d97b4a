"""`make bench`: list the benchmarks; run one with `python -m bench.<name>`."""

BENCHMARKS = {
    "webhook": "webhook handler latency (in-process, Azurite)",
    "webhook_fuzz": "fuzz both Graph webhooks: >= 10,000 generated requests each (in-process, Azurite)",
    "initial_sync": "initial sync of a big mailbox through the sandbox",
    "burst": "a burst of Outlook changes: change-to-CRM latency",
    "graph_simulator": "the Graph simulator's own overhead",
    "dataverse_simulator": "the Dataverse simulator's own overhead",
    "scale": "10,000 mailboxes on simulated time: the timers' requests per mailbox and hour",
    "cold_start": "a fresh process: import function_app and answer the first notification",
    "chaos": "random changes on both sides of three mailboxes under injected faults, then compared",
    "dataverse_bulk": "1,000 records: $batch versus CreateMultiple / UpsertMultiple (simulator)",
    "routing": "routing a CRM delete at 1,000 mailboxes: before and with the routing index (Azurite)",
}

if __name__ == "__main__":
    print("crmsync benchmarks (they print numbers; run one at a time):")
    for name, what in BENCHMARKS.items():
        print(f"  python -m bench.{name:<20} {what}")
