"""The initial fill from the CRM, paced under the mailbox's Graph budget.

    python -m bench.crm_fill [--contacts 1000] [--budget 1000] [--window 30]

Onboards a mailbox whose CRM user holds "Sync to Outlook", seeds ``--contacts`` contacts the user
owns (no webhook: only the fill brings them), lowers the mailbox's Graph budget in the simulator to
``--budget`` requests per ``--window`` seconds (Outlook's real one is 10,000 per 600 s; a lower one
shows pacing in a bench-sized run) and gives crmsync's pacer the same numbers, then runs the fill
(as ``crmsync mailbox resync`` runs it). Prints items/s, the share of the Graph budget the fill used
(requests sent / what the budget allows over the fill's duration), 429 answers and duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from bench._common import print_results
from bench.crm_to_outlook import Bench
from shared.config import Settings
from shared.runtime import Runtime
from shared.sync.crm_fill import CrmFill, FillReport
from simulators.sandbox import Sandbox


async def fill(settings: Settings, mailbox_id: str) -> FillReport:
    runtime = Runtime(settings)
    try:
        store = await runtime.store()
        runner = CrmFill(store=store, graph=await runtime.graph(), runner=await runtime.crm_run())
        return await runner.fill_table(mailbox_id, "contact")
    finally:
        await runtime.close()


def outlook_surnames(bench: Bench, mailbox_id: str) -> list[str]:
    url: str | None = f"{bench.sandbox.graph_url}/users/{mailbox_id}/contacts"
    params: dict[str, str] | None = {"$select": "surname", "$top": "1000"}
    names: list[str] = []
    while url:
        response = bench.tenant.http.get(url, params=params, headers={"Authorization": "Bearer bench"})
        response.raise_for_status()
        page: dict[str, Any] = response.json()
        names += [str(c.get("surname")) for c in page["value"]]
        url, params = page.get("@odata.nextLink"), None
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    with Sandbox() as sandbox:
        bench = Bench(sandbox)
        user = bench.user()
        bench.tenant.onboard(user)
        control = bench.tenant.endpoints["graph_control"]
        names = [f"Fill {n} {uuid.uuid4().hex[:6]}" for n in range(args.contacts)]
        for start in range(0, len(names), 1000):
            bench.seed_without_webhook(user, names[start : start + 1000])
        bench.tenant._call(
            "PATCH",
            f"{control}/users/{user.mailbox_id}/limits",
            {"budget": args.budget, "window_seconds": args.window},
        )
        bench.tenant.clear_request_logs()
        settings = Settings.model_validate(
            {
                **sandbox.app_settings(),
                "CRMSYNC_GRAPH_MAILBOX_BUDGET": str(args.budget),
                "CRMSYNC_GRAPH_BUDGET_WINDOW_SECONDS": str(args.window),
            }
        )
        started = time.perf_counter()
        report = asyncio.run(fill(settings, user.mailbox_id))
        elapsed = time.perf_counter() - started
        log = bench.tenant._call("GET", f"{control}/requests?user={user.mailbox_id}")
        throttled = sum(1 for entry in log if entry["status"] == 429)
        seen = outlook_surnames(bench, user.mailbox_id)
    wanted = set(names)
    duplicates = sum(1 for n in seen if n in wanted) - len({n for n in seen if n in wanted})
    allowed = args.budget * elapsed / args.window
    print_results(
        f"CRM fill: {args.contacts} contacts, Graph budget {args.budget} per {args.window:.0f} s",
        [
            ("contacts in Outlook", f"{len({n for n in seen if n in wanted})}/{args.contacts}", "all"),
            ("items/s", f"{report.outlook_writes / elapsed:.1f}", "-"),
            ("Graph requests (each of a batch counted)", str(len(log)), "-"),
            ("share of the Graph budget used", f"{len(log) / allowed:.1%}", ">= 90 %"),
            ("429 answers", str(throttled), "0"),
            ("duplicates", str(duplicates), "0"),
            ("elapsed", f"{elapsed:.1f} s", "-"),
        ],
    )


if __name__ == "__main__":
    main()
