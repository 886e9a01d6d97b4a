"""CRM -> Outlook through the local Functions runner, end to end.

    python -m bench.crm_to_outlook [--changes 100] [--timer-changes 100]

Onboards one mailbox whose CRM user holds "Sync to Outlook", registers the Dataverse webhook with
``crmsync crm connect`` and takes the change-tracking baseline. Then:

1. webhook: creates ``--changes`` contacts over the Dataverse Web API as the user (each one fires
   the webhook steps), one after another, and polls the mailbox's contacts in the Graph simulator:
   change-to-Outlook latency per contact (from the Web API write to the first poll that sees it);
2. timer alone: writes ``--timer-changes`` contacts through the simulator's control API (committed,
   seen by change tracking, but no webhook call - every call "lost"), runs the change-tracking timer
   once and polls: latency from the timer's start. In production add the wait for the timer's next
   tick (``CRMSYNC_CRM_CHANGES_SCHEDULE``, every 5 minutes by default).

Also: Graph and Dataverse requests per item made by crmsync (the bench's own polls and writes are
left out), and the runner's peak RSS. Target: p95 <= 2 s through the webhook.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from typer.testing import CliRunner

from bench._common import OBSERVER_TOKEN, BenchTenant, BenchUser, percentile, print_results, process_peak_rss
from shared.cli import app as crmsync
from simulators.sandbox import Sandbox

POLL_SECONDS = 0.05
DEADLINE_SECONDS = 300.0


class Bench:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.tenant = BenchTenant(sandbox)
        self.polls = 0

    def user(self) -> BenchUser:
        mailbox_id = str(uuid.uuid4())
        upn = f"bench-{mailbox_id[:8]}@contoso.example"
        endpoints = self.tenant.endpoints
        self.tenant._call(
            "POST", f"{endpoints['graph_control']}/users", {"id": mailbox_id, "userPrincipalName": upn}
        )
        row = self.tenant._call(
            "POST",
            f"{endpoints['dataverse_control']}/users",
            {
                "systemuserid": str(uuid.uuid4()),
                "azureactivedirectoryobjectid": mailbox_id,
                "roles": ["bench", "Salesperson"],
            },
        )
        return BenchUser(mailbox_id, row["systemuserid"])

    def connect(self) -> None:
        result = CliRunner().invoke(crmsync, ["crm", "connect"], env=self.sandbox.app_settings())
        if result.exit_code:
            raise RuntimeError(f"crmsync crm connect failed: {result.stdout}")
        self.run_timer()

    def run_timer(self) -> None:
        response = self.tenant.http.post(
            f"{self.sandbox.functions_url}/admin/functions/crm_changes",
            json={"input": ""},
            headers={"x-functions-key": self.sandbox.master_key},
        )
        response.raise_for_status()

    def create_as_user(self, user: BenchUser, name: str) -> None:
        response = self.tenant.http.post(
            f"{self.sandbox.dataverse_api_url}/contacts",
            json={"lastname": name},
            headers={"Authorization": f"Bearer {OBSERVER_TOKEN}", "CallerObjectId": user.mailbox_id},
        )
        response.raise_for_status()

    def seed_without_webhook(self, user: BenchUser, names: list[str]) -> None:
        records: list[dict[str, Any]] = [
            {"lastname": name, "ownerid@odata.bind": f"/systemusers({user.crm_user_id})"} for name in names
        ]
        self.tenant._call(
            "POST",
            f"{self.tenant.endpoints['dataverse_control']}/seed",
            {"table": "contact", "records": records},
        )

    def in_outlook(self, user: BenchUser) -> set[str]:
        self.polls += 1
        response = self.tenant.http.get(
            f"{self.sandbox.graph_url}/users/{user.mailbox_id}/contacts",
            params={"$select": "surname", "$top": "999"},
            headers={"Authorization": "Bearer bench"},
        )
        response.raise_for_status()
        return {item.get("surname") for item in response.json()["value"]}

    def wait(self, user: BenchUser, written: dict[str, float], seen: dict[str, float]) -> None:
        started = time.perf_counter()
        while not set(written) <= set(seen) and time.perf_counter() - started < DEADLINE_SECONDS:
            now = time.perf_counter()
            for name in self.in_outlook(user) & set(written):
                seen.setdefault(name, now)
            time.sleep(POLL_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--timer-changes", type=int, default=100)
    args = parser.parse_args()
    with Sandbox() as sandbox:
        bench = Bench(sandbox)
        user = bench.user()
        bench.tenant.onboard(user)
        bench.connect()
        bench.tenant.clear_request_logs()
        bench.polls = 0
        # 1. through the webhook, one change at a time
        hooked: dict[str, float] = {}
        hooked_seen: dict[str, float] = {}
        for n in range(args.changes):
            name = f"Hook {n} {uuid.uuid4().hex[:6]}"
            hooked[name] = time.perf_counter()
            bench.create_as_user(user, name)
            bench.wait(user, {name: hooked[name]}, hooked_seen)
        graph = bench.tenant.graph_requests(user) - bench.polls
        dataverse = bench.tenant.dataverse_requests()
        # 2. the timer alone
        bench.tenant.clear_request_logs()
        bench.polls = 0
        names = [f"Timer {n} {uuid.uuid4().hex[:6]}" for n in range(args.timer_changes)]
        bench.seed_without_webhook(user, names)
        started = time.perf_counter()
        bench.run_timer()
        timer_seen: dict[str, float] = {}
        bench.wait(user, dict.fromkeys(names, started), timer_seen)
        timer_graph = bench.tenant.graph_requests(user) - bench.polls
        timer_dataverse = bench.tenant.dataverse_requests()
        runner_rss = process_peak_rss(sandbox.processes[-1].pid)
    hook_latency = [hooked_seen[n] - at for n, at in hooked.items() if n in hooked_seen]
    timer_latency = [timer_seen[n] - started for n in names if n in timer_seen]
    print_results(
        f"CRM -> Outlook: {len(hooked_seen)}/{args.changes} through the webhook, "
        f"{len(timer_seen)}/{args.timer_changes} through the timer alone",
        [
            ("webhook: change-to-Outlook p50", f"{percentile(hook_latency, 0.5):.2f} s", ""),
            ("webhook: change-to-Outlook p95", f"{percentile(hook_latency, 0.95):.2f} s", "<= 2 s"),
            ("webhook: Graph requests per item", f"{graph / max(len(hooked_seen), 1):.2f}", ""),
            ("webhook: Dataverse requests per item", f"{dataverse / max(len(hooked_seen), 1):.2f}", ""),
            (
                "timer: timer-start-to-Outlook p50",
                f"{percentile(timer_latency, 0.5):.2f} s",
                "+ the schedule",
            ),
            (
                "timer: timer-start-to-Outlook p95",
                f"{percentile(timer_latency, 0.95):.2f} s",
                "+ the schedule",
            ),
            ("timer: Graph requests per item", f"{timer_graph / max(len(timer_seen), 1):.2f}", ""),
            ("timer: Dataverse requests per item", f"{timer_dataverse / max(len(timer_seen), 1):.2f}", ""),
            ("peak RSS (Functions runner)", f"{runner_rss / 2**20:.0f} MB", "<= 300 MB"),
        ],
    )


if __name__ == "__main__":
    main()
