"""The Graph simulator's own overhead: requests/s and p50/p99 latency for a GET and a delta page.

Later connector benchmarks run against the simulator; these numbers say how much of their time
is the simulator's. Loopback only, bounded (each phase stops at its request count or time cap),
well under 60 s. Run: ``.venv/bin/python -m bench.graph_simulator``.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import httpx

from simulators.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"Authorization": "Bearer bench"}
PHASE_CAP_SECONDS = 8.0


def _report(name: str, latencies: list[float], elapsed: float) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    rate = len(ordered) / elapsed
    print(f"{name:<44} {len(ordered):>6} req  {rate:>8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")


async def _phase(name: str, count: int, concurrency: int, call: Callable[[], Awaitable[None]]) -> None:
    """Run ``call`` ``count`` times over ``concurrency`` workers (capped in time) and report."""
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + PHASE_CAP_SECONDS
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            begin = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - begin)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    _report(name, latencies, time.perf_counter() - started)


async def _run(root: str) -> None:
    base = f"{root}/v1.0"
    async with httpx.AsyncClient(headers=HEADERS, timeout=10, trust_env=False) as client:
        user = str(uuid.uuid4())
        created = await client.post(
            f"{root}/_sim/users", json={"id": user, "userPrincipalName": f"{user}@bench.test"}
        )
        created.raise_for_status()
        await client.patch(f"{root}/_sim/users/{user}/limits", json={"budget": 10_000_000})
        seeded = await client.post(
            f"{root}/_sim/users/{user}/seed",
            json={"contacts": [{"givenName": f"Contact {i}", "surname": "Bench"} for i in range(200)]},
        )
        contact_id = quote(seeded.json()["contacts"][0], safe="")
        get_url = f"{base}/users/{user}/contacts/{contact_id}"
        first = await client.get(
            f"{base}/users/{user}/contacts/delta", headers={"Prefer": "odata.maxpagesize=200"}
        )
        delta_link = first.json()["@odata.deltaLink"]

        async def get_contact() -> None:
            (await client.get(get_url)).raise_for_status()

        async def full_delta_page() -> None:
            answer = await client.get(
                f"{base}/users/{user}/contacts/delta", headers={"Prefer": "odata.maxpagesize=50"}
            )
            answer.raise_for_status()

        async def empty_delta_round() -> None:
            (await client.get(delta_link)).raise_for_status()

        print(f"Graph simulator overhead (loopback, {sys.platform}); 200 contacts in the mailbox")
        await _phase("GET contact, sequential", 1500, 1, get_contact)
        await _phase("GET contact, 4 concurrent (mailbox limit)", 3000, 4, get_contact)
        await _phase("delta first page (50 of 200 contacts)", 300, 1, full_delta_page)
        await _phase("delta link, no changes", 600, 1, empty_delta_round)
        await client.post(f"{root}/_sim/reset")


def main() -> None:
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own module, no shell
        [sys.executable, "-m", "simulators.graph", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        asyncio.run(_run(f"http://127.0.0.1:{port}"))
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    main()
