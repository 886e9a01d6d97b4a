"""How fast the local Dataverse simulator answers: single upserts, 1000-operation $batch, a 10,000-row read.

    .venv/bin/python -m bench.dataverse_simulator

Loopback only, one simulator subprocess, bounded by a time budget per phase (the whole run stays
under a minute). Numbers, not pass/fail: they tell whether the simulator, not the connector, would
dominate an end-to-end run.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable

import httpx

from simulators.dataverse.launcher import DataverseSimulator

UPSERTS = 500
BATCHES = 5
BATCH_SIZE = 1000
READ_ROWS = 10_000
PHASE_BUDGET_SECONDS = 15.0


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _report(name: str, samples: list[float], operations_per_sample: int) -> None:
    total = sum(samples)
    rate = len(samples) * operations_per_sample / total if total else 0.0
    print(
        f"{name:<34} n={len(samples):<5} {rate:10.0f} ops/s   "
        f"p50 {statistics.median(samples) * 1000:8.1f} ms   p99 {_percentile(samples, 0.99) * 1000:8.1f} ms"
    )


def _timed(count: int, action: Callable[[int], None]) -> list[float]:
    """Run ``action`` up to ``count`` times or until the phase budget is spent."""
    samples: list[float] = []
    deadline = time.monotonic() + PHASE_BUDGET_SECONDS
    for index in range(count):
        started = time.perf_counter()
        action(index)
        samples.append(time.perf_counter() - started)
        if time.monotonic() > deadline:
            break
    return samples


def _batch_body(api_url: str, size: int) -> tuple[str, str]:
    boundary, change_set = f"batch_{uuid.uuid4().hex}", f"changeset_{uuid.uuid4().hex}"
    operations = "".join(
        f"--{change_set}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: {i + 1}\r\n\r\nPATCH {api_url}/contacts({uuid.uuid4()}) HTTP/1.1\r\n"
        "Content-Type: application/json\r\n\r\n"
        f'{{"lastname": "Bench {i}", "emailaddress1": "b{i}@example.com"}}\r\n'
        for i in range(size)
    )
    body = (
        f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={change_set}\r\n\r\n"
        f"{operations}--{change_set}--\r\n--{boundary}--\r\n"
    )
    return f"multipart/mixed; boundary={boundary}", body


def main() -> None:
    with (
        DataverseSimulator() as simulator,
        httpx.Client(headers=simulator.headers(simulator.new_token()), timeout=120) as client,
    ):
        api = simulator.api_url

        def upsert(index: int) -> None:
            response = client.patch(f"{api}/contacts({uuid.uuid4()})", json={"lastname": f"Single {index}"})
            response.raise_for_status()

        _report("single upsert (PATCH)", _timed(UPSERTS, upsert), 1)

        def send_batch(_: int) -> None:
            content_type, body = _batch_body(api, BATCH_SIZE)
            response = client.post(f"{api}/$batch", content=body, headers={"Content-Type": content_type})
            response.raise_for_status()
            assert response.text.count("HTTP/1.1 204") == BATCH_SIZE

        _report(f"$batch of {BATCH_SIZE} upserts", _timed(BATCHES, send_batch), BATCH_SIZE)

        tag = uuid.uuid4().hex
        simulator.seed("account", [{"name": f"{tag} {i}"} for i in range(READ_ROWS)])

        def read_all(_: int) -> None:
            url: str | None = f"{api}/accounts?$select=name,accountid"
            rows = 0
            while url:
                body = client.get(
                    url, headers={"Prefer": "odata.track-changes,odata.maxpagesize=5000"}
                ).json()
                rows += len(body["value"])
                url = body.get("@odata.nextLink")
            assert rows >= READ_ROWS

        _report(f"change-tracked read of {READ_ROWS} rows", _timed(3, read_all), READ_ROWS)


if __name__ == "__main__":
    main()
